"""Reading ahead on SQLite: rows a command is about to read, read first on other connections
so that the operating system's page cache holds their pages when the command reads them.

A whole report at 100,000 documents quotes some 60,000 texts scattered through a 3 GB file.
From a cold page cache its one connection waited for them a page at a time: 2.5 s of a
5.9 s report. Read on four connections at once, the disk serves several reads together;
the same texts, read by one connection behind four reading ahead, took 1.15-1.17 s against
2.39-2.57 s alone (one-off, page cache dropped before each run, see bench/README.md).

A command reads ahead only once its own reads have waited on the disk (:func:`waited_on_disk`).
Its own reads are unchanged: they run on its connection, in its snapshot, and give what they
gave before. What is read ahead is thrown away, so what it finds, whether it fails and
whether it finishes change no result; it only warms the page cache.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple, Optional, Sequence
from urllib.parse import quote

from sqlalchemy.orm import Session

from .bulk import chunks

try:
    import resource
except ImportError:  # Windows has none
    resource = None

#: Connections that read ahead at once.
READ_AHEAD_CONNECTIONS = 4
#: Waiting, beyond the CPU time used, that counts as waiting on the disk (see
#: :func:`waited_on_disk`).
DISK_WAIT_MIN_SECONDS = 0.005
#: Bytes fetched from storage in that time that count as waiting on the disk: cold, the whole
#: report's first batch fetched 3.4 MB and an ingest's first document 8.5 MB at 100,000
#: documents; a warm report on a busy machine, 12 KB in a batch that waited 6 ms.
DISK_FETCH_MIN_BYTES = 256 * 1024
#: Whether the system accounts each thread's input from storage (Linux built with task I/O
#: accounting, which then lists /proc/self/io; see :func:`fetched_from_storage`).
_THREAD_INPUT_ACCOUNTED = hasattr(resource, "RUSAGE_THREAD") and os.path.exists("/proc/self/io")

_log = logging.getLogger(__name__)


class Clocks(NamedTuple):
    """Where a thread stands, for :func:`waited_on_disk`."""

    wall: float  #: seconds
    cpu: float  #: this thread's CPU seconds, in the kernel included
    fetched: Optional[int]  #: bytes its reads fetched from storage (:func:`fetched_from_storage`)


def clocks() -> Clocks:
    """This thread's clocks now, for :func:`waited_on_disk`."""
    return Clocks(time.perf_counter(), time.thread_time(), fetched_from_storage())


def fetched_from_storage() -> Optional[int]:
    """Bytes that this thread's reads have made the kernel fetch from storage so far, in
    units of 512: Linux's accounting of each thread's input (``read_bytes`` of
    /proc/thread-self/io), which ``getrusage`` gives as the thread's block input for a
    microsecond where reading that file took 12. Reads served from the page cache add
    nothing. None where the system does not say."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_inblock << 9 if _THREAD_INPUT_ACCOUNTED else None


def waited_on_disk(since: Clocks, now: Optional[Clocks] = None) -> bool:
    """Whether this thread, from ``since`` to ``now`` (:func:`clocks`, now by default), waited
    on the disk: its reads fetched :data:`DISK_FETCH_MIN_BYTES` or more from storage, and it
    waited a fifth of the time or more, longer than :data:`DISK_WAIT_MIN_SECONDS`. Then
    reading ahead pays; served from the page cache its reads wait for nothing, and reading
    ahead would only read everything twice (the whole report at 100,000 documents, warm:
    1.88-2.03 s with it against 1.82-1.95 s without, see bench/README.md).

    Waiting alone is not enough: a thread also waits for the CPU on a busy machine (the
    warm whole report beside two programs that kept both cores busy read ahead in 3 runs of
    3) and for its writes while the kernel writes back (an ingest while another program
    wrote 6 GB files read 1,115 statements ahead). Where the system does not say what was
    fetched, waiting is taken for reading. Not half the time: a read from the disk also
    computes, in the kernel (the whole report's first batch, cold: 33 ms of CPU time in 61 ms)."""
    now = clocks() if now is None else now
    computed = now.cpu - since.cpu
    waited = now.wall - since.wall - computed
    if waited <= DISK_WAIT_MIN_SECONDS or 4 * waited < computed:
        return False
    return now.fetched is None or since.fetched is None or now.fetched - since.fetched >= DISK_FETCH_MIN_BYTES


def database_file(session: Session) -> Optional[str]:
    """The file of the session's SQLite database, None for any other database (an in-memory
    one included)."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return None
    for _, name, path in connection.exec_driver_sql("PRAGMA database_list"):
        if name == "main":
            return path or None
    return None


class ReadAhead:
    """Statements run on up to :data:`READ_AHEAD_CONNECTIONS` read-only connections of their
    own, in the order given, their results thrown away. A no-op where the session's
    database is not a SQLite file. Use it as a context manager: leaving it cancels what has
    not started, waits for what has, and closes the connections.

    ``keep_results``: keep every statement's rows for :meth:`finished` (tests and
    benchmarks). Otherwise a statement is let go of once it has run: a finished future held
    1.7 KB (100,000 of them 166 MB by tracemalloc, one-off), and a cold ingest reads ahead
    a statement per document for the rest of its run."""

    def __init__(self, session: Session, connections: Optional[int] = None, keep_results: bool = False):
        connections = READ_AHEAD_CONNECTIONS if connections is None else connections
        self._path = database_file(session) if connections > 0 else None
        self._pool = ThreadPoolExecutor(connections, thread_name_prefix="read-ahead") if self._path else None
        self._keep = keep_results
        self._futures: deque[Future] = deque()
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether it reads anything: a SQLite file, connections asked for, not closed."""
        return self._pool is not None

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def read(self, sql: str, values: Sequence) -> None:
        """Read ahead ``sql``, a SELECT holding an ``{in}`` marker as for
        :func:`provenance.db.bulk.select_in`, once for each slice of ``values``. Make it an
        aggregate (``sum(length(text))``) so that its rows are read without being handed
        over."""
        if self._pool is None:
            return
        if not self._keep:
            while self._futures and self._futures[0].done():
                self._futures.popleft()
        for part in chunks(list(values)):
            statement = sql.replace("{in}", f"IN ({', '.join('?' for _ in part)})")
            self._futures.append(self._pool.submit(self._run, statement, part))

    def finished(self) -> list:
        """Wait for everything asked for; with ``keep_results``, the rows of each statement
        run, in the order asked (None for one that failed). Before :meth:`close`, which
        cancels what has not started. For tests and benchmarks: a command does not need them."""
        rows = [future.result() for future in self._futures]
        return rows if self._keep else []

    def close(self) -> None:
        if self._pool is None:
            return
        self._pool.shutdown(wait=True, cancel_futures=True)
        for connection in self._opened:
            connection.close()
        self._opened.clear()
        self._pool = None

    def _run(self, statement: str, values: list) -> Optional[list[tuple]]:
        try:
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = sqlite3.connect(f"file:{quote(self._path)}?mode=ro", uri=True, check_same_thread=False)
                with self._lock:
                    self._opened.append(connection)
                self._local.connection = connection
            return connection.execute(statement, values).fetchall()
        except sqlite3.Error as error:  # the command's own read will meet any real problem
            _log.debug("read ahead failed: %s", error)
            return None
