"""The sampler and perturbation: valid architectures for every seed and every legal space."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.arch import Architecture, validate
from engine.sampler import perturb, sample
from engine.space import PRESETS, SamplingLimits, SearchSpace


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_two_thousand_seeds_sample_valid_architectures(preset: str) -> None:
    space = PRESETS[preset]
    seen = set()
    for seed in range(2000):
        arch = sample(space, np.random.default_rng(seed))
        validate(arch, space)
        assert Architecture.from_json(arch.to_json(), space) == arch
        seen.add(arch.hash)
    assert len(seen) == 2000  # the space is large: no collisions expected


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_five_hundred_perturbations_are_valid(preset: str) -> None:
    space = PRESETS[preset]
    rng = np.random.default_rng(1)
    arch = sample(space, rng)
    changed = 0
    for step in range(500):
        p = (0.05, 0.2, 0.5)[step % 3]
        new = perturb(arch, space, rng, p)
        validate(new, space)
        changed += new != arch
        arch = new if step % 2 else arch  # walk a chain and also perturb one fixed point
    assert changed > 400


def test_sampler_is_pure() -> None:
    space = PRESETS["small"]
    a = sample(space, np.random.default_rng(42))
    b = sample(space, np.random.default_rng(42))
    assert a == b and a.hash == b.hash
    rng = np.random.default_rng(0)
    assert sample(space, rng) != sample(space, rng)


def test_original_crash_configuration_samples() -> None:
    # The original code crashed here: no legal read count on small budgets.
    space = SearchSpace(name="crash", depth=6, width=2)
    for seed in range(300):
        validate(sample(space, np.random.default_rng(seed)), space)


def test_random_legal_spaces_always_sample() -> None:
    meta = np.random.default_rng(2024)
    for _ in range(60):
        n = int(meta.choice([1, 2, 4, 8]))
        space = SearchSpace(
            name="random",
            num_blocks=int(meta.integers(1, 5)),
            depth=int(meta.integers(0, 8)),
            width=int(meta.integers(1, 4)),
            base_units=n,
            max_units=n * int(meta.integers(1, 6)),
            bottleneck=int(meta.integers(1, 5)),
            max_bottleneck=int(meta.integers(1, 3)),
            depth_compression=int(meta.integers(1, 4)),
            kernel_sizes=(1, 3) if meta.random() < 0.3 else (3, 5),
            max_dilation=int(meta.integers(1, 4)),
            groups=tuple(g for g in (1, 2, 4, 8) if n % g == 0),
            variable_ops=bool(meta.random() < 0.5),
            min_budget=float(meta.uniform(0.01, 0.5)),
        )
        for seed in range(20):
            arch = sample(space, np.random.default_rng(seed))
            validate(arch, space)
            validate(perturb(arch, space, np.random.default_rng(seed), 0.3), space)


def test_annealed_limits_narrow_what_is_drawn() -> None:
    space = PRESETS["paper"]
    start = SamplingLimits.annealed(space, 0.0)
    assert start == SamplingLimits(max_budget=0.5, max_kernel=3)
    assert SamplingLimits.annealed(space, 0.5) == SamplingLimits(max_budget=1.0, max_kernel=7)
    kernels = set()
    for seed in range(50):
        arch = sample(space, np.random.default_rng(seed), start)
        for _, _, op in arch.ops():
            kernels.update(k for c in op.convs if c is not None for k in c.kernel)
    assert kernels == {3}


def test_single_conv_space_has_single_conv_ops() -> None:
    space = dataclasses.replace(PRESETS["tiny"], variable_ops=False)
    for seed in range(50):
        arch = sample(space, np.random.default_rng(seed))
        assert all(op.active == (True, False, False, False) for _, _, op in arch.ops())
