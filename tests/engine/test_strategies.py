"""Search strategies must earn their keep: they beat random search when scores carry structure.

The scores here are a known smooth function of the architecture (wider ops are
better, larger kernels and dilations worse) plus noise, so a strategy that uses its
scores climbs and one that ignores them does not. Each strategy's best true quality
over four seeds is compared with random search's at the same budget; the second test
hands the same strategies scores that are noise alone and shows the comparison then
fails, so the first test cannot pass by accident.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from engine.arch import Architecture
from engine.config import SearchConfig
from engine.score import Score
from engine.search import run_search
from engine.space import PRESETS

TINY = PRESETS["tiny"]
BUDGET = 60  # architectures each search scores
SEEDS = range(4)
MARGIN = 0.2  # how much better than random search a strategy's mean best must be (quality units)
STRATEGIES = {
    # Same budget for all: the seeding samples count against it.
    "perturb": {"top_k": 4, "perturbations": BUDGET - 4},
    "markov": {"top_k": 4, "markov_steps": BUDGET - 4},
    "evolution": {"architectures": BUDGET, "population": 12, "tournament": 4},
}


def quality(arch: Architecture) -> float:
    """The hidden truth: mean op width, minus mean kernel growth and dilation."""
    ops = [op for _, _, op in arch.ops()]
    convs = [conv for op in ops for conv in op.convs if conv is not None]
    width = np.mean([op.units for op in ops]) / 4
    kernel = np.mean([conv.kernel[0] + conv.kernel[1] - 6 for conv in convs])
    dilation = np.mean([conv.dilation[0] + conv.dilation[1] - 2 for conv in convs])
    return float(width - 2 * kernel - 2 * dilation)


def _noise(arch: Architecture, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{arch.hash}".encode()).digest()
    return float(np.random.default_rng(int.from_bytes(digest[:8], "little")).normal())


def scorer(structured: bool, seed: int) -> Callable[[Sequence[Architecture]], list[Score]]:
    """Scores whose error falls as quality rises (plus noise), or noise alone."""

    def score(archs: Sequence[Architecture]) -> list[Score]:
        errors = [
            50 - 2 * quality(a) + 0.25 * _noise(a, seed) if structured else 50 + 5 * _noise(a, seed)
            for a in archs
        ]
        return [Score(error=e, loss=e / 10, images=100, z_draws=1, method="full") for e in errors]

    return score


def mean_best(strategy: str, structured: bool) -> float:
    """The true quality of the best architecture a search found, averaged over seeds."""
    options = STRATEGIES.get(strategy, {"architectures": BUDGET})
    bests = []
    for seed in SEEDS:
        config = SearchConfig(strategy=strategy, seed=seed, batch=4, **options)
        assert config.budget == BUDGET
        results, finished = run_search(TINY, config, scorer(structured, seed))
        assert finished
        bests.append(max(quality(r.arch) for r in results))
    return statistics.mean(bests)


@pytest.fixture(scope="module")
def random_search() -> float:
    # Random search never looks at its scores: structure or not, it finds the same.
    return mean_best("random", structured=True)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategies_beat_random_search_when_scores_have_structure(strategy: str, random_search: float) -> None:
    found = mean_best(strategy, structured=True)
    assert found > random_search + MARGIN, (strategy, found, random_search)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_the_comparison_fails_when_a_strategy_is_given_random_scores(
    strategy: str, random_search: float
) -> None:
    found = mean_best(strategy, structured=False)
    assert not found > random_search + MARGIN, (strategy, found, random_search)
