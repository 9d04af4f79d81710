"""Shared fixtures: a CLI runner on a temporary database, the seeds, and helpers that
parse what the CLI prints (JSON) or read the database through the library.

Databases: ``db`` is a SQLite file path. ``db_url`` is a fresh, empty database on each
backend in turn: SQLite always, PostgreSQL when ``PROVENANCE_TEST_DB_URL`` names a server
(e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``; the user must be allowed
to create databases). Each PostgreSQL test gets its own database, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import string
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from provenance.cli import cli
from provenance.db.models import Document, IngestRun
from provenance.db.session import database_url, make_engine, session_scope

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
MIGRATIONS = ROOT / "migrations"
BELTA_SEED = SEEDS / "000_21d20b42f286ae20.txt"
TASS_SEED = SEEDS / "001_5e92cb80f85b5761.txt"

#: A PostgreSQL server for the tests (any database on it; fresh ones are created beside it).
PG_URL_VARIABLE = "PROVENANCE_TEST_DB_URL"
PG_SERVER_URL = os.environ.get(PG_URL_VARIABLE) or None
NO_POSTGRES = (
    f"PostgreSQL not configured: set {PG_URL_VARIABLE}=postgresql+psycopg://USER@HOST:PORT/postgres "
    "(a user that may create databases) to run this test on PostgreSQL; .ci/run starts a server and sets it"
)
#: Parameters for backend-parametrised fixtures: SQLite always, PostgreSQL when configured.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

#: Boilerplate lines a site wraps its articles in (two of them repeat in the TASS seed).
BOILERPLATE_LINES = ["No time to read?", "Get a summary", "Share this article", "Subscribe to our newsletter"]


# -- plain helpers (importable from tests) --------------------------------------------
def record_read_ahead(monkeypatch, module) -> tuple[list[tuple[str, list]], list]:
    """Make ``module``'s ReadAhead (provenance.db.readahead) record each statement it is given
    with its values, and, as it closes, what each one read: (asked, answers), filled as it goes."""
    from provenance.db.readahead import ReadAhead

    asked: list[tuple[str, list]] = []
    answers: list = []

    class Recorded(ReadAhead):
        def __init__(self, session, connections=None):
            super().__init__(session, connections, keep_results=True)

        def read(self, sql, values):
            asked.append((sql, list(values)))
            super().read(sql, values)

        def close(self):
            answers.extend(self.finished())
            super().close()

    monkeypatch.setattr(module, "ReadAhead", Recorded)
    return asked, answers


def made_up_words(rng: random.Random, size: int, shortest: int = 4, longest: int = 9) -> list[str]:
    """A vocabulary of ``size`` random lower-case words: letters only (digits are masked in
    boilerplate keys and would make lines look alike), and unrelated texts drawn from it share
    almost no words."""
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(shortest, longest)))
            for _ in range(size)]


def near_copy(text: str, changes: int = 3, boilerplate: Optional[list[str]] = None) -> str:
    """``text`` with a few boilerplate lines added and ``changes`` words replaced at spread-out places."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 4]
    assert len(candidates) > changes * 4, "seed too short to derive a near-copy from"
    step = len(candidates) // (changes + 1)
    for n in range(1, changes + 1):
        index = candidates[n * step]
        words[index] = f"altered{n}word"
    lines = boilerplate if boilerplate is not None else BOILERPLATE_LINES[:3]
    body = " ".join(words)
    return "\n".join(lines[:2]) + "\n\n" + body.rstrip("\n") + "\n\n" + "\n".join(lines[2:]) + "\n"


def cluster_with(report: dict, document_id: int) -> Optional[dict]:
    """The report cluster whose canonical or members include ``document_id``."""
    for cluster in report["clusters"]:
        ids = {cluster["canonical"]["id"], *(m["id"] for m in cluster["members"])}
        if document_id in ids:
            return cluster
    return None


def cluster_ids(cluster: dict) -> set[int]:
    return {cluster["canonical"]["id"], *(m["id"] for m in cluster["members"])}


@contextmanager
def db_session(db: Path) -> Iterator[Session]:
    """A session on the test database, through the library's engine setup."""
    engine = make_engine(database_url(str(db)))
    try:
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


def latest_document(session: Session, path: Path | str) -> Optional[Document]:
    return session.scalar(select(Document).where(Document.path == str(path), Document.is_latest.is_(True)))


def document_count(db: Path, latest_only: bool = False) -> int:
    if not db.exists():
        return 0
    with db_session(db) as session:
        query = select(func.count()).select_from(Document)
        if latest_only:
            query = query.where(Document.is_latest.is_(True))
        return session.scalar(query)


def run_count(db: Path) -> int:
    if not db.exists():
        return 0
    with db_session(db) as session:
        return session.scalar(select(func.count()).select_from(IngestRun))


@contextmanager
def fresh_database(backend: str, folder: Path, name: str = "provenance") -> Iterator[str]:
    """The URL of a new, empty database: a SQLite file in ``folder``, or a uniquely named
    PostgreSQL database on the configured server, dropped (with its connections) afterwards."""
    if backend == "sqlite":
        yield database_url(str(folder / f"{name}.db"))
        return
    if backend != "postgresql":
        raise ValueError(backend)
    if not PG_SERVER_URL:
        pytest.skip(NO_POSTGRES)
    server = make_url(PG_SERVER_URL)
    database = f"provenance_test_{name}_{uuid.uuid4().hex[:12]}".lower()
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
        try:
            yield server.set(database=database).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        admin.dispose()


def error_lines(result, needle: str) -> list[str]:
    """Lines of the command's stderr that mention ``needle``."""
    return [line for line in result.stderr.splitlines() if needle in line]


# -- fixtures -------------------------------------------------------------------------
@pytest.fixture
def seeds_dir() -> Path:
    assert BELTA_SEED.is_file() and TASS_SEED.is_file(), f"seeds missing from {SEEDS}"
    return SEEDS


@pytest.fixture
def belta_text(seeds_dir) -> str:
    return BELTA_SEED.read_text(encoding="utf-8")


@pytest.fixture
def tass_text(seeds_dir) -> str:
    return TASS_SEED.read_text(encoding="utf-8")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "provenance.db"


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """``sqlite``, then ``postgresql`` (skipped unless PROVENANCE_TEST_DB_URL is set)."""
    if request.param == "postgresql" and not PG_SERVER_URL:
        pytest.skip(NO_POSTGRES)
    return request.param


@pytest.fixture
def db_url(backend, tmp_path) -> Iterator[str]:
    """A fresh, empty database URL on each backend; pass it wherever ``--db`` or ``db`` goes."""
    with fresh_database(backend, tmp_path) as url:
        yield url


@pytest.fixture
def new_database(backend, tmp_path):
    """``new_database(name)``: another fresh database URL on the same backend as ``db_url``."""
    with contextlib.ExitStack() as stack:
        yield lambda name: stack.enter_context(fresh_database(backend, tmp_path, name))


@pytest.fixture
def invoke(runner, db):
    """``invoke(*args, input=None)``: run ``provenance --db DB *args``; returns the click Result."""

    def run(*args, input=None, db_path: Optional[Path] = None):
        target = db if db_path is None else db_path
        return runner.invoke(cli, ["--db", str(target), *(str(a) for a in args)], input=input)

    return run


@pytest.fixture
def ingest_result(invoke):
    """``ingest_result(*args)``: (click Result, parsed JSON run summary) whatever the exit code."""

    def run(*args, input=None, db_path: Optional[Path] = None):
        result = invoke("ingest", *args, "--format", "json", input=input, db_path=db_path)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        summary = json.loads(result.stdout) if result.stdout.strip() else None
        return result, summary

    return run


@pytest.fixture
def ingest(ingest_result):
    """``ingest(*args)``: run ``ingest ... --format json``, require exit 0, return the summary."""

    def run(*args, input=None, db_path: Optional[Path] = None):
        result, summary = ingest_result(*args, input=input, db_path=db_path)
        assert result.exit_code == 0, result.output
        assert summary is not None, result.output
        return summary

    return run


@pytest.fixture
def report_json(runner):
    """``report_json(db, *extra)``: the parsed ``report --format json``."""

    def run(db_path: Path, *extra):
        result = runner.invoke(cli, ["--db", str(db_path), "report", "--format", "json", *(str(a) for a in extra)])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return run


@pytest.fixture
def seed_copies(tmp_path, belta_text):
    """A folder with an exact copy and a near-copy of the BelTA seed."""
    folder = tmp_path / "copies"
    folder.mkdir()
    exact = folder / "exact_copy.txt"
    shutil.copyfile(BELTA_SEED, exact)
    near = folder / "near_copy.txt"
    near.write_text(near_copy(belta_text), encoding="utf-8")
    return {"exact": exact, "near": near}


@pytest.fixture
def head_revision_independent() -> str:
    """The head revision read straight from the migrations folder with Alembic."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, heads
    return heads[0]


def one_line(text: str) -> str:
    """The message of a one-line error (click prints ``Error: ...``), asserting it is one line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got: {text!r}"
    return re.sub(r"^Error:\s*", "", lines[0])
