"""NAS-Bench-201 cells as immutable, hashable values (no torch, no numpy).

A cell has 4 nodes. Node 0 is the cell's input; node j (1..3) sums one op applied to
every earlier node i < j; node 3 is the cell's output. The six edges, in the order the
benchmark's string lists them, are (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2), and
each carries one of five ops. The text form is the benchmark's own string::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

Identity. A cell's `hash` is that of the benchmark's own canonical string
(`benchmark_unique_string`, NAS-Bench-201's ``UniqueString``), so smash counts the
6,466 distinct cells the benchmark counts, joins its tables on the same classes, and
a search never scores two cells of one class against the same checkpoint. The
search space hands out one cell per class, its `representative` (the first of the
class in `all_cells()` order), so every stored number (params, FLOPs, depth, the
table's accuracy) belongs to one fixed network.

The benchmark's classes are not exactly classes of equal functions, and smash says
so rather than pretend. `function_form` is a form that two cells share exactly when
our networks compute the same function with the same weights up to renaming:

- `none` edges are dropped, and so is every edge that lies on no input-to-output path
  (its source is unreachable from the input, or its target never reaches the output).
  Our networks do not compute such edges at all (`engine.nb201.network`), so this is
  exact: in the benchmark's own networks a conv fed by an all-zero node still adds its
  BatchNorm bias, a learned constant that we do not reproduce.
- `skip_connect` is the identity and `avg_pool_3x3` is linear and weight-free, so both
  distribute over sums: a node is a multiset of atoms, an atom being the input or one
  conv edge's output, under some number of pools. Repeated atoms keep their count
  (x + x is not x).
- Every conv edge (`nor_conv_1x1`, `nor_conv_3x3`) has its own weights, so two convs of
  the same input stay two atoms; one conv reached along two paths stays one atom,
  counted twice. The form is a canonical labelling of the small graph of conv edges.

It gives 5,044 classes over the 15,625 cells, and neither partition refines the
other: the benchmark's string keeps a `#` per zero term, so
`|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|` (``#+#+0``) and the same cell
with `skip_connect~2` (``#+#+#+0``) differ, though both compute the identity; it sorts
nested sums as text; and it expands convs into trees, so
`|nor_conv_1x1~0|+|avg_pool_3x3~0|skip_connect~1|+|avg_pool_3x3~0|skip_connect~1|skip_connect~2|`
(one 1x1 conv, reached twice) and
`|skip_connect~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|`
(two 1x1 convs) share a string though their parameter counts differ. Plain graph
isomorphism with unused edges dropped gives 8,765 classes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, ClassVar

from engine.arch import InvalidArchitecture

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
CONV_OPS: tuple[str, ...] = ("nor_conv_1x1", "nor_conv_3x3")  # the ops with weights
CONV_KERNELS: dict[str, int] = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from)
NUM_NODES = 4
SCHEMA_VERSION = 1
KIND = "nb201"

_INPUT = -1  # the atom source that stands for the cell's input in canonical sums


class InvalidCell(InvalidArchitecture):
    """A cell that is malformed; the one-line message names the offending field.

    An `InvalidArchitecture`, so every caller that refuses a bad architecture refuses a bad cell.
    """

    def __init__(self, field: str, problem: str) -> None:
        ValueError.__init__(self, f"invalid nb201 cell: {field}: {problem}")
        self.field = field
        self.problem = problem


def edge_name(edge: int) -> str:
    """'j<-i' for edge index `edge`, as error messages and diagrams name it."""
    to, source = EDGES[edge]
    return f"{to}<-{source}"


@dataclass(frozen=True)
class Cell:
    """A NAS-Bench-201 cell: the op on each of the six edges."""

    ops: tuple[str, str, str, str, str, str]  # op per edge, in EDGES order (the benchmark string's order)

    kind: ClassVar[str] = KIND

    def __post_init__(self) -> None:
        ops = self.ops
        if not isinstance(ops, (tuple, list)) or len(ops) != len(EDGES):
            raise InvalidCell("ops", f"expected {len(EDGES)} ops, got {_short(ops)}")
        for edge, op in enumerate(ops):
            if op not in OPS:
                raise InvalidCell(f"edge {edge_name(edge)}", f"unknown op {_short(op)} (known: {', '.join(OPS)})")
        object.__setattr__(self, "ops", tuple(ops))

    # Text forms ---------------------------------------------------------------------

    def to_string(self) -> str:
        """The benchmark's string, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|``."""
        groups = []
        for node in range(1, NUM_NODES):
            terms = [f"{self.ops[e]}~{EDGES[e][1]}" for e in range(len(EDGES)) if EDGES[e][0] == node]
            groups.append("|" + "|".join(terms) + "|")
        return "+".join(groups)

    def __str__(self) -> str:
        return self.to_string()

    @staticmethod
    def from_string(text: str) -> Cell:
        """Parse the benchmark's string; anything else raises InvalidCell."""
        if not isinstance(text, str):
            raise InvalidCell("<string>", f"expected a string, got {type(text).__name__}")
        groups = text.split("+")
        if len(groups) != NUM_NODES - 1:
            raise InvalidCell(
                "<string>", f"expected {NUM_NODES - 1} '+'-separated node groups, got {len(groups)} in {_short(text)}"
            )
        ops: list[str] = []
        for node, group in enumerate(groups, start=1):
            if len(group) < 2 or not group.startswith("|") or not group.endswith("|"):
                raise InvalidCell(f"node {node}", f"expected '|op~i|...|', got {_short(group)}")
            terms = group[1:-1].split("|")
            if len(terms) != node:
                raise InvalidCell(f"node {node}", f"expected {node} edge(s), got {len(terms)} in {_short(group)}")
            for source, term in enumerate(terms):
                field = f"edge {node}<-{source}"
                op, tilde, index = term.rpartition("~")
                if not tilde or index != str(source):
                    raise InvalidCell(field, f"expected 'op~{source}', got {_short(term)}")
                if op not in OPS:
                    raise InvalidCell(field, f"unknown op {_short(op)} (known: {', '.join(OPS)})")
                ops.append(op)
        return Cell(tuple(ops))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "kind": KIND, "cell": self.to_string()}

    def to_json(self, indent: int | None = None) -> str:
        """Compact (or indented), key-sorted JSON with the kind and the benchmark string."""
        if indent is None:
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @staticmethod
    def from_dict(data: Any) -> Cell:
        if not isinstance(data, Mapping):
            raise InvalidCell("<root>", f"expected an object, got {type(data).__name__}")
        for key in ("schema", "kind", "cell"):
            if key not in data:
                raise InvalidCell("<root>", f"missing field '{key}'")
        unknown = sorted(set(data) - {"schema", "kind", "cell"})
        if unknown:
            raise InvalidCell("<root>", f"unknown field '{unknown[0]}'")
        schema = data["schema"]
        if isinstance(schema, bool) or not isinstance(schema, int) or not 1 <= schema <= SCHEMA_VERSION:
            raise InvalidCell("schema", f"unknown version {_short(schema)} (this smash reads {SCHEMA_VERSION})")
        if data["kind"] != KIND:
            raise InvalidCell("kind", f"expected '{KIND}', got {_short(data['kind'])}")
        return Cell.from_string(data["cell"])

    @staticmethod
    def from_json(text: str | bytes) -> Cell:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidCell("<json>", f"not valid JSON ({_one_line(exc)})") from None
        return Cell.from_dict(data)

    # Structure ----------------------------------------------------------------------

    @cached_property
    def live_edges(self) -> tuple[int, ...]:
        """Edges that lie on some input-to-output path, in EDGES order (the only ones computed)."""
        return _live_edges(self.ops)

    def live(self) -> Cell:
        """This cell with every edge off all input-to-output paths set to `none`."""
        live = set(self.live_edges)
        return Cell(tuple(op if e in live else "none" for e, op in enumerate(self.ops)))  # type: ignore[arg-type]

    @property
    def num_ops(self) -> int:
        """Ops on some input-to-output path (`none` and unused edges do not count)."""
        return len(self.live_edges)

    @property
    def depth(self) -> int:
        """Convs on the cell's longest input-to-output path (0 for a cell without one).

        Cell-level, because a cell does not know how many times its network repeats it;
        `network_depth` counts the whole network.
        """
        longest = [0] + [-1] * (NUM_NODES - 1)
        for e in self.live_edges:
            to, source = EDGES[e]
            longest[to] = max(longest[to], longest[source] + (self.ops[e] in CONV_OPS))
        return max(longest[-1], 0)

    def network_depth(self, stages: int, cells_per_stage: int) -> int:
        """Weighted layers on the longest path of the whole network.

        Stem conv, `depth` convs per cell, two convs per reduction block, classifier.
        """
        return 1 + stages * cells_per_stage * self.depth + 2 * (stages - 1) + 1

    # Identity -----------------------------------------------------------------------

    @cached_property
    def unique_string(self) -> str:
        """The benchmark's canonical string of this cell (its ``UniqueString``)."""
        return benchmark_unique_string(self)

    @property
    def hash(self) -> str:
        """sha256 hex of the benchmark's canonical string: equal within one of its 6,466 classes."""
        return hashlib.sha256(f"{KIND}:{self.unique_string}".encode()).hexdigest()

    def representative(self) -> Cell:
        """The cell that stands for this one's class: the first of `all_cells()` with its hash."""
        return _representative_of()[self.unique_string]

    @cached_property
    def function_form(self) -> str:
        """Text shared by exactly the cells whose networks compute the same function.

        ``v1=nor_conv_1x1(avg_pool_3x3(v2));v2=nor_conv_3x3(x);out=v1+x``: each conv
        edge in canonical order with its input sum, then the output sum; ``out=0`` when
        no path joins input and output. See the module docstring for the rules and for
        how it differs from the benchmark's classes (which `hash` follows).
        """
        return _canonical(self.ops)

    def describe(self) -> list[str]:
        """A few lines drawing the cell: each node as the sum of the ops on its edges."""
        return describe_cell(self)


def parse_architecture(text: str, space: Any = None) -> Cell:
    """A cell from its benchmark string or its JSON (`Cell.to_json`).

    Args:
        text: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` or ``{"cell": ..., "kind": "nb201", ...}``.
        space: optional; every cell lies in every nb201 space, so only its kind is checked.

    Raises:
        InvalidCell: naming the bad field.
    """
    if space is not None and getattr(space, "kind", None) != KIND:
        raise InvalidCell("<space>", f"an nb201 cell needs an nb201 space, got kind {_short(getattr(space, 'kind', None))}")
    if not isinstance(text, str):
        raise InvalidCell("<text>", f"expected a string, got {type(text).__name__}")
    stripped = text.strip()
    if stripped.startswith("{"):
        return Cell.from_json(stripped)
    return Cell.from_string(stripped)


def all_cells() -> tuple[Cell, ...]:
    """All 15,625 cells, ops varying fastest on the last edge in OPS order.

    This is not the benchmark's own index order; join with its tables by string.
    """
    return _all_cells()


@cache
def canonical_representatives() -> tuple[Cell, ...]:
    """One cell per class (6,466): the first of `all_cells()` with each hash, in that order.

    Cached: the sampler draws from it at every training step.
    """
    return tuple(dict.fromkeys(_representative_of().values()))


@cache
def _all_cells() -> tuple[Cell, ...]:
    return tuple(Cell(ops) for ops in itertools.product(OPS, repeat=len(EDGES)))  # type: ignore[arg-type]


@cache
def _representative_of() -> dict[str, Cell]:
    chosen: dict[str, Cell] = {}
    for cell in _all_cells():
        chosen.setdefault(cell.unique_string, cell)
    return chosen


def benchmark_unique_string(cell: Cell) -> str:
    """The benchmark's `UniqueString` of `cell` (NAS-Bench-201's ``to_unique_str(consider_zero=True)``).

    For joining with the benchmark's tables; it is not our canonical form (see the
    module docstring): it splits some equivalent cells and merges some different ones.
    """
    nodes = {0: "0"}
    for node in range(1, NUM_NODES):
        terms = []
        for e, (to, source) in enumerate(EDGES):
            if to != node:
                continue
            op = cell.ops[e]
            if op == "none" or nodes[source] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(nodes[source])
            else:
                terms.append(f"({nodes[source]})@{op}")
        nodes[node] = "+".join(sorted(terms))
    return nodes[NUM_NODES - 1]


def describe_cell(cell: Cell) -> list[str]:
    """Lines for `smash show`: the string, then each node as the sum of its edges' ops.

    Example::

        cell |nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|
        node 0 = input
        node 1 = nor_conv_3x3(node 0)
        node 2 = avg_pool_3x3(node 1)
        node 3 = skip_connect(node 0) + nor_conv_1x1(node 2)   <- output
        4 ops on input-output paths, depth 2; canonical v1=nor_conv_1x1(avg_pool_3x3(v2));...
    """
    live = set(cell.live_edges)
    lines = [f"cell {cell.to_string()}", "node 0 = input"]
    for node in range(1, NUM_NODES):
        used, unused = [], []
        for e, (to, source) in enumerate(EDGES):
            if to != node or cell.ops[e] == "none":
                continue
            (used if e in live else unused).append(f"{cell.ops[e]}(node {source})")
        text = f"node {node} = " + (" + ".join(used) if used else "0")
        if unused:
            text += f"   (unused: {', '.join(unused)})"
        if node == NUM_NODES - 1:
            text += "   <- output"
        lines.append(text)
    lines.append(f"{cell.num_ops} ops on input-output paths, depth {cell.depth}; benchmark class {cell.unique_string}")
    return lines


# Internals ------------------------------------------------------------------------------


def _live_edges(ops: tuple[str, ...]) -> tuple[int, ...]:
    reached = {0}  # nodes an input-to-node path reaches, through non-none edges
    for e, (to, source) in enumerate(EDGES):
        if ops[e] != "none" and source in reached:
            reached.add(to)
    reaching = {NUM_NODES - 1}  # nodes with a path to the output
    for e in reversed(range(len(EDGES))):  # targets descend, so a target is settled before its edge
        to, source = EDGES[e]
        if ops[e] != "none" and to in reaching:
            reaching.add(source)
    return tuple(
        e for e, (to, source) in enumerate(EDGES) if ops[e] != "none" and source in reached and to in reaching
    )


_Atom = tuple[int, int]  # (pools applied, source: _INPUT or the conv edge's index)


def _canonical(ops: tuple[str, ...]) -> str:
    live = _live_edges(ops)
    if not live:
        return "out=0"
    sums: list[Counter[_Atom]] = [Counter({(0, _INPUT): 1})] + [Counter() for _ in range(NUM_NODES - 1)]
    conv_inputs: dict[int, Counter[_Atom]] = {}
    for e in live:  # EDGES is ordered by target, so a node's sum is complete before it is read
        to, source = EDGES[e]
        op = ops[e]
        if op == "skip_connect":
            sums[to].update(sums[source])
        elif op == "avg_pool_3x3":  # linear: pool each atom of the sum
            for (pools, atom_source), count in sums[source].items():
                sums[to][(pools + 1, atom_source)] += count
        else:
            conv_inputs[e] = sums[source]
            sums[to][(0, e)] += 1
    output = sums[-1]

    # Tree unfoldings name each conv independently of any labelling; they order the
    # convs, and only convs with equal unfoldings need their orders tried.
    unfolded = {_INPUT: "x"}
    for e in sorted(conv_inputs):
        unfolded[e] = f"{ops[e]}({_sum_text(conv_inputs[e], unfolded)})"
    convs = sorted(conv_inputs, key=lambda e: unfolded[e])
    ties = [list(group) for _, group in itertools.groupby(convs, key=lambda e: unfolded[e])]
    best: str | None = None
    for arrangement in itertools.product(*(itertools.permutations(group) for group in ties)):
        order = [e for group in arrangement for e in group]
        names = {_INPUT: "x", **{e: f"v{i + 1}" for i, e in enumerate(order)}}
        text = ";".join(f"{names[e]}={ops[e]}({_sum_text(conv_inputs[e], names)})" for e in order)
        text = f"{text};out={_sum_text(output, names)}" if text else f"out={_sum_text(output, names)}"
        if best is None or text < best:
            best = text
    assert best is not None
    return best


def _sum_text(terms: Counter[_Atom], names: Mapping[int, str]) -> str:
    parts = []
    for (pools, source), count in terms.items():
        atom = "avg_pool_3x3(" * pools + names[source] + ")" * pools
        parts.append(f"{count}*{atom}" if count > 1 else atom)
    return "+".join(sorted(parts))


def _short(value: Any, limit: int = 60) -> str:
    """repr of a value on one line, cut to `limit` characters for error messages."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__



__all__ = [
    "CONV_KERNELS",
    "CONV_OPS",
    "EDGES",
    "KIND",
    "NUM_NODES",
    "OPS",
    "Cell",
    "InvalidCell",
    "all_cells",
    "benchmark_unique_string",
    "canonical_representatives",
    "describe_cell",
    "edge_name",
    "parse_architecture",
]
