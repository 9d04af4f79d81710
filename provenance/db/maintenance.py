"""Upkeep of a database's storage: rebuilding a SQLite file that many ingests have grown, so
that each table and index lies in one run of pages again (``VACUUM``).

An ingest inserts into a dozen tables and indexes at once, so each one's pages end up spread
through the file; a command that reads a whole index from a cold page cache (after a reboot)
then reads it page by page from all over the disk. At 100,000 documents, a rebuilt file
answered the cold `report` in 0.85-0.97 s against 1.42-1.50 s (`bench/scale.py --cold`,
bench/README.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine

from ..errors import ProvenanceError
from .session import SQLITE_BUSY_TIMEOUT_MS, is_transient, sqlite_path


#: How long the checkpoint after a VACUUM waits for other connections to let go of the log.
CHECKPOINT_PATIENCE_MS = 1000


@dataclass(frozen=True)
class Vacuumed:
    """What :func:`vacuum` did: the database's size before and after (SQLite: the file with
    its write-ahead log; PostgreSQL: ``pg_database_size``), the seconds it took, and the
    bytes of the SQLite log that could not be emptied yet (another process was using the
    database: the log is emptied when the last connection closes, or by later commits)."""

    backend: str
    bytes_before: int
    bytes_after: int
    seconds: float
    log_bytes_left: int = 0


def vacuum(engine: Engine, starting: Optional[Callable[[int], None]] = None) -> Vacuumed:
    """Rebuild the database's storage: SQLite's ``VACUUM`` (the whole file rewritten, free
    pages returned), then a checkpoint that copies the rewritten pages back from the WAL;
    PostgreSQL's ``VACUUM (ANALYZE)`` (dead rows made reusable, planner statistics
    refreshed; the files are not rewritten, which is autovacuum's job done now).

    SQLite needs free space about the size of the database in the temporary folder (the
    rebuilt copy) and again beside the database (the WAL it is written through), and holds
    the writer lock while it runs: a writer started meanwhile waits for it (up to the busy
    timeout, then gives up with nothing lost), and one already running makes it wait (the
    same, then it gives up and changes nothing).
    ``starting``: called with the size before, once the checks have passed (a progress note).
    """
    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        before = _postgresql_size(engine)
        if starting:
            starting(before)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM (ANALYZE)")
        return Vacuumed("postgresql", before, _postgresql_size(engine), time.perf_counter() - started)
    path = sqlite_path(str(engine.url))
    if not path:
        raise ProvenanceError("db vacuum: the database is in memory; there is no file to rebuild")
    before = _sqlite_size(path)
    _check_space(path, before)
    if starting:
        starting(before)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute("VACUUM")
        except Exception as error:  # the driver's OperationalError, outside SQLAlchemy
            raise _vacuum_error(path, error) from error
        # TRUNCATE: the WAL now holds the whole file; empty it back to nothing. A reader
        # still on the old pages keeps it until the next checkpoint: waiting for it would
        # take the whole busy timeout (60 s with a reader left open, timed once), so this
        # waits a second at most.
        cursor.execute(f"PRAGMA busy_timeout={CHECKPOINT_PATIENCE_MS}")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()
    finally:
        connection.close()
    log = f"{path}-wal"
    left = os.path.getsize(log) if os.path.exists(log) else 0
    return Vacuumed("sqlite", before, _sqlite_size(path), time.perf_counter() - started, left)


def _sqlite_size(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))


def _postgresql_size(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


def _check_space(path: str, size: int) -> None:
    """Refuse before starting when the rebuilt copy and its WAL cannot fit (SQLite writes
    the copy to its temporary folder: SQLITE_TMPDIR or TMPDIR, else /var/tmp or /tmp)."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.environ.get("SQLITE_TMPDIR") or tempfile.gettempdir()
    needed = {folder: size}
    try:
        same_disk = os.stat(folder).st_dev == os.stat(temporary).st_dev
    except OSError:
        same_disk = True  # the folder SQLite picks instead is unknown: count it on this disk
    if same_disk:
        needed[folder] += size
    else:
        needed[temporary] = size
    for where, wanted in needed.items():
        free = shutil.disk_usage(where).free
        if free < wanted:
            raise ProvenanceError(
                f"{path}: db vacuum needs about {wanted / 1e6:,.0f} MB free in {where}, which has "
                f"{free / 1e6:,.0f} MB; free some space (or set SQLITE_TMPDIR to a folder on a disk with room)"
            )


def _vacuum_error(path: str, error: Exception) -> ProvenanceError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    if is_transient(error):
        return ProvenanceError(f"{path}: another process is writing to the database ({reason}); "
                               "run db vacuum again when it has finished")
    if "full" in reason.lower():
        return ProvenanceError(f"{path}: the disk filled up during db vacuum ({reason}); nothing was changed; "
                               "free some space (or set SQLITE_TMPDIR to a folder on a disk with room)")
    return ProvenanceError(f"{path}: db vacuum failed ({reason}); nothing was changed")

