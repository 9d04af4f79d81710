"""Reliability (issue 5): a killed or interrupted ingest, two writers on one file, hostile
text and file names, files that are not our database, and arbitrary input.

The crash, interrupt and concurrency tests run the real CLI in subprocesses
(``python -m provenance``) and judge the database with plain ``sqlite3``: integrity,
foreign keys, orphans, index coverage and one row per input. The rest use CliRunner.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator, Optional

import lxml.html
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st

from conftest import BELTA_SEED, TASS_SEED, made_up_words, one_line
from provenance.cli import cli
from provenance.db.migrate import upgrade_to_head
from provenance.db.session import database_url, make_engine
from provenance.ingest import BATCH_DOCUMENTS, Ingestor
from provenance.prepare import prepare
from provenance.reader import RawDocument
from provenance.settings import Settings
from provenance.text.normalize import normalize, tokens
from provenance.text.segment import segment

CLI = [sys.executable, "-m", "provenance"]
INT64 = (-(1 << 63), (1 << 63) - 1)


# -- corpus and database helpers ------------------------------------------------------
def _vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    return made_up_words(rng, size)


def write_corpus(folder: Path, count: int, seed: int, near_copy_every: int = 0) -> list[Path]:
    """``count`` small distinct documents; every ``near_copy_every``-th one is a near-copy of
    the one before it, so the database also gets pairs, derivations and passage bands."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    folder.mkdir(parents=True, exist_ok=True)
    paths, previous = [], None
    for number in range(count):
        if near_copy_every and previous is not None and number % near_copy_every == 0:
            words = previous.split(" ")
            words[len(words) // 2] = "changedword"
            text = " ".join(words)
        else:
            paragraphs = [" ".join(rng.choice(vocabulary) for _ in range(18)).capitalize() + "." for _ in range(3)]
            text = "\n\n".join(paragraphs) + "\n"
        path = folder / f"doc_{number:04d}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
        previous = text
    return paths


def stored_documents(db: Path) -> int:
    """Documents committed so far, read without taking part in the writer's transactions."""
    if not db.exists():
        return 0
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return connection.execute("SELECT count(*) FROM document").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:  # not created yet, or mid-migration
        return 0


def query(db: Path, sql: str, *params) -> list[tuple]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


#: The passage index: its big table and its recent rows (see RecentPassageBand).
PASSAGE_BANDS = "(SELECT band_key, passage_id FROM passage_band UNION ALL SELECT band_key, passage_id FROM passage_band_recent)"

#: Rows that point at something that is gone, or index entries that must not exist.
INCONSISTENCIES = {
    "passage without its document":
        "SELECT p.id FROM passage p LEFT JOIN document d ON d.id = p.document_id WHERE d.id IS NULL",
    "passage band without its passage":
        f"SELECT b.passage_id FROM {PASSAGE_BANDS} b LEFT JOIN passage p ON p.id = b.passage_id WHERE p.id IS NULL",
    "document band without its document":
        "SELECT b.document_id FROM document_band b LEFT JOIN document d ON d.id = b.document_id WHERE d.id IS NULL",
    "document band of a superseded version":
        "SELECT b.document_id FROM document_band b JOIN document d ON d.id = b.document_id WHERE NOT d.is_latest",
    "passage band of a boilerplate passage or superseded version":
        f"SELECT b.passage_id FROM {PASSAGE_BANDS} b JOIN passage p ON p.id = b.passage_id "
        "JOIN document d ON d.id = p.document_id WHERE p.boilerplate_id IS NOT NULL OR NOT d.is_latest",
    "document pair with a missing document":
        "SELECT x.first_id FROM document_pair x LEFT JOIN document a ON a.id = x.first_id "
        "LEFT JOIN document b ON b.id = x.second_id WHERE a.id IS NULL OR b.id IS NULL",
    "boilerplate link with a missing side":
        "SELECT x.document_id FROM boilerplate_document x LEFT JOIN document d ON d.id = x.document_id "
        "LEFT JOIN boilerplate b ON b.id = x.boilerplate_id WHERE d.id IS NULL OR b.id IS NULL",
    "derivation with a missing document or run":
        "SELECT x.id FROM derivation x LEFT JOIN document a ON a.id = x.derived_id "
        "LEFT JOIN document b ON b.id = x.source_id LEFT JOIN ingest_run r ON r.id = x.run_id "
        "WHERE a.id IS NULL OR b.id IS NULL OR r.id IS NULL",
    "passage match with a missing derivation or passage":
        "SELECT m.id FROM passage_match m LEFT JOIN derivation x ON x.id = m.derivation_id "
        "LEFT JOIN passage a ON a.id = m.derived_passage_id LEFT JOIN passage b ON b.id = m.source_passage_id "
        "WHERE x.id IS NULL OR a.id IS NULL OR b.id IS NULL",
    "citation without its document":
        "SELECT c.id FROM citation c LEFT JOIN document d ON d.id = c.document_id WHERE d.id IS NULL",
    "document without its run":
        "SELECT d.id FROM document d LEFT JOIN ingest_run r ON r.id = d.run_id WHERE r.id IS NULL",
    "signed latest document missing from the document index":
        "SELECT d.id FROM document d WHERE d.is_latest AND d.signature IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM document_band b WHERE b.document_id = d.id)",
    "signed content passage missing from the passage index":
        "SELECT p.id FROM passage p JOIN document d ON d.id = p.document_id WHERE d.is_latest "
        "AND p.boilerplate_id IS NULL AND p.signature IS NOT NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {PASSAGE_BANDS} b WHERE b.passage_id = p.id)",
    "signed passage without its compact sketch, or a sketch of another signature":
        "SELECT p.id FROM passage p LEFT JOIN passage_prefilter f ON f.passage_id = p.id "
        "WHERE p.signature IS NOT NULL AND (f.passage_id IS NULL OR length(f.low_bytes) * 4 != length(p.signature) "
        "OR f.content_word_count != p.content_word_count)",
    "compact sketch without its signed passage":
        "SELECT f.passage_id FROM passage_prefilter f LEFT JOIN passage p ON p.id = f.passage_id "
        "WHERE p.signature IS NULL",
    # A path is stored again only as a new version (a changed file, or a JSONL id met again
    # with another text): one latest version, numbered 1 to n, none repeating the one before.
    "path with more than one latest version":
        "SELECT path FROM document WHERE is_latest GROUP BY path HAVING count(*) > 1",
    "versions of a path not numbered 1 to n":
        "SELECT path FROM document GROUP BY path HAVING min(version) != 1 OR max(version) != count(*)",
    "version stored twice (the same content as the version before it)":
        "SELECT d.id FROM document d JOIN document p ON p.id = d.previous_version_id WHERE d.content_hash = p.content_hash",
    "document text without passages":
        "SELECT d.id FROM document d WHERE NOT EXISTS (SELECT 1 FROM passage p WHERE p.document_id = d.id)",
}


def assert_consistent(db: Path) -> None:
    """The database is intact, has no dangling rows and its indexes cover what they should."""
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, "PRAGMA foreign_key_check") == []
    problems = {name: rows[:5] for name, sql in INCONSISTENCIES.items() if (rows := query(db, sql))}
    assert problems == {}


def stored_paths(db: Path) -> list[str]:
    return [row[0] for row in query(db, "SELECT path FROM document ORDER BY path")]


@contextmanager
def spawn(db: Path, *args: str, **popen) -> Iterator[subprocess.Popen]:
    """``provenance --db DB ARGS`` in a subprocess, killed if the test fails before it ends."""
    process = subprocess.Popen(
        [*CLI, "--db", str(db), *args], stdout=popen.pop("stdout", subprocess.PIPE),
        stderr=subprocess.PIPE, text=True, **popen,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


#: Documents in a corpus that an ingest is stopped part way through: its first batch (see
#: ingest.BATCH_DOCUMENTS) commits well before the end.
MORE_THAN_A_BATCH = 2 * BATCH_DOCUMENTS + 44


def wait_for_documents(process: subprocess.Popen, db: Path, minimum: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = stored_documents(db)
        if count >= minimum:
            return count
        assert process.poll() is None, f"ingest ended before storing {minimum} documents: {process.communicate()}"
        time.sleep(0.01)
    raise AssertionError(f"fewer than {minimum} documents stored after {timeout}s")


def run_cli(db: Path, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "--db", str(db), *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **env} if env else None)


def invoke(db: Path, *args, color: bool = False):
    return CliRunner().invoke(cli, ["--db", str(db), *(str(a) for a in args)], color=color)


# -- 1. kill -9 in the middle of a large ingest ---------------------------------------
def test_kill_9_mid_ingest_then_rerun_finishes_cleanly(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", MORE_THAN_A_BATCH, seed=1, near_copy_every=10)
    db = tmp_path / "killed.db"
    with spawn(db, "ingest", str(tmp_path / "corpus"), "--quiet", stdout=subprocess.DEVNULL) as process:
        wait_for_documents(process, db, 10)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    before = stored_documents(db)
    assert 10 <= before < len(corpus), "the ingest must be killed part way"
    assert_consistent(db)

    rerun = run_cli(db, "ingest", str(tmp_path / "corpus"), "--format", "json")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert (summary["documents_added"], summary["unchanged"], summary["failed"]) == (len(corpus) - before, before, 0)
    assert_consistent(db)
    assert stored_paths(db) == sorted(str(p) for p in corpus)
    # The checks above were not vacuous: the corpus produced pairs, derivations and bands.
    for table in ("document_pair", "derivation", "passage_match", "document_band", PASSAGE_BANDS):
        assert query(db, f"SELECT count(*) FROM {table} AS counted")[0][0] > 0, table
    # The killed run's process is gone: the rerun marked it interrupted, with what it stored.
    assert query(db, "SELECT status, documents_added FROM ingest_run ORDER BY id") == [
        ("interrupted", before), ("completed", len(corpus) - before)]


def test_a_run_whose_process_is_gone_is_marked_interrupted_by_the_next_ingest(tmp_path):
    import socket

    db = tmp_path / "runs.db"
    assert invoke(db, "ingest", BELTA_SEED).exit_code == 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = socket.gethostname()
    connection = sqlite3.connect(db)
    with connection:
        for host, pid in [(here, gone.pid), (here, os.getpid()), ("elsewhere.example", gone.pid), (here, None)]:
            connection.execute(
                "INSERT INTO ingest_run (started_at, status, settings_fingerprint, tool_version, arguments, files_seen, "
                "documents_added, versions_added, unchanged, skipped, failed, host, pid) "
                "VALUES ('2026-01-01 00:00:00', 'running', 'x', 'x', '', 0, 0, 0, 0, 0, 0, ?, ?)", (host, pid))
        connection.execute("UPDATE document SET run_id = (SELECT max(id) - 3 FROM ingest_run)")
    connection.close()
    assert invoke(db, "ingest", TASS_SEED).exit_code == 0
    # Only the dead process on this host is closed (with the document it stored); a live
    # process, another host's run and a run that did not record its process are left alone.
    assert query(db, "SELECT status, documents_added FROM ingest_run ORDER BY id") == [
        ("completed", 1), ("interrupted", 1), ("running", 0), ("running", 0), ("running", 0), ("completed", 1)]


# -- 3. Ctrl-C ------------------------------------------------------------------------
# Ctrl-C now only asks the ingest to stop between documents (ingest.StopOnCtrlC). A
# KeyboardInterrupt that still lands inside sqlite3's executemany (a second Ctrl-C, or the
# hook below) leaves that statement active: SQLAlchemy invalidates the connection, but
# sqlite3_close_v2 only turns it into a zombie that keeps the write transaction until the
# cursor, held by the traceback's reference cycle, is collected; until the fix, _finish_run's
# BEGIN IMMEDIATE then waited out the 60 s busy timeout and the run stayed 'running'.


def assert_interrupted_cleanly(db: Path, corpus: list[Path], stdout: str, stderr: str, returncode: int) -> None:
    assert returncode == 130, stderr
    assert "Traceback" not in stderr
    stored = stored_documents(db)
    assert stored < len(corpus)
    assert f"interrupted: stored {stored} document(s)" in stderr
    assert "run the same command again" in stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] is True and summary["documents_added"] == stored and summary["failed"] == 0
    run = query(db, "SELECT status, documents_added, finished_at IS NOT NULL FROM ingest_run")
    assert run == [("interrupted", stored, 1)]
    assert_consistent(db)
    assert set(stored_paths(db)) <= {str(p) for p in corpus}


def _as_in_a_terminal() -> None:
    """Ctrl-C reaches the child as it would in a terminal, even when the tests themselves run
    in the background (``.ci/run &``), which makes every process they start ignore SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_and_says_how_far_it_got(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", MORE_THAN_A_BATCH, seed=2)
    db = tmp_path / "interrupted.db"
    with spawn(db, "ingest", str(tmp_path / "corpus"), "--format", "json", preexec_fn=_as_in_a_terminal) as process:
        wait_for_documents(process, db, 10)
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the ingest still runs 15 s after Ctrl-C")
    assert_interrupted_cleanly(db, corpus, stdout, stderr, process.returncode)
    assert stored_documents(db) >= 10
    runs = invoke(db, "inspect", "runs", "--format", "json")
    assert runs.exit_code == 0, runs.output
    assert [r["status"] for r in json.loads(runs.stdout)] == ["interrupted"]


#: The real CLI in a child process, with one test hook: the Nth multi-row INSERT raises
#: KeyboardInterrupt after its first row, inside sqlite3's executemany, which is where a
#: real Ctrl-C lands when it arrives during a bulk insert. The product code is not touched.
CTRL_C_CHILD = r"""
import sys
from sqlalchemy import Engine, event

nth, seen = int(sys.argv[1]), [0]

def _first_row_then_ctrl_c(rows):
    yield rows[0]
    raise KeyboardInterrupt

@event.listens_for(Engine, "before_cursor_execute", retval=True)
def _interrupt(connection, cursor, statement, parameters, context, executemany):
    if executemany and statement.startswith("INSERT") and len(parameters) > 1:
        seen[0] += 1
        if seen[0] == nth:
            return statement, _first_row_then_ctrl_c(parameters)
    return statement, parameters

from provenance.cli import cli
cli(args=sys.argv[2:], prog_name="provenance")
"""


def test_ctrl_c_during_a_bulk_insert_stops_cleanly(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 20, seed=10)
    db = tmp_path / "interrupted.db"
    process = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD, "6", "--db", str(db), "ingest", str(tmp_path / "corpus"),
         "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=10)  # about 3 s when it works
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the ingest still runs 10 s after Ctrl-C (blocked on its own write lock)")
    assert_interrupted_cleanly(db, corpus, stdout, stderr, process.returncode)


# -- 2. two writers on one file -------------------------------------------------------
#: Runs the real CLI in a child process after installing one test hook: the child's first
#: write (BEGIN IMMEDIATE, or a DDL/DML statement) waits, up to 5 s, until every child has
#: reached its own. The writers then start together, so they contend for the same documents
#: (or the same empty database) instead of one finishing before the other gets the lock,
#: which is what usually happens by chance. The product code is not touched.
FIRST_WRITE = r"\s*(BEGIN IMMEDIATE|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP)"
CHILD = r"""
import os, re, sys, time
from sqlalchemy import Engine, event

folder, me, expected, pattern = sys.argv[1], sys.argv[2], int(sys.argv[3]), re.compile(sys.argv[4])
state = {"waited": False}

@event.listens_for(Engine, "before_cursor_execute")
def _meet(connection, cursor, statement, parameters, context, executemany):
    if state["waited"] or not pattern.match(statement):
        return
    state["waited"] = True
    open(os.path.join(folder, me), "w").close()
    deadline = time.monotonic() + 5
    while len(os.listdir(folder)) < expected and time.monotonic() < deadline:
        time.sleep(0.005)

from provenance.cli import cli
cli(args=sys.argv[5:], prog_name="provenance")
"""


def assert_runs_clean(results) -> None:
    for code, summary, stderr in results:
        assert "Traceback" not in stderr, stderr[-2000:]
        assert summary is not None, stderr
        assert summary["failed"] == 0, summary["problems"][:3]
        assert code == 0, stderr


def run_together(
    db: Path, inputs: list[list[str]], meet_at: Optional[str] = FIRST_WRITE
) -> list[tuple[int, Optional[dict], str]]:
    """``provenance --db DB ingest PATHS --format json`` once per entry of ``inputs``, all at
    once; with ``meet_at`` (a regex) each waits for the others at its first matching statement."""
    barrier = db.parent / f"barrier-{db.stem}"
    barrier.mkdir(exist_ok=True)
    processes = []
    for number, paths in enumerate(inputs):
        arguments = ["--db", str(db), "ingest", *paths, "--format", "json"]
        command = ([sys.executable, "-c", CHILD, str(barrier), str(number), str(len(inputs)), meet_at, *arguments]
                   if meet_at else [*CLI, *arguments])
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=180)
            try:
                summary = json.loads(stdout)
            except ValueError:
                summary = None
            results.append((process.returncode, summary, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert_runs_clean(results)
    if meet_at:  # every writer reached the meeting point: the runs really overlapped
        assert sorted(os.listdir(barrier)) == [str(n) for n in range(len(inputs))], results
    return results


@pytest.fixture
def primed_db(tmp_path) -> Path:
    """A database that already holds one document (schema and settings manifest exist)."""
    db = tmp_path / "shared.db"
    first = invoke(db, "ingest", BELTA_SEED)
    assert first.exit_code == 0, first.output
    return db


def test_two_ingests_of_disjoint_inputs_at_once(tmp_path, primed_db):
    first = write_corpus(tmp_path / "first", 30, seed=3)
    second = write_corpus(tmp_path / "second", 30, seed=4)
    results = run_together(primed_db, [[str(tmp_path / "first")], [str(tmp_path / "second")]])
    assert [summary["documents_added"] for _, summary, _ in results] == [30, 30]
    assert_consistent(primed_db)
    assert stored_paths(primed_db) == sorted([str(BELTA_SEED), *map(str, first + second)])


def test_two_ingests_of_the_same_inputs_at_once(tmp_path, primed_db):
    corpus = write_corpus(tmp_path / "shared", 20, seed=5)
    results = run_together(primed_db, [[str(tmp_path / "shared")]] * 2)
    assert_consistent(primed_db)
    assert stored_paths(primed_db) == sorted([str(BELTA_SEED), *map(str, corpus)])
    assert sorted(summary["documents_added"] + summary["unchanged"] for _, summary, _ in results) == [20, 20]


def test_switching_to_wal_waits_while_another_process_holds_the_new_file():
    """The step that failed about once in 25 concurrent first ingests: while another process
    creates the brand-new file, SQLite answers PRAGMA journal_mode=WAL with "database is
    locked" at once (no busy timeout). The switch must keep trying, with backoff, for as
    long as a slow (loaded) machine may need, and no longer than its bound."""
    from provenance.db.session import _switch_to_wal

    busy = _LockedFor(3.0)  # longer than the 60 quick attempts (about 2 s) of the first fix
    _switch_to_wal(busy)
    assert busy.done and 1 < busy.attempts < 60  # retried, with backoff rather than a busy loop
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        _switch_to_wal(_LockedFor(60.0), patience=0.5)
    assert time.monotonic() - started < 2
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):  # other errors: no retry
        _switch_to_wal(_LockedFor(60.0, "disk I/O error"))


class _LockedFor:
    """A cursor whose PRAGMA fails with ``message`` for ``seconds``, then succeeds."""

    def __init__(self, seconds: float, message: str = "database is locked"):
        self.until, self.message = time.monotonic() + seconds, message
        self.attempts, self.done = 0, False

    def execute(self, statement: str) -> None:
        assert statement == "PRAGMA journal_mode=WAL"
        self.attempts += 1
        if time.monotonic() < self.until:
            raise sqlite3.OperationalError(self.message)
        self.done = True


def test_two_first_ingests_create_one_database(tmp_path):
    first = write_corpus(tmp_path / "first", 5, seed=6)
    second = write_corpus(tmp_path / "second", 5, seed=7)
    db = tmp_path / "new.db"
    # Both processes open the brand-new file at once: switching it to WAL must wait for the
    # other (db.session._switch_to_wal), not fail with "database is locked".
    run_together(db, [[str(tmp_path / "first")], [str(tmp_path / "second")]])
    assert_consistent(db)
    assert stored_paths(db) == sorted(map(str, first + second))


def test_two_first_ingests_record_one_settings_manifest(tmp_path):
    first = write_corpus(tmp_path / "first", 5, seed=8)
    second = write_corpus(tmp_path / "second", 5, seed=9)
    db = tmp_path / "upgraded.db"
    assert invoke(db, "db", "upgrade").exit_code == 0
    run_together(db, [[str(tmp_path / "first")], [str(tmp_path / "second")]])
    assert_consistent(db)
    assert stored_paths(db) == sorted(map(str, first + second))
    assert query(db, "SELECT key FROM manifest ORDER BY key") == [("fingerprint",), ("settings",)]


# -- 4. hostile text ------------------------------------------------------------------
PAYLOAD = ("<script>alert(1)</script> &amp; &lt;b&gt;bold&lt;/b&gt; \x1b[31mRED\x1b[0m "
           "\x1b]0;pwned\x07 \u202eevil\u202c \x08\x7f\x9b")
HOSTILE_NAME = "\x1b[31m<img src=x onerror=alert(1)>\u202e.txt"
RAW_CONTROLS = ("\x1b", "\x07", "\x08", "\x7f", "\x9b", "\u202e")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    """The BelTA seed, a copy of it with ``PAYLOAD`` in its first sentence under a hostile
    file name (a near-duplicate with passage evidence), and the unrelated TASS seed."""
    root = tmp_path_factory.mktemp("hostile")
    copy = root / HOSTILE_NAME
    text = BELTA_SEED.read_text(encoding="utf-8").replace("significant step", f"significant {PAYLOAD} step", 1)
    copy.write_text(text, encoding="utf-8")
    db = root / "hostile.db"
    result = invoke(db, "ingest", BELTA_SEED, copy, TASS_SEED)
    assert result.exit_code == 0, result.output
    data = json.loads(invoke(db, "report", "--format", "json").stdout)
    assert any(PAYLOAD in p["derived_text"] for d in data["derivations"] for p in d["passages"])
    return {"db": db, "copy": copy, "text": text}


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.parametrize("command", [["report", "--format", "html"], ["explain", "SEED", "COPY", "--format", "html"]])
def test_html_output_escapes_hostile_text_and_names(hostile, command, tmp_path):
    args = [str(BELTA_SEED) if a == "SEED" else str(hostile["copy"]) if a == "COPY" else a for a in command]
    page_file = tmp_path / "page.html"
    result = invoke(hostile["db"], *args, "-o", page_file)
    assert result.exit_code == 0, result.output
    html = page_file.read_text(encoding="utf-8")
    tree = lxml.html.document_fromstring(html)
    assert tree.xpath("//script | //img | //iframe") == []
    handlers = [name for element in tree.iter() if isinstance(element.tag, str) for name in element.attrib
                if name.startswith("on")]
    assert handlers == []
    page = _Page()
    page.feed(html)
    page.close()
    assert {"script", "img", "iframe"}.isdisjoint(page.tags)
    text = "".join(page.text)
    assert PAYLOAD in text  # shown literally: markup, entities and control characters as text
    assert str(hostile["copy"]) in text


TERMINAL_COMMANDS = [
    ["report"],
    ["report", "--document", "TASS"],  # the "nothing found" message names paths
    ["explain", "SEED", "COPY"],
    ["inspect", "documents"],
    ["inspect", "document", "COPY"],
    ["inspect", "clusters"],
    ["lineage", "SEED"],
    ["match", "FILE"],
]


@pytest.mark.parametrize("command", TERMINAL_COMMANDS)
def test_terminal_output_neutralises_control_sequences(hostile, command):
    names = {"SEED": BELTA_SEED, "TASS": TASS_SEED, "COPY": hostile["copy"], "FILE": hostile["copy"]}
    args = [str(names.get(a, a)) for a in command]
    # color=True: what a terminal gets (click strips CSI sequences only from non-terminals).
    result = invoke(hostile["db"], *args, color=True)
    assert result.exit_code == 0, result.output
    leaked = [c for c in RAW_CONTROLS if c in result.output]
    assert leaked == [], f"raw control characters in {command}: {leaked}"
    assert "\\x1b[31m<img src=x onerror=alert(1)>\\u202e.txt" in result.output  # shown, made visible


# -- 5. file names --------------------------------------------------------------------
AWKWARD_NAMES = [
    "it's \"quoted\".txt", "two  spaces .txt", "new\nline.txt", "tab\there.txt", "Минск café 北京 ☃.txt",
    "-leading-dash.txt", "back\\slash.md", "semi;colon $HOME `x` *.txt", "feed 'wire'.jsonl",
]


def test_awkward_file_names_are_stored_and_reported_exactly(tmp_path):
    folder = tmp_path / "in put"
    folder.mkdir()
    rng = random.Random(8)
    vocabulary = _vocabulary(rng, 500)
    expected = {}
    for name in AWKWARD_NAMES:
        body = " ".join(rng.choice(vocabulary) for _ in range(40)).capitalize() + "."
        path = folder / name
        if name.endswith(".jsonl"):
            path.write_text(json.dumps({"id": "a\"b c", "text": body}) + "\n", encoding="utf-8")
            expected[f'{path}#a"b c'] = path
        else:
            path.write_text(body + "\n", encoding="utf-8")
            expected[str(path)] = path
    db = tmp_path / "names.db"
    result = invoke(db, "ingest", folder, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["documents_added"] == len(AWKWARD_NAMES)

    listed = json.loads(invoke(db, "inspect", "documents", "--format", "json").stdout)
    assert sorted(d["path"] for d in listed) == sorted(expected)
    reported = json.loads(invoke(db, "report", "--format", "json").stdout)
    assert sorted(d["path"] for d in reported["documents"]) == sorted(expected)
    plan = [json.loads(line) for line in invoke(db, "report", "--format", "jsonl").stdout.splitlines()]
    assert sorted(r["path"] for r in plan) == sorted(expected)
    ids = {d["path"]: d["id"] for d in listed}
    for stored in expected:
        if "#" in stored:
            continue
        detail = invoke(db, "inspect", "document", stored, "--format", "json")
        assert detail.exit_code == 0, (stored, detail.output)
        assert json.loads(detail.stdout)["id"] == ids[stored]


@pytest.mark.parametrize("command", [["report", "--format", "csv"], ["inspect", "documents", "--format", "csv"]])
def test_csv_on_a_pipe_reports_paths_exactly(hostile, command):
    result = invoke(hostile["db"], *command)  # CliRunner's stdout is not a terminal, like a pipe
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert str(hostile["copy"]) in {row["path"] for row in rows}


def _not_utf8_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / "good.txt").write_text("A perfectly ordinary document with enough words to keep.\n", encoding="utf-8")
    with open(os.path.join(os.fsencode(folder), b"latin-1 caf\xe9.txt"), "wb") as handle:
        handle.write(b"Another ordinary document, in a file whose name is Latin-1.\n")
    return folder


def test_file_name_that_is_not_utf8_is_ingested(tmp_path):
    folder = _not_utf8_folder(tmp_path)
    result = invoke(tmp_path / "names.db", "ingest", folder, "--format", "text")
    assert result.exit_code == 0, result.output
    paths = stored_paths(tmp_path / "names.db")
    assert len(paths) == 2 and any("caf" in p for p in paths)


def test_file_name_that_is_not_utf8_never_crashes_the_json_summary(tmp_path):
    folder = _not_utf8_folder(tmp_path)
    result = run_cli(tmp_path / "names.db", "ingest", str(folder), "--format", "json", PYTHONIOENCODING="utf-8")
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 1)
    assert json.loads(result.stdout)["files_seen"] == 2


# -- 6. --db pointing at something else -----------------------------------------------
def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO customers VALUES (1, 'Ann')")
    connection.close()


def _newer(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('f00dfacef00d')")
    connection.close()


REFUSAL_COMMANDS = [["inspect"], ["ingest", "SEED"], ["db", "current"]]
# A read-write connection switches the file to WAL as it opens (header bytes 18-19, change
# counter), so the refusal must come from a read-only look first (cli._check_read_only), and
# `db current` must leave no -wal/-shm files behind.


@pytest.mark.parametrize("kind,message", [(_foreign, "not a provenance database"), (_newer, "upgrade provenance")],
                         ids=["unrelated-tables", "unknown-revision"])
@pytest.mark.parametrize("command", REFUSAL_COMMANDS, ids=lambda c: "-".join(c))
def test_refused_database_is_left_byte_for_byte_unchanged(tmp_path, kind, message, command):
    db = tmp_path / "theirs.db"
    kind(db)
    original = db.read_bytes()
    result = invoke(db, *[str(BELTA_SEED) if a == "SEED" else a for a in command])
    assert result.exit_code != 0
    assert message in one_line(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.db"]
    assert db.read_bytes() == original


@pytest.mark.parametrize("command", REFUSAL_COMMANDS, ids=lambda c: "-".join(c))
def test_corrupt_sqlite_file_gives_a_one_line_error(tmp_path, command):
    db = tmp_path / "corrupt.db"
    original = b"SQLite format 3\x00" + bytes(range(256)) * 16
    db.write_bytes(original)
    result = invoke(db, *[str(BELTA_SEED) if a == "SEED" else a for a in command])
    assert db.read_bytes() == original
    assert isinstance(result.exception, SystemExit) and result.exit_code != 0, repr(result.exception)
    assert "database" in one_line(result.stderr)


# -- 7. arbitrary input ---------------------------------------------------------------
TEXTS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=600) | st.lists(
    st.sampled_from(["Word", "word.", " ", "\n", "\n\n", "\r\n", "\t", "\x0b", "\x0c", "\x1c", "\x85", "\u2028",
                     "\u2029", "\x1b[31m", "\u202e", "\x00", "“Q”", "—", "\u00ad", "\u200b", "e\u0301",
                     "ǅ", "ß", "İ", "ﬁ", "北京天气", "Минск.", "٣", "?!", "...", "'", "a'b", "A" * 70]),
    max_size=120,
).map("".join)
PROPERTY = hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(TEXTS)
def test_normalize_and_tokens_are_well_formed(text):
    normalized = normalize(text)
    assert normalized == normalized.strip() and "  " not in normalized
    assert not any(c.isspace() and c != " " for c in normalized)
    for token in tokens(normalized):
        assert token and not any(c.isspace() for c in token)


@PROPERTY
@given(TEXTS)
def test_segment_with_the_default_settings_keeps_offsets_in_order(text):
    settings = Settings()
    previous_end, previous_block = 0, 0
    for passage in segment(text, min_words=settings.passage_min_words, max_words=settings.passage_max_words):
        assert previous_end <= passage.start < passage.end <= len(text)
        assert text[passage.start : passage.end] == passage.text
        assert passage.block >= previous_block
        previous_end, previous_block = passage.end, passage.block


@PROPERTY
@given(TEXTS)
def test_prepare_never_raises_and_its_passages_fit_the_text(text):
    prepared = prepare(RawDocument(path="/x.txt", text=text, format="text", encoding="utf-8", size_bytes=len(text)),
                       Settings())
    assert [p.seq for p in prepared.passages] == list(range(len(prepared.passages)))
    previous_end = 0
    for passage in prepared.passages:
        assert previous_end <= passage.start < passage.end <= len(text)
        assert INT64[0] <= passage.key_hash <= INT64[1]
        previous_end = passage.end
    assert prepared.word_count == sum(len(p.words) for p in prepared.passages)


def _jsonl(lines: list) -> bytes:
    return b"\n".join(line if isinstance(line, bytes) else line.encode("utf-8") for line in lines)


#: Metadata fields with string values only: non-string metadata is pinned by the JSONL tests below.
JSONL_RECORD = st.dictionaries(
    st.sampled_from(["text", "id", "url", "source", "title", "published_at"]), TEXTS, max_size=6,
).map(json.dumps)
RANDOM_BYTES = st.one_of(
    st.binary(max_size=800),
    TEXTS.map(lambda t: t.encode("utf-8")),
    st.tuples(TEXTS, st.sampled_from(["utf-16", "cp1252", "latin-1", "koi8-r", "gb18030"])).map(
        lambda pair: pair[0].encode(pair[1], errors="ignore")),
    st.tuples(TEXTS, TEXTS).map(lambda pair: (
        f"<html><head><title>{pair[0]}</title><meta name='date' content='{pair[1][:20]}'></head>"
        f"<body><p>{pair[1]}</p><script>{pair[0]}</script><div>{pair[0]}<br>{pair[1]}</body>").encode("utf-8")),
    st.lists(st.one_of(JSONL_RECORD, st.binary(max_size=60), TEXTS), max_size=6).map(_jsonl),
)
FILES = st.lists(st.tuples(st.sampled_from([".txt", ".jsonl", ".md"]), RANDOM_BYTES), min_size=1, max_size=3)
HTML_FILES = st.lists(st.tuples(st.just(".html"), RANDOM_BYTES), min_size=1, max_size=2)
#: An HTML file that charset_normalizer reads as cp037 (EBCDIC), which libxml2 does not know.
EBCDIC_HTML = [(".html", b"\x80")]
# lxml.html.HTMLParser(encoding=...) raises LookupError for an encoding charset_normalizer
# detected but libxml2 does not know (b'\x80' is read as cp037): that one file is skipped
# with a message, and the files after it are still read.


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict:
    """One database (and ingestor) shared by every example, and fresh folders for their files."""
    root = tmp_path_factory.mktemp("random")
    engine = make_engine(database_url(str(root / "random.db")))
    upgrade_to_head(engine)
    counter = itertools.count()

    def folder_with(files) -> list[str]:
        folder = root / f"example{next(counter)}"
        folder.mkdir()
        paths = []
        for number, (suffix, data) in enumerate(files):
            path = folder / f"input{number}{suffix}"
            path.write_bytes(data)
            paths.append(str(path))
        return paths

    yield {"db": root / "random.db", "ingestor": Ingestor(engine), "folder_with": folder_with}
    engine.dispose()


def _ingest_through_library(scratch, files) -> None:
    paths = scratch["folder_with"](files)
    summary = scratch["ingestor"].ingest_paths(paths)
    assert summary.files_seen == len(paths) and not summary.interrupted
    assert summary.failed == 0, summary.problems  # a bad input is skipped, never an internal failure
    assert all("\n" not in problem for problem in summary.problems)


@PROPERTY
@given(FILES)
def test_random_bytes_through_the_library_never_raise(scratch, files):
    _ingest_through_library(scratch, files)


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HTML_FILES)
@example(EBCDIC_HTML)
def test_random_html_bytes_through_the_library_never_raise(scratch, files):
    _ingest_through_library(scratch, files)


def test_html_in_an_encoding_lxml_does_not_know_is_skipped(tmp_path):
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "a.html").write_bytes(EBCDIC_HTML[0][1])
    (folder / "b.txt").write_text("An ordinary document after the odd page, with words enough.\n", encoding="utf-8")
    result = invoke(tmp_path / "pages.db", "ingest", folder, "--format", "json")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    summary = json.loads(result.stdout)
    assert (summary["documents_added"], summary["skipped"] + summary["failed"]) == (1, 1)
    assert stored_paths(tmp_path / "pages.db") == [str(folder / "b.txt")]


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FILES)
def test_random_bytes_through_the_cli_exit_cleanly(scratch, files):
    paths = scratch["folder_with"](files)
    result = invoke(scratch["db"], "ingest", *paths, "--format", "json")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1) and "Traceback" not in result.output
    summary = json.loads(result.stdout)
    assert summary["files_seen"] == len(paths) and summary["failed"] == 0
    if result.exit_code:
        assert result.stderr.splitlines()[-1].startswith("Error: ")


def test_consistent_after_random_input(scratch):
    # Runs after the property tests above (file order): what they stored is consistent.
    assert_consistent(scratch["db"])


def test_a_jsonl_id_met_again_is_a_new_version_of_that_record_or_unchanged(tmp_path):
    """A feed that repeats an id (an article corrected later in the same feed) stores the
    later text as a new version of that record, the first kept as the earlier version; the
    same text again is unchanged. (Found by the random input above: two lines sharing an id
    made two rows of one path, which that check called an inconsistency.)"""
    feed = tmp_path / "feed.jsonl"
    first = "The council approved the harbour budget on Monday after a long debate."
    corrected = first.replace("Monday", "Tuesday") + " A correction followed."
    feed.write_text("\n".join(json.dumps(record) for record in (
        {"id": "a1", "text": first}, {"id": "b2", "text": "An unrelated note about the museum's winter hours."},
        {"id": "a1", "text": corrected}, {"id": "a1", "text": corrected},
    )) + "\n", encoding="utf-8")
    result = invoke(tmp_path / "feed.db", "ingest", feed, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["documents_added"], summary["versions_added"], summary["unchanged"]) == (2, 1, 1)
    versions = query(tmp_path / "feed.db", "SELECT version, is_latest, text FROM document WHERE path = ? ORDER BY version",
                     f"{feed}#a1")
    assert versions == [(1, 0, first), (2, 1, corrected)]
    assert_consistent(tmp_path / "feed.db")


@pytest.mark.parametrize("value", ["1e20", "-1e20", "NaN", "Infinity"])
def test_jsonl_numeric_published_at_out_of_range_is_skipped(tmp_path, value):
    feed = tmp_path / "feed.jsonl"
    feed.write_text('{"text": "A dated record with quite enough words to keep here.", "published_at": %s}\n'
                    '{"text": "An undated record with quite enough words to keep too."}\n' % value, encoding="utf-8")
    result = invoke(tmp_path / "feed.db", "ingest", feed, "--format", "json")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    summary = json.loads(result.stdout)
    assert (summary["documents_added"], summary["skipped"], summary["failed"]) == (1, 1, 0)
    assert "published_at" in summary["problems"][0]


@pytest.mark.parametrize("field,value", [("title", ["a", "b"]), ("url", {"href": "x"})])
def test_jsonl_non_string_metadata_is_skipped_or_kept_as_text(tmp_path, field, value):
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps({"text": "A record with odd metadata and enough words to keep.", field: value}) + "\n"
                    + json.dumps({"text": "A plain record with quite enough words to keep too."}) + "\n",
                    encoding="utf-8")
    result = invoke(tmp_path / "feed.db", "ingest", feed, "--format", "json")
    summary = json.loads(result.stdout)
    assert summary["failed"] == 0, summary["problems"]
    assert summary["documents_added"] >= 1
    assert not any("could not be stored" in p for p in summary["problems"])


# -- memory: a big input is prepared a few documents ahead of storing -------------------------
def _feed(path: Path, count: int, seed: int = 3) -> Path:
    """A JSONL feed of ``count`` distinct short stories, with a near-copy every tenth line."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    lines, previous = [], ""
    for number in range(count):
        if number % 10 == 9:
            text = previous.replace(previous.split(" ")[3], "altered", 1)
        else:
            text = "\n\n".join(" ".join(rng.choice(vocabulary) for _ in range(18)).capitalize() + "." for _ in range(3))
        lines.append(json.dumps({"id": f"s{number}", "text": text}))
        previous = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class _InlinePool:
    """Stands in for multiprocessing.Pool: runs each unit when submitted, counts units."""

    def __init__(self) -> None:
        self.submitted = 0

    def apply_async(self, function, args):
        self.submitted += 1
        result = function(*args)
        return type("Done", (), {"get": lambda self: result})()


def _record_paths(monkeypatch, module, name: str) -> list[str]:
    """Make ``module.name``, a function given a raw document first, record each one's path."""
    paths: list[str] = []
    real = getattr(module, name)

    def recording(raw, *rest):
        paths.append(raw.path)
        return real(raw, *rest)

    monkeypatch.setattr(module, name, recording)
    return paths


def test_a_big_feed_is_prepared_a_few_documents_ahead(tmp_path, monkeypatch):
    """Memory must not grow with the input: one process prepares each document just before
    storing it; with workers, at most UNITS_PER_WORKER units per worker are in flight (the
    first prepared in the calling process)."""
    from provenance import ingest as ingest_module
    from provenance.reader import InputFile

    feed = [InputFile(str(_feed(tmp_path / "feed.jsonl", 300)), "jsonl")]
    prepared = _record_paths(monkeypatch, ingest_module, "_prepare_or_error")
    options = {"source": None, "max_bytes": 10**6, "settings": Settings()}

    stream = ingest_module.prepared_stream(feed, **options)
    assert next(stream)[1] is None and next(stream)[1].raw.path.endswith("#s0")
    assert len(prepared) == 1, "one process: prepared one at a time"

    monkeypatch.setattr(ingest_module, "UNIT_DOCUMENTS", 10)
    prepared.clear()
    pool = _InlinePool()
    stream = ingest_module.prepared_stream(feed, **options, pool=pool, workers=2)
    first = [next(stream) for _ in range(3)]
    assert pool.submitted == 2 * ingest_module.UNITS_PER_WORKER - 1, (
        "a bounded window of 10-document units, the first of them prepared here while the workers start"
    )
    assert len(prepared) == 10 + pool.submitted * 10
    outcomes = [outcome for _, outcome in first + list(stream) if outcome is not None]
    assert [o.raw.path.rsplit("#", 1)[1] for o in outcomes] == [f"s{n}" for n in range(300)], "in input order"
    assert pool.submitted == 29


def test_a_reader_that_fails_half_way_costs_the_rest_of_its_file_only(tmp_path, monkeypatch):
    """Documents are read a few dozen at a time before they are prepared (to ask what is
    stored under their paths together): a reader that fails after some documents still
    hands those over, then one error for the file, and the next file is read as usual."""
    from provenance import ingest as ingest_module
    from provenance.errors import InputError
    from provenance.reader import InputFile

    real_read = ingest_module.read
    feed = tmp_path / "feed.jsonl"
    _feed(feed, 5)
    story = tmp_path / "story.txt"
    story.write_text(TASS_SEED.read_text(encoding="utf-8"), encoding="utf-8")

    def failing(item, **options):
        for number, document in enumerate(real_read(item, **options)):
            if item.path == str(feed) and number == 3:
                raise RuntimeError("the parser gave up")
            yield document

    monkeypatch.setattr(ingest_module, "read", failing)
    files = [InputFile(str(feed), "jsonl"), InputFile(str(story), "text")]
    outcomes = [(item.path, outcome) for item, outcome in ingest_module.prepared_stream(
        files, source=None, max_bytes=10**6, settings=Settings(), stored=lambda paths: {}) if outcome is not None]
    assert [outcome.raw.path.rsplit("#", 1)[1] for _, outcome in outcomes[:3]] == ["s0", "s1", "s2"]
    assert isinstance(outcomes[3][1], InputError) and "the parser gave up" in str(outcomes[3][1])
    assert outcomes[3][0] == str(feed) and outcomes[4][0] == str(story) and len(outcomes) == 5
    assert outcomes[4][1].raw.text.startswith(TASS_SEED.read_text(encoding="utf-8")[:40])


def test_small_files_go_to_the_workers_several_to_a_unit(tmp_path, monkeypatch):
    """A folder of small files is handed over UNIT_DOCUMENTS files at a time, and a feed
    between them starts units of its own; what comes out is what one process yields."""
    from provenance import ingest as ingest_module
    from provenance.reader import InputFile

    monkeypatch.setattr(ingest_module, "UNIT_DOCUMENTS", 4)
    files = []
    for number in range(11):
        path = tmp_path / f"story{number:02}.txt"
        path.write_text(f"Story {number} about the harbour and the mill. " * 5, encoding="utf-8")
        files.append(InputFile(str(path), "text"))
        if number == 5:
            files.append(InputFile(str(_feed(tmp_path / "feed.jsonl", 6)), "jsonl"))
    options = {"source": None, "max_bytes": 10**6, "settings": Settings()}

    def shape(stream):
        return [(item.path, None if outcome is None else outcome.raw.path) for item, outcome in stream]

    pool = _InlinePool()
    assert shape(ingest_module.prepared_stream(files, **options, pool=pool, workers=2)) == shape(
        ingest_module.prepared_stream(files, **options)
    )
    # Units: stories 0-3 (prepared here), 4-5, the feed's 4 + 2 documents, stories 6-9, 10.
    assert pool.submitted == 5


def test_a_feed_ingested_by_workers_equals_one_process(tmp_path, monkeypatch):
    """A single JSONL file is cut into units for the workers; the result is the same."""
    from provenance import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "UNIT_DOCUMENTS", 7)
    feed = _feed(tmp_path / "feed.jsonl", 40)
    results = []
    for workers in ("1", "2"):
        db = tmp_path / f"w{workers}.db"
        result = invoke(db, "ingest", feed, "--workers", workers, "--format", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["documents_added"] == 40
        results.append((query(db, "SELECT id, path, content_hash FROM document ORDER BY id"),
                        query(db, "SELECT derived_id, source_id, relation FROM derivation ORDER BY 1, 2")))
    assert results[0] == results[1]
    assert len(results[0][1]) >= 4, "the feed's near-copies were found"


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unchanged_document_is_not_prepared_again_and_the_run_stores_what_it_did(tmp_path, monkeypatch, workers):
    """Ingesting a folder again prepares only what is new or changed: a document whose text
    is what is stored under its path is found unchanged before it is prepared. The stored
    rows and the run's counts are those of an ingest that prepares everything."""
    from provenance import ingest as ingest_module

    def corpus(name: str) -> Path:
        folder = tmp_path / name / "desk"  # the same source name, the folder's
        folder.mkdir(parents=True)
        _feed(folder / "feed.jsonl", 12)
        (folder / "belta.txt").write_text(BELTA_SEED.read_text(encoding="utf-8"), encoding="utf-8")
        (folder / "tass.txt").write_text(TASS_SEED.read_text(encoding="utf-8"), encoding="utf-8")
        return folder

    def changed(folder: Path) -> None:
        lines = (folder / "feed.jsonl").read_text(encoding="utf-8").splitlines()
        record = json.loads(lines[4])
        lines[4] = json.dumps({**record, "text": record["text"] + " One sentence more."})
        lines.append(json.dumps({"id": "new", "text": "A story that was not there before, about harvests."}))
        (folder / "feed.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (folder / "belta.txt").write_text(BELTA_SEED.read_text(encoding="utf-8") + "\nA line added later.\n",
                                          encoding="utf-8")

    prepared = _record_paths(monkeypatch, ingest_module, "prepare")

    def ingested(name: str, skip_unchanged: bool) -> tuple[list, dict]:
        folder = corpus(name)
        engine = make_engine(database_url(str(tmp_path / f"{name}.db")))
        upgrade_to_head(engine)
        ingestor = Ingestor(engine)
        if not skip_unchanged:
            ingestor._stored_hashes = lambda paths: {}
        try:
            first = ingestor.ingest_paths([str(folder)], workers=workers)
            changed(folder)
            del prepared[:]
            again = ingestor.ingest_paths([str(folder)], workers=workers)
            assert again.unchanged == 12 and again.versions_added == 2 and again.documents_added == 1
            runner = CliRunner()
            shown = runner.invoke(cli, ["--db", str(tmp_path / f"{name}.db"), "report", "--format", "json", "--no-timestamps"])
            assert shown.exit_code == 0, shown.output
            report = json.loads(shown.stdout.replace(str(folder), "FOLDER"))
        finally:
            engine.dispose()
        assert first.documents_added == 14
        return sorted(path.replace(str(folder), "FOLDER") for path in prepared), report

    skipped, report = ingested("skipping", skip_unchanged=True)
    everything, expected = ingested("preparing", skip_unchanged=False)
    assert report == expected
    if workers == 1:  # prepared in this process, where prepare is counted
        assert skipped == sorted(["FOLDER/feed.jsonl#s4", "FOLDER/feed.jsonl#new", "FOLDER/belta.txt"])
        assert len(everything) == 15


def test_a_document_found_unchanged_but_stored_anew_since_is_prepared_then(tmp_path):
    """The writer compares again: a document read as unchanged whose path got another text
    stored meanwhile (by another ingest) is prepared then and stored as a new version."""
    from provenance.ingest import IngestSummary, Unchanged
    from provenance.prepare import content_hash

    engine = make_engine(database_url(str(tmp_path / "race.db")))
    upgrade_to_head(engine)
    try:
        ingestor = Ingestor(engine)
        run = ingestor._start_run("")
        text = BELTA_SEED.read_text(encoding="utf-8")
        raw = RawDocument(path="/desk/belta.txt", text=text, format="text", encoding="utf-8", size_bytes=len(text))
        assert ingestor.store_document(prepare(raw, Settings()), IngestSummary(run)) == "added"
        same = Unchanged(raw, content_hash(text))
        assert ingestor.store_document(same, IngestSummary(run)) == "unchanged"
        edited = RawDocument(path="/desk/belta.txt", text=text + "\nA later line.", format="text", encoding="utf-8",
                             size_bytes=len(text) + 14)
        assert ingestor.store_document(prepare(edited, Settings()), IngestSummary(run)) == "new version"
        # Read as unchanged against the first text, stored after the edit: a third version.
        assert ingestor.store_document(same, IngestSummary(run)) == "new version"
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT version, is_latest, content_hash, (SELECT count(*) FROM passage WHERE document_id = document.id)"
                " FROM document WHERE path = '/desk/belta.txt' ORDER BY version").all()
    finally:
        engine.dispose()
    assert [(version, bool(latest)) for version, latest, _, _ in rows] == [(1, False), (2, False), (3, True)]
    assert rows[2][2] == rows[0][2] and rows[2][3] == rows[0][3] > 0


def test_progress_is_counted_in_bytes_read(tmp_path):
    """The progress bar is sized in bytes, so one big feed moves it line by line; the bytes
    reported as read add up to the bytes announced at the start, whatever the formats."""
    folder = tmp_path / "in"
    folder.mkdir()
    feed = _feed(folder / "feed.jsonl", 25)
    story = folder / "story.txt"
    story.write_bytes(TASS_SEED.read_bytes())
    engine = make_engine(database_url(str(tmp_path / "progress.db")))
    upgrade_to_head(engine)
    events: list[tuple] = []
    summary = Ingestor(engine).ingest_paths([str(folder)], on_event=lambda *event: events.append(event))
    assert summary.documents_added == 26
    start = [e for e in events if e[0] == "start"]
    reads = [e[1] for e in events if e[0] == "read"]
    total = feed.stat().st_size + story.stat().st_size
    assert start == [("start", 2, total)]
    assert len(reads) == 26, "one step per JSONL line and one per other file"
    assert sum(reads) == total


@pytest.mark.parametrize("merge_at", [1, 10**9])
def test_a_merge_of_the_passage_index_is_announced_and_its_end_too(tmp_path, monkeypatch, merge_at):
    """A merge of the passage index's recent rows stalls the ingest (13-18 s at 100,000
    documents), so it is announced with its rows ("merge") and its end ("merged") between
    two batches; the progress bar says why it stands still. No merge, no events."""
    from sqlalchemy import func, select

    from provenance import index as index_module, ingest as ingest_module
    from provenance.db.models import PassageBand, RecentPassageBand
    from provenance.db.session import session_scope

    monkeypatch.setattr(ingest_module, "BATCH_DOCUMENTS", 5)
    monkeypatch.setattr(index_module, "RECENT_BANDS_MAX", merge_at)
    feed = _feed(tmp_path / "feed.jsonl", 12)
    engine = make_engine(database_url(str(tmp_path / "merges.db")))
    upgrade_to_head(engine)
    events: list[tuple] = []
    summary = Ingestor(engine).ingest_paths([str(feed)], on_event=lambda *event: events.append(event))
    assert summary.documents_added == 12
    merges = [(i, e) for i, e in enumerate(events) if e[0] in ("merge", "merged")]
    with session_scope(engine) as session:
        big, recent = (session.scalar(select(func.count()).select_from(model))
                       for model in (PassageBand, RecentPassageBand))
    engine.dispose()
    if merge_at > 1:
        assert merges == [] and big == 0 and recent > 0
        return
    assert len(merges) == 2 * 3, "a merge after each of the three batches"
    for (at, started), (after, ended) in zip(merges[::2], merges[1::2]):
        assert started[0] == "merge" and ended == ("merged", started[1]) and after == at + 1 and started[1] > 0
    # The rows announced are the rows moved: all of them, as nothing was deleted.
    assert recent == 0 and big == sum(e[1] for _, e in merges[::2])


def test_the_progress_bar_says_when_it_waits_for_a_merge(capsys):
    """While a merge runs, the bar's label names it; afterwards the label is the ingest's again."""
    from provenance.cli import _Progress

    progress = _Progress(enabled=True)
    progress("start", 3, 2_000_000)
    label = progress.bar.label
    progress("merge", 1_234_567)
    assert progress.bar.label == "merging the passage index (1,234,567 recent rows)"
    progress("merged", 1_234_567)
    assert progress.bar.label == label
    progress.close()
    err = capsys.readouterr().err
    assert "merging the passage index (1,234,567 recent rows)" in err
    assert err.rindex(label) > err.index("merging the passage index"), "the ingest's label shown again"


def test_ingest_collects_garbage_less_often_and_puts_the_setting_back(tmp_path):
    """While storing documents the young-generation threshold is raised (see
    provenance.collect.GC_THRESHOLD); afterwards the process has its own setting again, even
    when the ingest fails."""
    import gc

    from provenance.collect import GC_THRESHOLD

    folder = tmp_path / "in"
    folder.mkdir()
    _feed(folder / "feed.jsonl", 5)
    engine = make_engine(database_url(str(tmp_path / "gc.db")))
    upgrade_to_head(engine)
    before = gc.get_threshold()
    during: list[int] = []

    def on_event(kind, *rest):
        if kind == "document":
            during.append(gc.get_threshold()[0])
            if len(during) == 5:
                raise RuntimeError("stop here")

    summary = Ingestor(engine).ingest_paths([str(folder)], on_event=lambda *event: None)
    assert summary.documents_added == 5
    with pytest.raises(RuntimeError):
        Ingestor(engine).ingest_paths([str(folder / "feed.jsonl")], on_event=on_event)
    assert gc.get_threshold() == before
    assert during and set(during) == {max(before[0], GC_THRESHOLD)}


def test_exact_copies_are_looked_up_by_content_hash_before_the_planner_has_statistics(
    tmp_path, seeds_dir, monkeypatch,
):
    """A database's first ingest runs before it has planner statistics (they are gathered
    after each ingest). SQLite then preferred the (is_latest, path) index for "latest
    documents with this content" and read every latest document for each new one; the
    statements that look documents up by content hash must use its index whatever the
    statistics."""
    from sqlalchemy import event

    from provenance.db.bulk import DriverStatement
    from provenance.lookup import match_text
    from provenance.db.session import session_scope

    engine = make_engine(database_url(str(tmp_path / "first.db")))
    upgrade_to_head(engine)
    by_content: list[tuple[str, tuple]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(connection, cursor, statement, parameters, context, executemany):
        if "content_hash = ?" in statement and not executemany:
            by_content.append((statement, tuple(parameters)))

    sent_to_the_driver = DriverStatement._prepared  # statements past SQLAlchemy's events

    def capture_sent(self, connection, parameters):
        statement, values = sent_to_the_driver(self, connection, parameters)
        if "content_hash = ?" in statement:
            by_content.append((statement, tuple(values)))
        return statement, values

    monkeypatch.setattr(DriverStatement, "_prepared", capture_sent)

    Ingestor(engine).ingest_paths([str(seeds_dir)])
    with session_scope(engine) as session:
        match_text(session, BELTA_SEED.read_text(encoding="utf-8"))
    engine.dispose()
    assert len({statement for statement, _ in by_content}) >= 2, "ingest's and the lookup's"
    connection = sqlite3.connect(tmp_path / "first.db")
    connection.execute("DELETE FROM sqlite_stat1")  # as in a first ingest
    connection.commit()
    connection.close()
    connection = sqlite3.connect(tmp_path / "first.db")
    for statement, parameters in by_content:
        plan = " ".join(row[-1] for row in connection.execute("EXPLAIN QUERY PLAN " + statement, parameters))
        assert "ix_document_content_hash" in plan, (statement, plan)
    connection.close()


def test_reading_ahead_uses_connections_of_its_own_and_no_failure_of_theirs_reaches_the_command(tmp_path):
    """provenance.db.readahead only warms the page cache: its statements run on read-only
    connections of their own (committed rows, not the session's own uncommitted ones), a
    failing one gives None instead of raising, and leaving it ends its threads and
    connections; on a database that is not a SQLite file it does nothing."""
    import threading

    from sqlalchemy import text as sql_text
    from sqlalchemy.orm import Session

    from provenance.db import readahead

    engine = make_engine(database_url(str(tmp_path / "ahead.db")))
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE item (id INTEGER PRIMARY KEY, body TEXT)")
        connection.exec_driver_sql("INSERT INTO item (id, body) VALUES (?, ?)",
                                   [(i, "x" * (i % 7)) for i in range(1, 2001)])
    ids = list(range(1, 2001))
    with Session(engine) as session:
        session.execute(sql_text("INSERT INTO item (id, body) VALUES (5000, 'not committed')"))
        with readahead.ReadAhead(session, connections=2, keep_results=True) as ahead:
            ahead.read("SELECT sum(length(body)) FROM item WHERE id {in}", [*ids, 5000])
            ahead.read("SELECT sum(length(body)) FROM no_such_table WHERE id {in}", [1])
            answers = ahead.finished()
            assert {thread.name.split("_")[0] for thread in threading.enumerate()} >= {"read-ahead"}
        # Slices of IN_CHUNK values, each answered from the committed rows only.
        slices = [ids[:900], ids[900:1800], [*ids[1800:], 5000]]
        assert answers == [[(sum(i % 7 for i in part if i != 5000),)] for part in slices] + [None]
        assert not [thread for thread in threading.enumerate() if thread.name.startswith("read-ahead")]
        assert ahead._opened == []
        # Not kept, a statement is let go of once it has run: a cold ingest asks for one a document.
        with readahead.ReadAhead(session, connections=2) as ahead:
            for _ in range(50):
                ahead.read("SELECT sum(length(body)) FROM item WHERE id {in}", [1, 2])
                ahead._futures[-1].result()
            assert len(ahead._futures) == 1 and ahead.finished() == []
        session.rollback()
    engine.dispose()

    memory = make_engine("sqlite://")
    with Session(memory) as session:
        assert readahead.database_file(session) is None
        with readahead.ReadAhead(session) as ahead:
            ahead.read("SELECT 1 WHERE 1 {in}", [1])
            assert ahead.finished() == []
