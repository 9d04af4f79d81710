"""Engines and sessions on SQLite or PostgreSQL, and the database-wide writer lock.

SQLite gets foreign keys, WAL and a busy timeout on every connection, and SQLAlchemy (not the
sqlite3 driver) emits BEGIN, so that a writing transaction can start with ``BEGIN IMMEDIATE``.
PostgreSQL connections run at READ COMMITTED: every statement sees what was committed
before it started, in particular everything committed before the writer lock was granted.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from contextlib import contextmanager
from typing import Iterator, Optional
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

DEFAULT_DB = "provenance.db"

#: Key of the PostgreSQL advisory lock that writers hold for their whole transaction
#: ("prov" in ASCII). Any client of the same database that takes it waits for ingests.
WRITER_LOCK_KEY = 0x70726F76

#: SQLite page cache per connection, in KiB.
SQLITE_CACHE_KIB = 64 * 1024
#: How long a SQLite connection waits for another's lock before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 60_000

#: Connection execution option that makes SQLite start the transaction with BEGIN IMMEDIATE.
_WRITER_OPTION = "provenance_writer"


def database_url(target: str | None) -> str:
    """A SQLAlchemy URL from a URL or a file path (``provenance.db`` when None)."""
    target = target or DEFAULT_DB
    if "://" in target:
        return target
    path = os.path.abspath(os.path.expanduser(target))
    # Rendered by SQLAlchemy, which escapes '?', '#' and '%': a file name may hold them.
    return URL.create("sqlite", database=path).render_as_string(hide_password=False)


def sqlite_path(url: str) -> str | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.database


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, read_only)
    if parsed.get_backend_name() == "postgresql":
        connect_args = {}
        if read_only:
            # Every transaction on these connections is read-only, whatever the statement does.
            connect_args["options"] = "-c default_transaction_read_only=on"
        # READ COMMITTED, never the server's default: under REPEATABLE READ the snapshot would
        # be taken by the lock statement itself, before waiting, and miss what the previous
        # holder committed.
        return create_engine(url, pool_pre_ping=True, isolation_level="READ COMMITTED", connect_args=connect_args)
    return create_engine(url, pool_pre_ping=True)


def _sqlite_engine(url: str, read_only: bool) -> Engine:
    path = sqlite_path(url)
    if read_only and path:
        engine = create_engine(
            "sqlite://",
            # Quoted: a '?', '#' or '%' in the file name would otherwise end or escape the path.
            creator=lambda: sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=60),
            # A pool of connections, as for a file URL: "sqlite://" alone would hand every
            # connect() in a thread the same connection, so a nested one would BEGIN twice.
            poolclass=QueuePool,
        )
    else:
        engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
        # SQLAlchemy emits BEGIN itself (below); the driver's implicit BEGIN, which only
        # comes before DML, is switched off. See "Enabling Non-Legacy SQLite Transactional
        # Modes" in SQLAlchemy's SQLite documentation.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # 64 MB of page cache instead of SQLite's 2 MB: LSH band keys are random, so every
        # insert or lookup lands on a different index page.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        if not read_only:
            _switch_to_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Checkpoint every 64 MB of WAL, not every 4 MB: each document rewrites hundreds of
            # index pages, and pages rewritten again before a checkpoint are copied once.
            cursor.execute("PRAGMA wal_autocheckpoint=16384")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection):  # pragma: no cover - trivial
        # A writer takes the database's write lock before its first read (waiting up to the
        # busy timeout), so what it reads cannot change before it commits; a deferred
        # BEGIN that reads first and writes later could only fail with "database is locked".
        immediate = connection.get_execution_options().get(_WRITER_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _switch_to_wal(cursor, patience: float = 30.0) -> None:
    """``PRAGMA journal_mode=WAL``, retried with backoff for up to ``patience`` seconds:
    switching a new file to WAL (or recovering its WAL index) needs a moment of exclusive
    access, and SQLite answers "database is locked" at once, without the busy timeout,
    when several processes open a brand-new file together; one of them may be slow (a
    loaded machine) to finish, so a fixed number of quick attempts is not enough."""
    deadline = time.monotonic() + patience
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if time.monotonic() >= deadline or not any(m in str(error).lower() for m in _TRANSIENT_SQLITE):
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.25)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, autoflush=False, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success, rolls back on error and always closes."""
    session = session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def snapshot_scope(engine: Engine) -> Iterator[Session]:
    """A session whose every statement reads the same committed state, for a report whose
    counts, lists and evidence are read in turn (streamed, over seconds): none of it may mix
    in what an ingest commits meanwhile. A SQLite read transaction is one snapshot already;
    on PostgreSQL the transaction is REPEATABLE READ, which a reader never fails to keep."""
    with session_scope(engine) as session:
        if engine.dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session


@contextmanager
def write_scope(engine: Engine) -> Iterator[Session]:
    """A :func:`session_scope` whose transaction holds the database-wide writer lock from
    its first statement to its commit or rollback.

    Writers therefore run one at a time, and each sees everything committed before it: on
    SQLite the transaction starts with ``BEGIN IMMEDIATE``, on PostgreSQL with
    ``pg_advisory_xact_lock``. Readers are never blocked. Keep these transactions short.
    """
    session = session_factory(engine)()
    try:
        connection = session.connection(execution_options={_WRITER_OPTION: True})
        lock_for_write(connection)
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def lock_for_write(connection) -> None:
    """Take the writer lock inside the current transaction (PostgreSQL; SQLite's lock is
    taken by BEGIN IMMEDIATE, see :func:`write_scope`). Released at commit or rollback."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK_KEY})")


def connection_state(session: Session) -> Optional[tuple]:
    """On SQLite, what says whether a database changed between two transactions of a
    process: the driver connection (compared by identity), its ``PRAGMA data_version``
    (which changes when another connection commits) and its ``total_changes`` (rows this
    connection changed). None on other databases, which give no such count."""
    if session.get_bind().dialect.name != "sqlite":
        return None
    connection = session.connection()
    driver = connection.connection.driver_connection
    return driver, connection.exec_driver_sql("PRAGMA data_version").scalar(), driver.total_changes


def writer_connection(engine: Engine):
    """A connection whose next transaction starts as a writer (see :func:`write_scope`)."""
    return engine.connect().execution_options(**{_WRITER_OPTION: True})


def refresh_statistics(engine: Engine) -> None:
    """Let the query planner see the tables' current sizes.

    Without statistics SQLite guesses that few documents are latest and plans the report's
    derivation query as a product of the document table with itself (3.3 s measured at
    2,000 documents, growing with their square; 5 ms with statistics). ``PRAGMA optimize`` re-analyses only tables that grew
    much since their last analysis, sampling at most ``analysis_limit`` rows per index, so
    it stays cheap on a large database. PostgreSQL's autovacuum analyses on its own
    schedule; ``ANALYZE`` here makes a new database plannable at once. Best effort: the
    ingest is already committed, so a failure here (e.g. a busy database) is ignored.
    """
    try:
        with write_scope(engine) as session:
            if engine.dialect.name == "sqlite":
                session.execute(text("PRAGMA analysis_limit=400"))
                session.execute(text("PRAGMA optimize=0x10002"))
            elif engine.dialect.name == "postgresql":
                session.execute(text("ANALYZE"))
    except exc.SQLAlchemyError:
        pass


def refresh_moved_tables(engine: Engine, emptied: str, filled: str) -> None:
    """After a statement moved many rows from table ``emptied`` to table ``filled`` (a merge
    of the passage index), on PostgreSQL: vacuum the emptied table and analyse both now,
    not at autovacuum's next round.

    Until then the planner keeps the sizes of their last analysis: after a new database's
    first merge it took the big table for empty, and a plan kept by the driver's prepared
    statement read all of it for every bucket lookup (one document's lookups 2.2 s instead
    of 3-6 ms, a one-off script) until autovacuum analysed it. The rows a merge deletes
    stay in the emptied table's index until vacuumed, and lookups read them. ``SKIP_LOCKED``:
    a table another vacuum is working on is left to it. Best effort: the merge is already
    committed. Nothing to do on SQLite, whose plan for the lookup does not depend on sizes.
    """
    if engine.dialect.name != "postgresql":
        return
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f"VACUUM (ANALYZE, SKIP_LOCKED) {emptied}")
            connection.exec_driver_sql(f"ANALYZE (SKIP_LOCKED) {filled}")
    except exc.SQLAlchemyError:
        pass


#: The fewest rows of a table that :func:`analyse_grown_table` analyses.
ANALYSE_AFTER_ROWS = 10_000


def analyse_grown_table(engine: Engine, table: str, rows: int, at_least: Optional[int] = None) -> bool:
    """On PostgreSQL, analyse ``table``, which holds ``rows`` rows, now if that is twice
    the rows its last analysis saw (and at least ``at_least``, default
    :data:`ANALYSE_AFTER_ROWS`); returns whether it did.

    For a table that grows fast from empty, as the passage index's table of recent rows
    does after every merge: autovacuum analyses it on its own schedule, and until then the
    planner guesses that every key matches half a percent of the rows. In a new database's
    first 1,000 documents that guess made the bucket lookups (one probe per key, see
    provenance.index) bitmap scans of hundreds of rows a key: 28 s of a 76 s ingest (a
    one-off run with auto_explain). Analysing each time the table has doubled keeps the
    guesses close, for a sample of at most 30,000 rows each time. Best effort.
    """
    at_least = ANALYSE_AFTER_ROWS if at_least is None else at_least
    if engine.dialect.name != "postgresql" or rows < at_least:
        return False
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            seen = connection.execute(
                text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:table)"), {"table": table}
            ).scalar()
            if seen is None or rows < 2 * seen:  # -1: never analysed
                return False
            connection.exec_driver_sql(f"ANALYZE (SKIP_LOCKED) {table}")
            return True
    except exc.SQLAlchemyError:
        return False


# -- errors worth another attempt -------------------------------------------------------
#: SQLSTATEs of PostgreSQL errors that a retry of the whole transaction can clear.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "08000", "08003", "08006"}
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database is busy")


def is_transient(error: BaseException) -> bool:
    """True for a deadlock, a serialization failure, a lock timeout, "database is locked"
    or a lost connection: the transaction can be run again from its start."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    original = getattr(error, "orig", error)
    if getattr(original, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    return isinstance(original, sqlite3.OperationalError) and any(m in str(original).lower() for m in _TRANSIENT_SQLITE)


def is_unique_violation(error: BaseException) -> bool:
    """True when a row collided with a unique key (another writer stored it first)."""
    original = getattr(error, "orig", error)
    if getattr(original, "sqlstate", None) == "23505":
        return True
    return isinstance(original, sqlite3.IntegrityError) and "unique constraint failed" in str(original).lower()
