"""Familiar architecture families written in the bank language, by hand.

They show that the search space expresses the classics exactly, and they make
handy baselines to retrain beside the searched architectures:

- ResNet: one bank per block; every op reads it and adds its output back into it
  (two stacked 3x3 convs per unit where the space has variable op bodies, else a
  bottleneck unit: the op's 1x1 and one 3x3).
- DenseNet(-BC): narrow banks; every op reads every filled bank and writes a new one.
- FractalNet: a join of a one-conv column and a two-op column, summed into one bank.
"""

from __future__ import annotations

from engine.arch import Architecture, Block, ConvSpec, Op, validate
from engine.space import SearchSpace

CONV3 = ConvSpec(kernel=(3, 3), dilation=(1, 1), groups=1)


def _wide_bank(space: SearchSpace, block: int) -> int:
    return max(space.bank_sizes_for_block(block))


def resnet_style(space: SearchSpace, ops_per_block: int = 3) -> Architecture:
    """Pre-activation residual blocks: read bank 0, two stacked 3x3 convs, add into bank 0.

    A space with one conv per op (`variable_ops=False`) cannot stack two; its units
    are the op's 1x1 and one 3x3, still added into bank 0.
    """
    convs = (CONV3, CONV3, None, None) if space.variable_ops else (CONV3, None, None, None)
    blocks = []
    for b in range(space.num_blocks):
        bank = _wide_bank(space, b)
        width = bank  # a single bank holds the whole residual stream
        op = Op(
            reads=(0,),
            writes=(0,),
            units=width,
            bottleneck=space.bottleneck_for(width, width),
            convs=convs,
        )
        count = max(1, min(ops_per_block, space.block_budgets[b] // width))
        blocks.append(Block(in_channels=width, bank_size=bank, ops=(op,) * count))
    return validate(Architecture(stem_kernel=space.stem_kernel, blocks=tuple(blocks)), space)


def densenet_style(space: SearchSpace, ops_per_block: int = 4) -> Architecture:
    """DenseNet-BC: every op reads all filled banks, a 4x bottleneck, one 3x3 conv, one new bank."""
    blocks = []
    for b in range(space.num_blocks):
        growth = space.base_units * (2 if 2 * space.base_units in space.bank_sizes_for_block(b) else 1)
        in_channels = space.block_inputs[b] // growth * growth
        filled = in_channels // growth
        ops: list[Op] = []
        budget = space.block_budgets[b]
        max_banks = space.block_widths[b] // growth
        while len(ops) < ops_per_block and filled < max_banks and budget >= filled * growth:
            reads = tuple(range(filled))
            ops.append(
                Op(
                    reads=reads,
                    writes=(filled,),
                    units=growth,
                    bottleneck=space.bottleneck_for(filled * growth, growth),
                    convs=(CONV3, None, None, None),
                )
            )
            budget -= filled * growth
            filled += 1
        blocks.append(Block(in_channels=in_channels, bank_size=growth, ops=tuple(ops)))
    return validate(Architecture(stem_kernel=space.stem_kernel, blocks=tuple(blocks)), space)


def fractalnet_style(space: SearchSpace) -> Architecture:
    """One fractal join per block: column 1 is one op (0 -> 1), column 2 two ops (0 -> 2 -> 1)."""
    blocks = []
    for b in range(space.num_blocks):
        bank = _wide_bank(space, b)
        while bank > space.base_units and 3 * bank > space.block_widths[b]:
            bank -= space.base_units
        ops = tuple(
            Op(
                reads=reads,
                writes=writes,
                units=bank,
                bottleneck=space.bottleneck_for(bank, bank),
                convs=(CONV3, None, None, None),
            )
            for reads, writes in (((0,), (1,)), ((0,), (2,)), ((2,), (1,)))
        )
        blocks.append(Block(in_channels=bank, bank_size=bank, ops=ops))
    return validate(Architecture(stem_kernel=space.stem_kernel, blocks=tuple(blocks)), space)


FAMILIES = {
    "resnet": resnet_style,
    "densenet": densenet_style,
    "fractalnet": fractalnet_style,
}
