"""Data-parallel HyperNet training computes what one process computes: a check under torchrun.

    torchrun --standalone --nproc_per_node 2 scripts/ddp_smoke.py [--device cpu] [--out FILE]

Every rank of the launch trains the same tiny SMASH network for ``--steps`` steps of a
global batch of ``--batch`` images (each rank takes its slice; NCCL on GPUs, gloo on
CPUs). Then rank 0 alone trains it again in one process with that whole batch, and
compares the weights. A second data-parallel run stops at ``--stop-at`` (all ranks at
the same step, as a pause stops them) and rank 0 resumes its checkpoint in one process
to the end: a checkpoint written by W ranks resumes on any number of ranks.

Rank 0 prints one JSON object (and writes it to ``--out``): the largest weight
difference of each comparison, and steps per second of the data-parallel run and of
the one-process run. The exit status is 1 when a difference exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed

from engine.config import DataConfig, TrainConfig  # noqa: E402
from engine.data import Dataset, load_dataset  # noqa: E402
from engine.device import resolve_device, set_threads  # noqa: E402
from engine.distributed import SINGLE, World, join_world, leave_world, local_rank  # noqa: E402
from engine.hypernet import HyperNetConfig  # noqa: E402
from engine.space import PRESETS  # noqa: E402
from engine.train import build_smash, train_hypernet  # noqa: E402

# Small enough that a run is a second or two on a CPU, big enough to have BatchNorm,
# several architectures and an Adam state worth comparing.
HYPERNET = HyperNetConfig(growth=(6, 6), layers=(2, 2))
# Float sums in another order (a rank's half batch, then the all-reduce) differ from one
# process's in the last bits, and after a few steps Adam at its usual rate turns those
# bits into differences of 1e-5 and more (a ReLU gate flips, a near-zero gradient meets
# eps). At this rate 8 steps move the weights by about 1e-4, ten times the tolerance,
# while rounding stays at 1e-7: a real divergence (another slice, another architecture,
# per-rank BatchNorm statistics) differs on the scale of the movement and fails.
LR = 2e-5


@dataclass(frozen=True)
class SmokeResult:
    """What rank 0 reports."""

    world_size: int  # ranks of the data-parallel runs
    device: str  # rank 0's device
    steps: int  # optimiser steps of every run
    global_batch: int  # images per step, all ranks together (the one-process run's batch)
    ddp_weights_max_abs_diff: float  # W ranks vs one process with the whole batch
    weights_moved_max_abs: float  # how far training moved the learned weights (what the differences compare to)
    resumed_weights_max_abs_diff: float  # W ranks stopped at stop_at, resumed on one process, vs one process
    stop_at: int  # the step the second data-parallel run stopped at
    ddp_steps_per_s: float  # the data-parallel run (timed from the end of its first step)
    one_process_steps_per_s: float  # one process with the whole batch (timed likewise)
    tolerance: float  # the largest difference that passes


def _net(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights in every process
    return build_smash(PRESETS["tiny"], 10, 3, HYPERNET, device)


def _train(
    data: Dataset, config: TrainConfig, device: torch.device, path: Path, world: World, stop_at: int | None = None
) -> tuple[torch.nn.Module, float]:
    """A fresh (or resumed, when `path` exists) run; the network and its steps per second."""
    net = _net(device)
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return stop_at is not None and calls["n"] == stop_at

    # Each step reports (a host sync, which the CPU does not mind): the rate is timed from
    # the first step's end, without the set-up and the first step's warm-up.
    ends: list[float] = []
    train_hypernet(
        net, data, config, checkpoint_path=path, should_stop=should_stop, world=world,
        on_progress=lambda _: ends.append(time.perf_counter()),
    )  # fmt: skip
    rate = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else float("nan")
    return net, rate


def _max_abs_diff(a: torch.nn.Module, b: torch.nn.Module, buffers: bool = True) -> float:
    """The largest difference between two networks' weights (and buffers: BN statistics)."""
    worst = 0.0
    pairs = (
        zip(a.state_dict().items(), b.state_dict().values(), strict=True)
        if buffers
        else zip(a.named_parameters(), b.parameters(), strict=True)
    )
    for (name, x), y in pairs:
        if x.is_floating_point():
            worst = max(worst, (x.double() - y.double()).abs().max().item())
        elif not torch.equal(x, y):
            raise AssertionError(f"{name} differs")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (each rank takes cuda:LOCAL_RANK)")
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps of each run")
    parser.add_argument("--stop-at", type=int, default=3, help="the step the second data-parallel run stops at")
    parser.add_argument("--batch", type=int, default=64, help="global batch: all ranks' images per step")
    parser.add_argument("--lr", type=float, default=LR, help="Adam learning rate (see the module docstring)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="the largest weight difference that passes")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    parser.add_argument("--work", help="folder for the checkpoints (default: a temporary one)")
    parser.add_argument("--out", help="also write the JSON result here")
    args = parser.parse_args(argv)

    set_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    world = join_world(device)
    # Float32 everywhere: the comparison is of the arithmetic, not of bf16 rounding.
    config = TrainConfig(
        epochs=1, max_steps=args.steps, batch_size=args.batch, lr=args.lr, report_every=1,
        checkpoint_every=10**6, eval_archs=0, bf16="off", seed=5,
    )
    data = load_dataset(DataConfig("synthetic", synthetic_train=args.batch * (args.steps + 1), synthetic_test=64, val_size=0))
    with tempfile.TemporaryDirectory() as scratch:
        # Rank 0 alone writes checkpoints and resumes: the others never read theirs.
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        ddp_net, ddp_rate = _train(data, config, device, work / "ddp.pt", world)
        _train(data, config, device, work / "stopped.pt", world, stop_at=args.stop_at)
        code = 0
        if world.is_main:
            one_net, one_rate = _train(data, config, device, work / "one.pt", SINGLE)
            resumed, _ = _train(data, config, device, work / "stopped.pt", SINGLE)
            result = SmokeResult(
                world_size=world.size,
                device=str(device),
                steps=args.steps,
                global_batch=args.batch,
                ddp_weights_max_abs_diff=_max_abs_diff(ddp_net, one_net),
                weights_moved_max_abs=_max_abs_diff(_net(device), one_net, buffers=False),
                resumed_weights_max_abs_diff=_max_abs_diff(resumed, one_net),
                stop_at=args.stop_at,
                ddp_steps_per_s=ddp_rate,
                one_process_steps_per_s=one_rate,
                tolerance=args.tolerance,
            )
            text = json.dumps(result.__dict__)
            print(text, flush=True)
            if args.out:
                Path(args.out).write_text(text + "\n")
            worst = max(result.ddp_weights_max_abs_diff, result.resumed_weights_max_abs_diff)
            code = 0 if worst <= args.tolerance else 1
        world.agree(False)  # the other ranks wait here while rank 0 compares
    leave_world(world)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
