"""A search fanned out in chunks (`engine.fanout`): the same scores whoever scores them, racing exact.

The chunks go to an in-memory board that plays any number of workers: it runs the
chunks it holds in a random order, as they would land from workers of unequal speed,
through the same `score_chunk` a worker runs. Scores come from a scorer whose every
architecture gets each validation image right or wrong by a fixed draw of its hash, so
racing decides on consistent partial sums, like a real validation set, in no time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
import torch

from engine.config import RaceConfig, ScoreConfig, SearchConfig
from engine.fanout import ChunkStopped, FannedOut, Landed
from engine.jobs import score_chunk
from engine.kinds import Arch, kind_of
from engine.params import ChunkParams, SearchParams
from engine.score import Score, Scorer, rank_key
from engine.search import run_search
from engine.space import PRESETS

TINY = PRESETS["tiny"]
TINY_KIND = kind_of(TINY)
IMAGES = 800


class _HashScorer(Scorer):
    """Architecture a gets image i wrong iff a fixed draw u(a, i) < its error rate (from its hash)."""

    def __init__(self, batch_size: int = 50) -> None:  # no network: the scoring logic runs on known sums
        self.config = ScoreConfig(batch_size=batch_size)
        self.batch_size = batch_size
        self.device = torch.device("cpu")
        self.num_images = IMAGES
        self._bn_cache = None
        self._weight_cache = None
        self.calls: dict[str, int] = {}

    def wrong(self, arch: Arch) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(arch.hash.encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        rate = 0.2 + 0.6 * rng.random()
        return torch.from_numpy(rng.random(IMAGES) < rate).float()

    def _sums(self, arch: Arch, start: int, stop: int, into: torch.Tensor | None = None) -> torch.Tensor:
        if start == 0:
            self.calls[arch.hash] = self.calls.get(arch.hash, 0) + 1
        wrong = self.wrong(arch)
        totals = self._zero_sums() if into is None else into
        # Batch by batch, never across a rung end, as a Scorer adds them (`Scorer._slices`):
        # a survivor's sums then add up in full scoring's order.
        cuts = [start, *(end for end in self.rung_ends() if start < end < stop), stop]
        for begin, end in zip(cuts, cuts[1:]):
            for first in range(begin, end, self.batch_size):
                batch = wrong[first : min(first + self.batch_size, end)].sum()
                totals[0] += torch.stack([batch, batch / 3.0])
        return totals

    def full(self, arch: Arch) -> Score:
        return self._to_score(self._sums(arch, 0, IMAGES), IMAGES, "full")


class _Board:
    """Workers in memory: each gather runs the chunks out, in an order drawn from `order`."""

    def __init__(self, scorer: _HashScorer, order: np.random.Generator | None, stop_after: int | None = None) -> None:
        self.scorer = scorer
        self.order = order  # None: one worker, chunks in the order they were queued
        self.stop_after = stop_after
        self.pending: list[ChunkParams] = []
        self.chunks: dict[int, ChunkParams] = {}  # index -> the chunk as first queued
        self.landed: dict[str, Landed] = {}
        self.ran = 0

    def submit(self, chunk: ChunkParams) -> None:
        if chunk.index in self.chunks:  # an earlier attempt queued it: that one runs
            return
        self.chunks[chunk.index] = chunk
        self.pending.append(chunk)

    def gather(self, hashes: Sequence[str]) -> Mapping[str, Landed]:
        while any(h not in self.landed for h in hashes):
            assert self.pending, "waiting for architectures no chunk holds"
            if self.stop_after is not None and self.ran >= self.stop_after:
                raise ChunkStopped
            index = 0 if self.order is None else int(self.order.integers(len(self.pending)))
            self._run(self.pending.pop(index))
        return {h: self.landed[h] for h in hashes}

    def _run(self, chunk: ChunkParams) -> None:
        self.ran += 1
        archs = [TINY_KIND.parse(text, TINY) for text, h in zip(chunk.architectures, chunk.hashes) if h not in self.landed]

        def add(arch: Arch, score: Score, rungs: Mapping[int, tuple[float, float]] | None) -> None:
            assert arch.hash not in self.landed, "scored twice"
            stored = None if rungs is None else tuple((i, w, s) for i, (w, s) in sorted(rungs.items()))
            self.landed[arch.hash] = Landed(score, stored)

        assert score_chunk(self.scorer, chunk, archs, add, lambda: False)


STRATEGIES = {
    "random": {"architectures": 60},
    "perturb": {"top_k": 6, "perturbations": 40},
    "markov": {"top_k": 6, "markov_steps": 12},
    "evolution": {"architectures": 36, "population": 12, "tournament": 4},
    "staged": {"architectures": 24, "top_k": 6, "perturbations": 12, "markov_steps": 6},
}


def _params(strategy: str, racing: bool, seed: int = 0) -> SearchParams:
    return SearchParams(
        search=SearchConfig(strategy=strategy, batch=20, seed=seed, **STRATEGIES[strategy]),
        score=ScoreConfig(batch_size=50),
        racing=racing,
        race=RaceConfig(top_k=5),
        chunk=6,
    )


def _search(params: SearchParams, board: _Board, known: Mapping[str, Landed] | None = None) -> tuple[FannedOut, bool]:
    scorer = FannedOut(params, board, checkpoint_id=1, batch_size=50, known=known)
    known_scores = {h: landed.score for h, landed in (known or {}).items()}
    try:
        _, finished = run_search(TINY, params.search, scorer, known=known_scores)
    except ChunkStopped:
        return scorer, False
    return scorer, finished


@pytest.mark.parametrize("racing", [False, True], ids=["full", "racing"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_any_number_of_workers_stores_what_one_worker_stores(strategy: str, racing: bool) -> None:
    params = _params(strategy, racing)
    one = _Board(_HashScorer(), order=None)
    assert _search(params, one)[1]
    for seed in range(3):
        many = _Board(_HashScorer(), order=np.random.default_rng(seed))
        assert _search(params, many)[1]
        assert many.landed == one.landed  # every score, racing's partial ones and rungs too
        assert set(many.scorer.calls.values()) == {1}  # every candidate scored once


@pytest.mark.parametrize("seed", range(4))
def test_racing_chunks_on_many_workers_return_full_scorings_top_k(seed: int) -> None:
    params = SearchParams(
        search=SearchConfig(strategy="random", architectures=150, batch=50, seed=seed),
        score=ScoreConfig(batch_size=50),
        racing=True,
        race=RaceConfig(top_k=8),
        chunk=10,
    )
    board = _Board(_HashScorer(), order=np.random.default_rng(seed))
    scorer, finished = _search(params, board)
    assert finished and len(board.landed) == 150
    archs = {arch.hash: arch for arch in _draws(params)}
    full = {h: _HashScorer().full(arch) for h, arch in archs.items()}
    top = lambda scores: sorted(scores, key=lambda h: (*rank_key(scores[h]), h))[:8]  # noqa: E731
    raced = {h: landed.score for h, landed in board.landed.items()}
    assert top(raced) == top(full)
    for h in top(raced):
        assert raced[h] == full[h] and board.landed[h].rungs  # survivors: exactly their full score, with rungs
    assert [r.error for r in scorer.leaders.values()] == sorted(full[h].error for h in top(full))
    measured = sum(s.images for s in raced.values())
    assert measured < 0.6 * 150 * IMAGES  # racing across chunks still saves most images


def _draws(params: SearchParams) -> list[Arch]:
    """The architectures a random search draws (they do not depend on any score)."""
    rng = np.random.default_rng([params.search.seed, 3])
    return [TINY_KIND.sample(TINY, rng) for _ in range(params.search.architectures)]


@pytest.mark.parametrize("racing", [False, True], ids=["full", "racing"])
@pytest.mark.parametrize("strategy", ["random", "perturb", "evolution"])
def test_a_restarted_coordinator_replays_its_chunks_without_scoring_again(strategy: str, racing: bool) -> None:
    params = _params(strategy, racing)
    whole = _Board(_HashScorer(), order=np.random.default_rng(7))
    assert _search(params, whole)[1]

    board = _Board(_HashScorer(), order=np.random.default_rng(7), stop_after=4)
    first, finished = _search(params, board)
    assert not finished and 0 < len(board.landed) < len(whole.landed)
    # A new coordinator knows what landed (rungs too) and finds its chunks queued.
    board.stop_after = None
    again, finished = _search(params, board, known=dict(board.landed))
    assert finished and board.landed == whole.landed
    assert set(board.scorer.calls.values()) == {1}
    assert board.chunks.keys() == whole.chunks.keys()  # the same chunks, cut the same way
    assert all(board.chunks[i].hashes == whole.chunks[i].hashes for i in whole.chunks)
