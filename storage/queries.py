"""Read-only queries for the UI: the architecture browser and its filter language.

A filter is whitespace-separated terms, all of which must hold::

    err<35%  params<=1.5M  flops>300k  acc>=90  id!=17

Fields: id, err, loss, params, flops, depth, ops, acc, bench (a published benchmark's
accuracy, where the experiment has a benchmark table). Numbers take the
suffixes k (1e3), M (1e6), G (1e9) or an exponent (2e6); ``%`` is allowed on
err and acc, which are percentages anyway. Rows without a value for a field
(never scored, never retrained) match no term on that field.

Pages are keyset-paginated: a page ends with a cursor holding the sort value
and id of its last row, and the next page starts strictly after it. Every
sort runs on a browse index ``(experiment_id, <column>, id, <other browse
columns>)`` (see ``storage.models.browse_index_columns``; the error sort's
key is ``(latest_partial, latest_error)``, complete scores first), so a page
is one index range scan that stops after ``limit`` rows. NULLs come last in both
directions: non-NULL and NULL rows are read by two range scans rather than
one sort of the whole experiment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, func, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from storage.errors import FilterError, NotFoundError, StorageError
from storage.models import (
    Architecture,
    Event,
    Experiment,
    Job,
    Metric,
    Retrain,
    Score,
    browse_sort_key,
)

COLUMNS: Final[dict[str, InstrumentedAttribute[Any]]] = {
    "id": Architecture.id,
    "err": Architecture.latest_error,
    "loss": Architecture.latest_loss,
    "params": Architecture.params,
    "flops": Architecture.flops,
    "depth": Architecture.depth,
    "ops": Architecture.num_ops,
    "acc": Architecture.best_test_acc,
    "bench": Architecture.bench_acc,
}
FIELDS: Final = tuple(COLUMNS)
OPS: Final = ("<", "<=", ">", ">=", "=", "!=")
PERCENT_FIELDS: Final = ("err", "acc", "bench")
SUFFIXES: Final = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "%": 1.0}

# Longest operators first, so "<=" is not read as "<" followed by "=".
_OPERATOR = r"(<=|>=|!=|<|>|=)"
_TERM = re.compile(rf"^([A-Za-z_]*){_OPERATOR}(.*)$")
_NUMBER = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([kKmMgG%]?)$")
_EXAMPLES = "e.g. 2e6, 1.5M, 300k, 35%"
# A filter is typed by a person: longer ones are mistakes, and every term deepens the
# SQL expression (SQLite refuses a tree deeper than 1000).
MAX_FILTER_CHARS: Final = 1000
MAX_FILTER_TERMS: Final = 50


@dataclass(frozen=True)
class Term:
    """One comparison of a filter."""

    field: str  # one of FIELDS
    op: str  # one of OPS
    value: float  # the number with its suffix applied

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value:g}"


@dataclass(frozen=True)
class Filter:
    """A parsed filter: all terms must hold. No terms means no filtering."""

    terms: tuple[Term, ...] = ()  # the comparisons, in the order written

    def __str__(self) -> str:
        return " ".join(str(term) for term in self.terms)


def parse_filter(text: str) -> Filter:
    """Parse a filter expression such as ``"err<40 params<2e6"``.

    Args:
        text: The expression; empty or blank text means no filter.

    Raises:
        FilterError: Naming the first bad term and what was expected, or an expression
            longer than MAX_FILTER_CHARS or of more than MAX_FILTER_TERMS terms.
    """
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(
            f"the filter is {len(text)} characters long; at most {MAX_FILTER_CHARS}"
        )
    # Allow "err < 40" as well as "err<40".
    compact = re.sub(rf"\s*{_OPERATOR}\s*", r"\1", text.strip())
    terms = compact.split()
    if len(terms) > MAX_FILTER_TERMS:
        raise FilterError(f"the filter has {len(terms)} terms; at most {MAX_FILTER_TERMS}")
    return Filter(tuple(_parse_term(term) for term in terms))


def _parse_term(term: str) -> Term:
    match = _TERM.match(term)
    if match is None:
        raise FilterError(
            f"expected <field><op><number> in {term!r}, e.g. err<30 "
            f"(ops: {' '.join(OPS)}; fields: {', '.join(FIELDS)})"
        )
    field, op, number = match.group(1).lower(), match.group(2), match.group(3)
    if not field:
        raise FilterError(f"missing field before {op!r} in {term!r} (fields: {', '.join(FIELDS)})")
    if field not in COLUMNS:
        raise FilterError(f"unknown field {field!r} in {term!r} (fields: {', '.join(FIELDS)})")
    if not number:
        raise FilterError(f"missing number after {op!r} in {term!r} ({_EXAMPLES})")
    parsed = _NUMBER.match(number)
    if parsed is None:
        if _TERM.match(number):
            raise FilterError(f"one operator per term in {term!r} (ops: {' '.join(OPS)})")
        raise FilterError(f"bad number {number!r} in {term!r} ({_EXAMPLES})")
    suffix = parsed.group(2).lower()
    if suffix == "%" and field not in PERCENT_FIELDS:
        raise FilterError(f"'%' only applies to {', '.join(PERCENT_FIELDS)}, not in {term!r}")
    value = float(parsed.group(1)) * SUFFIXES[suffix]
    if not math.isfinite(value):
        raise FilterError(f"number out of range in {term!r} ({_EXAMPLES})")
    return Term(field, op, value)


def _condition(term: Term, steer_to: str | None = None) -> ColumnElement[bool]:
    column: Any = COLUMNS[term.field]
    if steer_to is not None and term.field != steer_to:
        # "+ 0" keeps SQLite's planner (which has no statistics) off this
        # column's index, so that a page is read in order from the sort
        # column's browse index, checking this term on the index entry, and
        # stops after ``limit`` rows; rather than fetching every match of this
        # term and sorting them all.
        column = column + 0
    comparisons = {
        "<": column < term.value,
        "<=": column <= term.value,
        ">": column > term.value,
        ">=": column >= term.value,
        "=": column == term.value,
        # != must not match NULL (no value) either; SQL comparisons with NULL never hold.
        "!=": column != term.value,
    }
    return comparisons[term.op]


def _conditions(
    experiment_id: int, filter: Filter | None, steer_to: str | None = None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Architecture.experiment_id == experiment_id]
    if filter is not None:
        conditions.extend(_condition(term, steer_to) for term in filter.terms)
    return conditions


@dataclass(frozen=True)
class ArchitectureRow:
    """One line of the architecture browser."""

    id: int  # architecture id
    hash: str  # canonical hash
    err: float | None  # error of the newest score, percent; None if never scored
    loss: float | None  # loss of the newest score
    params: int  # trainable parameters
    flops: int  # floating point operations per image
    depth: int  # layers on the longest path
    ops: int  # number of operations
    acc: float | None  # best test accuracy of a finished retrain, percent
    retrain_state: str | None  # queued, running, done, failed or None
    source: str  # how it was found
    # err was measured on part of the validation images: racing dropped the candidate
    # early (its error is on other, fewer images than complete scores); None if unscored
    partial: bool | None = None
    bench: float | None = None  # a published benchmark's accuracy, percent; None without one


@dataclass(frozen=True)
class PageCursor:
    """Where a page ended; pass it as ``after`` to get the next page."""

    sort: str  # the sort field the page was made for
    descending: bool  # the direction it was made for
    # The last row's values of the sort's index key before id (browse_sort_key: empty for
    # id, (partial, error) for err); a None sort value means the row had none.
    key: tuple[Any, ...]
    id: int  # id of the last row

    @property
    def value_missing(self) -> bool:
        """True when the last row had no value for the sort field (the NULL rows follow)."""
        return bool(self.key) and self.key[-1] is None


@dataclass(frozen=True)
class ArchitecturePage:
    """A page of the browser."""

    rows: tuple[ArchitectureRow, ...]  # at most ``limit`` rows in order
    next_after: PageCursor | None  # cursor of the next page; None on the last page


_ROW_COLUMNS = (
    Architecture.id,
    Architecture.hash,
    Architecture.latest_error,
    Architecture.latest_loss,
    Architecture.params,
    Architecture.flops,
    Architecture.depth,
    Architecture.num_ops,
    Architecture.best_test_acc,
    Architecture.retrain_state,
    Architecture.source,
    Architecture.latest_partial,
    Architecture.bench_acc,
)


def parse_sort(sort: str, descending: bool = False) -> tuple[str, bool]:
    """Split ``"-err"`` into ``("err", True)``; a ``-`` prefix or ``descending`` means descending.

    Raises:
        FilterError: For an unknown sort field.
    """
    key = sort.strip()
    if key.startswith("-"):
        key, descending = key[1:].strip(), True
    key = key.lower()
    if key not in COLUMNS:
        raise FilterError(f"unknown sort field {sort!r} (fields: {', '.join(FIELDS)})")
    return key, descending


def list_architectures(
    session: Session,
    experiment_id: int,
    *,
    sort: str = "err",
    descending: bool = False,
    filter: Filter | None = None,
    after: PageCursor | None = None,
    limit: int = 100,
) -> ArchitecturePage:
    """One page of an experiment's architectures, sorted and filtered.

    Rows are ordered by the sort field, then by id in the same direction;
    rows without a value for the sort field come last, by id. The error sort
    puts complete scores before partial ones (racing's early drops) in
    ascending order, and after them in descending order.

    Args:
        session: The caller's session.
        experiment_id: The experiment.
        sort: A field name, optionally prefixed with "-" for descending.
        descending: Sort descending (same as the "-" prefix).
        filter: From parse_filter; None shows every row.
        after: The previous page's ``next_after``; None for the first page.
        limit: Rows per page.

    Raises:
        FilterError: For an unknown sort field.
        StorageError: When ``after`` was made for another sort.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    key, descending = parse_sort(sort, descending)
    if after is not None and (after.sort, after.descending) != (key, descending):
        raise StorageError(
            f"page cursor was made for sort {'-' if after.descending else ''}{after.sort}, "
            f"not {'-' if descending else ''}{key}"
        )
    column = COLUMNS[key]
    # The browse index's order for this sort: errors put complete scores before
    # racing's partial ones (storage.models.browse_sort_key).
    key_columns = [getattr(Architecture, name) for name in browse_sort_key(column.key)]
    # PostgreSQL has statistics and picks the better index for a selective filter itself.
    steer_to = key if session.get_bind().dialect.name == "sqlite" else None
    base = select(*_ROW_COLUMNS).where(*_conditions(experiment_id, filter, steer_to))
    # One row beyond the page tells whether another page follows.
    wanted = limit + 1
    rows: list[Any] = []
    if after is None or not after.value_missing:
        query = base.where(column.is_not(None))
        if after is not None:
            position = tuple_(*key_columns, Architecture.id)
            boundary = tuple_(*after.key, after.id)
            query = query.where(position < boundary if descending else position > boundary)
        order = [*key_columns, Architecture.id]
        if descending:
            order = [part.desc() for part in order]
        rows.extend(session.execute(query.order_by(*order).limit(wanted)).all())
    if len(rows) < wanted and column.expression.nullable:
        query = base.where(column.is_(None))
        if after is not None and after.value_missing:
            query = query.where(
                Architecture.id < after.id if descending else Architecture.id > after.id
            )
        order_id = Architecture.id.desc() if descending else Architecture.id
        rows.extend(session.execute(query.order_by(order_id).limit(wanted - len(rows))).all())
    page = tuple(ArchitectureRow(*row) for row in rows[:limit])
    next_after = None
    if len(rows) > limit:
        last = rows[limit - 1]._mapping
        next_after = PageCursor(
            key, descending, tuple(last[c] for c in key_columns), last[Architecture.id]
        )
    return ArchitecturePage(page, next_after)


def count_architectures(
    session: Session, experiment_id: int, *, filter: Filter | None = None
) -> int:
    """How many of an experiment's architectures match a filter (all of them for None)."""
    query = (
        select(func.count()).select_from(Architecture).where(*_conditions(experiment_id, filter))
    )
    return int(session.execute(query).scalar_one())


@dataclass(frozen=True)
class ScoreInfo:
    """One score of an architecture."""

    id: int  # score id
    checkpoint_id: int | None  # HyperNet checkpoint used
    job_id: int | None  # job that measured it
    err: float  # error in percent
    loss: float | None  # validation loss
    images: int  # images evaluated
    z_draws: int  # random codes drawn
    method: str  # full, racing...
    created_at: datetime  # when it was recorded (UTC)


@dataclass(frozen=True)
class RetrainInfo:
    """One retrain of an architecture."""

    id: int  # retrain id
    job_id: int  # job that ran it
    epochs: int  # planned epochs
    best_val_acc: float | None  # best validation accuracy, percent
    test_acc: float | None  # test accuracy, percent; None until finished (or if it failed)
    curve: tuple[dict[str, Any], ...]  # one dict per completed epoch
    weights_path: str | None  # saved weights, if any
    created_at: datetime  # when it started (UTC)
    finished_at: datetime | None  # when it ended (UTC); None while running


@dataclass(frozen=True)
class ArchitectureDetail:
    """Everything about one architecture, for its detail view."""

    row: ArchitectureRow  # the browser columns
    experiment_id: int  # the experiment it belongs to
    spec: str  # the architecture as JSON text
    created_at: datetime  # when it was first recorded (UTC)
    scores: tuple[ScoreInfo, ...]  # oldest first
    retrains: tuple[RetrainInfo, ...]  # oldest first


def architecture_detail(session: Session, architecture_id: int) -> ArchitectureDetail:
    """An architecture with its spec, scores and retrains.

    Raises:
        NotFoundError: No architecture has this id.
    """
    found = session.execute(
        select(
            *_ROW_COLUMNS, Architecture.experiment_id, Architecture.spec, Architecture.created_at
        ).where(Architecture.id == architecture_id)
    ).first()
    if found is None:
        raise NotFoundError(f"no architecture with id {architecture_id}")
    row = ArchitectureRow(*found[: len(_ROW_COLUMNS)])
    experiment_id, spec, created_at = found[len(_ROW_COLUMNS) :]
    scores = session.execute(
        select(
            Score.id,
            Score.checkpoint_id,
            Score.job_id,
            Score.error,
            Score.loss,
            Score.images,
            Score.z_draws,
            Score.method,
            Score.created_at,
        )
        .where(Score.architecture_id == architecture_id)
        .order_by(Score.id)
    ).all()
    retrains = session.scalars(
        select(Retrain).where(Retrain.architecture_id == architecture_id).order_by(Retrain.id)
    ).all()
    return ArchitectureDetail(
        row=row,
        experiment_id=experiment_id,
        spec=spec,
        created_at=created_at,
        scores=tuple(ScoreInfo(*score) for score in scores),
        retrains=tuple(
            RetrainInfo(
                id=retrain.id,
                job_id=retrain.job_id,
                epochs=retrain.epochs,
                best_val_acc=retrain.best_val_acc,
                test_acc=retrain.test_acc,
                curve=tuple(retrain.curve or ()),
                weights_path=retrain.weights_path,
                created_at=retrain.created_at,
                finished_at=retrain.finished_at,
            )
            for retrain in retrains
        ),
    )


def list_experiments(session: Session) -> list[Experiment]:
    """Every experiment, newest first."""
    return list(session.scalars(select(Experiment).order_by(Experiment.id.desc())))


def list_jobs(
    session: Session,
    experiment_id: int | None = None,
    *,
    states: tuple[str, ...] | None = None,
    chunks: bool = False,
) -> list[Job]:
    """Jobs in enqueue order, optionally of one experiment and in some states.

    A search's chunk jobs are left out unless ``chunks``: a search is one job to its
    user, and its progress text tells how its chunks fare.
    """
    query = select(Job).order_by(Job.id)
    if not chunks:
        query = query.where(Job.parent_id.is_(None))
    if experiment_id is not None:
        query = query.where(Job.experiment_id == experiment_id)
    if states is not None:
        query = query.where(Job.state.in_(states))
    return list(session.scalars(query.execution_options(populate_existing=True)))


def job_labels(session: Session, job_ids: Iterable[int | None]) -> dict[int, str]:
    """How a worker's current job is shown: "job 12 (search)", "chunk 3 of job 12".

    A chunk names its search, the job its user knows (``storage.chunks``).
    """
    ids = sorted({ident for ident in job_ids if ident is not None})
    if not ids:
        return {}
    rows = session.execute(
        select(Job.id, Job.kind, Job.parent_id, Job.params).where(Job.id.in_(ids))
    ).all()
    labels = {}
    for ident, kind, parent_id, params in rows:
        if parent_id is None:
            labels[ident] = f"job {ident} ({kind})"
        else:
            index = params.get("index") if isinstance(params, dict) else None
            labels[ident] = f"chunk {index if index is not None else '?'} of job {parent_id}"
    return labels


def metric_series(
    session: Session, job_id: int, name: str, *, after_step: int | None = None
) -> list[tuple[int, float | None]]:
    """A job's (step, value) points of one metric in step order.

    Args:
        session: The caller's session.
        job_id: The job.
        name: The metric name.
        after_step: Only points after this step (for incremental polling).
    """
    query = select(Metric.step, Metric.value).where(Metric.job_id == job_id, Metric.name == name)
    if after_step is not None:
        query = query.where(Metric.step > after_step)
    return [(step, value) for step, value in session.execute(query.order_by(Metric.step))]


def recent_events(
    session: Session,
    *,
    experiment_id: int | None = None,
    job_id: int | None = None,
    after_id: int | None = None,
    limit: int = 200,
) -> list[Event]:
    """Activity-log lines, oldest first: the last ``limit``, or those after ``after_id``."""
    query = select(Event)
    if experiment_id is not None:
        query = query.where(Event.experiment_id == experiment_id)
    if job_id is not None:
        query = query.where(Event.job_id == job_id)
    if after_id is not None:
        query = query.where(Event.id > after_id)
        return list(session.scalars(query.order_by(Event.id).limit(limit)))
    newest = list(session.scalars(query.order_by(Event.id.desc()).limit(limit)))
    return newest[::-1]
