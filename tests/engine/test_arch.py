"""Architecture values: JSON round trip, hashing, validation, hand-built families."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from engine.arch import Architecture, InvalidArchitecture, validate
from engine.families import densenet_style, fractalnet_style, resnet_style
from engine.sampler import sample
from engine.space import OP_PATTERNS, PRESETS, InvalidSearchSpace, SearchSpace, get_preset

TINY = PRESETS["tiny"]


def test_presets_are_distinct_and_paper_matches_the_paper() -> None:
    paper = get_preset("paper")
    assert (paper.depth, paper.width, paper.base_units, paper.max_units) == (12, 4, 8, 64)
    assert (paper.bottleneck, paper.max_bottleneck, paper.depth_compression) == (4, 2, 2)
    assert paper.kernel_sizes == (3, 5, 7) and paper.max_dilation == 3 and max(paper.groups) == 8
    # The original's defaults run one conv per op; its `--var-op` is the paper-varop preset.
    assert not paper.variable_ops
    varop = get_preset("paper-varop")
    assert varop.variable_ops and dataclasses.replace(varop, name="paper", variable_ops=False) == paper
    rng = np.random.default_rng(0)
    assert {op.active for _, _, op in sample(paper, rng).ops()} == {OP_PATTERNS[0]}
    assert len({op.active for _, _, op in sample(varop, rng).ops()}) > 1
    assert get_preset("tiny").block_widths < get_preset("small").block_widths < paper.block_widths
    with pytest.raises(InvalidSearchSpace, match="unknown preset 'huge'"):
        get_preset("huge")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"groups": (1, 3)}, "divide base_units"),
        ({"kernel_sizes": (3, 4)}, "odd"),
        ({"max_units": 12}, "multiple of base_units"),
        ({"min_budget": 0.9, "max_budget": 0.5}, "min_budget"),
        ({"op_pattern_probs": (1.0, 0.0)}, "op_pattern_probs"),
    ],
)
def test_impossible_search_space_is_rejected(changes: dict, message: str) -> None:
    with pytest.raises(InvalidSearchSpace, match=message):
        SearchSpace(name="bad", **changes)


def test_search_space_dict_round_trip() -> None:
    for space in PRESETS.values():
        assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    with pytest.raises(InvalidSearchSpace, match="unknown search-space field"):
        SearchSpace.from_dict({"name": "x", "colour": "red"})


def test_json_round_trip_is_exact_and_hash_is_content_based() -> None:
    arch = sample(PRESETS["paper"], np.random.default_rng(7))
    text = arch.to_json()
    again = Architecture.from_json(text, PRESETS["paper"])
    assert again == arch and again.to_json() == text and again.hash == arch.hash
    assert hash(again) == hash(arch)  # usable as a dict key / set member
    pretty = Architecture.from_json(arch.to_json(indent=2))
    assert pretty.hash == arch.hash
    other = sample(PRESETS["paper"], np.random.default_rng(8))
    assert other.hash != arch.hash and len(arch.hash) == 64


def test_hash_is_identical_across_processes() -> None:
    here = [sample(space, np.random.default_rng(s)).hash for space in PRESETS.values() for s in range(5)]
    code = (
        "import numpy as np\n"
        "from engine.sampler import sample\n"
        "from engine.space import PRESETS\n"
        "print(' '.join(sample(sp, np.random.default_rng(s)).hash for sp in PRESETS.values() for s in range(5)))\n"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    ).stdout.split()
    assert there == here


def _mutate(arch: Architecture, path: list, value: object) -> str:
    data = arch.to_dict()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    "path, value, field, problem",
    [
        (["blocks", 0, "ops", 0, "reads"], [99], "blocks[0].ops[0].reads", "only banks"),
        (["blocks", 0, "ops", 0, "reads"], [], "blocks[0].ops[0].reads", "at least one"),
        (["blocks", 0, "ops", 0, "units"], 5, "blocks[0].ops[0].units", "multiple of the bank size"),
        (["blocks", 0, "ops", 0, "units"], "wide", "blocks[0].ops[0].units", "expected an integer"),
        (["blocks", 0, "ops", 0, "writes"], [], "blocks[0].ops[0].writes", "every chunk must land"),
        (["blocks", 0, "ops", 0, "convs"], [None, None, None, None], "blocks[0].ops[0].convs", "active pattern"),
        (["blocks", 0, "ops", 0, "convs", 0, "kernel"], [4, 3], "blocks[0].ops[0].convs[0].kernel", "odd"),
        (["blocks", 0, "ops", 0, "convs", 0, "groups"], 3, "blocks[0].ops[0].convs[0].groups", "do not divide"),
        (["blocks", 1, "in_channels"], 7, "blocks[1].in_channels", "multiple of the bank size"),
        (["blocks", 1, "ops"], [], "blocks[1].ops", "at least one op"),
        (["blocks", 0, "colour"], "red", "blocks[0]", "unknown field 'colour'"),
        (["schema"], 99, "schema", "newer than this smash"),
        (["stem_kernel"], 4, "stem_kernel", "odd"),
    ],
)
def test_malformed_architecture_names_the_field(path: list, value: object, field: str, problem: str) -> None:
    text = _mutate(resnet_style(TINY), path, value)
    with pytest.raises(InvalidArchitecture) as info:
        Architecture.from_json(text)
    assert info.value.field == field
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_not_json_and_wrong_shapes() -> None:
    with pytest.raises(InvalidArchitecture, match="not valid JSON"):
        Architecture.from_json("{blocks: ")
    with pytest.raises(InvalidArchitecture, match="expected an object"):
        Architecture.from_json("[1, 2]")
    with pytest.raises(InvalidArchitecture, match="missing field 'blocks'"):
        Architecture.from_json('{"schema": 1, "stem_kernel": 3}')


def test_space_checks_reject_what_the_space_cannot_hold() -> None:
    paper_arch = resnet_style(PRESETS["paper"])
    validate(paper_arch)  # buildable on its own...
    with pytest.raises(InvalidArchitecture, match="bank_size"):
        validate(paper_arch, TINY)  # ...but its 64-channel banks do not fit the tiny space


def test_resnet_family_connectivity() -> None:
    for space in PRESETS.values():
        arch = resnet_style(space)
        for block in arch.blocks:
            assert block.num_banks == 1  # one residual stream
            for op in block.ops:
                assert op.reads == (0,) and op.writes == (0,)  # read it, add back into it
                # two stacked convs, or the 1x1 and one conv where ops have one conv
                assert op.active == ((True, True, False, False) if space.variable_ops else OP_PATTERNS[0])


def test_densenet_family_connectivity() -> None:
    for space in PRESETS.values():
        arch = densenet_style(space)
        for block in arch.blocks:
            filled = block.initial_banks
            assert len(block.ops) >= 2
            for op in block.ops:
                assert op.reads == tuple(range(filled))  # every filled bank
                assert op.writes == (filled,)  # one new bank
                filled += 1
            assert block.num_banks == filled


def test_fractalnet_family_connectivity() -> None:
    for space in PRESETS.values():
        arch = fractalnet_style(space)
        for block in arch.blocks:
            writers = {}
            for op in block.ops:
                for w in op.writes:
                    writers.setdefault(w, []).append(op)
            join = writers[1]
            assert len(join) == 2  # two columns summed into bank 1
            assert join[0].reads == (0,) and join[1].reads == (2,)  # the short and the long column
            assert writers[2][0].reads == (0,)


def test_depth_and_op_count() -> None:
    arch = resnet_style(TINY, ops_per_block=2)
    # stem + per block 2 x (1x1 + 2 convs) + 2 transitions + classifier
    assert arch.num_ops == 6
    assert arch.depth == 1 + 3 * 2 * 3 + 2 + 1
