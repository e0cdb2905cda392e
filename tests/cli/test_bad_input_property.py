"""Bad input, generated: every command refuses it in one line and leaves the database alone.

Hypothesis draws a command and one bad value of each of the command line's option
types (integers out of range or not numbers, floats that are NaN, infinite, too large
or text, ids in other scripts' digits or out of range, text with control characters,
filter expressions from a grammar of fields, operators and junk) and runs it in this
process through ``CliRunner`` against a copy of a small database. Every value is bad by
construction, or names a row that does not exist, so no run can start: the command
must exit with 1 or 2, print exactly one ``error: ...`` line on stderr and no
traceback, and leave every table as it was.

The refusals come before torch is loaded, except a bad ``--device`` (only torch knows
the devices) and ``retrain``/``score`` of an id that does not exist (the device is
checked before the database is opened): torch loads once per process, so examples
stay a few milliseconds each (at least 500 in CI, within a minute on 2 cores).
"""

from __future__ import annotations

import shutil
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import FLOAT_MAX, INT_MAX
from smash_tui.runner.config import MAX_INTERVAL_S, MAX_THREADS
from storage.db import open_database
from storage.queries import FIELDS, MAX_FILTER_CHARS, MAX_FILTER_TERMS, OPS, PERCENT_FIELDS
from storage.queue import enqueue
from tests.cli.support import TINY_SEARCH, dump, retrain_experiment, smash

EXAMPLES = 600
SEARCH = ["search", *TINY_SEARCH]
DEMO = ["demo", "--device", "cpu"]
# Rows of the fixture database are few: any id from here on names nothing.
ABSENT_ID = 1000

# Integer options, each with the arguments that come before it. Any integer beyond what a
# database column holds (|x| > INT_MAX) is refused by every one of them.
INT_OPTIONS: list[tuple[list[str], str]] = [
    *(
        (SEARCH, option)
        for option in (
            "--epochs", "--max-steps", "--batch-size", "--checkpoint-every", "--eval-archs",
            "--archs", "--race-top-k", "--search-batch", "--score-images", "--z-draws",
            "--bn-recalibration", "--seed", "--synthetic-train", "--synthetic-test",
            "--image-size", "--threads", "--commit-every",
        )
    ),
    *(
        (DEMO, option)
        for option in (
            "--epochs", "--max-steps", "--archs", "--retrain-epochs", "--top", "--batch-size",
            "--retrain-batch-size", "--synthetic-train", "--synthetic-test", "--score-images",
            "--eval-archs", "--checkpoint-every", "--seed", "--threads",
        )
    ),
    *((["retrain", "1", "--device", "cpu"], option) for option in ("--epochs", "--batch-size", "--seed", "--threads")),
    *(
        (["score", "1", "--device", "cpu"], option)
        for option in ("--z-draws", "--bn-recalibration", "--score-images", "--seed", "--threads")
    ),
    (["score", "--device", "cpu"], "--top"),
    (["ls"], "--limit"),
    (["jobs"], "--limit"),
    (["worker", "--once", "--device", "cpu"], "--threads"),
]
# Float options: NaN, infinities and numbers float32 cannot hold are refused by all of them,
# and so are negative numbers.
FLOAT_OPTIONS: list[tuple[list[str], str]] = [
    (SEARCH, "--lr"),
    (SEARCH, "--val-size"),
    (DEMO, "--lr"),
    (DEMO, "--val-size"),
    (["retrain", "1", "--device", "cpu"], "--lr"),
    *((["worker", "--once", "--device", "cpu"], option) for option in ("--poll", "--heartbeat", "--stale-after")),
]
# Text options where a control character can never be right.
TEXT_OPTIONS: list[tuple[list[str], str]] = [
    *((SEARCH, option) for option in ("--name", "--dataset", "--preset", "--hypernet", "--strategy", "--data-root")),
    (DEMO, "--name"),
    (["retrain", "1"], "--device"),
    (["worker", "--once"], "--kinds"),
    (["worker", "--once"], "--device"),
    (["ls"], "--sort"),
    (["ls"], "--experiment"),
    (["jobs"], "--state"),
    (["jobs"], "--experiment"),
]
# Commands that take an id: (arguments before it, arguments after it).
ID_COMMANDS: list[tuple[list[str], list[str]]] = [
    (["retrain"], ["--device", "cpu"]),
    (["score"], ["--device", "cpu"]),
    (["score", "1", "--device", "cpu", "--checkpoint"], []),
    (["show"], []),
    (["pause"], []),
    (["resume"], []),
    (["cancel"], []),
    (["retry"], []),
    (["ls", "--experiment"], []),
    (["jobs", "--experiment"], []),
    (["score", "--top", "1", "--device", "cpu", "--experiment"], []),
]


def _parses(text: str, kind: type) -> bool:
    try:
        kind(text)
    except (ValueError, OverflowError):
        return False
    return True


# --- values ------------------------------------------------------------------------------------

huge_ints = st.one_of(
    st.integers(min_value=INT_MAX + 1, max_value=10**40),
    st.integers(min_value=-(10**40), max_value=-INT_MAX - 1),
    st.sampled_from([2**31, 2**63, 10**30, -(2**63)]),
)
not_numbers = st.text(min_size=0, max_size=12).filter(lambda text: not _parses(text, float))
bad_ints = st.one_of(huge_ints.map(str), not_numbers, st.sampled_from(["1.5", "1e3", "²", "0x10", ""]))

bad_floats = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e39", "1e308"]),
    st.floats(min_value=FLOAT_MAX * 1.0001, allow_infinity=False).map(repr),
    st.floats(max_value=-1e-6, allow_infinity=False).map(repr),  # negative: no rate, size or delay
    not_numbers,
)


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


# Digits of other scripts (Arabic-Indic, Devanagari, fullwidth...) and superscripts.
foreign_digits = st.text(
    alphabet=st.characters(whitelist_categories=("Nd", "No"), blacklist_characters=string.digits),
    min_size=1,
    max_size=6,
)
bad_ids = st.one_of(
    foreign_digits,
    st.integers(min_value=INT_MAX + 1, max_value=10**40).map(str),
    st.integers(min_value=ABSENT_ID, max_value=INT_MAX).map(str),  # names no row
    st.sampled_from(["0", "", " ", "1.5", "1e3", "٣", "²", "-1", "0x1"]),
)
control_characters = st.characters(whitelist_categories=("Cc", "Cf"))
with_control = st.builds(
    lambda before, control, after: before + control + after,
    st.text(alphabet=string.ascii_letters, max_size=6),
    control_characters,
    st.text(alphabet=string.ascii_letters, max_size=6),
)


# --- the filter language -----------------------------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda x: f"{x:g}"),
    st.builds(lambda n, s: f"{n}{s}", st.integers(0, 999), st.sampled_from(["k", "M", "G", "e3", ".5"])),
)
good_terms = st.builds(
    lambda field, op, number, percent: f"{field}{op}{number}{'%' if percent and field in PERCENT_FIELDS else ''}",
    st.sampled_from(FIELDS),
    st.sampled_from(OPS),
    numbers,
    st.booleans(),
)
junk_fields = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=8).filter(
    lambda name: name.lower() not in FIELDS
)
junk_numbers = st.one_of(
    st.text(alphabet="abcdfhijlnopqrstuvwxyz_#@!", min_size=1, max_size=6),
    st.sampled_from(["1.2.3", "--3", "1e", "1ee5", "0x10", "1_000", "1,5", "½", "٣", "nan", "inf", "1e400", "9" * 400, "3%%", "3kk"]),
)
bad_ops = st.sampled_from(["<<", "=<", "=>", "==", "<>", "!", "~", "=!", ">>", "!==", "<=>"])
bad_terms = st.one_of(
    st.builds(lambda f, o, n: f + o + n, junk_fields, st.sampled_from(OPS), numbers),
    st.builds(lambda f, o, n: f + o + n, st.sampled_from(FIELDS), st.sampled_from(OPS), junk_numbers),
    st.builds(lambda f, o, n: f + o + n, st.sampled_from(FIELDS), bad_ops, numbers),
    st.builds(
        lambda f, o, n: f"{f}{o}{n}%",
        st.sampled_from([f for f in FIELDS if f not in PERCENT_FIELDS]),
        st.sampled_from(OPS),
        numbers,
    ),
    st.builds(lambda f, o: f + o, st.sampled_from(FIELDS), st.sampled_from(OPS)),  # no number
    st.builds(lambda o, n: o + n, st.sampled_from(OPS), numbers),  # no field
    st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),  # no operator
)
separators = st.sampled_from([" ", "  ", "\t", " \n "])


@st.composite
def bad_filters(draw: st.DrawFn) -> str:
    """A filter expression that must be refused: a bad term among good ones, or too much."""
    shape = draw(st.sampled_from(["bad term", "too many terms", "too long"]))
    if shape == "too many terms":
        terms = draw(st.lists(good_terms, min_size=MAX_FILTER_TERMS + 1, max_size=MAX_FILTER_TERMS + 30))
        return " ".join(terms)
    if shape == "too long":
        terms = draw(st.lists(good_terms, min_size=1, max_size=5))
        return " ".join(terms) + " " * (MAX_FILTER_CHARS + 1)
    good = draw(st.lists(good_terms, max_size=4))
    position = draw(st.integers(0, len(good)))
    terms = [*good[:position], draw(bad_terms), *good[position:]]
    separator = draw(separators)
    return separator.join(terms)


# --- commands ----------------------------------------------------------------------------------

def _with_value(option_lists: list[tuple[list[str], str]], values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.builds(lambda where, value: [*where[0], where[1], value], st.sampled_from(option_lists), values)


worker_floats = st.one_of(
    bad_floats,
    st.floats(min_value=MAX_INTERVAL_S * 1.01, max_value=1e300).map(repr),
    st.just("0"),
)
commands = st.one_of(
    _with_value(INT_OPTIONS, bad_ints),
    _with_value(FLOAT_OPTIONS[:5], bad_floats),
    _with_value(FLOAT_OPTIONS[5:], worker_floats),
    _with_value(TEXT_OPTIONS, with_control),
    st.builds(lambda command, value: [*command[0], value, *command[1]], st.sampled_from(ID_COMMANDS), bad_ids),
    st.builds(lambda text: ["ls", "--filter", text], bad_filters()),
    st.builds(
        lambda threads: ["worker", "--once", "--device", "cpu", "--threads", str(threads)],
        st.integers(min_value=MAX_THREADS + 1, max_value=10**6),
    ),
)


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small database: an experiment, two architectures, a queued retrain job."""
    path = tmp_path_factory.mktemp("property") / "smash.db"
    with open_database(str(path)) as db:
        experiment_id, archs = retrain_experiment(db, 2)
        with db.session() as session:
            enqueue(session, experiment_id, "retrain", {"architecture_id": archs[0]})
            session.commit()
    return path


def test_bad_input_never_gets_through(fixture_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "smash.db"
    shutil.copyfile(fixture_db, path)
    before = dump(path)
    seen: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(args=commands)
    def refused(args: list[str]) -> None:
        result = smash(str(path), *args)
        shown = result.stdout + result.stderr
        assert result.exit_code in (1, 2), (args, result.exit_code, shown)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert "Traceback" not in shown and "internal error" not in shown, (args, shown)
        assert result.exception is None or isinstance(result.exception, SystemExit), args
        assert dump(path) == before, args
        seen.append(result.exit_code)

    refused()
    assert len(seen) >= 500 and {1, 2} <= set(seen)
    # Nothing was written beside the database either (no exported folder, no new file).
    assert {child.name for child in tmp_path.iterdir()} <= {
        "smash.db", "smash.db-wal", "smash.db-shm", "smash-files"
    }
