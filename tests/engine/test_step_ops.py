"""The batched training step: the same function as the op-by-op one, in far fewer ops.

The HyperNet normalises all its weights together, reads every op's 1x1 weight out of
its output in one gather, and the SMASH network takes all slices of a shared body conv
together (engine/hypernet.py, engine/network.py); the encoding is built with a few
whole-array steps into one buffer (engine/encoding.py). These tests hold each of them
against a plain reference (the code they replaced, op by op) for values and
gradients, and bound the ops one training step dispatches, counted the way
`benchmarks/host_overhead.py` counts them.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from engine.arch import Architecture
from engine.encoding import EncodingLayout
from engine.families import densenet_style, fractalnet_style, resnet_style
from engine.hypernet import DenseTrunk, HyperNet, HyperNetConfig, joint_weight_norm, op_weights
from engine.network import (
    SmashNet,
    _conv_slice,
    _HeightDilatedConvBF16,
    _needs_fp32_weight_grad,
    forward_architecture,
)
from engine.sampler import sample
from engine.space import PRESETS, SamplingLimits
from engine.spaces import PRESETS as ALL_PRESETS
from engine.train import build_smash

TINY = PRESETS["tiny"]


class _Ops(TorchDispatchMode):
    """Counts aten ops as they reach the backend (forward, backward and optimizer alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _count(fn: Callable[[], Any]) -> collections.Counter[str]:
    counter = _Ops()
    with counter:
        fn()
    return counter.ops


# Reference implementations: the code the batched paths replaced, one op at a time --------


def _reference_encode(layout: EncodingLayout, arch: Architecture) -> torch.Tensor:
    s = layout.space
    spans = layout.columns(arch)
    c = np.full((layout.channels, layout.rows, spans[-1].start + spans[-1].count), -1.0, dtype=np.float32)
    f = layout.fields
    n = s.base_units
    span_iter = iter(spans)
    for b, block in enumerate(arch.blocks):
        for op in block.ops:
            span = next(span_iter)
            rows = -(-op.bottleneck // layout.row_width)
            region = c[:, :rows, span.start : span.start + span.count]

            def put(name: str, index: int, region: np.ndarray = region) -> None:
                region[f[name][0] + index] = 1.0

            for r in op.reads:
                put("reads", r)
            for w in op.writes:
                put("writes", w)
            put("block", b)
            put("units", op.units // n - 1)
            put("bank", block.bank_size // n - 1)
            for r in range(rows):
                region[f["row"][0] + r, r, :] = 1.0
            for col in range(span.count):
                first = col * layout.column_width
                last = min(first + layout.column_width, span.in_channels) - 1
                for bank_pos in range(first // block.bank_size, last // block.bank_size + 1):
                    region[f["source"][0] + op.reads[bank_pos], :, col] = 1.0
            for slot, conv in enumerate(op.convs):
                if conv is None:
                    continue
                put(f"conv{slot}.active", 0)
                put(f"conv{slot}.kernel_h", s.kernel_sizes.index(conv.kernel[0]))
                put(f"conv{slot}.kernel_w", s.kernel_sizes.index(conv.kernel[1]))
                put(f"conv{slot}.dilation_h", conv.dilation[0] - 1)
                put(f"conv{slot}.dilation_w", conv.dilation[1] - 1)
                put(f"conv{slot}.groups", s.groups.index(conv.groups))
    return torch.from_numpy(c)


def _reference_matrix(hypernet: HyperNet, c: torch.Tensor) -> torch.Tensor:
    """Each WNConv2d's own forward (one weight norm per conv), LeakyReLU over the whole trunk."""
    slope = hypernet.config.negative_slope
    x = torch.cat([c, hypernet.stem(c)], 1)
    for stage, dense in enumerate(hypernet.stages):
        for conv in dense:
            x = torch.cat([x, conv(F.leaky_relu(x, slope))], 1)
        if stage < len(hypernet.reducers):
            x = hypernet.reducers[stage](F.leaky_relu(x, slope))
    out = hypernet.out(F.leaky_relu(x, slope))
    r, cw = hypernet.layout.row_width, hypernet.layout.column_width
    rows, columns = out.shape[-2:]
    return out.view(r, cw, rows, columns).permute(2, 0, 3, 1).reshape(rows * r, columns * cw)


class _ReferenceSource:
    """SmashNet's layers with every body conv sliced on its own (the code before `_SharedSlices`)."""

    def __init__(self, net: SmashNet, weights: list[torch.Tensor]) -> None:
        self.net = net
        self.weights = weights

    def stem(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        return F.conv2d(x, self.net.stem_weight[:channels], padding=self.net.space.stem_kernel // 2)

    def bottleneck(self, op_index: int, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weights[op_index])

    def conv(self, block: int, op_index: int, slot: int, x: torch.Tensor, op) -> torch.Tensor:  # type: ignore[no-untyped-def]
        spec = op.convs[slot]
        weight = _conv_slice(self.net.body[4 * block + slot], spec, x.shape[1], op.units)
        if _needs_fp32_weight_grad(spec, x.device):
            return _HeightDilatedConvBF16.apply(x, weight, spec.padding(), spec.dilation, spec.groups)
        return F.conv2d(x, weight, padding=spec.padding(), dilation=spec.dilation, groups=spec.groups)

    def transition(self, block: int, x: torch.Tensor, channels: int) -> torch.Tensor:
        from engine.network import _SmashSource

        return _SmashSource.transition(self, block, x, channels)  # type: ignore[arg-type]

    def head(self, x: torch.Tensor) -> torch.Tensor:
        from engine.network import _SmashSource

        return _SmashSource.head(self, x)  # type: ignore[arg-type]


def _reference_logits(net: SmashNet, x: torch.Tensor, arch: Architecture, z: torch.Tensor) -> torch.Tensor:
    c = _reference_encode(net.layout, arch)
    conditioning = torch.cat([z.reshape(1, *c.shape[1:]), c], 0).unsqueeze(0)
    matrix = _reference_matrix(net.hypernet, conditioning)
    weights = op_weights(matrix, net.layout.columns(arch), net.layout.column_width)
    return forward_architecture(x, arch, _ReferenceSource(net, weights))


def _archs(space, count: int, seed: int = 0) -> list[Architecture]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return [sample(space, rng) for _ in range(count)] + [f(space) for f in (resnet_style, densenet_style, fractalnet_style)]


# The batched paths against the references ----------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "small", "paper", "paper-varop"])
def test_encoding_and_plan_match_the_field_by_field_encoding(preset: str) -> None:
    layout = EncodingLayout(PRESETS[preset])
    for arch in _archs(PRESETS[preset], 40, seed=7):
        want = _reference_encode(layout, arch)
        assert torch.equal(layout.encode(arch), want)
        plan = layout.plan(arch)
        c, positions, counts = plan.unpack(plan.buffer)
        assert torch.equal(c.float(), want)
        assert counts.tolist() == [o * i for o, i in plan.weight_shapes]
        assert positions.shape[0] == plan.num_weights


def test_joint_weight_norm_has_the_gradient_of_one_norm_per_weight() -> None:
    torch.manual_seed(0)
    shapes = [(5, 4, 3, 3), (7, 3, 1, 1), (2, 9, 3, 3)]
    weights = [torch.randn(s, dtype=torch.double, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(lambda *w: tuple(joint_weight_norm(list(w))), weights)
    grads = [torch.randn(s) for s in shapes]
    for dtype in (None, torch.bfloat16):
        got_w = [torch.randn(s).requires_grad_() for s in shapes]
        want_w = [w.detach().clone().requires_grad_() for w in got_w]
        got = joint_weight_norm(got_w, dtype)
        want = [w / w.norm() if dtype is None else (w / w.norm()).to(dtype) for w in want_w]
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and torch.allclose(a.float(), b.float(), atol=1e-6)
        torch.autograd.backward(got, [g.to(got[0].dtype) for g in grads])
        torch.autograd.backward(want, [g.to(want[0].dtype) for g in grads])
        for a, b in zip(got_w, want_w):
            assert a.grad.dtype == torch.float32 and torch.allclose(a.grad, b.grad, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "paper-varop"])
def test_smash_network_computes_the_reference_function_and_gradients(preset: str) -> None:
    """Logits and every parameter's gradient, against the op-by-op code, in fp32."""
    space = PRESETS[preset]
    torch.manual_seed(0)
    net = SmashNet(space).train()
    x = torch.randn(3, 3, 16, 16)
    y = torch.randint(0, 10, (3,))
    for arch in _archs(space, 3, seed=11):
        rows, columns = net.layout.plan(arch).c_shape[1:]
        z = torch.randn(1, rows, columns)
        got = net(x, arch, net.generate(arch, z=z))
        F.cross_entropy(got, y).backward()
        got_grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
        net.zero_grad(set_to_none=True)
        want = _reference_logits(net, x, arch, z)
        F.cross_entropy(want, y).backward()
        want_grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
        net.zero_grad(set_to_none=True)
        assert (got - want).abs().max() <= 1e-4
        assert got_grads.keys() == want_grads.keys()
        for name, grad in want_grads.items():
            scale = grad.abs().max().clamp_min(1e-12)
            assert (got_grads[name] - grad).abs().max() / scale <= 1e-3, name


def test_bf16_channels_last_step_stays_close_to_the_reference() -> None:
    """Under bf16 autocast the batched path rounds differently, not differently by more."""
    torch.manual_seed(0)
    net = SmashNet(TINY).to(memory_format=torch.channels_last).train()
    x = torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    for arch in _archs(TINY, 3, seed=3):
        rows, columns = net.layout.plan(arch).c_shape[1:]
        z = torch.randn(1, rows, columns)
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            got = net(x, arch, net.generate(arch, z=z)).float()
            want = _reference_logits(net, x, arch, z).float()
        assert ((got - want).norm() / want.norm()).item() < 0.05


def test_the_z_channel_is_what_torch_randn_draws() -> None:
    net = SmashNet(TINY)
    arch = resnet_style(TINY)
    c = EncodingLayout(TINY).encode(arch)
    got = net.encode(arch, generator=torch.Generator().manual_seed(3))
    z = torch.randn(1, *c.shape[1:], generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, torch.cat([z, c], 0).unsqueeze(0))


# Op counts --------------------------------------------------------------------------------


def _tiny_step() -> tuple[SmashNet, Callable[[], None]]:
    torch.manual_seed(0)
    net = SmashNet(TINY).to(memory_format=torch.channels_last).train()
    arch = sample(TINY, np.random.default_rng(4), SamplingLimits.annealed(TINY, 1.0))
    x = torch.randn(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(1, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:  # train_step without the optimizer, in fp32: machine-independent counts
        logits = net(x, arch, net.generate(arch, generator=generator))
        F.cross_entropy(logits, y).backward()
        net.zero_grad(set_to_none=True)

    assert arch.num_ops == 8
    return net, step


def test_a_tiny_training_step_dispatches_a_bounded_number_of_ops() -> None:
    """Generate, forward and backward of an 8-op architecture (28 body convs).

    Measured: 1,294 ops op by op (the code before the batched paths), 735 now. A
    regression that brings back one weight norm per HyperNet conv (about 13 ops each, 26
    convs) or per op, or slicing per body conv, lands well above the bound.
    """
    _, step = _tiny_step()
    step()  # the first step initialises nothing that later steps skip, but warm up anyway
    ops = _count(step)
    total = sum(ops.values())
    assert total <= 800, (total, ops.most_common(12))
    assert ops["linalg_vector_norm"] == 0  # no norm per weight: the norms are multi-tensor ops
    assert ops["slice_backward"] <= 12  # stem, transitions, BatchNorms, head: none per op or body conv
    assert ops["_foreach_norm"] >= 1 and ops["segment_reduce"] == 1


def test_flops_are_counted_on_the_meta_device() -> None:
    """The benchmarks count work with a SMASH network on the meta device, where autocast is unknown."""
    with torch.device("meta"):
        net = SmashNet(TINY)
    arch = resnet_style(TINY)
    weights = net.generate(arch)
    assert [tuple(w.shape) for w in weights] == [(o, i, 1, 1) for o, i in net.layout.plan(arch).weight_shapes]
    logits = net(torch.empty(2, 3, 32, 32, device="meta"), arch, weights)
    F.cross_entropy(logits, torch.zeros(2, dtype=torch.long, device="meta")).backward()
    assert logits.shape == (2, 10)


def test_a_plan_prepared_ahead_generates_the_same_weights() -> None:
    torch.manual_seed(0)
    net = SmashNet(TINY)
    arch = densenet_style(TINY)
    plan = net.plan(arch)
    ahead = net.generate(arch, generator=torch.Generator().manual_seed(1), plan=plan)
    now = net.generate(arch, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(ahead, now))


def _trunk_layer_by_layer(trunk: DenseTrunk, c: torch.Tensor) -> torch.Tensor:
    """The trunk as its layers' own forwards compute it: one weight norm per conv."""
    slope = trunk.config.negative_slope
    x = torch.cat([c, trunk.stem(c)], 1)
    for stage, dense in enumerate(trunk.stages):
        for conv in dense:
            x = torch.cat([x, conv(F.leaky_relu(x, slope))], 1)
        if stage < len(trunk.reducers):
            x = trunk.reducers[stage](F.leaky_relu(x, slope))
    return trunk.out(F.leaky_relu(x, slope))


@pytest.mark.parametrize("kind", ["banks", "nb201"])
def test_both_hypernets_trunks_compute_their_layers_function_and_gradients(kind: str) -> None:
    """The few-op trunk (joint norms, fused activations) that both space kinds share."""
    torch.manual_seed(0)
    if kind == "banks":
        trunk: DenseTrunk = SmashNet(PRESETS["tiny"]).hypernet
    else:
        trunk = build_smash(ALL_PRESETS["nb201-tiny"], 10, 3, HyperNetConfig(), "cpu").hypernet
    channels = trunk.stem.in_channels
    c = torch.randn(1, channels, 5, 6)
    got = trunk.features(c)
    got.square().sum().backward()
    got_grads = [p.grad.clone() for p in trunk.parameters()]
    trunk.zero_grad(set_to_none=True)
    want = _trunk_layer_by_layer(trunk, c)
    want.square().sum().backward()
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    for got_grad, p in zip(got_grads, trunk.parameters(), strict=True):
        assert (got_grad - p.grad).abs().max() <= 1e-4 * p.grad.abs().max().clamp_min(1e-12)
