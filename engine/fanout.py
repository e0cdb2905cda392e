"""A search fanned out across workers: its batches cut into chunks that any worker scores.

The search job is a coordinator. It runs the strategy (`engine.search.run_search`)
with `FannedOut` as its scorer: every batch the strategy hands over (a round) is cut
into chunks of at most `SearchParams.chunk_size` candidates, each chunk goes to a
`ChunkBoard` (the worker queues it as a job that any worker claims, its own included),
and the round returns once every chunk has landed. The strategy then proposes the
next round from what has landed, exactly as with one worker.

Everything a score depends on is fixed when a chunk is cut: the candidates (a fixed
slice of the round, known architectures included, so a restarted search cuts the same
chunks), the checkpoint, the scoring settings (the batch size too, which would
otherwise follow each worker's device) and, when racing, the leaders. So the stored
scores are those of one worker, however many workers share the search and in whatever
order chunks land, and a restarted coordinator replays its decisions from the known
scores without scoring anything twice.

Racing across chunks. A chunk races its candidates against the search's leaders: the
`top_k` best survivors of all earlier rounds, with their sums at every rung (stored
with their scores, so chunks on other workers and a restarted search have them). All
chunks of a round race against the same leaders. A candidate of the search's true
top k is in the top k of its own chunk and the leaders, so it survives its race as it
would survive one race of everything, and survivors get their full score: the top k of
the search's full scores is full scoring's top k.

What makes a chunk size good. A chunk costs a claim, a few commits and, on a worker
that has not scored for this checkpoint yet, loading the HyperNet and the validation
images; it should hold seconds of scoring. A round of B candidates keeps at most B / c
workers busy, so a round should hold several chunks; random search queues its chunks
ahead (its draws do not depend on scores) and keeps every worker busy whatever the
round. Racing wants many candidates per race: a race without leaders (the first round)
keeps at least `top_k + 2` of each chunk, so chunks much smaller than three times that
save little there; once leaders exist, a candidate worse than the k-th leader drops
after the first rung whatever the chunk's size. Hence 8 candidates per chunk for full
scoring and 16 for racing (`CHUNK_FULL`, `CHUNK_RACING`) with racing rounds of 64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from engine.config import ScoreConfig
from engine.errors import ChunkError
from engine.kinds import Arch
from engine.params import ChunkParams, LeaderRecord, SearchParams
from engine.score import Leader, Score, rank_key

# Chunks queued ahead of the round being scored (random search): enough to keep many
# workers busy, few enough that a huge search does not fill the queue at once.
AHEAD_CHUNKS = 64


@dataclass(frozen=True)
class Landed:
    """A chunk's score of one architecture, as the coordinator reads it back."""

    score: Score
    rungs: tuple[tuple[int, float, float], ...] | None  # a racing survivor's, else None


class ChunkBoard(Protocol):
    """Where a search's chunks go (the worker: chunk jobs in the database)."""

    def submit(self, chunk: ChunkParams) -> None:
        """Queue a chunk, unless one with its index exists already (then queue that one
        again if an earlier attempt of the search left it stopped)."""

    def gather(self, hashes: Sequence[str]) -> Mapping[str, Landed]:
        """Wait until every architecture has landed (scoring chunks meanwhile) and return them.

        Raises:
            ChunkError: A chunk failed.
            ChunkStopped: The search must stop (pause, cancel, shutdown).
        """


class ChunkStopped(Exception):
    """The coordinator was asked to stop while its chunks were out."""


def leader_record(landed: Landed) -> LeaderRecord | None:
    """A survivor as a chunk's leader; None for a score that cannot lead (no rungs, not finite)."""
    score, rungs = landed.score, landed.rungs
    if not rungs or not all(math.isfinite(value) for value in (score.error, score.loss)):
        return None
    if not all(math.isfinite(wrong) and math.isfinite(loss) for _, wrong, loss in rungs):
        return None
    return LeaderRecord(score.error, score.loss, score.images, score.z_draws, score.method, tuple(rungs))


def as_leader(record: LeaderRecord) -> Leader:
    """The engine's racing leader of a record."""
    score = Score(record.error, record.loss, record.images, record.z_draws, record.method)
    return Leader(score, {images: (wrong, loss) for images, wrong, loss in record.rungs})


class FannedOut:
    """A search's scorer that hands every batch to a `ChunkBoard` in chunks (see the module docstring).

    Args:
        params: The search's settings.
        board: Where chunks go.
        checkpoint_id: The HyperNet checkpoint every chunk scores against.
        batch_size: Images per forward pass, fixed for every chunk of the search.
        known: What a restarted search already has: hash -> its score, and its rungs
            when this search raced it to the end (a leader to be).
    """

    def __init__(
        self,
        params: SearchParams,
        board: ChunkBoard,
        *,
        checkpoint_id: int,
        batch_size: int,
        known: Mapping[str, Landed] | None = None,
    ) -> None:
        self.params = params
        self.board = board
        self.checkpoint_id = checkpoint_id
        self.score_config: ScoreConfig = replace(params.score, batch_size=batch_size)
        self.landed: dict[str, Landed] = dict(known or {})
        self.leaders: dict[str, LeaderRecord] = {}  # hash -> record: the best survivors so far
        self._next_index = 0  # index of the next chunk cut, in the search's own order
        self._round_first = 0  # index of the first chunk of the round being scored
        self._queued: set[str] = set()  # hashes handed to the board
        self._submitted: set[int] = set()  # chunk indices handed to the board (or found scored)
        self._ahead: list[tuple[list[Arch], str, int]] = []  # rounds cut ahead: archs, source, first index

    # The search's hooks (engine.search) --------------------------------------------------

    def ahead(self, archs: Sequence[Arch], source: str) -> None:
        """Rounds that follow whatever the scores: cut now, queued ahead when not racing."""
        batch = self.params.search.batch
        for first in range(0, len(archs), batch):
            round_ = list(archs[first : first + batch])
            self._ahead.append((round_, source, self._cut()))
            self._next_index += self._count(round_)
        if not self.params.racing:  # racing chunks wait for the leaders of the rounds before
            self._submit_ahead()

    def before(self, archs: Sequence[Arch], source: str) -> None:
        """A round is about to be scored: cut it (unless cut ahead) and queue its chunks."""
        round_ = list(archs)
        if self._ahead and [a.hash for a in self._ahead[0][0]] == [a.hash for a in round_]:
            _, _, first = self._ahead.pop(0)
        else:
            first = self._cut()
            self._next_index += self._count(round_)
        self._round_first = first
        size = self.params.chunk_size
        for i in range(0, len(round_), size):
            self._submit(first + i // size, round_[i : i + size], source)
        if not self.params.racing:
            self._submit_ahead()

    def __call__(self, archs: Sequence[Arch]) -> list[Score]:
        """The new architectures of the round, scored by whichever workers claimed their chunks."""
        landed = self.board.gather([a.hash for a in archs])
        self.landed.update(landed)
        return [landed[a.hash].score for a in archs]

    def after(self, archs: Sequence[Arch], scores: Sequence[Score]) -> None:
        """A round's scores: its survivors may lead the rounds after it."""
        if not self.params.racing:
            return
        for arch in archs:
            found = self.landed.get(arch.hash)
            record = leader_record(found) if found is not None else None
            if record is not None:
                self.leaders[arch.hash] = record
        ranked = sorted(self.leaders.items(), key=lambda item: (_rank(item[1]), item[0]))
        self.leaders = dict(ranked[: self.params.race.top_k])

    # Cutting -----------------------------------------------------------------------------

    def _cut(self) -> int:
        return self._next_index

    def _count(self, round_: Sequence[Arch]) -> int:
        return max(1, math.ceil(len(round_) / self.params.chunk_size))

    def _submit_ahead(self) -> None:
        """Queue the chunks of rounds cut ahead, up to AHEAD_CHUNKS past the current round."""
        size = self.params.chunk_size
        for round_, source, first in self._ahead:
            for i in range(0, len(round_), size):
                index = first + i // size
                if index >= self._round_first + AHEAD_CHUNKS:
                    return
                self._submit(index, round_[i : i + size], source)

    def _submit(self, index: int, piece: Sequence[Arch], source: str) -> None:
        """Queue one chunk: its candidates not scored or queued yet (none: nothing is queued)."""
        if index in self._submitted:
            return
        self._submitted.add(index)
        todo: dict[str, Arch] = {}
        for arch in piece:
            if arch.hash not in self.landed and arch.hash not in self._queued:
                todo.setdefault(arch.hash, arch)
        if not todo:
            return
        self._queued.update(todo)
        self.board.submit(
            ChunkParams(
                index=index,
                checkpoint_id=self.checkpoint_id,
                architectures=tuple(a.to_json() for a in todo.values()),
                hashes=tuple(todo),
                source=source,
                score=self.score_config,
                racing=self.params.racing,
                race=self.params.race,
                leaders=tuple(self.leaders.values()) if self.params.racing else (),
                commit_every=self.params.commit_every,
            )
        )


def _rank(record: LeaderRecord) -> tuple[int, float, float]:
    return rank_key(Score(record.error, record.loss, record.images, record.z_draws, record.method))


__all__ = [
    "AHEAD_CHUNKS",
    "ChunkBoard",
    "ChunkError",
    "ChunkStopped",
    "FannedOut",
    "Landed",
    "as_leader",
    "leader_record",
]
