"""Passage bucket members read ahead by the worker processes of a parallel ingest.

The one writer matches each new document against everything stored before it, and reading
the members of its some 650 passage buckets took a quarter of its time at 1,000 documents
and a third at 100,000 (``bench/stages.py``). With ``--workers``, a worker reads them instead,
right after preparing the document, on a read-only connection of its own: the buckets as
SQLite's last commit left them (a snapshot, :class:`BucketSnapshot`). The writer replays on
it what it has added to and deleted from those buckets since, which it remembers
(:class:`IndexChanges`), and reads the buckets itself whenever it cannot be sure that is all
that changed: another process committed since (or its own commit failed), the snapshot is
older than what it remembers, a bucket the worker found crowded lost members. So a document is matched against
the members the writer would have read, and what is stored does not depend on the number
of workers.

SQLite files only: PostgreSQL reads at most a bucket cap of each bucket on its server.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from dataclasses import dataclass, field
from itertools import chain
from typing import Iterable, Iterator, NamedTuple, Optional
from urllib.parse import quote

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .db.bulk import sqlite_rows_in
from .db.session import connection_state, sqlite_path
from .derive import PREFILTERS
from .index import BUCKET_MEMBERS, joined_members
from .settings import Settings

#: Members a snapshot holds at most (8 bytes each): a document whose buckets hold more (a
#: story syndicated hundreds of times) is read by the writer, so the documents in flight to
#: it (see provenance.ingest.UNITS_PER_WORKER) cannot pile up memory. At 100,000 documents a
#: new document's buckets held some 6,400 members on average.
SNAPSHOT_MEMBERS_MAX = 20_000
#: The writer's transactions whose changes are remembered: a snapshot older than that is not
#: used. Documents are stored up to 128 to a transaction (ingest.BATCH_DOCUMENTS), each batch
#: followed by a transaction that may merge the index, and with two workers 512 are in flight
#: (ingest.UNITS_PER_WORKER units of ingest.UNIT_DOCUMENTS each): some 8 transactions.
TRANSACTIONS_KEPT = 16
#: A worker reads a crowded bucket again after this many of the writer's commits, so that
#: what it says of it is newer than the changes the writer remembers.
CROWDED_FRESH = TRANSACTIONS_KEPT // 2
#: SQLite page cache of a worker's connection, in KiB: the writer's commits empty it anyway.
WORKER_CACHE_KIB = 16 * 1024


def _no_ids() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


@dataclass
class BucketSnapshot:
    """A prepared document's passage buckets as a worker read them."""

    #: The writer's commits seen before it was taken (:attr:`IndexChanges.commits`): the
    #: changes it may lack are those of the writer's transactions from this one on.
    commits: int
    #: The buckets that held members, sorted; the members of ``keys[i]`` are
    #: ``members[bounds[i]:bounds[i + 1]]``.
    keys: np.ndarray
    bounds: np.ndarray
    members: np.ndarray
    #: Buckets holding more than the bucket cap, not read (see index.passage_candidates):
    #: key -> how many members it held over the cap, and the writer's commits seen when the
    #: first of them was counted.
    crowded: dict[int, int]
    crowded_since: int
    #: The compact sketches (see derive.SketchCache) of the members of its quiet buckets,
    #: those the writer's candidate filter reads: ids, content-word counts, low bytes.
    sketch_ids: np.ndarray = field(default_factory=_no_ids)
    sketch_word_counts: np.ndarray = field(default_factory=_no_ids)
    sketch_low_bytes: bytes = b""


def sqlite_file(engine: Engine) -> Optional[str]:
    """The path of the engine's SQLite database file; None for other databases and in-memory ones."""
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    return path if path and not path.startswith("file:") else None


# -- in a worker process -----------------------------------------------------------------------

_reader: Optional["SnapshotReader"] = None


def start_worker(path: str, commits, settings: Settings) -> None:
    """Pool initializer: this worker reads the buckets of what it prepares (see :func:`attach`)."""
    global _reader
    _reader = SnapshotReader(path, commits, settings)


def attach(documents: Iterable) -> None:
    """Give the prepared documents among ``documents`` their :class:`BucketSnapshot`, in a
    worker process started by :func:`start_worker` (elsewhere, nothing)."""
    if _reader is not None:
        _reader.attach(documents)


class SnapshotReader:
    """Reads prepared documents' buckets on a read-only connection to the writer's file."""

    def __init__(self, path: str, commits, settings: Settings):
        self.path = path
        self.commits = commits  # a multiprocessing.Value the writer counts its commits in
        self.bucket_cap = settings.bucket_cap
        #: Buckets of at most this many members are quiet: a single band shared through one
        #: makes a candidate (see index.passage_candidates), so their members' sketches are
        #: what the writer's candidate filter reads, and are read here too.
        self.quiet_max = settings.lone_band_bucket_max or settings.bucket_cap
        #: Buckets found over the cap: key -> (the writer's commits seen then, members over
        #: the cap); not read again for :data:`CROWDED_FRESH` commits.
        self.crowded: dict[int, tuple[int, int]] = {}
        self._connection: Optional[sqlite3.Connection] = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True, isolation_level=None,
                                         timeout=5.0, check_same_thread=False)
            connection.execute(f"PRAGMA cache_size=-{WORKER_CACHE_KIB}")
            self._connection = connection
        return self._connection

    def attach(self, documents: Iterable) -> None:
        wanted = [d for d in documents if hasattr(d, "buckets") and any(len(p.band_keys) for p in d.passages)]
        if not wanted:
            return
        seen = self.commits.value  # before the snapshot: every commit counted is in it
        try:
            connection = self._connect()
            connection.execute("BEGIN")
            try:
                for document in wanted:
                    document.buckets = self._read(connection, document, seen)
            finally:
                connection.execute("COMMIT")
        except Exception:  # whatever it is, the writer reads them itself
            for document in wanted:
                document.buckets = None

    def _read(self, connection: sqlite3.Connection, document, seen: int) -> Optional[BucketSnapshot]:
        keys = {key for passage in document.passages for key in passage.band_keys}
        crowded = {key: self.crowded[key] for key in keys & self.crowded.keys()
                   if self.crowded[key][0] >= seen - CROWDED_FRESH}
        # The writer's own statements (index.BUCKET_MEMBERS, derive.PREFILTERS), so both read the same rows.
        members = joined_members(sqlite_rows_in(connection, BUCKET_MEMBERS, sorted(keys - crowded.keys())))
        held = sum(map(len, members.values()))
        for key in [key for key, ids in members.items() if len(ids) > self.bucket_cap]:
            crowded[key] = self.crowded[key] = (seen, len(members[key]) - self.bucket_cap)
            held -= len(members.pop(key))
        if held > SNAPSHOT_MEMBERS_MAX:
            return None
        quiet = sorted({m for ids in members.values() if len(ids) <= self.quiet_max for m in ids})
        sketches = sqlite_rows_in(connection, PREFILTERS, quiet)
        ordered = sorted(members)
        sizes = [len(members[key]) for key in ordered]
        return BucketSnapshot(
            commits=seen, keys=np.array(ordered, dtype=np.int64),
            bounds=np.concatenate(([0], np.cumsum(sizes, dtype=np.int64))).astype(np.int64),
            members=np.fromiter(chain.from_iterable(members[key] for key in ordered), dtype=np.int64, count=held),
            crowded={key: over for key, (_, over) in crowded.items()},
            crowded_since=min([seen, *(since for since, _ in crowded.values())]),
            sketch_ids=np.fromiter((row[0] for row in sketches), np.int64, len(sketches)),
            sketch_word_counts=np.fromiter((row[1] for row in sketches), np.int64, len(sketches)),
            sketch_low_bytes=b"".join(row[2] for row in sketches),
        )


# -- in the writer -----------------------------------------------------------------------------

class IndexChanges:
    """What the writer did to the passage index in each of its recent transactions, to bring
    a :class:`BucketSnapshot` up to date, and which of them it cannot do that across.

    Told of each transaction as :class:`index.BusyBuckets` is (:meth:`begin`, :meth:`ended`,
    then :meth:`committed` or :meth:`rolled_back`) and of the rows it adds and deletes
    (:meth:`added`, :meth:`removed`). A row is in the index or not, and adding or deleting it
    again changes nothing, so replaying every change from any transaction the snapshot
    holds on gives the index as it is now, whichever later ones it holds too. A transaction
    is *irregular* when it began after another connection committed (or on another
    connection): a snapshot that may predate it is not used."""

    def __init__(self, commits=None):
        #: Shared with the workers (a multiprocessing.Value), or None.
        self._shared = commits
        #: Transactions committed so far; the open one is numbered so.
        self.commits = 0
        #: The open transaction's changes: key -> passage ids in the order added, ``~id`` for
        #: one deleted.
        self._pending: dict[int, list[int]] = {}
        #: Those of the last :data:`TRANSACTIONS_KEPT` committed, oldest first, as
        #: :class:`_Changes` (24 bytes a row, against 187 in the dict of lists; tracemalloc, one-off).
        self._committed: deque[_Changes] = deque(maxlen=TRANSACTIONS_KEPT)
        self._irregular: set[int] = set()
        self._pending_irregular = False
        self._seen: Optional[tuple] = None
        #: Documents matched from a snapshot, and those whose buckets the writer read instead.
        self.used = 0
        self.read_instead = 0

    def begin(self, session: Session) -> None:
        state = connection_state(session)
        self._pending = {}
        self._pending_irregular = state is None or state != self._seen

    def ended(self, session: Session) -> None:
        self._seen = connection_state(session)

    def added(self, rows: Iterable[tuple[int, int]]) -> None:
        """(band_key, passage_id) rows just written to the passage index."""
        pending = self._pending
        for key, passage_id in rows:
            changes = pending.get(key)
            if changes is None:
                pending[key] = [passage_id]
            else:
                changes.append(passage_id)

    def removed(self, rows: Iterable[tuple[int, int]]) -> None:
        """(band_key, passage_id) rows just deleted from it."""
        for key, passage_id in rows:
            self._pending.setdefault(key, []).append(~passage_id)

    def committed(self) -> None:
        number = self.commits
        if self._pending_irregular:
            self._irregular.add(number)
        self._committed.append(_Changes.of(number, self._pending))
        self._pending = {}
        self._pending_irregular = False
        self.commits += 1
        self._irregular = {t for t in self._irregular if t >= self.commits - TRANSACTIONS_KEPT}
        if self._shared is not None:
            self._shared.value = self.commits

    def rolled_back(self) -> None:
        """The open transaction did not commit, or may not have (its commit failed): its
        changes are dropped, and the next one is irregular, since its snapshot may differ."""
        self._pending = {}
        self._pending_irregular = False
        self._seen = None

    def members(self, snapshot: Optional[BucketSnapshot], keys: Iterable[int]) -> Optional[tuple[dict, frozenset]]:
        """The members of the buckets ``keys`` now (non-empty ones) and the keys of those
        crowded, from ``snapshot`` and the changes since; None when that cannot be known."""
        if snapshot is None:
            return None
        since = min(snapshot.commits, snapshot.crowded_since)
        if since < self.commits - len(self._committed) or self._pending_irregular or any(
            t >= since for t in self._irregular
        ):
            self.read_instead += 1
            return None
        wanted = np.array(sorted(set(keys)), dtype=np.int64)
        changes: dict[int, list[int]] = {}  # since the snapshot
        crowded_changes: dict[int, list[int]] = {}  # since the first crowded bucket was found
        for made in self._committed:
            if made.number < since:
                continue
            for key, history in made.of_keys(wanted):
                if key in snapshot.crowded:
                    crowded_changes.setdefault(key, []).extend(history)
                elif made.number >= snapshot.commits:
                    changes.setdefault(key, []).extend(history)
        for key in self._pending.keys() & set(wanted.tolist()):  # CPython walks the smaller
            (crowded_changes if key in snapshot.crowded else changes).setdefault(key, []).extend(self._pending[key])
        if any(_net_removals(history) >= snapshot.crowded[key] for key, history in crowded_changes.items()):
            self.read_instead += 1  # a crowded bucket lost members: it may no longer be
            return None
        flat = snapshot.members.tolist()
        bounds = snapshot.bounds.tolist()
        members = {key: flat[bounds[i] : bounds[i + 1]] for i, key in enumerate(snapshot.keys.tolist())}
        for key, history in changes.items():
            current = set(members.get(key, ()))
            for change in history:
                if change >= 0:
                    current.add(change)
                else:
                    current.discard(~change)
            if current:
                members[key] = list(current)
            else:
                members.pop(key, None)
        self.used += 1
        return members, frozenset(snapshot.crowded)


def _net_removals(history: list[int]) -> int:
    """How many passages a bucket's changes (as IndexChanges keeps them) leave deleted."""
    last: dict[int, bool] = {}
    for change in history:
        last[change if change >= 0 else ~change] = change >= 0
    return sum(not added for added in last.values())


class _Changes(NamedTuple):
    """A committed transaction's changes to the passage index, compact: ``keys`` sorted, the
    changes of ``keys[i]`` are ``changes[starts[i] : starts[i] + sizes[i]]`` (``~id`` for a
    deleted row)."""

    number: int
    keys: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    changes: np.ndarray

    @classmethod
    def of(cls, number: int, pending: dict[int, list[int]]) -> "_Changes":
        keys = np.fromiter(pending.keys(), np.int64, len(pending))
        sizes = np.fromiter(map(len, pending.values()), np.int32, len(pending))
        changes = np.fromiter(chain.from_iterable(pending.values()), np.int64, int(sizes.sum()))
        starts = (np.cumsum(sizes, dtype=np.int64) - sizes).astype(np.int32)
        order = np.argsort(keys)
        return cls(number, keys[order], starts[order], sizes[order], changes)

    def of_keys(self, wanted: np.ndarray) -> Iterator[tuple[int, list[int]]]:
        """(key, its changes) for those of ``wanted`` (sorted) this transaction changed."""
        if not len(self.keys):
            return
        at = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        for i in np.flatnonzero(self.keys[at] == wanted).tolist():
            j = int(at[i])
            start = int(self.starts[j])
            yield int(self.keys[j]), self.changes[start : start + int(self.sizes[j])].tolist()
