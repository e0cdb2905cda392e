"""nb201 through the command line: benchmark tables, `ls --sort bench`, `show`, weight sharing.

The tests that hold for both space kinds (search resume, racing, export, crash resume)
run on both through `run_db` or a preset parameter, beside the banks ones; these are
the nb201-only ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.nb201.cell import Cell, all_cells
from storage.db import open_database
from storage.models import Architecture, Checkpoint, Event, Experiment, Job, Retrain, Score
from tests.cli.conftest import DemoRun
from tests.cli.support import NB201_SEARCH, bench_accuracy, retrain_args, smash, write_truth_table

pytestmark = pytest.mark.xdist_group("demo")

# A search a few seconds long: 2 HyperNet steps, 6 cells scored on 50 images.
SHORT = ["search", *NB201_SEARCH, "--epochs", "1", "--max-steps", "2", "--archs", "6"]


def _cells(db: str) -> list[tuple[int, Cell, float | None]]:
    """(id, cell, bench) of every architecture, by id."""
    with open_database(db) as database, database.session() as session:
        rows = session.execute(
            select(Architecture.id, Architecture.spec, Architecture.bench_acc).order_by(Architecture.id)
        ).all()
    return [(ident, Cell.from_json(spec), bench) for ident, spec, bench in rows]


def _events(db: str, job_id: int) -> list[str]:
    with open_database(db) as database, database.session() as session:
        return list(session.scalars(select(Event.message).where(Event.job_id == job_id).order_by(Event.id)))


def test_a_search_with_a_truth_table_stores_benchmark_accuracies_and_ls_sorts_by_them(
    nb201_run: DemoRun, tmp_path: Path
) -> None:
    assert nb201_run.exit_code == 0, nb201_run.stderr
    db = str(nb201_run.path)
    cells = _cells(db)
    assert len(cells) == 6
    # Each scored cell carries the table's accuracy of its class, and is its class's representative.
    assert all(bench == bench_accuracy(cell) and cell == cell.representative() for _, cell, bench in cells)
    assert len({bench for _, _, bench in cells}) > 1  # something to sort
    rows = json.loads(smash(db, "ls", "--sort", "bench", "--json").stdout)
    assert [r["bench"] for r in rows] == sorted(bench for _, _, bench in cells)
    assert [(r["bench"], r["id"]) for r in rows] == sorted((r["bench"], r["id"]) for r in rows)
    descending = json.loads(smash(db, "ls", "--sort", "-bench", "--json").stdout)
    assert [r["bench"] for r in descending] == sorted((bench for _, _, bench in cells), reverse=True)
    top = max(bench for _, _, bench in cells)
    assert [r["bench"] for r in json.loads(smash(db, "ls", "-f", f"bench>={top}", "--json").stdout)] == [top]
    table = smash(db, "ls", "--sort", "bench")  # 80 characters wide, as CliRunner's terminal
    assert table.exit_code == 0 and "bench %" in table.stdout and "benchmark table's accuracy" in table.stdout
    assert all(f"{bench:.2f}" in table.stdout for _, _, bench in cells) and "…" not in table.stdout
    with open_database(db) as database, database.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        assert experiment.preset == "nb201-tiny" and experiment.search_space["kind"] == "nb201"
        assert experiment.config["truth"]["column"] == "cifar10" and experiment.config["weights"] == "hypernet"
        search = session.scalars(select(Job).where(Job.kind == "search")).one().id
    events = _events(db, search)
    assert any(m.startswith("benchmark truth: truth.csv: CIFAR10TestAccuracy200Epochs (6466 classes") for m in events)
    assert any(m.startswith("search done: 6 architectures") and "0 not in the benchmark table" in m for m in events)
    # Every parameter count is the network the search scored (nb201-tiny: C=8, N=1), not the benchmark's.
    assert all(r["params"] < 100_000 for r in rows)


def test_a_table_that_lacks_cells_stores_them_without_truth_and_counts_them(tmp_path: Path) -> None:
    # About every other class of cells, by the parity of its accuracy in quarters.
    def keep(cell: Cell) -> bool:
        return int(bench_accuracy(cell) * 4) % 2 == 0

    table = write_truth_table(tmp_path / "half.csv", keep)
    classes = len({cell.hash for cell in all_cells() if keep(cell)})
    db = str(tmp_path / "smash.db")
    result = smash(db, *SHORT, "--truth", str(table), "--truth-column", "cifar10", "--json")
    assert result.exit_code == 0, result.stderr
    search = json.loads(result.stdout)["job_ids"][1]
    cells = _cells(db)
    missing = [ident for ident, cell, bench in cells if not keep(cell)]
    assert 0 < len(missing) < len(cells)  # both kinds, or the test proves nothing
    for ident, cell, bench in cells:
        assert bench == (None if ident in missing else bench_accuracy(cell)), ident
    events = _events(db, search)
    assert any(m.startswith("benchmark truth: half.csv") and f"({classes} classes of cells)" in m for m in events), events
    done = [m for m in events if m.startswith("search done:")]
    assert len(done) == 1 and f"; {len(missing)} not in the benchmark table" in done[0], done
    # Without a truth, a cell sorts after every cell with one, in both directions.
    for sort in ("bench", "-bench"):
        rows = json.loads(smash(db, "ls", "--sort", sort, "--json").stdout)
        assert [r["id"] for r in rows if r["bench"] is None] == [r["id"] for r in rows[-len(missing):]]
        assert sorted(r["id"] for r in rows if r["bench"] is None) == missing


def test_weight_sharing_trains_scores_and_retrains_through_the_cli(tmp_path: Path) -> None:
    db = str(tmp_path / "smash.db")
    result = smash(db, *SHORT, "--weights", "shared", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(smash(db, "ls", "--json").stdout)
    assert len(rows) == 6 and all(r["err"] is not None and r["bench"] is None for r in rows)
    retrained = smash(db, *retrain_args(rows[0]["id"], 1, "--json", "--device", "cpu"))
    assert retrained.exit_code == 0, retrained.stderr
    reported = json.loads(retrained.stdout.strip().splitlines()[-1])
    assert reported["architecture_id"] == rows[0]["id"] and 0 <= reported["test_acc"] <= 100
    with open_database(db) as database, database.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        assert experiment.config["weights"] == "shared" and experiment.config["truth"] is None
        jobs = {job.kind: job for job in session.scalars(select(Job).where(Job.kind != "chunk"))}
        assert sorted(jobs) == ["retrain", "search", "train"] and all(j.state == "done" for j in jobs.values())
        assert {j.state for j in session.scalars(select(Job).where(Job.kind == "chunk"))} == {"done"}  # the search's
        checkpoint_id, checkpoint_path = session.execute(
            select(Checkpoint.id, Checkpoint.path).where(Checkpoint.job_id == jobs["train"].id)
        ).one()
        assert {s.checkpoint_id for s in session.scalars(select(Score))} == {checkpoint_id}
        retrain = session.scalars(select(Retrain)).one()
        assert retrain.test_acc == reported["test_acc"] and database.file_path(retrain.weights_path).is_file()
        checkpoint_file = database.file_path(checkpoint_path)  # stored relative to the files root
    # The checkpoint holds a weight-sharing supernet: no HyperNet parameters at all.
    from engine.train import load_smash

    net, state = load_smash(checkpoint_file)
    assert state["space_kind"] == "nb201" and state["smash"]["weights"] == "shared"
    assert net.hypernet_parameters() == []
    shown = smash(db, "ls", "--sort", "acc", "--desc", "--json")
    assert json.loads(shown.stdout)[0]["acc"] == reported["test_acc"]


def test_show_draws_the_cell_node_by_node_and_json_holds_the_spec(nb201_run: DemoRun) -> None:
    db = str(nb201_run.path)
    ident, cell, bench = _cells(db)[0]
    result = smash(db, "show", str(ident))
    assert result.exit_code == 0, result.stderr
    # Lines longer than CliRunner's 80 characters wrap: compare without any whitespace.
    text = "".join(result.stdout.split())
    for line in cell.describe():
        assert "".join(line.split()) in text, line
    assert "node0=input" in text and "<-output" in text and f"cell{cell.to_string()}" in text
    assert f"benchmarkaccuracy{bench:.2f}%(nottrainedhere)" in text
    assert "scores(generatedweights)" in text and "neverretrained" in text
    detail = json.loads(smash(db, "show", str(ident), "--json").stdout)
    assert detail["spec"] == {"schema": 1, "kind": "nb201", "cell": cell.to_string()}
    assert Cell.from_dict(detail["spec"]) == cell and detail["bench"] == bench
    assert detail["id"] == ident and len(detail["scores"]) == 1 and detail["retrains"] == []
