"""Database URLs: no part of a password is ever shown, and a bad ``--db`` is one line."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from storage.db import normalize_url, open_database, redact_url
from storage.queue import enqueue
from tests.cli.support import SMASH, assert_one_line_error, dump, retrain_experiment, smash

# A password whose pieces cannot turn up by chance in any message.
PIECES = ("Xq7v", "Zk9w", "Ry5m")


def _pieces(password: str) -> list[str]:
    """The parts of a password that must never show: split at what parsers split on."""
    return [part for part in re.split(r"[@:/%?#]|40|3A|2F", password) if len(part) >= 3]


# (--db value, its password as written, exit code): every shape a user may type. Those
# that name a server are refused by it (port 1 refuses at once): a failure, 1. The others
# are malformed, ambiguous or unsupported: a usage error, 2, before any connection.
SHAPES = [
    ("postgresql://smash:Xq7v@Zk9w@127.0.0.1:1/runs", "Xq7v@Zk9w", 2),  # an unencoded @
    ("postgresql://smash:Xq7v@Zk9w@Ry5m@127.0.0.1:1/runs", "Xq7v@Zk9w@Ry5m", 2),
    ("postgresql://smash:Xq7v:Zk9w@127.0.0.1:1/runs", "Xq7v:Zk9w", 1),
    ("postgresql://smash:Xq7v/Zk9w@127.0.0.1:1/runs", "Xq7v/Zk9w", 1),
    ("postgresql://smash:Xq7v%40Zk9w@127.0.0.1:1/runs", "Xq7v%40Zk9w", 1),  # encoded: fine
    ("postgresql://smash:Xq7v%2FZk9w%3ARy5m@127.0.0.1:1/runs", "Xq7v%2FZk9w%3ARy5m", 1),
    ("postgresql://smash:Xq7vÄÖü€Zk9w@127.0.0.1:1/runs", "Xq7vÄÖü€Zk9w", 1),  # unicode
    ("postgresql://smash:Xq7v?Zk9w#Ry5m@127.0.0.1:1/runs", "Xq7v?Zk9w#Ry5m", 1),
    ("postgres://smash:Xq7v@Zk9w@127.0.0.1:1/runs?sslmode=disable", "Xq7v@Zk9w", 2),
    ("postgresql://:Xq7vZk9w@127.0.0.1:1/runs", "Xq7vZk9w", 1),  # no user name
    ("postgresql://Xq7v@Zk9w@127.0.0.1:1/runs", "Xq7v@Zk9w", 2),  # no ':': which part is what?
    ("postgresql://smash@127.0.0.1:1/runs?password=Xq7vZk9w", "Xq7vZk9w", 1),  # psycopg's option
    ("postgresql://smash:Xq7vZk9w@127.0.0.1:notaport/runs", "Xq7vZk9w", 2),
    ("postgresql://smash:Xq7v@Zk9w@[::1", "Xq7v@Zk9w", 2),  # garbage
    ("postgresql://smash:Xq7vZk9w@127.0.0.1:1", "Xq7vZk9w", 2),  # no database name
    ("postgresql+asyncpg://smash:Xq7vZk9w@127.0.0.1:1/runs", "Xq7vZk9w", 2),  # another driver
    ("mysql://smash:Xq7v@Zk9w@127.0.0.1/runs", "Xq7v@Zk9w", 2),  # another server
    ("smash:Xq7vZk9w@127.0.0.1/runs", "Xq7vZk9w", 2),  # the scheme forgotten
    ("://smash:Xq7v@Zk9w@", "Xq7v@Zk9w", 2),
]


@pytest.mark.parametrize(
    ("url", "password", "code"), SHAPES, ids=[shape[0][:40] for shape in SHAPES]
)
def test_no_part_of_a_password_is_ever_shown(url: str, password: str, code: int) -> None:
    pieces = _pieces(password)
    assert pieces, password
    assert not any(piece in redact_url(url) for piece in pieces), redact_url(url)
    for args in (["info"], ["info", "--json"], ["ls"], ["jobs"]):
        result = smash(url, *args)
        shown = result.stdout + result.stderr
        assert not any(piece in shown for piece in pieces), (args, shown)
        line = assert_one_line_error(result, code)
        assert ("error: cannot open database " in line) == (code == 1), line


def test_a_refused_connection_names_the_server_without_the_password() -> None:
    result = smash("postgresql://smash:Xq7v%40Zk9w@127.0.0.1:1/runs", "info")
    line = assert_one_line_error(result, 1)
    assert line.startswith("error: cannot open database postgresql+psycopg://smash:***@127.0.0.1:1/runs: ")
    assert "postgresql+psycopg://smash:***@127.0.0.1:1/runs" in result.stdout  # the info table


def test_an_unencoded_at_sign_is_refused_with_the_fix() -> None:
    line = assert_one_line_error(smash("postgresql://user:Xq7v@Zk9w@127.0.0.1/db", "ls"), 2)
    assert line == (
        "error: invalid database URL postgresql://user:***@127.0.0.1/db: an '@' in the user "
        "name or password must be percent-encoded as %40 (and ':' as %3A, '/' as %2F)"
    )


@pytest.mark.postgres
def test_a_wrong_password_on_a_real_server_is_one_line_without_it() -> None:
    admin = os.environ.get("SMASH_TEST_PG_URL", "").strip()
    if not admin:
        if os.environ.get("SMASH_REQUIRE_PG") == "1":
            pytest.fail("SMASH_REQUIRE_PG=1 but SMASH_TEST_PG_URL is not set")
        pytest.skip("SMASH_TEST_PG_URL is not set")
    url = make_url(normalize_url(admin)).set(password="Xq7v@Zk9w:Ry5m")
    result = smash(url.render_as_string(hide_password=False), "ls")
    line = assert_one_line_error(result, 1)
    assert line.startswith(f"error: cannot open database {url.render_as_string()}: ")
    assert "password authentication failed" in line
    assert not any(piece in result.stdout + result.stderr for piece in PIECES)


# --- --db values that name no usable database ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code", "message"),
    [
        ("", 2, "--db is empty"),
        ("   ", 2, "--db is empty"),
        ("postgresql://", 2, "database URL postgresql:// names no database"),
        ("mysql://x", 2, "unsupported database URL mysql://x: use a SQLite file path"),
        ("sqlite://", 2, "unsupported SQLite URL sqlite://"),
        ("sqlite:///:memory:", 2, "unsupported SQLite URL"),
        ("postgresql://[::1", 2, "invalid database URL 'postgresql://[::1'"),
        ("db\x01.sqlite", 2, "contains control characters"),
        ("sqlite:////nonexistent/dir/x.db", 1, "its folder /nonexistent/dir does not exist"),
        ("/proc/nope/x.db", 1, "its folder /proc/nope does not exist"),
        ("/dev/null/x.db", 1, "its folder /dev/null is not a folder"),
        ("/etc", 1, "/etc is a folder, not a database file"),
        ("/etc/hostname", 1, "is not a smash database: file is not a database"),
        ("x" * 5000 + ".db", 1, "File name too long"),
    ],
)
def test_a_bad_db_is_one_line_and_creates_nothing(
    value: str, code: int, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["ls"], ["worker", "--once", "--device", "cpu"], ["info"]):
        line = assert_one_line_error(smash(value, *args), code)
        assert message in line, (args, line)
    assert list(tmp_path.iterdir()) == []
    assert not Path("/nonexistent").exists()


# prctl(2): drop a capability from the bounding set, so that the exec'd child lacks it.
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def _drop_root_powers() -> None:
    """In the child: give up root's power to ignore file permissions (others have none)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            os._exit(97)  # cannot drop it: the test sees exit code 97


def _without_root_powers(args: list[str], db: str) -> subprocess.CompletedProcess[str]:
    """Run smash as a user whom file permissions bind (root may write anywhere)."""
    return subprocess.run(
        [*SMASH, *args, "--db", db],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_drop_root_powers,
        check=False,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX permissions, prctl")
def test_read_only_databases_and_folders_are_one_line(tmp_path: Path) -> None:
    template = tmp_path / "template.db"
    with open_database(str(template)) as db:
        experiment_id, archs = retrain_experiment(db, 1)
        with db.session() as session:
            enqueue(session, experiment_id, "retrain", {"architecture_id": archs[0]})
            session.commit()
    read_only_file = tmp_path / "ro-file" / "smash.db"
    read_only_folder = tmp_path / "ro-folder" / "smash.db"
    for path in (read_only_file, read_only_folder):
        path.parent.mkdir()
        shutil.copyfile(template, path)
    read_only_file.chmod(0o444)
    read_only_folder.parent.chmod(0o555)
    new_in_read_only = read_only_folder.parent / "new.db"
    try:
        before = {path: dump(path) for path in (read_only_file, read_only_folder)}
        # Reading a read-only file works; writing it is one line.
        assert _without_root_powers(["ls"], str(read_only_file)).returncode == 0
        line = assert_one_line_error(_without_root_powers(["pause", "1"], str(read_only_file)), 1)
        assert line == "error: database error: attempt to write a readonly database"
        # A folder that cannot be written: neither its database nor a new one opens.
        for db_path, reason in (
            (read_only_folder, "attempt to write a readonly database"),
            (new_in_read_only, "unable to open database file"),
        ):
            line = assert_one_line_error(_without_root_powers(["pause", "1"], str(db_path)), 1)
            assert line == f"error: cannot open database sqlite:///{db_path}: {reason}"
        for path, dumped in before.items():
            assert dump(path) == dumped
        assert not new_in_read_only.exists()
        assert stat.S_IMODE(read_only_file.stat().st_mode) == 0o444
    finally:
        read_only_folder.parent.chmod(0o755)  # so that pytest can clean up
