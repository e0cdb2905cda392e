"""Typed messages that worker threads post back to the event loop.

Payloads are frozen values from ``smash_tui.tui.data`` and ``storage`` (never
ORM objects). Types are only named for the type checker: importing storage
here would put SQLAlchemy on the start-up path before the first paint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from smash_tui.tui.data import DashboardData, JobView, ParetoData, ProxyData, Store
    from smash_tui.tui.processes import GpuStatus
    from storage.queries import ArchitectureDetail, ArchitecturePage, Filter
    from storage.summaries import ChangeMarker


class StoreOpened(Message):
    """The database is open and migrated; the views may start reading."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store


class StoreFailed(Message):
    """The database could not be opened; the app shows why and exits."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


@dataclass(frozen=True)
class PageRequest:
    """What a page of the architecture browser was asked for."""

    generation: int  # the browser's request counter when asked; older answers are dropped
    experiment_id: int  # the experiment listed
    sort: str  # the sort field
    descending: bool  # the sort direction
    filter: Filter | None  # the parsed filter; None lists everything
    append: bool  # True: next page of the same listing; False: a fresh first window
    keep_cursor: bool  # True: a live refresh, keep the highlighted row where it is


class PageLoaded(Message):
    """A page of the architecture browser arrived."""

    def __init__(self, request: PageRequest, page: ArchitecturePage) -> None:
        super().__init__()
        self.request = request
        self.page = page


class CountLoaded(Message):
    """The number of architectures matching the browser's filter."""

    def __init__(self, generation: int, count: int) -> None:
        super().__init__()
        self.generation = generation
        self.count = count


class DetailLoaded(Message):
    """The detail of one architecture arrived."""

    def __init__(self, detail: ArchitectureDetail) -> None:
        super().__init__()
        self.detail = detail


class MarkerPolled(Message):
    """The database's change marker, read by a periodic poll."""

    def __init__(self, marker: ChangeMarker) -> None:
        super().__init__()
        self.marker = marker


class DashboardLoaded(Message):
    """A fresh snapshot for the dashboard, with this host's GPUs when a worker uses CUDA here."""

    def __init__(self, data: DashboardData, gpus: list[GpuStatus] | None = None) -> None:
        super().__init__()
        self.data = data
        self.gpus = gpus or []


class JobsLoaded(Message):
    """A fresh job list for the Jobs view."""

    def __init__(self, jobs: list[JobView]) -> None:
        super().__init__()
        self.jobs = jobs


class ProxyLoaded(Message):
    """Fresh proxy-versus-truth figures."""

    def __init__(self, experiment_id: int, data: ProxyData) -> None:
        super().__init__()
        self.experiment_id = experiment_id
        self.data = data


class ParetoLoaded(Message):
    """A fresh Pareto front."""

    def __init__(self, experiment_id: int, data: ParetoData) -> None:
        super().__init__()
        self.experiment_id = experiment_id
        self.data = data


class ActionDone(Message):
    """A user action (queue, pause, export...) finished; ``text`` is what to tell the user."""

    def __init__(self, text: str, *, payload: Any = None) -> None:
        super().__init__()
        self.text = text
        self.payload = payload


class ActionFailed(Message):
    """A user action failed; ``text`` is the one-line reason."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
