"""Search strategies over a trained SMASH network, streaming (architecture, score) results.

All strategies share three rules:

- an architecture is identified by its hash and is never scored twice in one search
  (and, given the scores a search already has, never again after a restart: pass them
  as `known`, and the same seed replays the same decisions without rescoring);
- every newly scored architecture is reported through `on_result` as soon as its score
  exists, so a crash loses at most the one being scored;
- randomness comes from one numpy Generator, so a seed fixes the whole search.

Strategies: random sampling of N; perturbation of the top k; the original's greedy
Markov chain (accept a perturbation only if it scores better); regularised evolution
(Real et al. 2019) with the SMASH score as fitness; and "staged", the original's
sequence of random sampling, perturbation of the best, then the Markov chain.

The strategies draw and perturb architectures through the space's kind
(`engine.kinds`) and otherwise only hash them, so they search any kind of space.

A scorer that fans a search out across workers (`engine.fanout`) may have three hooks,
which the search calls when present: `before(archs, source)` with every batch before it
is scored (its known architectures included, so that the batch is cut into the same
chunks after a restart), `after(archs, scores)` with its scores, and `ahead(archs, source)`
with architectures that will be scored next whatever the scores (random search's), so
that they can be queued before the batches ahead of them have landed.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.config import SearchConfig
from engine.kinds import Arch, Space, SpaceKind, kind_of
from engine.score import Score, rank_key

ScoreBatch = Callable[[Sequence[Arch]], list[Score]]


@dataclass(frozen=True)
class Result:
    arch: Arch
    score: Score
    source: str  # how the search found it: random / perturb / markov / evolution


class _Book:
    """Scores so far, by hash; scores new architectures in batches and reports them."""

    def __init__(
        self,
        score_batch: ScoreBatch,
        known: dict[str, Score],
        on_result: Callable[[Result], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.score_batch = score_batch
        self.scores: dict[str, Score] = dict(known)
        self.results: list[Result] = []
        self.on_result = on_result
        self.should_stop = should_stop
        self.stopped = False

    def score(self, archs: Sequence[Arch], source: str) -> list[Score]:
        """Scores of `archs`: known ones looked up, new ones (deduplicated) scored once."""
        new: dict[str, Arch] = {}
        for a in archs:
            if a.hash not in self.scores and a.hash not in new:
                new[a.hash] = a
        before = getattr(self.score_batch, "before", None)
        if before is not None:
            before(archs, source)
        if new:
            if self.should_stop is not None and self.should_stop():
                self.stopped = True
                raise _Stopped
            fresh = list(new.values())
            for a, s in zip(fresh, self.score_batch(fresh)):
                self.scores[a.hash] = s
                result = Result(a, s, source)
                self.results.append(result)
                if self.on_result is not None:
                    self.on_result(result)
        scores = [self.scores[a.hash] for a in archs]
        after = getattr(self.score_batch, "after", None)
        if after is not None:
            after(archs, scores)
        return scores

    def ahead(self, archs: Sequence[Arch], source: str) -> None:
        """Tell the scorer what follows whatever the scores (see the module docstring)."""
        ahead = getattr(self.score_batch, "ahead", None)
        if ahead is not None:
            ahead(archs, source)

    def best(self, pool: Sequence[Arch], k: int) -> list[Arch]:
        return sorted(pool, key=lambda a: rank_key(self.scores[a.hash]))[:k]


class _Stopped(Exception):
    pass


@dataclass(frozen=True)
class _Draws:
    """Random architectures of one space, all from the search's one generator."""

    kind: SpaceKind
    space: Space
    rng: np.random.Generator

    def sample(self) -> Arch:
        return self.kind.sample(self.space, self.rng)

    def perturb(self, arch: Arch, p: float) -> Arch:
        return self.kind.perturb(arch, self.space, self.rng, p)


def run_search(
    space: Space,
    config: SearchConfig,
    score_batch: ScoreBatch,
    *,
    known: dict[str, Score] | None = None,
    start: Sequence[Arch] = (),
    on_result: Callable[[Result], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[Result], bool]:
    """Run `config.strategy`.

    Args:
        space: the search space the architectures come from, of any kind.
        config: strategy and budgets.
        score_batch: scores a list of architectures (full scoring or racing).
        known: scores already recorded for this checkpoint, by hash: never rescored.
        start: architectures to start from (perturb / markov / evolution); when empty
            they start from the best of `known`, or from random samples.
        on_result: called with each newly scored architecture.
        should_stop: polled before each scoring batch; True ends the search early.

    Returns:
        The newly scored results, and whether the search ran to its end.
    """
    draws = _Draws(kind_of(space), space, np.random.default_rng([config.seed, 3]))
    book = _Book(score_batch, known or {}, on_result, should_stop)
    pool = list(start)
    try:
        if config.strategy in ("random", "staged"):
            pool += _random(draws, config, book)
        if config.strategy in ("perturb", "staged"):
            pool = _seed_pool(draws, config, book, pool)
            pool += _perturb_top(draws, config, book, pool)
        if config.strategy in ("markov", "staged"):
            pool = _seed_pool(draws, config, book, pool)
            _markov(draws, config, book, pool)
        if config.strategy == "evolution":
            _evolution(draws, config, book, pool)
    except _Stopped:
        return book.results, False
    return book.results, True


def _seed_pool(draws: _Draws, config: SearchConfig, book: _Book, pool: list[Arch]) -> list[Arch]:
    """A non-empty scored pool: the given one, else random samples."""
    if not pool:
        pool = [draws.sample() for _ in range(config.top_k)]
    book.score(pool, "random")
    return pool


def _random(draws: _Draws, config: SearchConfig, book: _Book) -> list[Arch]:
    # Drawn up front (scores never change a draw), so a fanned-out search queues them early.
    drawn = [draws.sample() for _ in range(config.architectures)]
    book.ahead(drawn, "random")
    for first in range(0, len(drawn), config.batch):
        book.score(drawn[first : first + config.batch], "random")
    return drawn


def _perturb_top(draws: _Draws, config: SearchConfig, book: _Book, pool: list[Arch]) -> list[Arch]:
    """Perturbations of the top k, spread round-robin over them.

    The top k is ranked again after every scoring batch, perturbations included, so a
    perturbation that beats its parent is perturbed in turn: the search climbs from
    what it finds instead of circling the starting pool.
    """
    made: list[Arch] = []
    for first in range(0, config.perturbations, config.batch):
        top = book.best([*pool, *made], config.top_k)
        count = min(config.batch, config.perturbations - first)
        batch = [draws.perturb(top[(first + i) % len(top)], config.perturb_p) for i in range(count)]
        book.score(batch, "perturb")
        made += batch
    return made


def _markov(draws: _Draws, config: SearchConfig, book: _Book, pool: list[Arch]) -> Arch:
    """Greedy chain from the best so far: accept a perturbation only if it scores better."""
    current = book.best(pool, 1)[0]
    for _ in range(config.markov_steps):
        proposal = draws.perturb(current, config.perturb_p)
        if rank_key(book.score([proposal], "markov")[0]) < rank_key(book.scores[current.hash]):
            current = proposal
    return current


def _evolution(draws: _Draws, config: SearchConfig, book: _Book, pool: list[Arch]) -> None:
    """Regularised evolution: tournament selection, mutate the winner, the oldest dies."""
    population: collections.deque[Arch] = collections.deque(pool[-config.population :])
    while len(population) < config.population:
        need = config.population - len(population)
        batch = [draws.sample() for _ in range(min(need, config.batch))]
        book.score(batch, "random")
        population.extend(batch)
    book.score(list(population), "random")
    # Every member and every child counts as one evaluation, scored now or known
    # already, so a resumed search takes exactly the turns of an uninterrupted one.
    for _ in range(config.architectures - len(population)):
        picks = draws.rng.choice(len(population), size=config.tournament, replace=False)
        parent = min((population[int(i)] for i in picks), key=lambda a: rank_key(book.scores[a.hash]))
        child = draws.perturb(parent, config.perturb_p)
        book.score([child], "evolution")
        population.append(child)
        population.popleft()
