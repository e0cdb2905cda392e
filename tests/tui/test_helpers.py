"""The app's pure helpers: statistics, forms, the spec diagram, formatting, processes."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from smash_tui.tui import forms, processes
from smash_tui.tui.format import duration, human, progress_bar, state_text
from smash_tui.tui.forms import FormError, parse_retrain, parse_search
from smash_tui.tui.spec_view import op_line, spec_diagram
from smash_tui.tui.stats import (
    correlation,
    kendall_tau,
    pareto_front,
    ranks,
    spearman_rho,
    tau_chance_sd,
)
from smash_tui.tui.widgets import log_ticks
from tests.tui.fixtures import KNOWN_ACCS, KNOWN_ERRORS, random_spec

# --- statistics ----------------------------------------------------------------------------------


def test_known_ranks_give_known_correlations() -> None:
    result = correlation(KNOWN_ERRORS, KNOWN_ACCS)
    assert result.pairs == 5
    assert result.kendall_tau == pytest.approx(-0.8)
    assert result.spearman_rho == pytest.approx(-0.9)


@pytest.mark.parametrize("seed", range(6))
def test_correlations_match_scipy_with_ties(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 40)
    # Few distinct values, so ties happen on both sides.
    xs = [float(rng.randint(0, 6)) for _ in range(n)]
    ys = [float(rng.randint(0, 6)) for _ in range(n)]
    expected_tau = scipy_stats.kendalltau(xs, ys).statistic
    expected_rho = scipy_stats.spearmanr(xs, ys).statistic
    tau, rho = kendall_tau(xs, ys), spearman_rho(xs, ys)
    if expected_tau != expected_tau:  # NaN: a constant side
        assert tau is None
    else:
        assert tau == pytest.approx(expected_tau)
    if expected_rho != expected_rho:
        assert rho is None
    else:
        assert rho == pytest.approx(expected_rho)


@pytest.mark.parametrize("distinct", [3, 50, None])
def test_kendall_tau_over_a_whole_benchmark_search_matches_scipy(distinct: int | None) -> None:
    # 6,466 pairs: every class of nb201 cells scored, ranked against its benchmark accuracy.
    rng = random.Random(distinct)
    truth = [rng.random() if distinct is None else float(rng.randrange(distinct)) for _ in range(6466)]
    errors = [-value + rng.gauss(0, 0.5) for value in truth]
    if distinct is not None:
        errors = [round(value, 1) for value in errors]  # ties on both sides
    expected = scipy_stats.kendalltau(errors, truth).statistic
    assert kendall_tau(errors, truth) == pytest.approx(expected, abs=1e-12)


def test_correlations_are_undefined_without_two_pairs_or_with_a_constant_side() -> None:
    assert correlation([], []).kendall_tau is None
    assert correlation([1.0], [2.0]).spearman_rho is None
    assert correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).kendall_tau is None
    with pytest.raises(ValueError, match="differ in length"):
        kendall_tau([1.0], [1.0, 2.0])


@pytest.mark.parametrize("pairs", [3, 10, 25])
def test_tau_chance_sd_is_the_spread_of_tau_between_unrelated_rankings(pairs: int) -> None:
    rng = random.Random(pairs)
    xs = [float(i) for i in range(pairs)]
    taus = []
    for _ in range(3000):
        ys = xs[:]
        rng.shuffle(ys)
        tau = kendall_tau(xs, ys)
        assert tau is not None
        taus.append(tau)
    spread = math.sqrt(sum(t * t for t in taus) / len(taus))
    expected = tau_chance_sd(pairs)
    assert expected is not None and spread == pytest.approx(expected, rel=0.05)
    assert correlation(xs, xs).tau_chance_sd == expected
    assert tau_chance_sd(1) is None and correlation([], []).tau_chance_sd is None


def test_ranks_average_ties() -> None:
    assert ranks([30.0, 10.0, 20.0, 10.0]) == [4.0, 1.5, 3.0, 1.5]


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [
        (100, 50.0, "a"),
        (100, 40.0, "b"),
        (200, 45.0, "c"),
        (300, 30.0, "d"),
        (50, 60.0, "e"),
    ]
    assert [payload for *_, payload in pareto_front(points)] == ["e", "b", "d"]
    assert pareto_front([]) == []


# --- forms ---------------------------------------------------------------------------------------


def test_retrain_form_parses_and_names_the_bad_field() -> None:
    settings = parse_retrain(" 7 ", "1_024", "5e-2")
    assert (settings.epochs, settings.batch_size, settings.lr) == (7, 1024, 0.05)
    for arguments, field, message in (
        (("-1", "50", "0.1"), "epochs", "epochs cannot be negative, got -1"),
        (("0", "50", "0.1"), "epochs", "epochs must be at least 1, got 0"),
        (("2.5", "50", "0.1"), "epochs", "epochs must be a whole number, got '2.5'"),
        (("5", "x", "0.1"), "batch-size", "batch size must be a whole number"),
        # The ranges are the engine's, the same words the command line prints.
        (("5", "50", "-0.1"), "lr", "lr must be positive and finite, got -0.1"),
        (("5", "50", "0"), "lr", "lr must be positive and finite, got 0.0"),
        (("5", "50", "inf"), "lr", "lr must be a finite number, got inf"),
        (("5", "50", "nan"), "lr", "lr must be a finite number, got nan"),
    ):
        with pytest.raises(FormError) as caught:
            parse_retrain(*arguments)
        assert caught.value.field == field
        assert message in caught.value.message


def _search(**overrides: str) -> forms.SearchSettings:
    values = {
        "dataset": "synthetic",
        "preset": "tiny",
        "epochs": "3",
        "archs": "100",
        "strategy": "random",
        "name": "",
        "seed": "0",
    }
    values.update(overrides)
    return parse_search(**values)


def test_search_form_checks_data_sets_and_paths(tmp_path: Path) -> None:
    assert _search().dataset == "synthetic"
    archive = tmp_path / "data.npz"
    archive.write_bytes(b"")
    assert _search(dataset=f"npz:{archive}").dataset == f"npz:{archive.resolve()}"
    assert _search(dataset=f"folder:{tmp_path}").dataset == f"folder:{tmp_path.resolve()}"
    # A folder of npz files, as the command line takes it (the form refused it once).
    assert _search(dataset=f"npz:{tmp_path}").dataset == f"npz:{tmp_path.resolve()}"
    for dataset, message in (
        ("imagenet", "unknown data set 'imagenet': expected one of synthetic, cifar10"),
        ("", "unknown data set ''"),
        ("npz:", "unknown data set 'npz:'"),
        (f"npz:{tmp_path / 'missing.npz'}", "missing.npz does not exist"),
        (f"folder:{archive}", "data.npz is not a folder"),
    ):
        with pytest.raises(FormError) as caught:
            _search(dataset=dataset)
        assert caught.value.field == "dataset" and message in caught.value.message
    with pytest.raises(FormError, match="unknown preset 'huge'"):
        _search(preset="huge")
    with pytest.raises(FormError, match="unknown search strategy 'greedy'"):
        _search(strategy="greedy")
    with pytest.raises(FormError, match="seed cannot be negative"):
        _search(seed="-2")


def test_search_settings_become_smash_search_options(tmp_path: Path) -> None:
    settings = _search(name=" run-a ", epochs="2")
    assert settings.cli_args() == [
        "--dataset", "synthetic", "--preset", "tiny", "--epochs", "2", "--archs", "100",
        "--strategy", "random", "--seed", "0", "--weights", "hypernet", "--name", "run-a",
    ]  # fmt: skip
    # A benchmark table is passed as the engine resolved it: absolute, with the column the
    # data set chose named.
    table = tmp_path / "t.csv"
    table.write_text("CIFAR10TestAccuracy200Epochs,ArchitectureString\n"
                     "90.5,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")  # fmt: skip
    settings = _search(dataset="cifar10", preset="nb201-tiny", weights="shared", truth=f" {table} ")
    resolved = str(table.resolve())
    assert (settings.truth, settings.truth_column, settings.weights) == (resolved, "cifar10", "shared")
    assert settings.cli_args()[-6:] == [
        "--weights", "shared", "--truth", resolved, "--truth-column", "cifar10",
    ]  # fmt: skip


# --- the architecture diagram ---------------------------------------------------------------------


def test_op_line_shows_banks_widths_and_both_paths() -> None:
    op = {
        "reads": [0, 2],
        "writes": [3],
        "units": 16,
        "bottleneck": 32,
        "convs": [
            {"kernel": [3, 3], "dilation": [1, 1], "groups": 1},
            {"kernel": [5, 5], "dilation": [2, 2], "groups": 4},
            {"kernel": [1, 3], "dilation": [1, 2], "groups": 1},
            None,
        ],
    }
    assert op_line(op) == "[0,2]→[3]  16ch  bn32  3x3 → 5x5 d2 g4 ‖ 1x3 d1,2"


def test_spec_diagram_draws_every_block_and_op() -> None:
    spec = random_spec(random.Random(3))
    text = spec_diagram(json.dumps(spec)).plain
    assert "stem 3x3 conv" in text
    for number, block in enumerate(spec["blocks"], start=1):
        assert f"block {number}" in text
        assert f"{block['bank_size']}-ch banks" in text
    assert text.count("→[") == sum(len(block["ops"]) for block in spec["blocks"])


def test_spec_diagram_explains_a_spec_it_cannot_read() -> None:
    assert "cannot draw this spec" in spec_diagram("{not json").plain
    assert "cannot draw this spec (KeyError" in spec_diagram("{}").plain


# --- formatting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (999, "999"), (1234, "1.23k"), (2_500_000, "2.5M"), (3e9, "3G"), (0.5, "0.5")],
)
def test_human_numbers(value: float | None, text: str) -> None:
    assert human(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (4.4, "4s"), (125, "2m05s"), (3 * 3600 + 20 * 60, "3h20m"), (50 * 3600, "2d02h")],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_progress_bar_and_states() -> None:
    assert progress_bar(0.5, 10).plain == "█████       50%"
    assert progress_bar(None, 4).plain == "       0%"
    assert progress_bar(2.0, 4).plain == "████ 100%"
    assert state_text("running", "pause").plain == "running→pause"
    assert state_text(None).plain == "-"


def test_log_ticks_are_round_numbers_in_range() -> None:
    assert log_ticks(48_000, 2_500_000) == [50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000]
    wide = log_ticks(10, 1e9)
    assert wide == [10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9]
    assert log_ticks(0, 10) == []


# --- processes -----------------------------------------------------------------------------------


def test_run_smash_returns_output_and_turns_failures_into_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = (
        "import os, sys\n"
        "if sys.argv[1] == 'ok': print('db', os.environ['SMASH_DB'])\n"
        "else:\n"
        "    print('Traceback... noise', file=sys.stderr)\n"
        "    print('error: no architecture with id 9', file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    monkeypatch.setattr(processes, "smash_command", lambda: [sys.executable, "-c", script])
    assert processes.run_smash(["ok"], "sqlite:////tmp/x.db").strip() == "db sqlite:////tmp/x.db"
    with pytest.raises(processes.CommandError, match="^no architecture with id 9$"):
        processes.run_smash(["export", "9", "out"], "sqlite:////tmp/x.db")
    monkeypatch.setattr(
        processes, "smash_command", lambda: [sys.executable, "-c", "import time; time.sleep(5)"]
    )
    with pytest.raises(processes.CommandError, match="took longer than 0 s"):
        processes.run_smash(["export"], "sqlite:////tmp/x.db", timeout_s=0.2)


def test_nvidia_smi_output_is_parsed_and_gpus_matched_to_devices() -> None:
    from smash_tui.tui.dashboard import gpu_of

    output = (
        "0, NVIDIA H100 80GB HBM3, 12583, 81559, 97\n"
        "1, NVIDIA H100 80GB HBM3, 3, 81559, [N/A]\n"
        "NVIDIA-SMI has failed because it couldn't communicate with the driver\n"
    )
    gpus = processes.parse_nvidia_smi(output)
    assert gpus == [
        processes.GpuStatus(0, "NVIDIA H100 80GB HBM3", 12583.0, 81559.0, 97.0),
        processes.GpuStatus(1, "NVIDIA H100 80GB HBM3", 3.0, 81559.0, None),
    ]
    assert gpu_of("cuda", gpus) is gpus[0]
    assert gpu_of("cuda:1", gpus) is gpus[1]
    assert gpu_of("cuda:2", gpus) is None
    assert gpu_of("cpu", gpus) is None


def test_gpu_status_is_empty_without_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    from smash_tui import gpus

    monkeypatch.setattr(gpus, "nvml_status", lambda: None)  # no NVML either
    monkeypatch.setattr(gpus.shutil, "which", lambda name: None)
    assert processes.gpu_status() == []
