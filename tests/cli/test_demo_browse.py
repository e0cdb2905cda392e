"""`smash demo` end to end, then browsing, retraining and exporting what it left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from engine.params import score_method
from engine.score import ScoreConfig, Scorer
from smash_tui.cli import app
from smash_tui.runner.worker import Worker, WorkerConfig
from smash_tui.submit import queue_score
from storage.db import open_database
from storage.models import Architecture, Checkpoint, Event, Experiment, Job, Metric, Retrain, Score
from storage.queue import enqueue
from tests.cli.conftest import DemoRun
from tests.cli.support import retrain_args, smash

pytestmark = pytest.mark.xdist_group("demo")


def test_demo_trains_scores_retrains_and_ends_with_the_table(demo_run: DemoRun) -> None:
    assert demo_run.exit_code == 0, demo_run.stderr
    with open_database(str(demo_run.path)) as db, db.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        assert (experiment.name, experiment.dataset, experiment.preset) == (
            "demo",
            "synthetic",
            "tiny",
        )
        assert experiment.status == "done"
        jobs = {job.kind: job for job in session.scalars(select(Job).where(Job.parent_id.is_(None)))}
        assert sorted(jobs) == ["retrain", "search", "train"]
        # The search scored its six candidates in one chunk, a job of its own.
        chunks = session.scalars(select(Job).where(Job.parent_id == jobs["search"].id)).all()
        assert [(c.kind, c.state, c.attempts) for c in chunks] == [("chunk", "done", 1)]
        assert all(job.state == "done" and job.attempts == 1 for job in jobs.values())
        assert jobs["search"].depends_on_id == jobs["train"].id
        # The HyperNet's checkpoint, its metric series and its epoch-end validation.
        checkpoint = session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == jobs["train"].id)
        ).one()
        # Recorded relative to the files folder, which may move (or sit elsewhere on another host).
        assert checkpoint.step == 4 and not Path(checkpoint.path).is_absolute()
        assert db.file_path(checkpoint.path).is_file()
        losses = session.scalars(
            select(Metric.step).where(Metric.job_id == jobs["train"].id, Metric.name == "loss")
        ).all()
        assert sorted(losses) == [1, 2, 3, 4]
        assert (
            session.scalar(
                select(func.count()).where(
                    Metric.job_id == jobs["train"].id, Metric.name == "val_error"
                )
            )
            == 1
        )
        # Six architectures, each scored once against that checkpoint, with sizes.
        archs = session.scalars(select(Architecture)).all()
        assert len(archs) == 6 and all(a.params > 0 and a.flops > 0 and a.depth > 0 for a in archs)
        scores = session.scalars(select(Score)).all()
        assert len(scores) == 6 and {s.checkpoint_id for s in scores} == {checkpoint.id}
        assert {s.images for s in scores} == {50} and {s.job_id for s in scores} == {
            jobs["search"].id
        }
        # The best by SMASH score was retrained: a test accuracy beside its score.
        best = min(archs, key=lambda a: (a.latest_error, a.id))
        retrain = session.scalars(select(Retrain)).one()
        assert retrain.architecture_id == best.id and retrain.test_acc is not None
        assert retrain.weights_path is not None and db.file_path(retrain.weights_path).is_file()
        assert best.best_test_acc == retrain.test_acc
        assert best.retrain_state == "done" and len(retrain.curve) == 1
        assert session.scalar(select(func.count()).where(Event.level == "error")) == 0
    assert "best architectures of experiment" in demo_run.stdout
    assert f"architecture {best.id}: SMASH error" in demo_run.stdout
    assert f"test accuracy {retrain.test_acc:.2f}%" in demo_run.stdout
    assert "Traceback" not in demo_run.stderr


def test_ls_json_sorted_and_filtered(demo_db: str) -> None:
    result = smash(demo_db, "ls", "--sort", "err", "--filter", "params<1e6", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 6
    assert [(r["err"], r["id"]) for r in rows] == sorted((r["err"], r["id"]) for r in rows)
    assert all(r["params"] < 1e6 for r in rows)
    assert set(rows[0]) == {
        "id",
        "hash",
        "err",
        "loss",
        "params",
        "flops",
        "depth",
        "ops",
        "acc",
        "retrain_state",
        "source",
        "partial",
        "bench",  # a benchmark table's accuracy: null without one
    }
    smallest = min(r["params"] for r in rows)
    narrowed = json.loads(
        smash(demo_db, "ls", "-f", f"params<={smallest}", "--sort", "-params", "--json").stdout
    )
    assert [r["params"] for r in narrowed] == [smallest]
    table = smash(demo_db, "ls", "--limit", "3", "-e", "demo")
    assert table.exit_code == 0 and "3 of 6 architectures" in table.stdout


def test_show_draws_every_block_and_lists_scores_and_retrains(demo_db: str) -> None:
    rows = json.loads(smash(demo_db, "ls", "--json").stdout)
    best = rows[0]
    result = smash(demo_db, "show", str(best["id"]))
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    for piece in (
        "block 0 · 32x32 px",
        "block 1 · 16x16 px",
        "block 2 · 8x8 px",
        "path A",
        "reads",
    ):
        assert piece in text
    assert "transition: BN, ReLU, 1x1 conv" in text and "head:" in text
    assert "scores (generated weights)" in text and "retrains (from scratch)" in text
    detail = json.loads(smash(demo_db, "show", str(best["id"]), "--json").stdout)
    assert detail["id"] == best["id"] and len(detail["scores"]) == 1
    assert len(detail["retrains"]) == 1 and detail["retrains"][0]["test_acc"] == best["acc"]
    assert len(detail["spec"]["blocks"]) == 3


def test_jobs_and_experiments_list_what_ran(demo_db: str) -> None:
    jobs = json.loads(smash(demo_db, "jobs", "--json").stdout)
    assert [(j["kind"], j["state"]) for j in jobs] == [
        ("train", "done"),
        ("search", "done"),
        ("retrain", "done"),
    ]
    assert jobs[0]["progress_text"].startswith("step 4/4")
    assert json.loads(smash(demo_db, "experiments", "--json").stdout)[0]["name"] == "demo"
    table = smash(demo_db, "jobs", "--state", "done")
    assert table.exit_code == 0 and "retrain" in table.stdout


_EVALUATE = """
import importlib.util, json, sys
import torch
from engine.data import DataConfig, DeviceImages, load_dataset
from engine.retrain import evaluate
from engine.score import scoring_order
data = load_dataset(DataConfig(**json.loads(sys.argv[1])))
scored = scoring_order(len(data.val), int(sys.argv[2]))[:50]  # the images the search scored on
first_val = DeviceImages(data.val.subset(scored), "cpu", data.mean, data.std)
measured = []
for number, folder in enumerate(sys.argv[3:]):
    spec = importlib.util.spec_from_file_location(f"export{number}", f"{folder}/load_model.py")
    snippet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(snippet)
    model = snippet.load_model()
    test_acc, _ = evaluate(model, DeviceImages(data.test, "cpu", data.mean, data.std))
    val_acc, _ = evaluate(model, first_val)
    params = sum(p.numel() for p in model.parameters())
    measured.append({"test_acc": test_acc, "first_val_acc": val_acc, "params": params})
print(json.dumps(measured))
"""


def test_retrain_then_export_reproduces_the_logged_accuracy_in_a_fresh_process(
    run_db: str, tmp_path: Path
) -> None:
    rows = json.loads(smash(run_db, "ls", "--json").stdout)
    never = [r for r in rows if r["acc"] is None]
    target, untouched = never[0], never[1]
    result = smash(run_db, *retrain_args(target["id"], 1, "--json", "--device", "cpu"))
    assert result.exit_code == 0, result.stderr
    retrained = json.loads(result.stdout.strip().splitlines()[-1])
    assert retrained["architecture_id"] == target["id"] and retrained["test_acc"] is not None
    with open_database(run_db) as db, db.session() as session:
        row = session.get(Retrain, retrained["retrain_id"])
        assert row is not None and row.test_acc == retrained["test_acc"] and row.finished_at
        experiment = session.scalars(select(Experiment)).one()
        config, space = experiment.config, experiment.search_space
        score_seed = session.scalars(select(Job).where(Job.kind == "search")).one().params["score"]["seed"]
    after = {r["id"]: r for r in json.loads(smash(run_db, "ls", "--json").stdout)}
    assert after[target["id"]]["acc"] == retrained["test_acc"]

    trained_dir, generated_dir = tmp_path / "trained", tmp_path / "generated"
    assert smash(run_db, "export", str(target["id"]), str(trained_dir)).exit_code == 0
    assert smash(run_db, "export", str(untouched["id"]), str(generated_dir)).exit_code == 0
    for folder in (trained_dir, generated_dir):
        assert sorted(p.name for p in folder.iterdir()) == [
            "architecture.json",
            "load_model.py",
            "model.json",
            "weights.pt",
        ]
    assert "retrained from scratch for 1 epoch" in json.loads((trained_dir / "model.json").read_text())["weights"]
    assert "NOT trained on their own" in json.loads((generated_dir / "model.json").read_text())["weights"]
    assert all(json.loads((d / "model.json").read_text())["space"] == space for d in (trained_dir, generated_dir))

    # One fresh process, as a user would run the snippet, for both exports.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _EVALUATE,
            json.dumps(config["data"]),
            str(score_seed),
            str(trained_dir),
            str(generated_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    trained, generated = json.loads(done.stdout)
    # Exactly the logged test accuracy: the same weights, split and evaluation.
    assert trained["test_acc"] == retrained["test_acc"]
    # SMASH's weights score what the search measured (its 50 validation images),
    # up to one image that float rounding may tip.
    assert abs((100 - generated["first_val_acc"]) - untouched["err"]) <= 2.0 + 1e-9
    # Both rebuilt the network at the size the search scored and stored (an nb201 cell
    # at its preset's C and N, not the benchmark's).
    assert (trained["params"], generated["params"]) == (target["params"], untouched["params"])


def test_export_refuses_a_folder_that_is_not_empty(demo_db: str, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = smash(demo_db, "export", "1", str(tmp_path / "out"))
    assert result.exit_code == 2 and "is not an empty folder" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]


def test_events_of_the_demo_are_readable_one_liners(demo_db: str) -> None:
    with open_database(demo_db) as db, db.session() as session:
        messages = session.scalars(select(Event.message)).all()
    assert any("HyperNet epoch 0, step 4: validation error" in m for m in messages)
    assert any(m.startswith("search done: 6 architectures scored") for m in messages)
    assert all("\n" not in m for m in messages)


def test_racing_search_and_rescoring_jobs_on_the_trained_hypernet(
    run_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every race of a search is handed the search's best survivors so far.
    leaders_seen: list[int] = []
    real_race = Scorer._race

    def spying_race(self, archs, race, on_result, leaders):  # noqa: ANN001
        leaders_seen.append(len(leaders))
        return real_race(self, archs, race, on_result, leaders)

    monkeypatch.setattr(Scorer, "_race", spying_race)
    with open_database(run_db) as db:
        with db.session() as session:
            train = session.scalars(select(Job).where(Job.kind == "train")).one()
            racing = enqueue(
                session,
                train.experiment_id,
                "search",
                {
                    "search": {"architectures": 10, "batch": 5, "seed": 7},
                    "score": {"images": 64},
                    "racing": True,
                    "race": {"top_k": 2, "first_images": 16, "min_survivors": 2, "margin_z": 0},
                },
                depends_on=train.id,
            ).id
            first = session.scalars(select(Architecture).order_by(Architecture.id)).first()
            assert first is not None
            rescore = queue_score(session, [first.id], {"images": 50, "z_draws": 2}).id
            session.commit()
        worker = Worker(db, WorkerConfig(device="cpu", once=True, heartbeat_s=0.2))
        assert worker.run() == 0
        with db.session() as session:
            states = {job.id: job.state for job in session.scalars(select(Job))}
            assert states[racing] == states[rescore] == "done"
            methods = session.scalars(select(Score.method).where(Score.job_id == racing)).all()
            config = ScoreConfig(images=64)
            full, partial = score_method("full", config), score_method("racing", config)
            # Successive halving: the survivors get full scores, the rest a partial slice.
            assert len(methods) == 10 and full in methods and partial in methods
            racing_images = session.scalars(
                select(Score.images).where(Score.job_id == racing, Score.method == partial)
            ).all()
            assert all(images < 64 for images in racing_images)
            rescored = session.scalars(select(Score).where(Score.job_id == rescore)).one()
            label = score_method("full", ScoreConfig(images=50, z_draws=2))
            assert label.startswith("full+n50+z2")
            assert (rescored.method, rescored.z_draws, rescored.images) == (label, 2, 50)
            refreshed = session.get(Architecture, first.id, populate_existing=True)
            assert refreshed is not None and refreshed.latest_error == rescored.error
        # Two batches of 5: the second raced against the first one's survivors.
        assert leaders_seen == [0, 2]


def test_every_command_has_help_and_bare_smash_prints_it(demo_db: str) -> None:
    runner = CliRunner()
    bare = runner.invoke(app, [])
    assert bare.exit_code == 0 and "Usage" in bare.stdout
    commands = [
        "search",
        "demo",
        "retrain",
        "worker",
        "experiments",
        "ls",
        "show",
        "export",
        "jobs",
        "pause",
        "resume",
        "cancel",
        "retry",
        "info",
    ]
    for name in commands:
        assert name in bare.stdout
        shown = runner.invoke(app, [name, "--help"])
        assert shown.exit_code == 0 and "Usage" in shown.stdout, name
    info = smash(demo_db, "info", "--json")
    assert info.exit_code == 0, info.stderr
    report = json.loads(info.stdout)
    assert report["database"] == demo_db and report["workers_alive"] == 0
    assert report["torch"] and "cuda_available" in report and report["logs_dir"]
