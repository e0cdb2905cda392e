"""The browse filter language and keyset paging, on both backends."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from storage.db import Database, one_line_errors
from storage.errors import FilterError, NotFoundError, StorageError
from storage.queries import (
    FIELDS,
    ArchitectureRow,
    Filter,
    Term,
    architecture_detail,
    count_architectures,
    list_architectures,
    parse_filter,
    parse_sort,
)
from storage.queue import enqueue
from storage.records import (
    ArchitectureIn,
    ScoreIn,
    add_architectures,
    add_checkpoint,
    add_scores,
    finish_retrain,
    start_retrain,
)

# --- the filter language ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("", ()),
        ("   ", ()),
        ("err<40", (Term("err", "<", 40.0),)),
        ("err<35%", (Term("err", "<", 35.0),)),
        ("acc>=90.5%", (Term("acc", ">=", 90.5),)),
        ("params<2e6", (Term("params", "<", 2e6),)),
        ("params<=1.5M flops>300k", (Term("params", "<=", 1.5e6), Term("flops", ">", 3e5))),
        ("flops<2G", (Term("flops", "<", 2e9),)),
        ("flops<2g depth!=3", (Term("flops", "<", 2e9), Term("depth", "!=", 3.0))),
        (
            "ops=7 id>10 loss<.5",
            (Term("ops", "=", 7.0), Term("id", ">", 10.0), Term("loss", "<", 0.5)),
        ),
        ("err < 40  params >= 1e-3k", (Term("err", "<", 40.0), Term("params", ">=", 1.0))),
        ("ERR<-1", (Term("err", "<", -1.0),)),
    ],
)
def test_parse_filter_accepts(text: str, terms: tuple[Term, ...]) -> None:
    assert parse_filter(text) == Filter(terms)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "siez<3",
            "unknown field 'siez' in 'siez<3' (fields: id, err, loss, params, flops, depth, ops, acc, bench)",
        ),
        ("err", "expected <field><op><number> in 'err', e.g. err<30"),
        ("err40", "expected <field><op><number> in 'err40'"),
        ("<40", "missing field before '<' in '<40'"),
        ("err<", "missing number after '<' in 'err<'"),
        ("params<two", "bad number 'two' in 'params<two' (e.g. 2e6, 1.5M, 300k, 35%)"),
        ("params<2T", "bad number '2T' in 'params<2T'"),
        ("params<3%", "'%' only applies to err, acc, bench, not in 'params<3%'"),
        ("err<<3", "one operator per term in 'err<<3'"),
        ("err=>3", "one operator per term in 'err=>3'"),
        ("err<40 params<abc", "bad number 'abc' in 'params<abc'"),
        ("err<nan", "bad number 'nan'"),
        ("err<1e400", "number out of range in 'err<1e400'"),
        ("params<1e306G", "number out of range in 'params<1e306G'"),
        ("err<1 " * 1200, "the filter is 7200 characters long; at most 1000"),
        (" ".join(["id>1"] * 51), "the filter has 51 terms; at most 50"),
    ],
)
def test_parse_filter_rejects_with_one_line(text: str, message: str) -> None:
    with pytest.raises(FilterError) as raised:
        parse_filter(text)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_filter_renders_back() -> None:
    assert str(parse_filter("err<35% params<=1.5M")) == "err<35 params<=1.5e+06"


def test_parse_sort() -> None:
    assert parse_sort("err") == ("err", False)
    assert parse_sort("-params") == ("params", True)
    assert parse_sort("acc", descending=True) == ("acc", True)
    with pytest.raises(FilterError, match="unknown sort field 'size'"):
        parse_sort("size")


# --- paging on real databases -------------------------------------------------------------------

N_ARCHITECTURES = 230


def _populate(db: Database, experiment_id: int) -> None:
    """Architectures with ties, unscored rows (NULL err/loss) and a few retrains."""
    rng = random.Random(7)
    rows = [
        ArchitectureIn(
            hash=f"h{index:04d}",
            spec=json.dumps({"index": index}),
            params=rng.choice([1000, 2000, 3000, 4000]) * 1000,  # many ties
            flops=rng.randrange(10**8, 10**10),
            depth=rng.randrange(2, 9),
            num_ops=rng.randrange(3, 20),
            source=rng.choice(["random", "perturb"]),
        )
        for index in range(N_ARCHITECTURES)
    ]
    with db.session() as session:
        job_id = enqueue(session, experiment_id, "score", {}).id
        checkpoint = add_checkpoint(session, job_id, 1, "c.pt").id
        ids = add_architectures(session, experiment_id, rows)
        scored = [ident for ident in ids.values() if rng.random() < 0.8]
        add_scores(
            session,
            [
                ScoreIn(
                    ident,
                    float(rng.choice(range(20, 80, 5))),
                    rng.random(),
                    256,
                    1,
                    # Some dropped early by racing: partial errors sort after complete ones.
                    rng.choice(["full", "full", "racing", "racing+z2"]),
                    checkpoint,
                )
                for ident in scored
            ],
        )
        retrain_job = enqueue(session, experiment_id, "retrain", {}).id
        for ident in scored[:12]:
            retrain = start_retrain(session, ident, retrain_job, epochs=1)
            finish_retrain(
                session,
                retrain.id,
                test_acc=float(rng.choice([88, 90, 92])),
                best_val_acc=None,
                curve=[],
            )
        session.commit()


def _expected(rows: list[ArchitectureRow], key: str, descending: bool) -> list[int]:
    present = [row for row in rows if getattr(row, key) is not None]
    missing = [row for row in rows if getattr(row, key) is None]
    if key == "err":
        present.sort(key=lambda row: (row.partial, row.err, row.id), reverse=descending)
    else:
        present.sort(key=lambda row: (getattr(row, key), row.id), reverse=descending)
    missing.sort(key=lambda row: row.id, reverse=descending)
    return [row.id for row in present + missing]


def _walk(db: Database, experiment_id: int, **kwargs: Any) -> list[int]:
    seen: list[int] = []
    after = None
    with db.session() as session:
        for _ in range(N_ARCHITECTURES + 2):
            page = list_architectures(session, experiment_id, after=after, limit=17, **kwargs)
            assert len(page.rows) <= 17
            seen.extend(row.id for row in page.rows)
            if page.next_after is None:
                return seen
            assert len(page.rows) == 17
            after = page.next_after
    raise AssertionError("paging did not end")


def _all_rows(db: Database, experiment_id: int) -> list[ArchitectureRow]:
    with db.session() as session:
        page = list_architectures(session, experiment_id, sort="id", limit=10_000)
    assert page.next_after is None
    return list(page.rows)


def _matches(row: ArchitectureRow, term: Term) -> bool:
    value = getattr(row, term.field)
    if value is None:
        return False
    return {
        "<": value < term.value,
        "<=": value <= term.value,
        ">": value > term.value,
        ">=": value >= term.value,
        "=": value == term.value,
        "!=": value != term.value,
    }[term.op]


def test_keyset_paging_returns_every_row_once_in_order(db: Database, experiment_id: int) -> None:
    _populate(db, experiment_id)
    rows = _all_rows(db, experiment_id)
    assert len(rows) == N_ARCHITECTURES
    assert any(row.err is None for row in rows) and any(row.acc is not None for row in rows)
    assert {row.partial for row in rows} == {None, False, True}
    # A partial error below a complete one: sorting by err alone would interleave them.
    assert min(row.err for row in rows if row.partial) < max(r.err for r in rows if r.partial is False)
    for key in FIELDS:
        for descending in (False, True):
            walked = _walk(db, experiment_id, sort=key, descending=descending)
            assert walked == _expected(rows, key, descending), (key, descending)


FILTERED_LISTINGS = [
    ("err<40 params<2e6", "params"),
    ("acc>=90", "-err"),
    ("err!=50 depth>=4", "-loss"),
    ("loss<0.5", "acc"),
]


def test_filtered_paging_and_count(db: Database, experiment_id: int) -> None:
    _populate(db, experiment_id)
    rows = _all_rows(db, experiment_id)
    for text, sort in FILTERED_LISTINGS:
        filter = parse_filter(text)
        matching = [row for row in rows if all(_matches(row, term) for term in filter.terms)]
        assert matching, f"{text!r} should keep some rows"
        key, descending = parse_sort(sort)
        walked = _walk(db, experiment_id, sort=sort, filter=filter)
        assert walked == _expected(matching, key, descending), text
        with db.session() as session:
            assert count_architectures(session, experiment_id, filter=filter) == len(matching)
    with db.session() as session:
        assert count_architectures(session, experiment_id) == N_ARCHITECTURES
        assert count_architectures(session, experiment_id + 1) == 0


def test_cursor_must_match_the_sort(db: Database, experiment_id: int) -> None:
    _populate(db, experiment_id)
    with db.session() as session:
        page = list_architectures(session, experiment_id, sort="-err", limit=5)
        assert page.next_after is not None
        with pytest.raises(StorageError, match="cursor was made for sort -err, not params"):
            list_architectures(session, experiment_id, sort="params", after=page.next_after)
        with pytest.raises(FilterError, match="unknown sort field"):
            list_architectures(session, experiment_id, sort="speed")


def test_architecture_detail(db: Database, experiment_id: int) -> None:
    spec = json.dumps({"blocks": [[1, 2], [3]], "note": "kept as given"}, indent=1)
    with db.session() as session:
        job_id = enqueue(session, experiment_id, "retrain", {}).id
        ident = add_architectures(
            session, experiment_id, [ArchitectureIn("abc", spec, 10, 20, 3, 4, "manual")]
        )["abc"]
        add_scores(session, [ScoreIn(ident, 33.0, 0.9, 100, 2, "racing")])
        retrain = start_retrain(session, ident, job_id, epochs=2)
        curve = [{"epoch": 1, "val_acc": 70.0}, {"epoch": 2, "val_acc": 75.0}]
        finish_retrain(session, retrain.id, test_acc=74.0, best_val_acc=75.0, curve=curve)
        session.commit()
        detail = architecture_detail(session, ident)
        with pytest.raises(NotFoundError, match="no architecture with id 999"):
            architecture_detail(session, 999)
    assert detail.spec == spec
    assert detail.experiment_id == experiment_id
    assert (detail.row.err, detail.row.acc, detail.row.retrain_state) == (33.0, 74.0, "done")
    assert (detail.row.source, detail.row.ops) == ("manual", 4)
    assert [(s.err, s.method, s.checkpoint_id) for s in detail.scores] == [(33.0, "racing", None)]
    (info,) = detail.retrains
    assert (info.test_acc, info.curve, info.finished_at is not None) == (74.0, tuple(curve), True)


def test_a_database_error_reaches_the_app_as_one_line_without_sql(
    db: Database, experiment_id: int
) -> None:
    # parse_filter refuses this many terms; built by hand, SQLite refuses the expression
    # ("too large"), and SQLAlchemy's message would go on with the SQL and its parameters.
    if db.dialect != "sqlite":
        pytest.skip("PostgreSQL takes an expression this deep")
    deep = Filter(tuple(Term("err", "<", float(i)) for i in range(1200)))
    with db.session() as session, pytest.raises(StorageError) as raised:
        with one_line_errors():
            list_architectures(session, experiment_id, filter=deep)
    assert str(raised.value) == (
        "database error: Expression tree is too large (maximum depth 1000)"
    )
