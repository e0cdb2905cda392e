"""Random architectures and perturbations: pure functions of a space and a numpy Generator.

Per block the sampler draws a budget fraction and a bank size, then ops until the
block's read budget is spent (at least one op, so depth follows from the budget).
Per op it draws the number of reads and which filled banks, the units (biased
towards the width that was read), the number of writes (biased towards few) and which
banks (filled ones or the next empty ones, in order), the active op-body paths, and
per active conv its kernel size, dilation and groups.

Nothing here touches torch or any global random state: the same Generator state
gives the same architecture in every process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from engine.arch import Architecture, Block, ConvSpec, Op, validate
from engine.space import OP_PATTERNS, SamplingLimits, SearchSpace

FULL_SPACE = SamplingLimits()


def sample(space: SearchSpace, rng: np.random.Generator, limits: SamplingLimits = FULL_SPACE) -> Architecture:
    """A random architecture of `space`, within the annealed `limits`."""
    blocks = tuple(sample_block(space, b, rng, limits) for b in range(space.num_blocks))
    return Architecture(stem_kernel=space.stem_kernel, blocks=blocks)


def sample_block(
    space: SearchSpace, index: int, rng: np.random.Generator, limits: SamplingLimits = FULL_SPACE
) -> Block:
    """Budget fraction and bank size for block `index`, then ops until the budget is spent."""
    high = max(space.min_budget, min(space.max_budget, limits.max_budget))
    fraction = rng.uniform(space.min_budget, high)
    bank = int(rng.choice(space.bank_sizes_for_block(index)))
    in_channels = space.block_inputs[index] // bank * bank
    state = _BlockState(space, index, bank, in_channels // bank)
    budget = int(fraction * space.block_budgets[index])
    ops: list[Op] = []
    used = 0
    while not ops or budget - used >= bank:
        op = state.sample_op(rng, limits, max_reads=max(1, (budget - used) // bank))
        ops.append(op)
        used += len(op.reads) * bank
    return Block(in_channels=in_channels, bank_size=bank, ops=tuple(ops))


def sample_conv(
    space: SearchSpace, in_channels: int, units: int, rng: np.random.Generator, limits: SamplingLimits = FULL_SPACE
) -> ConvSpec:
    """Kernel and dilation per axis, and a group count that divides both widths."""
    kernels = [k for k in space.kernel_sizes if k <= limits.max_kernel] or [space.kernel_sizes[0]]
    kernel = (int(rng.choice(kernels)), int(rng.choice(kernels)))
    dilation = (int(rng.choice(space.dilations_for(kernel[0]))), int(rng.choice(space.dilations_for(kernel[1]))))
    groups = int(rng.choice(_legal_groups(space, in_channels, units)))
    return ConvSpec(kernel=kernel, dilation=dilation, groups=groups)


def perturb(
    arch: Architecture,
    space: SearchSpace,
    rng: np.random.Generator,
    p: float = 0.05,
    limits: SamplingLimits = FULL_SPACE,
) -> Architecture:
    """Resample each field of `arch` with probability `p`, then repair into a valid architecture.

    A resampled bank size redraws its whole block (every bank index would change
    meaning); otherwise reads, units, writes, op-body pattern and each conv's kernel,
    dilation and groups are resampled independently, ops may be dropped or inserted,
    and the block is repaired: reads of banks that no longer exist, widths that no
    longer fit, missing or out-of-order allocations, group counts that no longer
    divide, and reads over the block's budget.
    """
    validate(arch, space)
    blocks = []
    for index, block in enumerate(arch.blocks):
        if rng.random() < p:
            blocks.append(sample_block(space, index, rng, limits))
        else:
            blocks.append(_perturb_block(space, index, block, rng, p, limits))
    return validate(Architecture(stem_kernel=arch.stem_kernel, blocks=tuple(blocks)), space)


# Internals ------------------------------------------------------------------------------


def _legal_groups(space: SearchSpace, in_channels: int, units: int) -> list[int]:
    return [g for g in space.groups if in_channels % g == 0 and units % g == 0] or [1]


@dataclass
class _BlockState:
    """Bank bookkeeping while a block's ops are drawn or repaired."""

    space: SearchSpace
    index: int
    bank: int
    filled: int

    @property
    def max_banks(self) -> int:
        return self.space.block_widths[self.index] // self.bank

    @property
    def unit_choices(self) -> list[int]:
        most = min(self.space.max_units, self.max_banks * self.bank)
        return list(range(self.bank, most + 1, self.bank))

    def sample_reads(self, rng: np.random.Generator, max_reads: int) -> tuple[int, ...]:
        count = int(rng.integers(1, max(1, min(self.filled, max_reads)) + 1))
        return tuple(sorted(int(r) for r in rng.choice(self.filled, size=count, replace=False)))

    def sample_units(self, rng: np.random.Generator, read_channels: int) -> int:
        choices = np.array(self.unit_choices)
        distance = np.abs(choices - read_channels) / self.bank
        weights = 1.0 / (self.space.units_sharpness + distance)
        return int(rng.choice(choices, p=weights / weights.sum()))

    def sample_writes(self, rng: np.random.Generator, units: int) -> tuple[int, ...]:
        chunks = units // self.bank
        new_room = min(chunks, self.max_banks - self.filled)
        most = min(max(chunks, self.filled // 2), self.filled + new_room)
        counts = np.arange(chunks, most + 1)
        weights = np.exp(-(counts - chunks).astype(float))  # fewer writes are likelier
        count = int(rng.choice(counts, p=weights / weights.sum()))
        picks = rng.choice(self.filled + new_room, size=count, replace=False)
        return self.allocate(int(w) for w in picks)

    def allocate(self, picks: Iterable[int]) -> tuple[int, ...]:
        """Keep writes to filled banks; renumber new ones to the next empty banks, in order."""
        picks = list(picks)
        old = sorted(w for w in picks if w < self.filled)
        new = sum(1 for w in picks if w >= self.filled)
        return (*old, *range(self.filled, self.filled + new))

    def sample_op(self, rng: np.random.Generator, limits: SamplingLimits, max_reads: int) -> Op:
        reads = self.sample_reads(rng, max_reads)
        units = self.sample_units(rng, len(reads) * self.bank)
        writes = self.sample_writes(rng, units)
        pattern = _sample_pattern(self.space, rng)
        return self.finish_op(rng, limits, reads, writes, units, pattern, (None, None, None, None))

    def finish_op(
        self,
        rng: np.random.Generator,
        limits: SamplingLimits,
        reads: tuple[int, ...],
        writes: tuple[int, ...],
        units: int,
        pattern: tuple[bool, bool, bool, bool],
        old_convs: tuple[ConvSpec | None, ...],
    ) -> Op:
        """Derive the bottleneck, keep or draw each active conv, and advance the bank count."""
        bottleneck = self.space.bottleneck_for(len(reads) * self.bank, units)
        convs: list[ConvSpec | None] = []
        for slot, active in enumerate(pattern):
            if not active:
                convs.append(None)
                continue
            in_channels = bottleneck if slot in (0, 2) else units
            conv = old_convs[slot]
            if conv is None:
                conv = sample_conv(self.space, in_channels, units, rng, limits)
            elif in_channels % conv.groups or units % conv.groups:
                conv = ConvSpec(conv.kernel, conv.dilation, int(rng.choice(_legal_groups(self.space, in_channels, units))))
            convs.append(conv)
        self.filled = max(self.filled, max(writes) + 1)
        return Op(
            reads=reads,
            writes=writes,
            units=units,
            bottleneck=bottleneck,
            convs=(convs[0], convs[1], convs[2], convs[3]),
        )


def _sample_pattern(space: SearchSpace, rng: np.random.Generator) -> tuple[bool, bool, bool, bool]:
    if not space.variable_ops:
        return OP_PATTERNS[0]
    return OP_PATTERNS[int(rng.choice(len(OP_PATTERNS), p=np.array(space.op_pattern_probs)))]


def _perturb_block(
    space: SearchSpace, index: int, block: Block, rng: np.random.Generator, p: float, limits: SamplingLimits
) -> Block:
    state = _BlockState(space, index, block.bank_size, block.initial_banks)
    drafts: list[Op | None] = list(block.ops)
    if len(drafts) > 1 and rng.random() < p:
        del drafts[int(rng.integers(len(drafts)))]
    if rng.random() < p:
        drafts.insert(int(rng.integers(len(drafts) + 1)), None)  # None: a freshly drawn op
    budget = space.block_budgets[index]
    ops: list[Op] = []
    used = 0
    for draft in drafts:
        if ops and budget - used < block.bank_size:
            break  # the budget is spent: later ops are dropped
        max_reads = max(1, (budget - used) // block.bank_size)
        if draft is None:
            op = state.sample_op(rng, limits, max_reads)
        else:
            op = _perturb_op(state, draft, rng, p, limits, max_reads)
        ops.append(op)
        used += len(op.reads) * block.bank_size
    return Block(in_channels=block.in_channels, bank_size=block.bank_size, ops=tuple(ops))


def _perturb_op(
    state: _BlockState, draft: Op, rng: np.random.Generator, p: float, limits: SamplingLimits, max_reads: int
) -> Op:
    """Resample each field of `draft` with probability p and repair it against `state`."""
    reads = tuple(r for r in draft.reads if r < state.filled)
    if not reads or rng.random() < p:
        reads = state.sample_reads(rng, max_reads)
    elif len(reads) > max_reads:
        reads = tuple(sorted(int(r) for r in rng.choice(reads, size=max_reads, replace=False)))

    choices = state.unit_choices
    units = draft.units
    if rng.random() < p:
        units = state.sample_units(rng, len(reads) * state.bank)
    elif units not in choices:
        units = min(choices, key=lambda u: abs(u - units))

    if rng.random() < p:
        writes = state.sample_writes(rng, units)
    else:
        writes = _repair_writes(state, draft.writes, units, rng)

    pattern = _sample_pattern(state.space, rng) if rng.random() < p else draft.active
    convs: list[ConvSpec | None] = []
    for slot, active in enumerate(pattern):
        old = draft.convs[slot]
        if not active or old is None:
            convs.append(None)  # finish_op draws newly active convs
            continue
        fresh = sample_conv(state.space, units, units, rng, limits)
        kernel = fresh.kernel if rng.random() < p else old.kernel
        dilation = fresh.dilation if rng.random() < p else old.dilation
        dilation = tuple(  # a new kernel may not allow the old dilation
            d if d in state.space.dilations_for(k) else 1 for k, d in zip(kernel, dilation)
        )
        groups = fresh.groups if rng.random() < p else old.groups
        convs.append(ConvSpec(kernel=kernel, dilation=(dilation[0], dilation[1]), groups=groups))
    return state.finish_op(rng, limits, reads, writes, units, pattern, tuple(convs))


def _repair_writes(
    state: _BlockState, writes: tuple[int, ...], units: int, rng: np.random.Generator
) -> tuple[int, ...]:
    """Writes that land every chunk, allocate new banks in order and fit the block."""
    chunks = units // state.bank
    room = state.max_banks - state.filled
    kept = [w for w in writes if w < state.filled]
    new = min(sum(1 for w in writes if w >= state.filled), room)
    while len(kept) + new < chunks:
        if new < room:
            new += 1
        else:
            spare = [b for b in range(state.filled) if b not in kept]
            kept.append(int(rng.choice(spare)))
    return state.allocate([*kept, *range(state.filled, state.filled + new)])
