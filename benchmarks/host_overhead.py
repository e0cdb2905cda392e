"""Host overhead of a HyperNet training step and a scoring step: ops dispatched and host ms.

On a GPU a SMASH step is host-bound: a `paper` training step at batch 50 is about
0.07 ms of H100 arithmetic but dispatches well over a thousand aten ops, each costing
the host some microseconds of Python, dispatcher and kernel launch. This benchmark
runs steps at a size where the network's own arithmetic is small (batch 1, 8x8
images) and reports, for a training step (`engine.train.train_step`: generate,
forward, loss, backward, Adam as `make_optimizer` builds it) and a scoring step
(eval, no grad: generate, forward, error and loss sums, as the Scorer does):

- dispatched ops per step, counted with a `TorchDispatchMode`: every aten op that
  reaches the backend after autograd, the backward pass and the optimizer included,
  each counted once however many kernels it runs inside (`slice_backward` is one op
  and two kernels). It sees exactly what the host dispatches and nothing of the
  profiler's own overhead, and it is deterministic: the same architectures give the
  same counts on every run and machine (a `torch.profiler` trace nests ops within
  ops and has to be flattened by guesswork). Views (`slice`, `view`, `split`, ...:
  metadata only, no kernel on any device) are counted apart from the ops that compute;
- host milliseconds per step: the median wall time the host spends in one step. On
  CUDA the kernels run asynchronously, so this is the time to dispatch the step
  (`step_ms` adds the wait for the device). On a CPU the kernels run inside the host
  time: there the HyperNet's own arithmetic, which does not shrink with the batch
  (it convolves the architecture's encoding, about 10 GFLOP forward and backward for
  a `paper` architecture), is part of the figure; `train_gflop` says how much, and
  a profiled pass splits the ops' own time into convolutions and everything else
  (`train_profile_conv_ms`, `train_profile_other_ms`: the profiler's self CPU time
  per step; `train_profile_wall_ms` the profiled step's wall time, which adds Python,
  the autograd engine and the profiler's own overhead).

Architectures come from a fixed seed, so two checkouts measured with the same
arguments count the same architectures. The script uses only APIs that older commits
have too (`train_step`, `make_optimizer`, `build_smash`, `sample`, `SmashNet.generate`),
so that it can measure a base commit's worktree: the engine is imported from
PYTHONPATH when that is set (`PYTHONPATH=/path/to/base python benchmarks/host_overhead.py`),
else from this checkout; `engine_path` in the output says which one ran.

    python benchmarks/host_overhead.py --out host.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results import write_result  # noqa: E402
from steps import add_step_options, step_setup  # noqa: E402

import engine  # noqa: E402
from engine.device import autocast_context  # noqa: E402
from engine.hypernet import HyperNetConfig  # noqa: E402
from engine.network import SmashNet  # noqa: E402
from engine.sampler import sample  # noqa: E402
from engine.train import train_step  # noqa: E402


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active, by name, views apart."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops[func.overloadpacket.__name__] += 1
        self.views += bool(func.is_view)
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def count(fn: Callable[[], Any]) -> OpCounter:
    counter = OpCounter()
    with counter:
        fn()
    return counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_options(parser, batch=1, image_size=8, steps=10, warmup=2, progress=1.0)
    args = parser.parse_args()
    setup = step_setup(args)
    space, limits, device, net, optimizer = setup.space, setup.limits, setup.device, setup.net, setup.optimizer
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device=device)
    z_rng = torch.Generator().manual_seed(args.seed)  # z comes from a CPU generator on every device
    rng = np.random.default_rng(args.seed)
    archs = [sample(space, rng, limits) for _ in range(args.warmup + args.steps)]
    autocast = autocast_context(device, args.bf16)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn: Callable[[], Any]) -> tuple[float, float]:
        """(host seconds to return, seconds until the device is done)."""
        synchronize()
        start = time.perf_counter()
        fn()
        host = time.perf_counter() - start
        synchronize()
        return host, time.perf_counter() - start

    def train(arch) -> None:  # type: ignore[no-untyped-def]
        train_step(net, optimizer, x, y, arch, z_rng, autocast)

    def train_phases(arch) -> dict[str, int]:  # type: ignore[no-untyped-def]
        """train_step's own sequence, counted phase by phase."""
        phases: dict[str, int] = {}
        state: dict[str, Any] = {}

        def generate() -> None:
            with autocast:
                state["weights"] = net.generate(arch, generator=z_rng)

        def forward() -> None:
            with autocast:
                state["logits"] = net(x, arch, state["weights"])

        def loss() -> None:
            state["loss"] = F.cross_entropy(state["logits"].float(), y)
            state["correct"] = (state["logits"].detach().argmax(1) == y).sum()

        def backward() -> None:
            optimizer.zero_grad(set_to_none=True)
            state["loss"].backward()

        for name, fn in [("generate", generate), ("forward", forward), ("loss", loss), ("backward", backward), ("optimizer", optimizer.step)]:
            phases[name] = count(fn).total
        return phases

    score_x = x.contiguous(memory_format=torch.channels_last)

    def score(arch) -> None:  # type: ignore[no-untyped-def]
        """One scored batch of one architecture, as Scorer._sums runs it."""
        sums = torch.zeros(2, device=device)
        with torch.no_grad(), autocast:
            weights = net.generate(arch, generator=z_rng)
            logits = net(score_x, arch, weights).float()
            sums[0] += (logits.argmax(1) != y).sum()
            sums[1] += F.cross_entropy(logits, y, reduction="sum")

    # Sampling, timed on its own: the loop draws one architecture per step on the host.
    sample_rng = np.random.default_rng(args.seed + 1)
    sample_s = []
    for _ in range(args.steps):
        start = time.perf_counter()
        sample(space, sample_rng, limits)
        sample_s.append(time.perf_counter() - start)

    train_host, train_device, train_counts, train_views, phase_counts = [], [], [], [], []
    for i, arch in enumerate(archs):
        host, done = timed(lambda arch=arch: train(arch))
        if i >= args.warmup:
            train_host.append(host)
            train_device.append(done)
    for arch in archs[args.warmup :]:
        counter = count(lambda arch=arch: train(arch))
        train_counts.append(counter.total)
        train_views.append(counter.views)
        last_train_counter = counter
    for arch in archs[args.warmup : args.warmup + 3]:
        phase_counts.append(train_phases(arch))

    # Where the host time goes: the profiler's self time of the convolutions (on a CPU:
    # their arithmetic) against every other op (dispatch, small kernels, copies, Adam).
    conv_s = other_s = 0.0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        synchronize()
        start = time.perf_counter()
        for arch in archs[args.warmup :]:
            train(arch)
        synchronize()
        profiled_s = time.perf_counter() - start
    for event in profiler.key_averages():
        if event.key.startswith("aten::"):
            seconds = event.self_cpu_time_total / 1e6
            if "convolution" in event.key:
                conv_s += seconds
            else:
                other_s += seconds

    # The same step with Adam fused (one kernel per group instead of about ten per
    # parameter), as make_optimizer builds it on CUDA, and on the CPU too since it can:
    # an earlier commit measured through PYTHONPATH may not fuse it here.
    if optimizer.defaults.get("fused"):
        fused_counts = train_counts
    else:
        groups = [{k: v for k, v in group.items() if k not in ("fused", "foreach")} for group in optimizer.param_groups]
        fused = torch.optim.Adam(groups, fused=True)
        fused_counts = []
        for arch in archs[args.warmup :]:
            fused_counts.append(count(lambda arch=arch: train_step(net, fused, x, y, arch, z_rng, autocast)).total)

    net.eval()
    score_host, score_device, score_counts, score_views = [], [], [], []
    for i, arch in enumerate(archs):
        host, done = timed(lambda arch=arch: score(arch))
        if i >= args.warmup:
            score_host.append(host)
            score_device.append(done)
    for arch in archs[args.warmup :]:
        counter = count(lambda arch=arch: score(arch))
        score_counts.append(counter.total)
        score_views.append(counter.views)
    net.train()

    with torch.device("meta"):
        meta_net = SmashNet(space, 10, 3, HyperNetConfig())
    flops = []
    for arch in archs[args.warmup : args.warmup + 3]:
        counter = FlopCounterMode(display=False)
        with counter:
            logits = meta_net(torch.empty(args.batch, 3, args.image_size, args.image_size, device="meta"), arch)
            F.cross_entropy(logits, torch.zeros(args.batch, dtype=torch.long, device="meta")).backward()
        meta_net.zero_grad(set_to_none=True)
        flops.append(counter.get_total_flops())

    arch_ops = [sum(len(b.ops) for b in a.blocks) for a in archs[args.warmup :]]
    arch_convs = [sum(c is not None for b in a.blocks for op in b.ops for c in op.convs) for a in archs[args.warmup :]]
    root = Path(engine.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False

    def ms(values: list[float]) -> float:
        return 1e3 * statistics.median(values)

    phases = {name: statistics.median(p[name] for p in phase_counts) for name in phase_counts[0]}
    result = {
        "engine_path": str(Path(engine.__file__).resolve().parent),
        "commit": commit + ("+dirty" if dirty else ""),
        "preset": args.preset,
        "batch": args.batch,
        "image_size": args.image_size,
        "steps": args.steps,
        "progress": args.progress,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16": args.bf16,
        "autocast": not isinstance(autocast, contextlib.nullcontext),
        "arch_ops_median": statistics.median(arch_ops),
        "arch_convs_median": statistics.median(arch_convs),
        "sample_ms": ms(sample_s),
        "train_host_ms": ms(train_host),
        "train_step_ms": ms(train_device),
        "train_ops": statistics.median(train_counts),
        "train_view_ops": statistics.median(train_views),
        "train_compute_ops": statistics.median(c - v for c, v in zip(train_counts, train_views)),
        "train_ops_fused_adam": statistics.median(fused_counts),
        "train_ops_by_phase": phases,
        "train_profile_conv_ms": 1e3 * conv_s / args.steps,
        "train_profile_other_ms": 1e3 * other_s / args.steps,
        "train_profile_wall_ms": 1e3 * profiled_s / args.steps,
        "train_ops_per_arch": train_counts,
        "train_top_ops": dict(last_train_counter.ops.most_common(15)),
        "train_gflop": float(np.mean(flops)) / 1e9,
        "score_host_ms": ms(score_host),
        "score_step_ms": ms(score_device),
        "score_ops": statistics.median(score_counts),
        "score_view_ops": statistics.median(score_views),
        "score_compute_ops": statistics.median(c - v for c, v in zip(score_counts, score_views)),
        "score_ops_per_arch": score_counts,
    }
    print(f"{args.preset} preset, batch {args.batch}, {args.image_size}x{args.image_size} images, {args.steps} steps on {result['device']} ({result['threads']} threads, torch {torch.__version__})")
    print(f"  engine: {result['engine_path']} at {result['commit']}")
    print(f"  architectures: median {result['arch_ops_median']} ops, {result['arch_convs_median']} body convs; sampling one takes {result['sample_ms']:.2f} ms")
    print(f"  {'':34}{'train':>10}{'score':>10}")
    rows = [
        ("host ms / step (median)", "host_ms", "{:10.1f}"),
        ("ms / step until the device is done", "step_ms", "{:10.1f}"),
        ("ops dispatched / step (median)", "ops", "{:10.0f}"),
        ("  of which views (no kernel)", "view_ops", "{:10.0f}"),
        ("  of which compute", "compute_ops", "{:10.0f}"),
    ]
    for label, key, fmt in rows:
        print(f"  {label:34}" + fmt.format(result[f"train_{key}"]) + fmt.format(result[f"score_{key}"]))
    print(f"  train ops with Adam fused (as on CUDA): {result['train_ops_fused_adam']:.0f}")
    print(f"  train profile, self time per step: convolutions {result['train_profile_conv_ms']:.1f} ms, every other aten op {result['train_profile_other_ms']:.1f} ms, of {result['train_profile_wall_ms']:.1f} ms (the rest: Python, autograd, profiler)")
    print("  train ops by phase: " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))
    print(f"  train GFLOP / step (forward + backward, HyperNet included): {result['train_gflop']:.2f}")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
