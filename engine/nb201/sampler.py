"""Random cells and perturbations: pure functions of a space and a numpy Generator.

`sample` draws every edge's op independently and uniformly, i.e. uniformly over the
15,625 cells, not over the 5,044 canonical classes. That is how NAS-Bench-201's
random-search and one-shot baselines sample, so scores are comparable with theirs; it
trains every (position, edge, op) weight of the SMASH network equally often; and the
search stores one cell per canonical hash anyway. The price: classes with many members come
up more often than in a uniform draw over classes (the cells that compute a single
conv of the input, or the identity, are 400 to 460 cells each; 341 cells, 2.2%, output
zero).
"""

from __future__ import annotations

import numpy as np

from engine.nb201.cell import EDGES, OPS, Cell
from engine.nb201.space import CellSpace

PERTURB_TRIES = 64  # redraws of the per-edge perturbation before a guaranteed single-edge change


def sample(space: CellSpace, rng: np.random.Generator, progress: float = 1.0) -> Cell:
    """A uniformly random cell. `space` and `progress` do not matter: nb201 does not anneal."""
    del space, progress
    picks = rng.integers(0, len(OPS), size=len(EDGES))
    return Cell(tuple(OPS[int(i)] for i in picks))  # type: ignore[arg-type]


def perturb(cell: Cell, space: CellSpace, rng: np.random.Generator, p: float = 0.05) -> Cell:
    """A cell that computes something else: each edge's op redrawn with probability `p`.

    A redrawn edge takes one of the four other ops, uniformly. A perturbation that
    lands in the same canonical class is useless to a search (it would be skipped as
    already scored), so the draw is repeated up to PERTURB_TRIES times; if every try
    leaves the class unchanged (tiny `p`), one single-edge change is drawn uniformly
    among those that alter the class. One always exists: changing the op on (3<-0)
    always changes the output's sum.

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
        if candidate.canonical != cell.canonical:
            return candidate
    changes = [
        candidate
        for e in range(len(EDGES))
        for op in OPS
        if op != cell.ops[e]
        and (candidate := Cell(cell.ops[:e] + (op,) + cell.ops[e + 1 :])).canonical != cell.canonical  # type: ignore[arg-type]
    ]
    return changes[int(rng.integers(len(changes)))]


__all__ = ["PERTURB_TRIES", "perturb", "sample"]
