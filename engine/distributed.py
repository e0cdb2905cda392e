"""Data-parallel HyperNet training: the processes of one `torchrun` launch as one `World`.

`train_hypernet` takes a `World` and otherwise runs its one loop unchanged. Every rank
draws the same architecture, z and global batch each step (the same seeds: one shared
stream), takes its slice of the batch (`shard`), and the gradients are averaged across
ranks after the backward pass (`all_reduce_gradients`), so every rank applies the same
Adam step to the same weights. BatchNorm normalises the global batch
(`global_batch_norm`): with statistics of each slice alone, two ranks would train a
different network from one process with their batches together. So a run on W ranks
with batch B computes what one process computes with batch B (the forward pass bit for
bit, the gradients up to the order of float sums), and its checkpoints (written by
rank 0 alone) resume on any number of ranks.

Backends: NCCL on GPUs, gloo on CPUs; host-side decisions (whether to stop, which job
to run) always travel over a gloo group, so deciding never waits for the GPU.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from engine.errors import ConfigError

# How long a rank waits for the others in one collective before giving up (then
# torchrun stops the whole launch): rank 0 may evaluate alone for a while at epoch ends.
COLLECTIVE_TIMEOUT = timedelta(minutes=15)


@dataclass(frozen=True)
class World:
    """The ranks of one data-parallel run; the default is one process alone.

    Args:
        rank: this process's rank, 0 for the one that writes checkpoints and reports.
        size: how many processes train together.
        group: the process group of gradients and BatchNorm statistics (NCCL or gloo).
        control: a gloo group for host-side decisions.
    """

    rank: int = 0
    size: int = 1
    group: Any = None
    control: Any = None

    @property
    def is_main(self) -> bool:
        """Whether this rank writes checkpoints, metrics and progress."""
        return self.rank == 0

    def check_batch(self, batch_size: int) -> int:
        """Images per rank of a global batch; ConfigError when the ranks cannot share it evenly."""
        if batch_size % self.size:
            raise ConfigError(
                f"a batch of {batch_size} cannot be shared evenly by {self.size} processes",
                "batch_size",
            )
        return batch_size // self.size

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of a global batch."""
        if self.size == 1:
            return x, y
        per = x.shape[0] // self.size
        part = slice(self.rank * per, (self.rank + 1) * per)
        return x[part], y[part]

    def all_reduce_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Average the gradients over the ranks, in one collective (a flat buffer).

        Parameters without a gradient keep none: every rank trains the same architecture,
        so the same ones lack it everywhere, and Adam must skip them as one process would.
        """
        if self.size == 1:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self.group)
        flat.div_(self.size)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def agree(self, flag: bool) -> bool:
        """True on every rank when any rank says True (a stop request reaches one rank)."""
        if self.size == 1:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.control)
        return bool(value.item())

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of a tensor over the ranks (a new tensor)."""
        if self.size == 1:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total, group=self.group)
        return total

    def broadcast_int(self, value: int | None) -> int:
        """Rank 0's value, on every rank (the job rank 0 claimed, or what to do next)."""
        if self.size == 1:
            assert value is not None
            return value
        message = torch.tensor([0 if value is None else value], dtype=torch.int64)
        dist.broadcast(message, src=0, group=self.control)
        return int(message.item())

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's weights and buffers on every rank (they start equal; this makes sure)."""
        if self.size == 1:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0, group=self.group)

    @contextlib.contextmanager
    def global_batch_norm(self) -> Iterator[None]:
        """BatchNorm statistics over the global batch while training (see the module docstring)."""
        if self.size == 1:
            yield
            return
        with _GlobalBatchNorm(self):
            yield


SINGLE = World()


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a `torchrun` launch (its environment says so)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def local_rank() -> int:
    """This process's rank on its host (torchrun's LOCAL_RANK), 0 outside a launch."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def join_world(device: torch.device) -> World:
    """Join the torchrun launch this process belongs to: NCCL on a GPU, gloo on a CPU.

    Raises:
        ConfigError: The process was not started by torchrun.
    """
    if not launched_by_torchrun():
        raise ConfigError(
            "--ddp needs a torchrun launch, e.g. torchrun --standalone --nproc_per_node 2 "
            "--no-python smash worker --ddp"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    options: dict[str, Any] = {"backend": backend, "timeout": COLLECTIVE_TIMEOUT}
    if device.type == "cuda":
        options["device_id"] = device
    dist.init_process_group(**options)
    control = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD
    return World(dist.get_rank(), dist.get_world_size(), dist.group.WORLD, control)


def leave_world(world: World) -> None:
    """Tear the process group down (at the end of a launch)."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


# BatchNorm over the global batch -----------------------------------------------------------

_BATCH_NORM = inspect.signature(F.batch_norm)


class _GlobalBatchNorm(TorchFunctionMode):
    """Runs training-mode `F.batch_norm` on the global batch, gathered from every rank.

    Every BatchNorm of the SMASH modules reaches `F.batch_norm` (the banks network calls
    it on slices of wider norms, `nn.BatchNorm2d` calls it too), so intercepting the
    function covers them all without touching the networks (`nn.SyncBatchNorm` works on
    CUDA modules only). Each rank normalises the whole gathered batch with the very
    kernel one process would run on it, and keeps its own slice: the statistics, the
    running averages and the outputs are those of one process, bit for bit. (Summing
    per-rank statistics instead changes their last bits, which flips a few ReLU gates,
    and Adam's large epsilon turns such small gradient changes into visible weight
    differences within steps.) Without gradients (BN recalibration, evaluation)
    statistics stay local: those run on one rank alone.
    """

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is F.batch_norm:
            bound = _BATCH_NORM.bind(*args, **kwargs)
            if bound.arguments.get("training", False) and torch.is_grad_enabled():
                x = bound.arguments["input"]
                bound.arguments["input"] = _Gathered.apply(x, self.world)
                # The mode is off inside this method: this is the plain kernel.
                y = func(*bound.args, **bound.kwargs)
                per = x.shape[0]
                return y[self.world.rank * per : (self.world.rank + 1) * per]
        return func(*args, **kwargs)


class _Gathered(torch.autograd.Function):
    """Every rank's slice of a tensor, concatenated in rank order (the global batch).

    Backward, each rank gets the gradient of its slice summed over every rank's loss.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, world: World) -> torch.Tensor:  # type: ignore[override]
        ctx.world = world
        layout = _layout(x)
        parts = [torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(world.size)]
        dist.all_gather(parts, x.contiguous(), group=world.group)
        # The layout of one process's tensor, so that the same kernel runs on it.
        return torch.cat(parts).contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        world: World = ctx.world
        layout = _layout(grad)
        total = grad.contiguous()
        dist.all_reduce(total, group=world.group)
        per = total.shape[0] // world.size
        return total[world.rank * per : (world.rank + 1) * per].contiguous(memory_format=layout), None


def _layout(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


__all__ = [
    "SINGLE",
    "World",
    "join_world",
    "launched_by_torchrun",
    "leave_world",
    "local_rank",
]
