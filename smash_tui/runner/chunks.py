"""`JobBoard`: the engine's `ChunkBoard` for a search job, backed by chunk jobs in the database.

The search job's worker is the coordinator: the engine (`engine.fanout.FannedOut`) hands
it chunks, which become ``chunk`` jobs (``storage.chunks``) that any worker claims, and
waits for their scores here. While it waits it claims its search's chunks itself, runs
them in this process (`Worker.run_nested`: heartbeats for both jobs, the chunk's own
transitions), and reports the search's progress with how its chunks fare.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence

from engine.errors import ChunkError
from engine.fanout import ChunkStopped, Landed
from engine.params import ChunkParams
from engine.score import Score
from smash_tui.runner.reporter import JobContext
from storage import chunks, queue, records
from storage.chunks import ChunkInfo
from storage.models import Score as StoredScore

log = logging.getLogger("smash.worker")

# Seconds between looks at the chunks while this worker has none to run.
GATHER_POLL_S = 0.2
# Seconds between progress reports while waiting.
PROGRESS_EVERY_S = 1.0



def landed(row: StoredScore, search_id: int, survivor: str | None = None) -> Landed:
    """A stored score as the fan-out knows it, with its rung sums when it survived one of
    this search's races (such survivors lead the search's next races).

    `survivor`: the method a racing survivor's score has (None: any method).
    """
    rungs = None
    if row.rungs and row.job_id == search_id and (survivor is None or row.method == survivor):
        rungs = tuple((int(i), float(w), float(v)) for i, w, v in row.rungs)
    score = Score(
        error=row.error,
        loss=math.nan if row.loss is None else row.loss,
        images=row.images,
        z_draws=row.z_draws,
        method=row.method,
    )
    return Landed(score, rungs)

class JobBoard:
    """The chunks of one search job (see the module docstring).

    Args:
        context: The search job's context (its worker, reporter and requests).
        checkpoint_id: The checkpoint every chunk scores against.
        budget: Architectures the search scores at most (for its progress).
        known: Hashes known before this attempt of the search, with their full errors
            (NaN for partial ones) and whether this search recorded them.
    """

    def __init__(
        self,
        context: JobContext,
        *,
        checkpoint_id: int,
        budget: int,
        known: Mapping[str, tuple[float, bool]],
    ) -> None:
        self.context = context
        self.db = context.db
        self.search_id = context.job_id
        self.experiment_id = context.experiment_id
        self.checkpoint_id = checkpoint_id
        self.budget = budget
        # Known from other jobs count towards the budget; this search's own are in its tally.
        self.known_elsewhere = sum(1 for _, mine in known.values() if not mine)
        self.best_known = min(
            (error for error, _ in known.values() if not math.isnan(error)), default=math.inf
        )
        with self.db.session() as session:
            found = chunks.chunks_of(session, self.search_id)
        self.chunks: dict[int, ChunkInfo] = {chunk.index: chunk for chunk in found}
        self.by_hash: dict[str, int] = {h: c.index for c in found for h in c.hashes}
        self.best_error = self.best_known
        self._last_progress = 0.0

    # --- ChunkBoard -----------------------------------------------------------------------

    def submit(self, chunk: ChunkParams) -> None:
        existing = self.chunks.get(chunk.index)
        if existing is not None:
            if existing.state in chunks.STOPPED:
                self._queue_again([existing.id])
            return
        with self.db.session() as session:
            job = chunks.queue_chunk(session, self.search_id, chunk.to_params())
            session.commit()
        info = ChunkInfo(job.id, chunk.index, "queued", chunk.hashes, None, None)
        self.chunks[chunk.index] = info
        self.by_hash.update((h, chunk.index) for h in chunk.hashes)

    def gather(self, hashes: Sequence[str]) -> Mapping[str, Landed]:
        wanted = list(dict.fromkeys(hashes))
        landed: dict[str, Landed] = {}
        while True:
            waiting = [h for h in wanted if h not in landed]
            # States first: a chunk seen done has committed every score it will write.
            states = self._states({self.by_hash[h] for h in waiting if h in self.by_hash})
            landed.update(self._landed(waiting))
            waiting = [h for h in wanted if h not in landed]
            if not waiting:
                return landed
            self._check(waiting, states)
            if self.context.should_stop():
                raise ChunkStopped
            if self._run_one():
                continue
            self.report()
            time.sleep(GATHER_POLL_S)

    # --- progress and stopping ------------------------------------------------------------

    def report(self, *, final: bool = False, now: bool = False) -> None:
        """The search's progress: architectures scored, best full error, its chunks.

        Args:
            final: The search has ended: no chunk counts, and the fraction may reach 1.
            now: Report even if the last report is less than PROGRESS_EVERY_S old.
        """
        clock = time.monotonic()
        if not (final or now) and clock - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = clock
        with self.db.session() as session:
            count, best = chunks.search_tally(session, self.search_id)
            states = [c.state for c in chunks.chunks_of(session, self.search_id)]
        done = min(self.known_elsewhere + count, self.budget)
        best_error = min(self.best_known, math.inf if best is None else best)
        text = f"{done}/{self.budget} scored"
        if best_error < math.inf:
            text += f" · best {best_error:.2f}%"
        out = [s for s in states if s not in ("done", "cancelled")]
        if out and not final:
            running = states.count("running")
            text += f" · chunks {running} running, {len(out) - running} waiting of {len(states)}"
        fraction = done / self.budget if final else min(done / self.budget, 0.999)
        self.context.progress(fraction, text)
        self.best_error = best_error

    def stop(self, request: str) -> None:
        """The search stops: a pause or a cancel stops its chunks too; a shutdown leaves
        them to the other workers."""
        if request not in ("pause", "cancel"):
            return
        with self.db.session() as session:
            chunks.stop_chunks(session, self.search_id, "pause" if request == "pause" else "cancel")
            session.commit()

    # --- internals ------------------------------------------------------------------------

    def _states(self, indices: set[int]) -> dict[int, tuple[str, str | None]]:
        ids = {self.chunks[i].id: i for i in indices if i in self.chunks}
        with self.db.session() as session:
            found = chunks.chunk_states(session, ids)
        return {ids[ident]: value for ident, value in found.items()}

    def _landed(self, hashes: Sequence[str]) -> dict[str, Landed]:
        if not hashes:
            return {}
        with self.db.session() as session:
            rows = records.scores_by_hash(session, self.experiment_id, self.checkpoint_id, hashes)
        return {hash_: landed(row, self.search_id) for hash_, row in rows.items()}

    def _check(self, waiting: Sequence[str], states: Mapping[int, tuple[str, str | None]]) -> None:
        """Raise for a chunk that failed; queue again one that stopped without the search."""
        stopped = []
        for index, (state, error) in sorted(states.items()):
            chunk = self.chunks[index]
            if state == "failed":
                raise ChunkError(f"chunk {index} (job {chunk.id}) failed: {error or 'no reason given'}")
            if state == "done" and any(self.by_hash.get(h) == index for h in waiting):
                missing = next(h for h in waiting if self.by_hash.get(h) == index)
                raise ChunkError(f"chunk {index} (job {chunk.id}) ended without a score of {missing}")
            if state in chunks.STOPPED:
                stopped.append(chunk.id)
        for hash_ in waiting:
            if hash_ not in self.by_hash:
                raise ChunkError(f"architecture {hash_} is in no chunk of search job {self.search_id}")
        if stopped:
            self._queue_again(stopped)

    def _queue_again(self, chunk_ids: Sequence[int]) -> None:
        with self.db.session() as session:
            again = chunks.queue_again(session, self.search_id, chunk_ids)
            session.commit()
        if again:
            log.info("search %d: chunks %s queued again", self.search_id, again)

    def _run_one(self) -> bool:
        """Claim one of the search's queued chunks and run it here; whether there was one."""
        worker = self.context.worker
        assert worker.worker_id is not None
        chunk_id = queue.claim(self.db, worker.worker_id, kinds=("chunk",), parent=self.search_id)
        if chunk_id is None:
            return False
        worker.run_nested(chunk_id, self.context)
        self.report(now=True)
        return True
