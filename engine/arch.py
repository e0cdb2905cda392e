"""Architectures as immutable, hashable, JSON round-trippable values.

An `Architecture` holds everything needed to build its network without the search
space: the stem kernel, and per block the input width, the bank size and the ops.
Each op reads banks, runs a 1x1 bottleneck and an op body of up to four convs, and
writes bank-sized chunks of its output into banks (allocating empty ones in order,
adding into filled ones).

`validate(arch)` checks that an architecture describes a network that can be built;
`validate(arch, space)` also checks that it lies inside a search space. Both raise
`InvalidArchitecture` naming the offending field, e.g. ``blocks[1].ops[3].reads``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from engine.space import OP_PATTERNS, SearchSpace

SCHEMA_VERSION = 1


class InvalidArchitecture(ValueError):
    """An architecture that is malformed or cannot be built; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid architecture: {field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class ConvSpec:
    """One conv of an op body."""

    kernel: tuple[int, int]  # (height, width), both odd
    dilation: tuple[int, int]  # (height, width)
    groups: int  # grouped conv; divides the conv's input and output channels

    def padding(self) -> tuple[int, int]:
        """'Same' padding for this odd kernel and dilation."""
        return ((self.kernel[0] - 1) * self.dilation[0] // 2, (self.kernel[1] - 1) * self.dilation[1] // 2)


@dataclass(frozen=True)
class Op:
    """One op of a block: read banks, 1x1 bottleneck, op body, write chunks to banks."""

    reads: tuple[int, ...]  # banks concatenated as input, ascending
    writes: tuple[int, ...]  # write j receives output chunk j modulo the number of chunks
    units: int  # output channels, a multiple of the block's bank size
    bottleneck: int  # output channels of the 1x1 conv
    convs: tuple[ConvSpec | None, ConvSpec | None, ConvSpec | None, ConvSpec | None]  # None: inactive

    @property
    def active(self) -> tuple[bool, bool, bool, bool]:
        return (
            self.convs[0] is not None,
            self.convs[1] is not None,
            self.convs[2] is not None,
            self.convs[3] is not None,
        )

    @property
    def body_depth(self) -> int:
        """Convs on the longest path through the op body."""
        return 2 if self.convs[1] is not None or self.convs[3] is not None else 1


@dataclass(frozen=True)
class Block:
    """One resolution stage: banks of `bank_size` channels and the ops that fill them."""

    in_channels: int  # stem / transition output, cut into the first in_channels // bank_size banks
    bank_size: int  # channels per bank
    ops: tuple[Op, ...]

    @property
    def initial_banks(self) -> int:
        return self.in_channels // self.bank_size

    @property
    def num_banks(self) -> int:
        """Banks after every op has run (allocations are sequential)."""
        banks = self.initial_banks
        for op in self.ops:
            banks = max(banks, max(op.writes, default=-1) + 1)
        return banks

    @property
    def out_channels(self) -> int:
        return self.num_banks * self.bank_size


@dataclass(frozen=True)
class Architecture:
    """A network of the SMASH search space, as a value."""

    stem_kernel: int  # odd kernel size of the stem conv
    blocks: tuple[Block, ...]

    # Derived numbers ---------------------------------------------------------------

    @property
    def num_ops(self) -> int:
        return sum(len(b.ops) for b in self.blocks)

    @property
    def depth(self) -> int:
        """Weighted layers on the longest input-to-output path (stem, 1x1s, convs, transitions, head)."""
        depth = 1  # stem
        for index, block in enumerate(self.blocks):
            bank_depth = [depth] * block.initial_banks
            for op in block.ops:
                through = max(bank_depth[r] for r in op.reads) + 1 + op.body_depth
                for w in op.writes:
                    if w == len(bank_depth):
                        bank_depth.append(through)
                    else:
                        bank_depth[w] = max(bank_depth[w], through)
            depth = max(bank_depth) + (1 if index < len(self.blocks) - 1 else 0)
        return depth + 1  # classifier

    def ops(self) -> Iterator[tuple[int, int, Op]]:
        """(block index, op index, op) for every op in network order."""
        for b, block in enumerate(self.blocks):
            for i, op in enumerate(block.ops):
                yield b, i, op

    # Serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "stem_kernel": self.stem_kernel,
            "blocks": [
                {
                    "in_channels": b.in_channels,
                    "bank_size": b.bank_size,
                    "ops": [_op_to_dict(op) for op in b.ops],
                }
                for b in self.blocks
            ],
        }

    def to_json(self, indent: int | None = None) -> str:
        if indent is None:
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @property
    def hash(self) -> str:
        """Canonical content hash: sha256 of the compact, key-sorted JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @staticmethod
    def from_json(text: str | bytes, space: SearchSpace | None = None) -> Architecture:
        """Parse and validate; malformed input raises InvalidArchitecture."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidArchitecture("<json>", f"not valid JSON ({exc})") from None
        return Architecture.from_dict(data, space)

    @staticmethod
    def from_dict(data: Any, space: SearchSpace | None = None) -> Architecture:
        """Build from parsed JSON, checking types, then `validate` the result."""
        arch = _parse_architecture(data)
        validate(arch, space)
        return arch


# JSON helpers ---------------------------------------------------------------------------


def _op_to_dict(op: Op) -> dict[str, Any]:
    return {
        "reads": list(op.reads),
        "writes": list(op.writes),
        "units": op.units,
        "bottleneck": op.bottleneck,
        "convs": [
            None
            if c is None
            else {"kernel": list(c.kernel), "dilation": list(c.dilation), "groups": c.groups}
            for c in op.convs
        ],
    }


def _expect_keys(data: Any, path: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidArchitecture(path or "<root>", f"expected an object, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise InvalidArchitecture(path or "<root>", f"missing field '{missing[0]}'")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise InvalidArchitecture(path or "<root>", f"unknown field '{unknown[0]}'")
    return data


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArchitecture(path, f"expected an integer, got {json.dumps(value)}")
    return value


def _int_list(value: Any, path: str, length: int | None = None) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise InvalidArchitecture(path, f"expected a list of integers, got {json.dumps(value)}")
    if length is not None and len(value) != length:
        raise InvalidArchitecture(path, f"expected {length} integers, got {len(value)}")
    return tuple(_int(v, f"{path}[{i}]") for i, v in enumerate(value))


def _parse_architecture(data: Any) -> Architecture:
    root = _expect_keys(data, "", ["schema", "stem_kernel", "blocks"])
    schema = _int(root["schema"], "schema")
    if schema > SCHEMA_VERSION:
        raise InvalidArchitecture(
            "schema", f"version {schema} is newer than this smash understands ({SCHEMA_VERSION})"
        )
    if schema < 1:
        raise InvalidArchitecture("schema", f"unknown version {schema}")
    if not isinstance(root["blocks"], list):
        raise InvalidArchitecture("blocks", "expected a list of blocks")
    blocks = []
    for b, block_data in enumerate(root["blocks"]):
        bpath = f"blocks[{b}]"
        bd = _expect_keys(block_data, bpath, ["in_channels", "bank_size", "ops"])
        if not isinstance(bd["ops"], list):
            raise InvalidArchitecture(f"{bpath}.ops", "expected a list of ops")
        ops = []
        for i, op_data in enumerate(bd["ops"]):
            opath = f"{bpath}.ops[{i}]"
            od = _expect_keys(op_data, opath, ["reads", "writes", "units", "bottleneck", "convs"])
            if not isinstance(od["convs"], list) or len(od["convs"]) != 4:
                raise InvalidArchitecture(f"{opath}.convs", "expected a list of 4 convs (null if inactive)")
            convs: list[ConvSpec | None] = []
            for c, conv_data in enumerate(od["convs"]):
                cpath = f"{opath}.convs[{c}]"
                if conv_data is None:
                    convs.append(None)
                    continue
                cd = _expect_keys(conv_data, cpath, ["kernel", "dilation", "groups"])
                kernel = _int_list(cd["kernel"], f"{cpath}.kernel", 2)
                dilation = _int_list(cd["dilation"], f"{cpath}.dilation", 2)
                convs.append(
                    ConvSpec(
                        kernel=(kernel[0], kernel[1]),
                        dilation=(dilation[0], dilation[1]),
                        groups=_int(cd["groups"], f"{cpath}.groups"),
                    )
                )
            ops.append(
                Op(
                    reads=_int_list(od["reads"], f"{opath}.reads"),
                    writes=_int_list(od["writes"], f"{opath}.writes"),
                    units=_int(od["units"], f"{opath}.units"),
                    bottleneck=_int(od["bottleneck"], f"{opath}.bottleneck"),
                    convs=(convs[0], convs[1], convs[2], convs[3]),
                )
            )
        blocks.append(
            Block(
                in_channels=_int(bd["in_channels"], f"{bpath}.in_channels"),
                bank_size=_int(bd["bank_size"], f"{bpath}.bank_size"),
                ops=tuple(ops),
            )
        )
    return Architecture(stem_kernel=_int(root["stem_kernel"], "stem_kernel"), blocks=tuple(blocks))


# Validation -----------------------------------------------------------------------------


def validate(arch: Architecture, space: SearchSpace | None = None) -> Architecture:
    """Check that `arch` can be built (and lies in `space` when given); return it.

    Raises:
        InvalidArchitecture: naming the first offending field.
    """
    if arch.stem_kernel < 1 or arch.stem_kernel % 2 == 0:
        raise InvalidArchitecture("stem_kernel", f"must be odd and positive, got {arch.stem_kernel}")
    if not arch.blocks:
        raise InvalidArchitecture("blocks", "an architecture needs at least one block")
    if space is not None and len(arch.blocks) != space.num_blocks:
        raise InvalidArchitecture(
            "blocks", f"has {len(arch.blocks)} blocks, search space '{space.name}' has {space.num_blocks}"
        )
    for b, block in enumerate(arch.blocks):
        _validate_block(block, f"blocks[{b}]")
        if space is not None:
            _validate_block_in_space(block, b, space, f"blocks[{b}]")
    return arch


def _validate_block(block: Block, path: str) -> None:
    bank = block.bank_size
    if bank < 1:
        raise InvalidArchitecture(f"{path}.bank_size", f"must be positive, got {bank}")
    if block.in_channels < bank or block.in_channels % bank:
        raise InvalidArchitecture(
            f"{path}.in_channels",
            f"{block.in_channels} is not a positive multiple of the bank size {bank}",
        )
    if not block.ops:
        raise InvalidArchitecture(f"{path}.ops", "a block needs at least one op")
    filled = block.initial_banks
    for i, op in enumerate(block.ops):
        opath = f"{path}.ops[{i}]"
        if not op.reads:
            raise InvalidArchitecture(f"{opath}.reads", "an op must read at least one bank")
        if list(op.reads) != sorted(set(op.reads)):
            raise InvalidArchitecture(f"{opath}.reads", f"must be ascending and unique, got {list(op.reads)}")
        bad = [r for r in op.reads if not 0 <= r < filled]
        if bad:
            raise InvalidArchitecture(
                f"{opath}.reads", f"reads bank {bad[0]} but only banks 0..{filled - 1} hold data"
            )
        if op.units < bank or op.units % bank:
            raise InvalidArchitecture(
                f"{opath}.units", f"{op.units} is not a positive multiple of the bank size {bank}"
            )
        chunks = op.units // bank
        if len(set(op.writes)) != len(op.writes):
            raise InvalidArchitecture(f"{opath}.writes", f"writes a bank twice: {list(op.writes)}")
        if len(op.writes) < chunks:
            raise InvalidArchitecture(
                f"{opath}.writes",
                f"{len(op.writes)} write(s) for {chunks} output chunk(s): every chunk must land in a bank",
            )
        if any(w < 0 for w in op.writes):
            raise InvalidArchitecture(f"{opath}.writes", "bank indices must be >= 0")
        new = sorted(w for w in op.writes if w >= filled)
        if new != list(range(filled, filled + len(new))):
            raise InvalidArchitecture(
                f"{opath}.writes",
                f"new banks must be allocated in order starting at bank {filled}, got {new}",
            )
        filled += len(new)
        if op.bottleneck < 1:
            raise InvalidArchitecture(f"{opath}.bottleneck", f"must be positive, got {op.bottleneck}")
        if op.active not in OP_PATTERNS:
            pattern = "".join("1" if a else "0" for a in op.active)
            raise InvalidArchitecture(
                f"{opath}.convs", f"active pattern {pattern} is not one of 1000, 1100, 1010, 1110, 1111"
            )
        for c, conv in enumerate(op.convs):
            if conv is None:
                continue
            cpath = f"{opath}.convs[{c}]"
            if any(k < 1 or k % 2 == 0 for k in conv.kernel):
                raise InvalidArchitecture(f"{cpath}.kernel", f"kernel sizes must be odd and positive, got {list(conv.kernel)}")
            if any(d < 1 for d in conv.dilation):
                raise InvalidArchitecture(f"{cpath}.dilation", f"must be >= 1, got {list(conv.dilation)}")
            in_channels = op.bottleneck if c in (0, 2) else op.units
            if conv.groups < 1 or in_channels % conv.groups or op.units % conv.groups:
                raise InvalidArchitecture(
                    f"{cpath}.groups",
                    f"{conv.groups} groups do not divide {in_channels} input and {op.units} output channels",
                )


def _validate_block_in_space(block: Block, b: int, space: SearchSpace, path: str) -> None:
    if block.bank_size not in space.bank_sizes_for_block(b):
        raise InvalidArchitecture(
            f"{path}.bank_size",
            f"{block.bank_size} is not one of {list(space.bank_sizes_for_block(b))}",
        )
    if block.in_channels > space.block_inputs[b]:
        raise InvalidArchitecture(
            f"{path}.in_channels", f"{block.in_channels} exceeds the space's {space.block_inputs[b]}"
        )
    if block.out_channels > space.block_widths[b]:
        raise InvalidArchitecture(
            f"{path}.ops",
            f"fills {block.num_banks} banks ({block.out_channels} channels), more than the space's {space.block_widths[b]}",
        )
    reads = sum(len(op.reads) for op in block.ops) * block.bank_size
    if reads > space.block_budgets[b]:
        raise InvalidArchitecture(
            f"{path}.ops", f"reads {reads} channels in total, over the block budget of {space.block_budgets[b]}"
        )
    for i, op in enumerate(block.ops):
        opath = f"{path}.ops[{i}]"
        if op.units > space.max_units:
            raise InvalidArchitecture(f"{opath}.units", f"{op.units} exceeds max_units {space.max_units}")
        if op.bottleneck % space.base_units or op.bottleneck > space.max_bottleneck_channels:
            raise InvalidArchitecture(
                f"{opath}.bottleneck",
                f"{op.bottleneck} must be a multiple of {space.base_units} and at most {space.max_bottleneck_channels}",
            )
        if not space.variable_ops and op.active != OP_PATTERNS[0]:
            raise InvalidArchitecture(f"{opath}.convs", "this space has single-conv ops only")
        for c, conv in enumerate(op.convs):
            if conv is None:
                continue
            cpath = f"{opath}.convs[{c}]"
            for k, d in zip(conv.kernel, conv.dilation):
                if k not in space.kernel_sizes:
                    raise InvalidArchitecture(f"{cpath}.kernel", f"{k} is not one of {list(space.kernel_sizes)}")
                if d not in space.dilations_for(k):
                    raise InvalidArchitecture(
                        f"{cpath}.dilation", f"{d} is not allowed with kernel {k} (allowed: {list(space.dilations_for(k))})"
                    )
            if conv.groups not in space.groups:
                raise InvalidArchitecture(f"{cpath}.groups", f"{conv.groups} is not one of {list(space.groups)}")
