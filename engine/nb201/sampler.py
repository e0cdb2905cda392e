"""Random cells and perturbations: pure functions of a space and a numpy Generator.

`sample` draws one of the benchmark's 6,466 distinct cells uniformly (its class's
`representative`), as a search over the benchmark's distinct architectures does;
`perturb` redraws ops edge by edge and returns the representative of another class.
Every cell a search meets is therefore a representative: the numbers stored for a
class belong to one fixed network.
"""

from __future__ import annotations

import numpy as np

from engine.nb201.cell import EDGES, OPS, Cell, canonical_representatives
from engine.nb201.space import CellSpace

PERTURB_TRIES = 64  # redraws of the per-edge perturbation before a guaranteed single-edge change


def sample(space: CellSpace, rng: np.random.Generator, progress: float = 1.0) -> Cell:
    """One of the 6,466 distinct cells, uniformly. `space` and `progress` do not matter (no annealing)."""
    del space, progress
    classes = canonical_representatives()
    return classes[int(rng.integers(len(classes)))]


def perturb(cell: Cell, space: CellSpace, rng: np.random.Generator, p: float = 0.05) -> Cell:
    """A cell that computes something else: each edge's op redrawn with probability `p`.

    A redrawn edge takes one of the four other ops, uniformly. A perturbation that
    lands in the same class is useless to a search (it would be skipped as already
    scored), so the draw is repeated up to PERTURB_TRIES times; if every try leaves the
    class unchanged (tiny `p`), one single-edge change is drawn uniformly among those
    that alter the class. One always exists: changing the op on (3<-0) always changes
    the output's sum. The result is its class's representative.

    Args:
        cell: the cell to perturb.
        space: unused (every cell lies in every nb201 space); kept for the common signature.
        rng: the only source of randomness.
        p: per-edge probability of a redraw, in [0, 1].

    Raises:
        ValueError: `p` outside [0, 1].
    """
    del space
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"perturb: p must lie in [0, 1], got {p}")
    for _ in range(PERTURB_TRIES):
        redraw = rng.random(len(EDGES)) < p
        if not redraw.any():
            continue
        ops = list(cell.ops)
        for e in np.flatnonzero(redraw):
            others = [op for op in OPS if op != ops[e]]
            ops[e] = others[int(rng.integers(len(others)))]
        candidate = Cell(tuple(ops))  # type: ignore[arg-type]
        if candidate.hash != cell.hash:
            return candidate.representative()
    changes = [
        candidate
        for e in range(len(EDGES))
        for op in OPS
        if op != cell.ops[e]
        and (candidate := Cell(cell.ops[:e] + (op,) + cell.ops[e + 1 :])).hash != cell.hash  # type: ignore[arg-type]
    ]
    return changes[int(rng.integers(len(changes)))].representative()


__all__ = ["PERTURB_TRIES", "perturb", "sample"]
