"""Scoring (full, z averaging, BN recalibration, racing) and the search strategies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.arch import validate
from engine.config import STRATEGIES, SearchConfig
from engine.data import Dataset, DeviceImages, Split
from engine.network import SmashNet
from engine.sampler import sample
from engine.score import RaceConfig, Racer, Score, ScoreConfig, Scorer, rank_key
from engine.search import run_search
from engine.space import PRESETS

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def net() -> SmashNet:
    torch.manual_seed(0)
    return SmashNet(TINY).to(memory_format=torch.channels_last).eval()


def _scorer(net: SmashNet, data: Dataset, **options) -> Scorer:
    val = DeviceImages(data.val, "cpu", data.mean, data.std)
    train = DeviceImages(data.train, "cpu", data.mean, data.std)
    return Scorer(net, val, ScoreConfig(batch_size=64, **options), train=train)


def test_scoring_is_deterministic_for_a_seed(net: SmashNet, small_synthetic: Dataset) -> None:
    arch = sample(TINY, np.random.default_rng(0))
    first = _scorer(net, small_synthetic, seed=3).score(arch)
    again = _scorer(net, small_synthetic, seed=3).score(arch)
    assert first == again
    assert first.images == 200 and first.method == "full" and 0 <= first.error <= 100
    other_seed = _scorer(net, small_synthetic, seed=4).score(arch)
    assert other_seed.loss != first.loss  # a different z


def test_z_draws_average_and_subsets(net: SmashNet, small_synthetic: Dataset) -> None:
    arch = sample(TINY, np.random.default_rng(1))
    one = _scorer(net, small_synthetic, seed=0, z_draws=1).score(arch)
    three = _scorer(net, small_synthetic, seed=0, z_draws=3).score(arch)
    assert three.z_draws == 3 and three.loss != one.loss
    part = _scorer(net, small_synthetic, images=50).score(arch)
    assert part.images == 50


def test_bn_recalibration_changes_the_score_and_restores_the_shared_statistics(
    net: SmashNet, small_synthetic: Dataset
) -> None:
    arch = sample(TINY, np.random.default_rng(2))
    before = net.head_norm.running_mean.clone()
    plain = _scorer(net, small_synthetic).score(arch)
    recal = _scorer(net, small_synthetic, bn_recalibration_batches=3, bn_batch_size=32).score(arch)
    assert recal.loss != plain.loss
    assert torch.equal(net.head_norm.running_mean, before)  # shared statistics untouched
    assert not net.training


class _KnownErrorScorer(Scorer):
    """Scorer whose measurements come from known error rates instead of a network.

    Architecture j gets image i wrong iff a fixed uniform draw u(j, i) < rate_j, so
    partial sums over any image range are consistent, like a real validation set.
    """

    def __init__(self, rates: list[float], images: int) -> None:  # no network: only the racing logic runs
        self.config = ScoreConfig()
        self.batch_size = 100
        self.device = torch.device("cpu")
        self.num_images = images
        self._bn_cache = None
        self.wrong = {
            i: torch.from_numpy(np.random.default_rng(i).random(images) < rate).float()
            for i, rate in enumerate(rates)
        }
        self.measured = 0

    def _sums(self, arch, start: int, stop: int, into: torch.Tensor | None = None) -> torch.Tensor:
        self.measured += stop - start
        index = int(arch)  # the "architectures" are indices here
        wrong = self.wrong[index][start:stop].sum()
        totals = self._zero_sums() if into is None else into
        totals[0] += torch.stack([wrong, wrong * 2.0])
        return totals


def test_racing_keeps_the_top_ten_of_spread_out_candidates_at_a_fraction_of_the_cost() -> None:
    rates = list(np.linspace(0.2, 0.8, 64))
    np.random.default_rng(0).shuffle(rates)
    full_scorer = _KnownErrorScorer(rates, 5000)
    archs = [str(i) for i in range(64)]  # stand-ins: only the racing logic looks at them
    full = [full_scorer._to_score(full_scorer._sums(a, 0, 5000), 5000, "full") for a in archs]
    racer = _KnownErrorScorer(rates, 5000)
    raced = racer.race(archs, RaceConfig(top_k=10))
    top = lambda scores: sorted(range(64), key=lambda i: (scores[i].error, i))[:10]  # noqa: E731
    assert top(raced) == top(full)
    assert racer.measured < 0.3 * full_scorer.measured
    assert all(r == f for r, f in zip(raced, full) if r.method == "full")


def _full_scores(scorer: _KnownErrorScorer, archs: list[str]) -> list[Score]:
    return [scorer._to_score(scorer._sums(a, 0, scorer.num_images), scorer.num_images, "full") for a in archs]


def test_a_racer_drops_candidates_clearly_worse_than_earlier_survivors_after_the_first_rung() -> None:
    # A first batch of ten at 20-25 % error; then a batch of 16 candidates at 50-80 %
    # and one at 10 %. Raced alone, the second batch would score its own top 10 in full.
    rates = [*np.linspace(0.20, 0.25, 10), *np.linspace(0.5, 0.8, 16), 0.1]
    archs = [str(i) for i in range(len(rates))]
    scorer = _KnownErrorScorer(rates, 5000)
    racer = Racer(scorer, RaceConfig(top_k=10))
    assert all(s.method == "full" for s in racer(archs[:10]))  # ten candidates for a top 10
    scorer.measured = 0
    raced = racer(archs[10:])
    assert raced[-1].method == "full" and raced[-1] == _full_scores(_KnownErrorScorer(rates, 5000), archs)[-1]
    assert {(s.method, s.images) for s in raced[:-1]} == {("racing", 156)}  # one rung: 1/32 of the images
    assert scorer.measured == 16 * 156 + 5000
    alone = _KnownErrorScorer(rates, 5000)
    assert sum(s.method == "full" for s in alone.race(archs[10:], RaceConfig(top_k=10))) >= 10
    assert scorer.measured < 0.2 * alone.measured
    assert sorted(leader.score.error for leader in racer.leaders)[0] == raced[-1].error
    # A lone candidate (a Markov step) races against the leaders too.
    assert [(s.method, s.images) for s in racer(archs[-2:-1])] == [("racing", 156)]


def test_a_racer_keeps_the_top_ten_of_a_whole_search_for_less_than_per_batch_racing() -> None:
    rates = list(np.linspace(0.2, 0.8, 128))
    np.random.default_rng(1).shuffle(rates)
    archs = [str(i) for i in range(128)]
    full = _full_scores(_KnownErrorScorer(rates, 5000), archs)
    batches = [archs[i : i + 16] for i in range(0, 128, 16)]
    per_batch = _KnownErrorScorer(rates, 5000)
    for batch in batches:
        per_batch.race(batch, RaceConfig(top_k=10))
    searching = _KnownErrorScorer(rates, 5000)
    racer = Racer(searching, RaceConfig(top_k=10))
    raced = [score for batch in batches for score in racer(batch)]
    top = lambda scores: sorted(range(128), key=lambda i: (*rank_key(scores[i]), i))[:10]  # noqa: E731
    assert top(raced) == top(full)
    assert [leader.score.error for leader in racer.leaders] == sorted(full[i].error for i in top(full))
    assert searching.measured < 0.5 * per_batch.measured


def test_a_race_generates_each_candidates_weights_once(
    net: SmashNet, small_synthetic: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    archs = [sample(TINY, np.random.default_rng([8, i])) for i in range(8)]
    scorer = _scorer(net, small_synthetic, z_draws=2)
    generated: list[str] = []
    real_generate = net.generate

    def counting_generate(arch, *args, **kwargs):
        generated.append(arch.hash)
        return real_generate(arch, *args, **kwargs)

    monkeypatch.setattr(net, "generate", counting_generate)
    raced = scorer.race(archs, RaceConfig(top_k=2, first_images=40, min_survivors=3, margin_z=0))
    assert max(s.images for s in raced) > 64  # survivors ran more than one rung
    assert sorted(generated) == sorted(a.hash for a in archs for _ in range(2))
    assert not scorer._weight_cache  # nothing held after the race
    generated.clear()
    survivor = next(a for a, s in zip(archs, raced) if s.method == "full")
    assert scorer.score(survivor) == raced[archs.index(survivor)]  # cached weights, same numbers
    assert generated == [survivor.hash] * 2


def test_racing_survivors_score_exactly_as_full_scoring(net: SmashNet, small_synthetic: Dataset) -> None:
    archs = [sample(TINY, np.random.default_rng([7, i])) for i in range(8)]
    scorer = _scorer(net, small_synthetic)
    # 40 images round up to the scorer's rung end 48 (ends 6, 12, 24, 48, 96, 192, 200 for
    # 200 images), not to a whole batch of 64: full scoring cuts its batches there too.
    assert scorer.rung_ends() == [6, 12, 24, 48, 96, 192, 200]
    raced = scorer.race(archs, RaceConfig(top_k=2, first_images=40, min_survivors=3, margin_z=0))
    survivors = [(a, r) for a, r in zip(archs, raced) if r.method == "full"]
    assert 3 <= len(survivors) < len(archs)
    assert {r.images for r in raced if r.method == "racing"} <= {48, 96, 192}
    for arch, score in survivors:
        assert score == scorer.score(arch)


def test_a_scoring_subset_of_a_class_sorted_split_covers_every_class(net: SmashNet, small_synthetic: Dataset) -> None:
    # ImageFolder trees and many npz exports list images class by class; a prefix of
    # such a split would be one class, and racing's first rungs would rank on it alone.
    by_class = torch.argsort(small_synthetic.val.labels, stable=True)
    sorted_val = Split(small_synthetic.val.images[by_class], small_synthetic.val.labels[by_class])
    val = DeviceImages(sorted_val, "cpu", small_synthetic.mean, small_synthetic.std)
    scorer = Scorer(net, val, ScoreConfig(images=40, batch_size=64, bn_recalibration_batches=0))
    counts = torch.bincount(scorer.labels, minlength=10)
    assert (counts > 0).all() and counts.max() <= 10  # all ten classes, none dominating
    whole = Scorer(net, val, ScoreConfig(batch_size=64, bn_recalibration_batches=0))
    assert sorted(whole.labels.tolist()) == sorted_val.labels.tolist()  # a reordering, nothing lost


def test_racing_ranks_survivors_above_candidates_dropped_on_a_lucky_slice() -> None:
    full = Score(error=30.0, loss=1.0, images=5000, z_draws=1, method="full")
    dropped = Score(error=25.0, loss=0.9, images=200, z_draws=1, method="racing")
    later = Score(error=28.0, loss=0.9, images=1600, z_draws=1, method="racing")
    assert sorted([dropped, later, full], key=rank_key) == [full, later, dropped]
    same_images = Score(error=29.0, loss=1.0, images=5000, z_draws=1, method="full")
    assert sorted([full, same_images], key=rank_key) == [same_images, full]  # plain scoring: by error


class _FakeScorer:
    """Deterministic scores from the architecture alone, counting every call."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[str] = []

    def __call__(self, archs):
        self.calls += len(archs)
        self.seen += [a.hash for a in archs]
        return [Score(error=float(int(a.hash[:6], 16) % 1000) / 10, loss=1.0, images=1, z_draws=1, method="full") for a in archs]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_yields_valid_unique_architectures(strategy: str) -> None:
    fake = _FakeScorer()
    config = SearchConfig(
        strategy=strategy, architectures=40, top_k=5, perturbations=20, markov_steps=15,
        population=12, tournament=4, batch=8, seed=1,
    )
    streamed = []
    results, finished = run_search(TINY, config, fake, on_result=streamed.append)
    assert finished and results == streamed and results
    hashes = [r.arch.hash for r in results]
    assert len(hashes) == len(set(hashes)) == fake.calls  # nothing scored twice
    assert len(fake.seen) == len(set(fake.seen))
    for r in results:
        validate(r.arch, TINY)
    assert len(results) <= config.budget


def test_search_resumes_without_rescoring_and_follows_the_same_path() -> None:
    config = SearchConfig(strategy="evolution", architectures=30, population=10, tournament=3, batch=5, seed=7)
    whole, _ = run_search(TINY, config, _FakeScorer())
    stop_after = {"n": 0}

    def stop() -> bool:
        stop_after["n"] += 1
        return stop_after["n"] > 8

    partial, finished = run_search(TINY, config, _FakeScorer(), should_stop=stop)
    assert not finished and 0 < len(partial) < len(whole)
    known = {r.arch.hash: r.score for r in partial}
    fake = _FakeScorer()
    rest, finished = run_search(TINY, config, fake, known=known)
    assert finished
    assert not set(fake.seen) & set(known)  # nothing scored again
    assert [r.arch.hash for r in partial + rest] == [r.arch.hash for r in whole]


def test_bad_search_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown search strategy 'greedy'"):
        SearchConfig(strategy="greedy")
    with pytest.raises(ValueError, match="architectures must be at least 1, got -3"):
        SearchConfig(architectures=-3)
