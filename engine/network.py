"""The SMASH network and the derived network: one wiring, two sources of weights.

`forward_architecture` is the only place that knows how an architecture computes:
stem, banks, reads, bottleneck, op body, chunked writes, transitions, head. The SMASH
network feeds it generated 1x1 weights and slices of shared, freely learned weights;
the derived network (`build_model`) feeds it its own ordinary `nn.Conv2d` /
`nn.BatchNorm2d` / `nn.Linear` modules. Because both run the same function, the
network that is scored is the network that is retrained; `DerivedNet.load_from_smash`
copies the SMASH weights over and the two then agree to float precision.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from engine.arch import Architecture, ConvSpec, Op
from engine.device import draw_z
from engine.encoding import EncodingLayout, GenerationPlan
from engine.hypernet import HyperNet, HyperNetConfig, autocast_dtype, gather_op_weights
from engine.space import SearchSpace


class WeightSource(Protocol):
    """What `forward_architecture` needs from a network: its layers, by position."""

    def stem(self, x: torch.Tensor, channels: int) -> torch.Tensor: ...

    def bottleneck(self, op_index: int, x: torch.Tensor) -> torch.Tensor: ...

    def conv(self, block: int, op_index: int, slot: int, x: torch.Tensor, op: Op) -> torch.Tensor: ...

    def transition(self, block: int, x: torch.Tensor, channels: int) -> torch.Tensor: ...

    def head(self, x: torch.Tensor) -> torch.Tensor: ...


def forward_architecture(x: torch.Tensor, arch: Architecture, source: WeightSource) -> torch.Tensor:
    """Run `arch` on images x (B, C, H, W) with the layers of `source`; returns logits (B, classes)."""
    x = F.relu(source.stem(x, arch.blocks[0].in_channels), inplace=True)
    op_index = 0
    last = len(arch.blocks) - 1
    for b, block in enumerate(arch.blocks):
        banks = list(x.split(block.bank_size, dim=1))
        for op in block.ops:
            inp = banks[op.reads[0]] if len(op.reads) == 1 else torch.cat([banks[r] for r in op.reads], 1)
            h = F.relu(source.bottleneck(op_index, inp), inplace=True)
            out = _op_body(b, op_index, op, h, source)
            chunks = out.split(block.bank_size, dim=1) if op.units > block.bank_size else (out,)
            for j, w in enumerate(op.writes):
                chunk = chunks[j % len(chunks)]
                if w < len(banks):
                    banks[w] = banks[w] + chunk  # a filled bank accumulates
                else:
                    banks.append(chunk)  # writes allocate new banks in order
            op_index += 1
        x = banks[0] if len(banks) == 1 else torch.cat(banks, 1)
        if b < last:
            x = source.transition(b, x, arch.blocks[b + 1].in_channels)
    return source.head(x)


def _op_body(block: int, op_index: int, op: Op, h: torch.Tensor, source: WeightSource) -> torch.Tensor:
    """Path A (conv0 -> conv1) plus, when active, path B (conv2 -> conv3); each conv pre-activated.

    h is already the output of a ReLU, so conv0 and conv2 need no second one.
    """
    out = source.conv(block, op_index, 0, h, op)
    if op.convs[1] is not None:
        out = source.conv(block, op_index, 1, F.relu(out, inplace=True), op)
    if op.convs[2] is not None:
        other = source.conv(block, op_index, 2, h, op)
        if op.convs[3] is not None:
            other = source.conv(block, op_index, 3, F.relu(other, inplace=True), op)
        out = out + other
    return out


def _crop(weight: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """Centre crop of a (out, in, K, K) kernel to `kernel`."""
    top = (weight.shape[2] - kernel[0]) // 2
    left = (weight.shape[3] - kernel[1]) // 2
    return weight[:, :, top : top + kernel[0], left : left + kernel[1]]


def _conv_slice(weight: torch.Tensor, spec: ConvSpec, in_channels: int, out_channels: int) -> torch.Tensor:
    """The slice of a shared body conv that one op uses: first filters, first inputs, centre crop."""
    return _crop(weight[:out_channels, : in_channels // spec.groups], spec.kernel)


class SmashNet(nn.Module):
    """HyperNet plus shared weights: computes any architecture of a search space.

    Args:
        space: the search space; fixes every shared weight's size and the encoding.
        num_classes: classifier outputs.
        in_channels: image channels (1 or 3, or anything else).
        hypernet: HyperNet capacity.
    """

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int = 10,
        in_channels: int = 3,
        hypernet: HyperNetConfig = HyperNetConfig(),
    ) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.layout = EncodingLayout(space)
        self.hypernet = HyperNet(self.layout, hypernet)
        k = space.stem_kernel
        self.stem_weight = nn.Parameter(torch.empty(space.block_inputs[0], in_channels, k, k))
        kmax = space.kernel_sizes[-1]
        wide_in = space.max_bottleneck_channels
        self.body = nn.ParameterList()  # block b, slot s -> self.body[4 * b + s]
        for _ in range(space.num_blocks):
            for slot in range(4):
                fan_in = wide_in if slot in (0, 2) else space.max_units
                self.body.append(nn.Parameter(torch.empty(space.max_units, fan_in, kmax, kmax)))
        self.transition_norms = nn.ModuleList(
            nn.BatchNorm2d(w) for w in space.block_widths[:-1]
        )
        self.transition_weights = nn.ParameterList(
            nn.Parameter(torch.empty(space.block_inputs[b + 1], w, 1, 1))
            for b, w in enumerate(space.block_widths[:-1])
        )
        self.head_norm = nn.BatchNorm2d(space.block_widths[-1])
        self.classifier = nn.Linear(space.block_widths[-1], num_classes)
        self.reset_shared_parameters()

    def reset_shared_parameters(self) -> None:
        """Init of the freely learned weights (the HyperNet initialises itself)."""
        nn.init.kaiming_normal_(self.stem_weight, nonlinearity="relu")
        for weight in self.body:
            # Ops use slices with a 3x3 kernel most of the time: size the init for that fan-in.
            fan_in = weight.shape[1] * 9
            nn.init.normal_(weight, std=math.sqrt(2.0 / fan_in))
        for weight in self.transition_weights:
            nn.init.kaiming_normal_(weight, nonlinearity="relu")
        nn.init.zeros_(self.classifier.bias)

    def hypernet_parameters(self) -> list[nn.Parameter]:
        return list(self.hypernet.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        """Everything freely learned outside the HyperNet (gets weight decay)."""
        hyper = {id(p) for p in self.hypernet.parameters()}
        return [p for p in self.parameters() if id(p) not in hyper]

    def shared_norms(self) -> list[nn.BatchNorm2d]:
        """The BatchNorms every architecture shares (transitions, head): BN recalibration re-estimates these."""
        return [*self.transition_norms, self.head_norm]  # type: ignore[list-item]

    def checkpoint_meta(self) -> dict[str, Any]:
        """What rebuilding this network needs besides its state_dict (see `engine.kinds`)."""
        return {
            "kind": self.space.kind,
            "space": self.space.to_dict(),
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "hypernet": dataclasses.asdict(self.hypernet.config),
        }

    def encode(
        self, arch: Architecture, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Conditioning input (1, 1 + channels, rows, columns): the z channel, then c.

        Args:
            arch: the architecture to encode.
            z: the random channel (rows x columns values); drawn from `generator` when None.
            generator: the CPU generator z comes from (see `engine.device.draw_z`).
        """
        return self._conditioning(self.plan(arch), z, generator)[0]

    def plan(self, arch: Architecture) -> GenerationPlan:
        """The host's share of `generate(arch)`: encoding and gather positions, in one buffer.

        Pure host work (no torch op, no device), so a loop may prepare the next step's
        plan on another thread while this step runs, and pass it to `generate`.
        """
        return self.layout.plan(arch, pin_memory=self.stem_weight.device.type == "cuda")

    def generate(
        self,
        arch: Architecture,
        z: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        plan: GenerationPlan | None = None,
    ) -> list[torch.Tensor]:
        """Full-width, norm-1 1x1 weights of every op of `arch`, in network order.

        Args:
            arch: the architecture.
            z: the random channel; drawn from `generator` when None.
            generator: the CPU generator z comes from (see `engine.device.draw_z`).
            plan: `self.plan(arch)`, when prepared ahead; made now when None.
        """
        if plan is None:
            plan = self.plan(arch)
        conditioning, positions, counts = self._conditioning(plan, z, generator)
        return gather_op_weights(self.hypernet.features(conditioning), positions, counts, plan.weight_shapes)

    def _conditioning(
        self, plan: GenerationPlan, z: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The HyperNet's input and the plan's weight positions and counts, on the device."""
        device = self.stem_weight.device
        buffer = plan.buffer.to(device, non_blocking=True)  # the step's one copy; pinned: no host sync
        c, positions, counts = plan.unpack(buffer)
        channels, rows, columns = plan.c_shape
        conditioning = torch.empty(1, 1 + channels, rows, columns, device=device)
        if z is None:
            z = draw_z((rows, columns), generator, device)  # on the CPU, pinned for CUDA: no host sync
        conditioning[0, 0].copy_(z.reshape(rows, columns), non_blocking=True)
        conditioning[0, 1:].copy_(c)  # int8 -1/+1 to float
        return conditioning, positions, counts

    def forward(
        self,
        x: torch.Tensor,
        arch: Architecture,
        weights: list[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Logits of `arch` on x, with `weights` from `generate` (drawn now when omitted)."""
        if weights is None:
            weights = self.generate(arch, generator=generator)
        return forward_architecture(x, arch, _SmashSource(self, arch, weights))


class _SmashSource:
    """SmashNet's layers for one architecture: generated 1x1s, slices of shared weights.

    The slices of the shared body convs are all taken up front, one `_SharedSlices`
    per shared weight, so that their backward fills one gradient buffer per weight
    instead of one weight-sized buffer per slice and dimension (the backward of
    ordinary slicing).
    """

    def __init__(self, net: SmashNet, arch: Architecture, weights: list[torch.Tensor]) -> None:
        self.net = net
        self.weights = weights
        self.body = _body_slices(net, arch)

    def stem(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        pad = self.net.space.stem_kernel // 2
        return F.conv2d(x, self.net.stem_weight[:channels], padding=pad)

    def bottleneck(self, op_index: int, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weights[op_index])

    def conv(self, block: int, op_index: int, slot: int, x: torch.Tensor, op: Op) -> torch.Tensor:
        spec = op.convs[slot]
        assert spec is not None
        weight = self.body[op_index, slot]
        if _needs_fp32_weight_grad(spec, x.device):
            return _HeightDilatedConvBF16.apply(x, weight, spec.padding(), spec.dilation, spec.groups)
        return F.conv2d(x, weight, padding=spec.padding(), dilation=spec.dilation, groups=spec.groups)

    def transition(self, block: int, x: torch.Tensor, channels: int) -> torch.Tensor:
        x = F.relu(_sliced_batch_norm(self.net.transition_norms[block], x))
        x = F.conv2d(x, self.net.transition_weights[block][:channels, : x.shape[1]])
        return F.avg_pool2d(x, 2)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(_sliced_batch_norm(self.net.head_norm, x))
        x = x.mean(dim=(2, 3))
        return F.linear(x, self.net.classifier.weight[:, : x.shape[1]], self.net.classifier.bias)


def _needs_fp32_weight_grad(spec: ConvSpec, device: torch.device) -> bool:
    """Whether a conv (SMASH or derived) must go through `_HeightDilatedConvBF16`: bf16 training on the CPU."""
    return (
        spec.dilation[0] > 1
        and device.type == "cpu"
        and torch.is_grad_enabled()
        and torch.is_autocast_enabled("cpu")
    )


def _body_slices(net: SmashNet, arch: Architecture) -> dict[tuple[int, int], torch.Tensor]:
    """(op index, slot) -> the slice of its shared body conv that the op uses (`_conv_slice`)."""
    device = net.stem_weight.device
    dtype = autocast_dtype(device.type)
    boxes: dict[int, list[tuple[int, int, int, int, int, int, bool]]] = {}
    users: dict[int, list[tuple[int, int]]] = {}
    op_index = 0
    for b, block in enumerate(arch.blocks):
        for op in block.ops:
            for slot, spec in enumerate(op.convs):
                if spec is None:
                    continue
                index = 4 * b + slot
                weight = net.body[index]
                in_channels = op.bottleneck if slot in (0, 2) else op.units
                top = (weight.shape[2] - spec.kernel[0]) // 2
                left = (weight.shape[3] - spec.kernel[1]) // 2
                # A height-dilated conv casts its own weight (and keeps its gradient in fp32).
                own_cast = _needs_fp32_weight_grad(spec, device)
                box = (op.units, in_channels // spec.groups, top, left, *spec.kernel, own_cast)
                boxes.setdefault(index, []).append(box)
                users.setdefault(index, []).append((op_index, slot))
            op_index += 1
    slices = {}
    for index, weight_boxes in boxes.items():
        for user, view in zip(users[index], _SharedSlices.apply(net.body[index], dtype, tuple(weight_boxes))):
            slices[user] = view
    return slices


class _SharedSlices(torch.autograd.Function):
    """Many slices of one shared weight (first filters, first inputs, centre crop), taken together.

    The same values as slicing the weight once per op, with fewer ops: each slice is
    one strided view, of a copy of the weight cast once to the autocast dtype when
    autocast is on (rather than each slice being cast by its conv); the backward adds
    every slice's gradient into one fp32 buffer of the weight's size.

    Each box is (filters, inputs per group, top, left, kernel height, kernel width,
    full precision): a full-precision slice is a view of the weight itself.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        weight: torch.Tensor,
        dtype: torch.dtype | None,
        boxes: tuple[tuple[int, int, int, int, int, int, bool], ...],
    ) -> tuple[torch.Tensor, ...]:
        cast = dtype is not None and dtype != weight.dtype and not all(box[-1] for box in boxes)
        low = weight.to(dtype) if cast else weight
        ctx.save_for_backward(weight)
        ctx.boxes = boxes  # type: ignore[attr-defined]
        ctx.set_materialize_grads(False)
        return tuple(_box(weight if full else low, box) for *box, full in boxes)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, None, None]:  # type: ignore[override]
        (weight,) = ctx.saved_tensors  # type: ignore[attr-defined]
        grad = torch.zeros_like(weight)  # same strides as the weight
        for (*box, _), g in zip(ctx.boxes, grads):  # type: ignore[attr-defined]
            if g is not None:
                _box(grad, box).add_(g)
        return grad, None, None


def _box(weight: torch.Tensor, box: list[int]) -> torch.Tensor:
    """weight[:filters, :inputs, top:top + kh, left:left + kw] as one strided view."""
    filters, inputs, top, left, kh, kw = box
    stride = weight.stride()
    offset = weight.storage_offset() + top * stride[2] + left * stride[3]
    return weight.as_strided((filters, inputs, kh, kw), stride, offset)


class _HeightDilatedConvBF16(torch.autograd.Function):
    """A bf16 conv dilated along the height on the CPU, with its weight gradient in fp32.

    oneDNN (as in PyTorch 2.14) returns NaN weight gradients for bf16 convs dilated along
    the height in channels-last layout: about half of the `tiny` preset's training steps
    draw such a conv and hit it. The output and the input gradient are correct, and the
    weight gradient is correct in fp32, so only that product leaves bf16. Running the
    whole conv in the default layout instead is also correct, but a `paper` training
    step then took about 1.0 s against 0.75 s this way (benchmarks/step_throughput.py).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
    ) -> torch.Tensor:
        x, weight_bf16 = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        ctx.save_for_backward(x, weight_bf16)
        ctx.conv_args = (padding, dilation, groups, weight.dtype)  # type: ignore[attr-defined]
        return F.conv2d(x, weight_bf16, padding=padding, dilation=dilation, groups=groups)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        x, weight_bf16 = ctx.saved_tensors  # type: ignore[attr-defined]
        padding, dilation, groups, weight_dtype = ctx.conv_args  # type: ignore[attr-defined]
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(
                x.shape, weight_bf16, grad_output, padding=padding, dilation=dilation, groups=groups
            )
        if ctx.needs_input_grad[1]:
            grad_weight = torch.nn.grad.conv2d_weight(
                x.float(), weight_bf16.shape, grad_output.float(), padding=padding, dilation=dilation, groups=groups
            ).to(weight_dtype)
        return grad_x, grad_weight, None, None, None


def _sliced_batch_norm(norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the first x.shape[1] channels of a wider BatchNorm; updates those running stats."""
    c = x.shape[1]
    assert norm.running_mean is not None and norm.running_var is not None
    return F.batch_norm(
        x,
        norm.running_mean[:c],
        norm.running_var[:c],
        norm.weight[:c],
        norm.bias[:c],
        training=norm.training,
        momentum=norm.momentum if norm.momentum is not None else 0.1,
        eps=norm.eps,
    )


# The derived network ------------------------------------------------------------------------


class OpModule(nn.Module):
    """One op with its own weights: a 1x1 bottleneck and the active body convs."""

    def __init__(self, op: Op, in_channels: int) -> None:
        super().__init__()
        self.bottleneck = nn.Conv2d(in_channels, op.bottleneck, 1, bias=False)
        self.convs = nn.ModuleDict()
        for slot, spec in enumerate(op.convs):
            if spec is None:
                continue
            self.convs[str(slot)] = nn.Conv2d(
                op.bottleneck if slot in (0, 2) else op.units,
                op.units,
                kernel_size=spec.kernel,
                padding=spec.padding(),
                dilation=spec.dilation,
                groups=spec.groups,
                bias=False,
            )


class Transition(nn.Module):
    """BN, ReLU, 1x1 conv, 2x2 average pool between blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)


class DerivedNet(nn.Module):
    """An ordinary network for one architecture, with freely learned weights.

    It runs the same `forward_architecture` as the SMASH network, so with the same
    weights (`load_from_smash`) it computes the same function.
    """

    def __init__(self, arch: Architecture, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.in_channels = in_channels
        k = arch.stem_kernel
        self.stem = nn.Conv2d(in_channels, arch.blocks[0].in_channels, k, padding=k // 2, bias=False)
        self.ops = nn.ModuleList(
            OpModule(op, len(op.reads) * block.bank_size) for block in arch.blocks for op in block.ops
        )
        self.transitions = nn.ModuleList(
            Transition(block.out_channels, nxt.in_channels)
            for block, nxt in zip(arch.blocks[:-1], arch.blocks[1:])
        )
        self.head_norm = nn.BatchNorm2d(arch.blocks[-1].out_channels)
        self.classifier = nn.Linear(arch.blocks[-1].out_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_architecture(x, self.arch, _DerivedSource(self))

    @torch.no_grad()
    def load_from_smash(self, smash: SmashNet, weights: list[torch.Tensor]) -> DerivedNet:
        """Copy generated 1x1s and the slices of shared weights that `smash` uses for this architecture."""
        arch = self.arch
        self.stem.weight.copy_(smash.stem_weight[: arch.blocks[0].in_channels])
        op_index = 0
        for b, block in enumerate(arch.blocks):
            for op in block.ops:
                module = self.ops[op_index]
                assert isinstance(module, OpModule)
                module.bottleneck.weight.copy_(weights[op_index])
                for slot, spec in enumerate(op.convs):
                    if spec is None:
                        continue
                    conv = module.convs[str(slot)]
                    in_channels = op.bottleneck if slot in (0, 2) else op.units
                    conv.weight.copy_(_conv_slice(smash.body[4 * b + slot], spec, in_channels, op.units))
                op_index += 1
        for b, transition in enumerate(self.transitions):
            assert isinstance(transition, Transition)
            _copy_norm(transition.norm, smash.transition_norms[b])
            w = transition.conv.weight
            w.copy_(smash.transition_weights[b][: w.shape[0], : w.shape[1]])
        _copy_norm(self.head_norm, smash.head_norm)
        c = self.classifier.in_features
        self.classifier.weight.copy_(smash.classifier.weight[:, :c])
        self.classifier.bias.copy_(smash.classifier.bias)
        return self


def _copy_norm(target: nn.BatchNorm2d, source: nn.BatchNorm2d) -> None:
    c = target.num_features
    assert source.running_mean is not None and source.running_var is not None
    assert target.running_mean is not None and target.running_var is not None
    target.weight.copy_(source.weight[:c])
    target.bias.copy_(source.bias[:c])
    target.running_mean.copy_(source.running_mean[:c])
    target.running_var.copy_(source.running_var[:c])


class _DerivedSource:
    def __init__(self, net: DerivedNet) -> None:
        self.net = net

    def stem(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        return self.net.stem(x)

    def bottleneck(self, op_index: int, x: torch.Tensor) -> torch.Tensor:
        return self.net.ops[op_index].bottleneck(x)

    def conv(self, block: int, op_index: int, slot: int, x: torch.Tensor, op: Op) -> torch.Tensor:
        conv = self.net.ops[op_index].convs[str(slot)]
        spec = op.convs[slot]
        assert spec is not None
        if _needs_fp32_weight_grad(spec, x.device):  # the SMASH network's workaround, for retraining in bf16
            return _HeightDilatedConvBF16.apply(x, conv.weight, spec.padding(), spec.dilation, spec.groups)
        return conv(x)

    def transition(self, block: int, x: torch.Tensor, channels: int) -> torch.Tensor:
        t = self.net.transitions[block]
        return F.avg_pool2d(t.conv(F.relu(t.norm(x))), 2)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.net.head_norm(x)).mean(dim=(2, 3))
        return self.net.classifier(x)


def build_model(arch: Architecture, num_classes: int = 10, in_channels: int = 3) -> DerivedNet:
    """An ordinary `nn.Module` for `arch` with freely learned weights (see DerivedNet)."""
    return DerivedNet(arch, num_classes, in_channels)
