"""The nb201 kind: cells, canonical forms, sampling, networks, cost and the kind object.

Nothing here reads the benchmark's table: the few benchmark strings needed are copied
below from `nats-tss-200ep.csv`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.hypernet import HyperNetConfig
from engine.nb201.cell import (
    CONV_OPS,
    EDGES,
    Cell,
    InvalidCell,
    all_cells,
    benchmark_unique_string,
    canonical_representatives,
    parse_architecture,
)
from engine.nb201.cost import cell_cost
from engine.nb201.kind import NB201
from engine.nb201.network import NB201Net, NB201Smash, build_model, smash_from_meta
from engine.nb201.sampler import perturb, sample
from engine.nb201.space import PRESETS, CellSpace, InvalidCellSpace, get_preset

ROOT = Path(__file__).resolve().parents[2]
TINY = PRESETS["nb201-tiny"]
BENCHMARK_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"

# (ArchitectureString, UniqueString) rows of the benchmark's table.
BENCHMARK_ROWS = [
    (
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
        "(0)@avg_pool_3x3+(0)@avg_pool_3x3+(0)@nor_conv_1x1+(0)@nor_conv_1x1",
    ),
    (
        BENCHMARK_EXAMPLE,
        "((0)@nor_conv_3x3)@avg_pool_3x3+(0)@nor_conv_3x3+((0)@nor_conv_3x3)@nor_conv_3x3+0",
    ),
    (
        "|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "(#+#)@nor_conv_3x3+((0)@nor_conv_3x3)@nor_conv_3x3+(0)@avg_pool_3x3",
    ),
    ("|avg_pool_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|", "#+#+#+0"),
]


def cell(text: str) -> Cell:
    return Cell.from_string(text)


# The cell value -------------------------------------------------------------------------


def test_every_cell_round_trips_through_its_string_and_its_json() -> None:
    cells = all_cells()
    assert len(cells) == len(set(cells)) == 5**6
    for c in cells:
        text = c.to_string()
        assert Cell.from_string(text) == c
        assert parse_architecture(text) == c
    for c in cells[::97]:
        assert Cell.from_json(c.to_json()) == c
        assert parse_architecture(c.to_json(indent=2)) == c
    assert str(cell(BENCHMARK_EXAMPLE)) == BENCHMARK_EXAMPLE


def test_json_is_compact_sorted_and_names_the_kind() -> None:
    c = cell(BENCHMARK_EXAMPLE)
    text = c.to_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert json.loads(text) == {"cell": BENCHMARK_EXAMPLE, "kind": "nb201", "schema": 1}
    assert hash(c) == hash(cell(BENCHMARK_EXAMPLE)) and c.kind == "nb201"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "<string>"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "<string>"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|+|none~0|", "<string>"),
        ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1"),
        ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", "node 2"),
        ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|none~3|", "node 3"),
        ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "edge 1<-0"),
        ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "edge 2<-1"),
        ("|none~0|+|none~0|none|+|none~0|none~1|none~2|", "edge 2<-1"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~02|", "edge 3<-2"),
        ('{"cell": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "kind": "banks", "schema": 1}', "kind"),
        ('{"cell": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "kind": "nb201"}', "<root>"),
        ('{"cell": "x", "kind": "nb201", "schema": 1, "extra": 0}', "<root>"),
        ('{"cell": ', "<json>"),
    ],
)
def test_malformed_cells_are_refused_with_one_line_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(InvalidCell) as info:
        parse_architecture(text)
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert "\n" not in str(info.value) and field in str(info.value)


def test_a_cell_refuses_unknown_ops_and_wrong_lengths() -> None:
    with pytest.raises(InvalidCell, match="edge 3<-1"):
        Cell(("none", "none", "none", "none", "conv", "none"))  # type: ignore[arg-type]
    with pytest.raises(InvalidCell, match="ops"):
        Cell(("none",) * 5)  # type: ignore[arg-type]
    with pytest.raises(InvalidCell, match="<space>"):
        parse_architecture(BENCHMARK_EXAMPLE, space=object())


def test_num_ops_and_depth_count_only_input_to_output_paths() -> None:
    example = cell(BENCHMARK_EXAMPLE)
    assert (example.num_ops, example.depth) == (6, 2)
    dead = cell("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|")
    assert (dead.num_ops, dead.depth, dead.live_edges) == (1, 0, (3,))
    assert cell("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|").depth == 0
    chain = cell("|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|avg_pool_3x3~2|")
    assert (chain.num_ops, chain.depth) == (3, 2)
    assert chain.network_depth(stages=3, cells_per_stage=5) == 1 + 15 * 2 + 4 + 1


def test_describe_draws_every_node_and_marks_unused_edges() -> None:
    lines = NB201.describe(cell("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|skip_connect~1|none~2|"))
    assert lines[1] == "node 0 = input"
    assert lines[2] == "node 1 = nor_conv_3x3(node 0)"
    assert lines[3] == "node 2 = 0   (unused: nor_conv_1x1(node 0))"
    assert lines[4] == "node 3 = avg_pool_3x3(node 0) + skip_connect(node 1)   <- output"


# Canonical forms ------------------------------------------------------------------------


def test_canonical_forms_give_the_benchmarks_6466_distinct_cells() -> None:
    hashes = {c.hash for c in all_cells()}
    assert len(hashes) == 6466
    representatives = canonical_representatives()
    assert len(representatives) == 6466
    assert {c.hash for c in representatives} == hashes
    assert all(c.representative() == c for c in representatives)
    assert representatives[0] == cell("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    for c in all_cells()[::97]:
        assert c.representative().hash == c.hash


def test_function_forms_partition_the_cells_into_5044_classes() -> None:
    # Cells whose networks compute the same function; the benchmark's classes differ (see cell.py).
    assert len({c.function_form for c in all_cells()}) == 5044


def test_benchmark_unique_strings_are_reproduced_and_give_its_6466_classes() -> None:
    for architecture, unique in BENCHMARK_ROWS:
        assert benchmark_unique_string(cell(architecture)) == unique
    assert len({benchmark_unique_string(c) for c in all_cells()}) == 6466


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        (
            "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|",
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
            "nodes 1 and 2 never reach the output",
        ),
        (
            "|none~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
            "node 1 is zero, so node 2 is too",
        ),
        (
            "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|avg_pool_3x3~1|skip_connect~2|",
            "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|avg_pool_3x3~2|",
            "nodes 1 and 2 swapped",
        ),
        (
            "|nor_conv_3x3~0|+|skip_connect~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|",
            "|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|avg_pool_3x3~1|none~2|",
            "pooling a sum is summing the pools",
        ),
        (
            "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_3x3~2|",
            "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|",
            "skips are identities",
        ),
        (
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|skip_connect~2|",
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
            "the benchmark splits these: #+#+#+0 and #+#+0",
        ),
    ],
)
def test_equivalent_cells_share_a_function_form(a: str, b: str, why: str) -> None:
    assert cell(a) != cell(b)
    assert cell(a).function_form == cell(b).function_form, why
    assert cell_cost(cell(a), space=TINY) == cell_cost(cell(b), space=TINY)


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        (
            "|nor_conv_1x1~0|+|avg_pool_3x3~0|skip_connect~1|+|avg_pool_3x3~0|skip_connect~1|skip_connect~2|",
            "|skip_connect~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
            "one conv reached twice is not two convs (the benchmark merges these)",
        ),
        (
            "|skip_connect~0|+|none~0|none~1|+|skip_connect~0|skip_connect~1|none~2|",
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
            "2x is not x",
        ),
        (
            "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|",
            "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|avg_pool_3x3~1|none~2|",
            "a conv does not commute with a pool",
        ),
        (
            "|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|",
            "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|",
            "different kernels",
        ),
    ],
)
def test_different_functions_get_different_function_forms(a: str, b: str, why: str) -> None:
    assert cell(a).function_form != cell(b).function_form, why


def test_cells_of_one_class_have_the_same_convs_and_depth() -> None:
    seen: dict[str, tuple[Counter[str], int]] = {}
    for c in all_cells():
        convs = Counter(c.ops[e] for e in c.live_edges if c.ops[e] in CONV_OPS)
        assert seen.setdefault(c.function_form, (convs, c.depth)) == (convs, c.depth), c


def _equal_weights(source: NB201Net, target: NB201Net, edge_map: dict[int, int]) -> None:
    """Give `target` `source`'s weights, conv edge e of source going to edge edge_map[e] of target."""
    target.stem.load_state_dict(source.stem.state_dict())
    target.reductions.load_state_dict(source.reductions.state_dict())
    target.head.load_state_dict(source.head.state_dict())
    for a, b in zip(source.cells, target.cells):
        for e, module in a.edges.items():
            b.edges[str(edge_map[int(e)])].load_state_dict(module.state_dict())


@pytest.mark.parametrize(
    ("a", "b", "edge_map"),
    [
        (
            "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|avg_pool_3x3~1|skip_connect~2|",
            "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|avg_pool_3x3~2|",
            {0: 1, 1: 0},
        ),
        (
            "|nor_conv_3x3~0|+|skip_connect~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|",
            "|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|avg_pool_3x3~1|none~2|",
            {0: 0},
        ),
    ],
)
def test_cells_with_one_hash_compute_one_function(a: str, b: str, edge_map: dict[int, int]) -> None:
    torch.manual_seed(0)
    first, second = build_model(cell(a), space=TINY), build_model(cell(b), space=TINY)
    _equal_weights(first, second, edge_map)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(first.eval()(x), second.eval()(x), atol=1e-5)


# Sampling ----------------------------------------------------------------------------


def test_sample_is_uniform_over_the_distinct_cells_and_a_pure_function_of_the_generator() -> None:
    cells = [sample(TINY, np.random.default_rng(seed)) for seed in range(3)]
    assert cells == [sample(TINY, np.random.default_rng(seed)) for seed in range(3)]
    rng = np.random.default_rng(0)
    drawn = [sample(TINY, rng) for _ in range(6466)]
    assert all(c == c.representative() for c in drawn)
    counts = Counter(c.hash for c in drawn)
    # About 1 - 1/e of the 6,466 classes show up in 6,466 uniform draws (4,087 expected).
    assert 3950 < len(counts) < 4220 and max(counts.values()) <= 8


@pytest.mark.parametrize("p", [0.0, 0.05, 0.3, 1.0])
def test_perturb_always_changes_the_function(p: float) -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        c = sample(TINY, rng)
        changed = perturb(c, TINY, rng, p)
        assert changed.hash != c.hash and changed == changed.representative()
    c = cell(BENCHMARK_EXAMPLE)
    assert perturb(c, TINY, np.random.default_rng(5), p) == perturb(c, TINY, np.random.default_rng(5), p)
    with pytest.raises(ValueError, match="p must lie"):
        perturb(c, TINY, rng, 1.5)


# The space -----------------------------------------------------------------------------


def test_space_round_trips_through_a_dict_that_names_its_kind() -> None:
    for space in PRESETS.values():
        data = space.to_dict()
        assert data["kind"] == "nb201" and space.kind == "nb201"
        assert CellSpace.from_dict(json.loads(json.dumps(data))) == space
        assert NB201.space_from_dict(data) == space
    assert get_preset("nb201") == CellSpace(channels=16, cells_per_stage=5)
    assert get_preset("nb201").positions == 15 and get_preset("nb201").stage_channels == (16, 32, 64)


@pytest.mark.parametrize(
    "data",
    [
        {"name": "x", "width": 3},
        {"kind": "banks", "name": "x"},
        {"channels": 0},
        {"cells_per_stage": -1},
        {"stem_kernel": 4},
        {"channels": 1.5},
    ],
)
def test_bad_spaces_are_refused_in_one_line(data: dict) -> None:
    with pytest.raises(InvalidCellSpace) as info:
        CellSpace.from_dict(data)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_get_preset_lists_the_known_names() -> None:
    with pytest.raises(InvalidCellSpace, match="nb201-tiny"):
        get_preset("nope")


def test_cell_and_space_modules_import_neither_torch_nor_numpy() -> None:
    code = (
        "import sys, engine.nb201.cell, engine.nb201.space\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# Networks ------------------------------------------------------------------------------


@pytest.mark.parametrize("half", [0, 1])
def test_every_network_builds_and_runs_forward(half: int) -> None:
    """All 15,625 cells through the forward function, and a sample through derived networks.

    A network reads only a cell's live edges and their ops, so the 9,445 distinct
    `cell.live()` values are every network there is; running those through the
    weight-sharing SMASH network (no HyperNet, under 1 ms each) covers all 15,625
    cells. Building a derived network costs more (~2.5 ms), so a random 300 do. Two
    halves, so that the suite's two workers can share the work.
    """
    networks = sorted({c.live() for c in all_cells()}, key=str)
    assert len(networks) == 9445
    assert all(c.live().live_edges == c.live_edges for c in all_cells())
    torch.manual_seed(0)
    net = NB201Smash(TINY, num_classes=5, weights="shared").eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for c in networks[half::2]:
            out = net(x, c)
            assert out.shape == (2, 5) and bool(torch.isfinite(out).all()), c
        rng = np.random.default_rng(half)
        for _ in range(150):
            c = sample(TINY, rng)
            out = build_model(c, 5, 3, TINY).eval()(x)
            assert out.shape == (2, 5) and bool(torch.isfinite(out).all()), c


def _briefly_trained(weights: str, steps: int = 3) -> NB201Smash:
    """An NB201Smash whose weights and BN statistics are no longer at their init."""
    torch.manual_seed(0)
    net = NB201Smash(TINY, weights=weights)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
        loss = F.cross_entropy(net(x, sample(TINY, rng)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


@pytest.mark.parametrize("weights", ["hypernet", "shared"])
def test_derived_network_equals_smash_network_for_fifty_random_cells(weights: str) -> None:
    net = _briefly_trained(weights)
    x = torch.randn(4, 3, 16, 16)
    rng = np.random.default_rng(7)
    for i in range(50):
        c = sample(TINY, rng)
        with torch.no_grad():
            generated = net.generate(c, generator=torch.Generator().manual_seed(i))
            expected = net(x, c, generated)
            derived = NB201.build_model(c, 10, 3, space=TINY).load_from_smash(net, generated).eval()
            assert (derived(x) - expected).abs().max().item() <= 1e-4, c


def test_load_from_smash_refuses_another_network_size() -> None:
    net = NB201Smash(TINY)
    c = cell(BENCHMARK_EXAMPLE)
    with pytest.raises(ValueError, match="cannot load"):
        build_model(c, 10, 3, PRESETS["nb201-small"]).load_from_smash(net, net.generate(c))


def test_generated_weights_depend_on_the_cell_and_the_position() -> None:
    space = CellSpace(name="two-per-stage", channels=8, cells_per_stage=2, stages=2)
    torch.manual_seed(0)
    net = NB201Smash(space)
    z = torch.randn(space.positions, len(EDGES))
    a = cell("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    b = cell("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    with torch.no_grad():
        wa, wb = net.generate(a, z=z), net.generate(b, z=z)
        assert torch.equal(wa[(0, 0)], net.generate(a, z=z)[(0, 0)])  # deterministic given z
        assert not torch.allclose(wa[(0, 0)], wa[(1, 0)], atol=1e-4)  # same stage, next position
        assert not torch.allclose(wa[(0, 0)], wb[(0, 0)], atol=1e-4)  # same slot, another cell
        assert not torch.allclose(wa[(0, 0)], net.generate(a, z=z + 1)[(0, 0)], atol=1e-4)
        assert all(abs(w.norm().item() - 1.0) < 1e-5 for w in wa.values())  # SMASH's weight norm
        assert set(wa) == {(p, e) for p in range(space.positions) for e in (0, 1, 4)}
    # Cells that differ only off every input-output path get the same weights.
    dead = cell("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|")
    alive = cell("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert torch.equal(net.encode(dead, z=z), net.encode(alive, z=z))


def test_smash_training_reduces_the_loss_with_finite_gradients() -> None:
    torch.manual_seed(0)
    net = NB201Smash(TINY, num_classes=4)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    held = [sample(TINY, np.random.default_rng(100 + i)) for i in range(6)]
    held = [c for c in held if c.function_form != "out=0"]

    def held_loss() -> float:
        with torch.no_grad():
            return sum(F.cross_entropy(net(x, c, generator=torch.Generator().manual_seed(0)), y).item() for c in held)

    before = held_loss()
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss = F.cross_entropy(net(x, sample(TINY, rng), generator=generator), y)
        optimizer.zero_grad()
        loss.backward()
        for p in net.parameters():
            assert p.grad is None or bool(torch.isfinite(p.grad).all())
        optimizer.step()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.hypernet_parameters())
    assert held_loss() < 0.8 * before


def test_parameter_groups_and_norms() -> None:
    for weights in ("hypernet", "shared"):
        net = NB201Smash(TINY, weights=weights)
        hyper, shared = net.hypernet_parameters(), net.shared_parameters()
        assert {id(p) for p in hyper}.isdisjoint(id(p) for p in shared)
        assert len(hyper) + len(shared) == len(list(net.parameters()))
        assert bool(hyper) == (weights == "hypernet")
        norms = net.shared_norms()
        # stem, 2 per reduction, one per (position, edge, conv op), head
        assert len(norms) == 1 + 2 * (TINY.stages - 1) + TINY.positions * len(EDGES) * len(CONV_OPS) + 1
    with pytest.raises(ValueError, match="weights"):
        NB201Smash(TINY, weights="nope")


def test_checkpoint_meta_rebuilds_the_same_network(tmp_path: Path) -> None:
    net = NB201.build_smash(TINY, 7, 1, HyperNetConfig(layers=(2, 2, 2)), weights="hypernet").eval()
    meta = json.loads(json.dumps(net.checkpoint_meta()))
    assert meta["kind"] == "nb201" and meta["weights"] == "hypernet"
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    again = smash_from_meta(meta)
    again.load_state_dict(torch.load(path, weights_only=True))
    again.eval()
    c, z = cell(BENCHMARK_EXAMPLE), torch.randn(TINY.positions, len(EDGES))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x, c, net.generate(c, z=z)), again(x, c, again.generate(c, z=z)))


def test_channels_last_layout_computes_the_same() -> None:
    torch.manual_seed(0)
    net = NB201Smash(TINY).eval()
    c, z = cell(BENCHMARK_EXAMPLE), torch.randn(TINY.positions, len(EDGES))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = net(x, c, net.generate(c, z=z))
        net.to(memory_format=torch.channels_last)  # as the training loop does
        got = net(x.to(memory_format=torch.channels_last), c, net.generate(c, z=z))
    assert torch.allclose(got, expected, atol=1e-5)


# Cost -------------------------------------------------------------------------------------


def test_cost_of_the_largest_benchmark_cell_matches_the_benchmark() -> None:
    largest = cell("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    cost = NB201.cost(largest, 10, 3, 32)
    assert abs(cost.params / 1e6 - 1.5313) < 0.02 * 1.5313  # NAS-Bench-201: 1.5313 MB of parameters
    assert cost.params == sum(p.numel() for p in build_model(largest).parameters())
    identity = NB201.cost(cell("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"), 10, 3, 32)
    assert 0 < identity.flops < cost.flops and identity.params < cost.params


# The kind object --------------------------------------------------------------------------


def test_the_kind_object_serves_every_loop_entry_point() -> None:
    assert NB201.name == "nb201"
    space = NB201.space_from_dict(TINY.to_dict())
    c = NB201.parse(BENCHMARK_EXAMPLE, space)
    assert NB201.parse(c.to_json()) == c
    rng = np.random.default_rng(0)
    assert isinstance(NB201.sample(space, rng, progress=0.3), Cell)
    assert NB201.perturb(c, space, rng, 0.05).hash != c.hash
    for weights in ("hypernet", "shared"):
        smash = NB201.build_smash(space, 10, 3, HyperNetConfig(), weights=weights).eval()
        with torch.no_grad():
            assert smash(torch.randn(2, 3, 8, 8), c).shape == (2, 10)
    assert NB201.build_model(c, 10, 3).space == PRESETS["nb201"]  # retraining uses the benchmark's network
    assert NB201.describe(c)[0] == f"cell {BENCHMARK_EXAMPLE}"


def test_equivalent_cells_share_every_stored_number() -> None:
    by_hash: dict[str, list[Cell]] = defaultdict(list)
    for c in all_cells():
        by_hash[c.function_form].append(c)
    rng = np.random.default_rng(0)
    classes = [cells for cells in by_hash.values() if len(cells) > 1]
    for index in rng.choice(len(classes), size=10, replace=False):
        first, other = classes[index][0], classes[index][-1]
        assert cell_cost(first, space=TINY, image_size=8) == cell_cost(other, space=TINY, image_size=8)
        assert first.depth == other.depth
