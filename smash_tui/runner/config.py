"""How a worker runs: its settings, torch-free so `smash worker --help` starts at once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import ConfigError
from engine.params import check_int
from storage.models import JOB_KINDS

# Most torch CPU threads a worker may ask for (torch takes a C int; more is a typo).
MAX_THREADS = 1024
# Longest poll, heartbeat or stale timeout in seconds: a day (longer overflows the
# clocks they are added to, and a worker that checks in once a day is no worker).
MAX_INTERVAL_S = 86400.0


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker runs."""

    device: str = "auto"  # auto, cpu, cuda or cuda:N
    kinds: tuple[str, ...] | None = None  # job kinds to claim; None claims every kind
    once: bool = False  # exit when no claimable job is left instead of waiting for more
    job_ids: tuple[int, ...] | None = None  # claim only these, and exit once they have ended
    poll_s: float = 2.0  # seconds between looks at the queue while idle
    heartbeat_s: float = 3.0  # seconds between heartbeats (and pause/cancel checks)
    stale_after_s: float = 60.0  # a running job silent this long is requeued (any worker's)
    metrics_every_s: float = 5.0  # seconds between batched metric writes
    threads: int | None = None  # torch intra-op threads; None leaves torch's choice

    def __post_init__(self) -> None:
        for name in ("poll_s", "heartbeat_s", "stale_after_s", "metrics_every_s"):
            value = getattr(self, name)
            if not (0 < value <= MAX_INTERVAL_S and math.isfinite(value)):
                raise ConfigError(
                    f"{name} must be a positive number of seconds up to {MAX_INTERVAL_S:g}, "
                    f"got {value}"
                )
        if self.heartbeat_s >= self.stale_after_s:
            raise ConfigError(
                f"the heartbeat interval ({self.heartbeat_s:g} s) must be shorter than the "
                f"stale timeout ({self.stale_after_s:g} s), or live jobs would be requeued"
            )
        if self.kinds is not None and not self.kinds:
            raise ConfigError(f"no job kinds given (any of {', '.join(JOB_KINDS)})")
        unknown = sorted(set(self.kinds or ()) - set(JOB_KINDS))
        if unknown:
            raise ConfigError(
                f"unknown job kind(s) {', '.join(unknown)} (one of {', '.join(JOB_KINDS)})"
            )
        if self.threads is not None:
            check_int(self.threads, "threads", low=1, high=MAX_THREADS)
