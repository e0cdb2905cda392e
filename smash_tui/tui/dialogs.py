"""Modal dialogs: confirmation, retrain, new search, export and help.

Forms validate on submit and show the first problem inline, beside the
field, and keep the dialog open; nothing is queued until every field is valid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from engine.config import STRATEGIES
from engine.params import WEIGHT_MODES
from engine.spaces import PRESETS
from engine.truth import TRUTH_COLUMNS
from smash_tui.tui.forms import (
    FormError,
    RetrainSettings,
    ScoreSettings,
    SearchSettings,
    parse_retrain,
    parse_score,
    parse_search,
)

DIALOG_CSS = """
{name} {{
    align: center middle;
    background: $background 60%;
}}
{name} > Vertical {{
    width: 64;
    max-width: 100%;
    height: auto;
    max-height: 100%;
    border: thick $accent;
    background: $surface;
    padding: 0 1;
}}
{name} .dialog-title {{ text-style: bold; width: 1fr; padding: 0 0 1 0; }}
{name} .form {{ grid-size: 2; grid-columns: 16 1fr; grid-rows: 3; height: auto; }}
{name} .form Label {{ padding: 1 0 0 0; }}
{name} .-compact .form {{ grid-rows: 1; grid-gutter: 1 0; }}
{name} .-compact .form Label {{ padding: 0; }}
{name} .-dense .form {{ grid-gutter: 0 0; }}
{name} .-dense .dialog-title {{ padding: 0; }}
{name} .form-error {{ color: $error; height: auto; min-height: 1; }}
{name} .buttons {{ height: 3; align-horizontal: right; }}
{name} .buttons Button {{ margin-left: 1; min-width: 10; }}
{name} Input.-invalid {{ border: tall $error; }}
"""


# Below this terminal height (or below what a long form needs), form fields lose
# their borders so every field fits.
FULL_FORM_HEIGHT = 34
# Rows around a form's fields: the title, the error line, the buttons and the frame.
FORM_FRAME_ROWS = 8


class FormDialog(ModalScreen[object]):
    """A dialog with inputs, an inline error line and submit/cancel buttons."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    FIELD_ROWS: ClassVar[int] = 3  # the form's fields, for how tightly to lay them out

    @property
    def compact(self) -> bool:
        """Borderless fields, for short terminals (3 rows a field do not fit)."""
        return self.app.size.height < max(FULL_FORM_HEIGHT, 3 * self.FIELD_ROWS + FORM_FRAME_ROWS)

    @property
    def dense(self) -> bool:
        """Borderless fields without a blank row between them (a long form on a short terminal)."""
        return self.app.size.height < 2 * self.FIELD_ROWS - 1 + FORM_FRAME_ROWS

    def _layout_classes(self) -> str:
        return " ".join(name for name, on in (("-compact", self.compact), ("-dense", self.dense)) if on)

    def body(self) -> Vertical:
        """The dialog's frame (compact on short terminals)."""
        return Vertical(classes=self._layout_classes())

    def on_resize(self) -> None:
        # A form opened on a tall terminal loses its field borders when the terminal
        # shrinks (and gets them back), so every field and button stays on screen.
        compact, dense = self.compact, self.dense
        for body in self.query_children(Vertical):
            body.set_class(compact, "-compact")
            body.set_class(dense, "-dense")
        for field in self.query("Input, Select"):
            if isinstance(field, (Input, Select)):
                field.compact = compact

    def show_error(self, error: FormError) -> None:
        """Show a validation problem and focus the field it is about."""
        self.query_one(".form-error", Static).update(error.message)
        for widget in self.query("Input"):
            widget.remove_class("-invalid")
        try:
            field = self.query_one(f"#{error.field}")
        except Exception:
            return
        field.add_class("-invalid")
        field.focus()

    def action_cancel(self) -> None:
        """Close without doing anything."""
        self.dismiss(None)

    def submit(self) -> None:
        """Validate the fields and dismiss with the result (subclasses)."""

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.submit()

    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        self.submit()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class ConfirmDialog(ModalScreen[bool]):
    """Ask a yes/no question; y or enter confirms, n or escape declines.

    Args:
        question: What is about to happen.
        confirm: The label of the confirming button.
    """

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmDialog")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, confirm: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.confirm = confirm

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, classes="dialog-title")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.confirm} (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def action_answer(self, value: bool) -> None:
        """Close with the answer."""
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class SettingsDialog(FormDialog):
    """A few settings for the marked architectures, each a text field, checked on submit.

    Args:
        title: What confirming will do.
        fields: (label, widget id, first value, placeholder) per field.
        parse: Reads the fields' texts, in order, into settings; FormError names a bad field.
    """

    def __init__(
        self,
        title: str,
        fields: list[tuple[str, str, str, str]],
        parse: Callable[..., object],
    ) -> None:
        super().__init__()
        self.title_text = title
        self.fields = fields
        self.parse = parse

    def compose(self) -> ComposeResult:
        with self.body():
            yield Static(self.title_text, classes="dialog-title")
            with Grid(classes="form"):
                for label, ident, value, placeholder in self.fields:
                    yield Label(label)
                    yield Input(value, id=ident, placeholder=placeholder, compact=self.compact)
            yield Static("", classes="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Queue", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def submit(self) -> None:
        try:
            settings = self.parse(*(self.query_one(f"#{ident}", Input).value for _, ident, _, _ in self.fields))
        except FormError as error:
            self.show_error(error)
            return
        self.dismiss(settings)


def _what(ids: list[int]) -> str:
    if len(ids) == 1:
        return f"architecture {ids[0]}"
    return f"{len(ids)} architectures ({', '.join(map(str, ids[:6]))}{'…' if len(ids) > 6 else ''})"


class RetrainDialog(SettingsDialog):
    """Ask for the retrain settings of one or more architectures.

    Args:
        architecture_ids: What will be retrained.
        defaults: The values shown at first.
    """

    DEFAULT_CSS = DIALOG_CSS.format(name="RetrainDialog")

    def __init__(self, architecture_ids: list[int], defaults: RetrainSettings) -> None:
        fields = [
            ("epochs", "epochs", str(defaults.epochs), ""),
            ("batch size", "batch-size", str(defaults.batch_size), ""),
            ("learning rate", "lr", f"{defaults.lr:g}", ""),
        ]
        super().__init__(f"Retrain {_what(architecture_ids)} from scratch", fields, parse_retrain)
        self.architecture_ids = architecture_ids


class ScoreDialog(SettingsDialog):
    """Ask how to score architectures again against the experiment's newest HyperNet.

    Args:
        architecture_ids: What will be scored.
        defaults: The values shown at first.
    """

    DEFAULT_CSS = DIALOG_CSS.format(name="ScoreDialog")

    def __init__(self, architecture_ids: list[int], defaults: ScoreSettings) -> None:
        images = "" if defaults.images is None else str(defaults.images)
        fields = [
            ("z draws", "z-draws", str(defaults.z_draws), ""),
            ("BN recalibration", "bn-recalibration", str(defaults.bn_recalibration), ""),
            ("images", "images", images, "all"),
        ]
        title = f"Score {_what(architecture_ids)} again (newest HyperNet checkpoint)"
        super().__init__(title, fields, parse_score)
        self.architecture_ids = architecture_ids


# How the form names the weights modes and a truth column left to the data set.
WEIGHT_LABELS = {"hypernet": "hypernet (SMASH)", "shared": "shared (nb201 only)"}
FROM_DATASET = "from the data set"


class NewSearchDialog(FormDialog):
    """Ask for a new search: data set, preset, weights, HyperNet epochs, architectures,
    strategy, a benchmark table and its column, name and seed.

    Args:
        defaults: The values shown at first.
    """

    DEFAULT_CSS = DIALOG_CSS.format(name="NewSearchDialog")
    FIELD_ROWS = 10

    def __init__(self, defaults: SearchSettings) -> None:
        super().__init__()
        self.defaults = defaults
        self._checking = False  # a submit is being checked: further ones wait for it

    def compose(self) -> ComposeResult:
        d = self.defaults
        compact = self.compact
        with self.body():
            yield Static("New search", classes="dialog-title")
            with Grid(classes="form"):
                yield Label("data set")
                yield Input(
                    d.dataset,
                    id="dataset",
                    placeholder="synthetic, cifar10, npz:PATH…",
                    compact=compact,
                )
                yield Label("preset")
                yield Select(
                    [(name, name) for name in PRESETS],
                    value=d.preset,
                    id="preset",
                    allow_blank=False,
                    compact=compact,
                )
                yield Label("weights")
                yield Select(
                    [(WEIGHT_LABELS.get(mode, mode), mode) for mode in WEIGHT_MODES],
                    value=d.weights,
                    id="weights",
                    allow_blank=False,
                    compact=compact,
                )
                yield Label("HyperNet epochs")
                yield Input(str(d.epochs), id="epochs", compact=compact)
                yield Label("architectures")
                yield Input(str(d.archs), id="archs", compact=compact)
                yield Label("strategy")
                yield Select(
                    [(name, name) for name in STRATEGIES],
                    value=d.strategy,
                    id="strategy",
                    allow_blank=False,
                    compact=compact,
                )
                yield Label("truth table")
                yield Input(
                    d.truth or "",
                    id="truth",
                    placeholder="optional: a benchmark CSV (nb201)",
                    compact=compact,
                )
                yield Label("truth column")
                yield Select(
                    [(FROM_DATASET, ""), *((name, name) for name in TRUTH_COLUMNS)],
                    value=d.truth_column or "",
                    id="truth-column",
                    allow_blank=False,
                    compact=compact,
                )
                yield Label("name")
                yield Input(d.name or "", id="name", placeholder="optional", compact=compact)
                yield Label("seed")
                yield Input(str(d.seed), id="seed", compact=compact)
            yield Static("", classes="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Start", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    class Checked(Message):
        """The engine's verdict on the form's values: settings, or the first problem."""

        def __init__(self, result: SearchSettings | FormError) -> None:
            super().__init__()
            self.result = result

    def submit(self) -> None:
        # Checked in a thread: a benchmark table is read in full (15,625 rows of
        # NAS-Bench-201 take more than half a second).
        if self._checking:
            return
        self._checking = True
        self.query_one(".form-error", Static).update(Text("checking…", style="dim"))
        self._check(
            dict(
                dataset=self.query_one("#dataset", Input).value,
                preset=str(self.query_one("#preset", Select).value),
                epochs=self.query_one("#epochs", Input).value,
                archs=self.query_one("#archs", Input).value,
                strategy=str(self.query_one("#strategy", Select).value),
                name=self.query_one("#name", Input).value,
                seed=self.query_one("#seed", Input).value,
                weights=str(self.query_one("#weights", Select).value),
                truth=self.query_one("#truth", Input).value,
                truth_column=str(self.query_one("#truth-column", Select).value) or None,
            )
        )

    @work(thread=True, exclusive=True, group="check", exit_on_error=False)
    def _check(self, values: dict[str, str | None]) -> None:
        try:
            result: SearchSettings | FormError = parse_search(**values)  # type: ignore[arg-type]
        except FormError as error:
            result = error
        except Exception as exc:  # noqa: BLE001 - the form must say why, never hang
            result = FormError("", f"cannot check the settings: {type(exc).__name__}: {exc}")
        self.post_message(self.Checked(result))

    @on(Checked)
    def _checked(self, message: Checked) -> None:
        self._checking = False
        if isinstance(message.result, FormError):
            self.show_error(message.result)
        else:
            self.dismiss(message.result)


class ExportDialog(FormDialog):
    """Ask where to export an architecture (as `smash export ID DIR`).

    Args:
        architecture_id: The architecture.
        default_dir: The folder shown at first.
    """

    DEFAULT_CSS = DIALOG_CSS.format(name="ExportDialog")

    def __init__(self, architecture_id: int, default_dir: str) -> None:
        super().__init__()
        self.architecture_id = architecture_id
        self.default_dir = default_dir

    def compose(self) -> ComposeResult:
        with self.body():
            yield Static(
                f"Export architecture {self.architecture_id}: spec, weights and a loader script",
                classes="dialog-title",
            )
            with Grid(classes="form"):
                yield Label("folder")
                yield Input(self.default_dir, id="folder", compact=self.compact)
            yield Static("", classes="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def submit(self) -> None:
        folder = self.query_one("#folder", Input).value.strip()
        if not folder:
            self.show_error(FormError("folder", "give a folder to export to"))
            return
        self.dismiss(folder)


class HelpScreen(ModalScreen[None]):
    """Every key of the app, by view.

    Args:
        sections: (title, [(keys, what it does)]) per view.
    """

    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > VerticalScroll {
        width: 80; max-width: 100%; height: 90%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close"),
    ]

    def __init__(self, sections: Iterable[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = list(sections)

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("smash keys", style="bold")
        text.append("  (esc closes; ctrl+p searches every command)\n", style="dim")
        for title, keys in self.sections:
            text.append(f"\n{title}\n", style="bold underline")
            for key, description in keys:
                text.append(f"  {key:<16}", style="bold cyan")
                text.append(f"{description}\n")
        with VerticalScroll():
            yield Static(text, id="help-text")

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
