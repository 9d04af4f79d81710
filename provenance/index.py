"""The persisted LSH indexes: band tables in the database, queried with indexed lookups.

A new document is compared with everything stored in earlier runs through these tables,
without re-reading or re-signing the corpus.
"""

from __future__ import annotations

from array import array
from collections import Counter, OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Callable, Iterable, Mapping, NamedTuple, Optional, Protocol, Sequence

import numpy as np
from sqlalchemy import bindparam, delete, func, or_, select
from sqlalchemy.orm import Session

from .db.bulk import IN_CHUNK, DriverStatement, chunks, delete_rows, insert_rows, select_in
from .db.models import Document, DocumentBand, DocumentPair, Passage, PassageBand, PassagePrefilter, RecentPassageBand
from .db.readahead import ReadAhead
from .db.session import connection_state
from .prepare import document_shingles, passage_words
from .settings import Settings, SketchSettings
from .sketch import band_keys, estimate_jaccard, from_blob, jaccard


class IndexWatcher(Protocol):
    """Told of the rows written to and deleted from the passage index (see BusyBuckets)."""

    def added(self, rows: Iterable[tuple[int, int]]) -> None: ...

    def removed(self, rows: Iterable[tuple[int, int]]) -> None: ...


@dataclass
class Found:
    exact: int = 0
    near: int = 0
    oversized_buckets: int = 0


#: The statements every new document runs, built once and sent to the driver (see
#: DriverStatement): building a statement and running it through the session cost several
#: times what SQLite takes to run it.
_DROP_DOCUMENT_BANDS = DriverStatement(delete(DocumentBand).where(DocumentBand.document_id == bindparam("document")))
_DROP_DOCUMENT_PAIRS = DriverStatement(delete(DocumentPair).where(
    or_(DocumentPair.first_id == bindparam("document"), DocumentPair.second_id == bindparam("document"))
))
_CONTENT_HASH_AND_PATH = DriverStatement(
    select(Document.content_hash, Document.path).where(Document.id == bindparam("document"))
)
#: ``is_latest IS NOT false`` (the same for a column that is never null) rather than ``IS
#: true``: SQLite can use an index for the latter, and before a database has planner
#: statistics (its whole first ingest) it chose the (is_latest, path) index over the one on
#: content_hash and read every latest document for each new one (2.8 ms a document at 1,500).
LATEST_AS_FILTER = Document.is_latest.is_not(False)
_SAME_CONTENT = DriverStatement(select(Document.id).where(
    Document.content_hash == bindparam("content_hash"), LATEST_AS_FILTER,
    Document.id != bindparam("document"), Document.path != bindparam("path"),
))
#: Those that test a document's band keys go to the driver (see select_in): an expanding IN
#: list is rendered again by SQLAlchemy for every execution. ``{cap}``: an integer setting.
_CROWDED_DOCUMENT_BUCKETS = (
    f"SELECT band_key FROM {DocumentBand.__tablename__} WHERE band_key {{in}} GROUP BY band_key HAVING count(*) > {{cap}}"
)
_BAND_NEIGHBOURS = f"SELECT document_id FROM {DocumentBand.__tablename__} WHERE band_key {{in}}"
_SIGNED_LATEST = select(Document.id, Document.signature, Document.content_hash).where(
    Document.id.in_(bindparam("ids", expanding=True)), Document.is_latest.is_(True), Document.path != bindparam("path")
)
_OWN_PASSAGES = DriverStatement(select(Passage.id).where(Passage.document_id == bindparam("document")))
_PAIR_COLUMNS = ("first_id", "second_id", "similarity", "exact")


def _crowded_document_buckets(session: Session, keys: list[int], cap: int) -> set[int]:
    """Document band keys whose bucket already holds more than ``cap`` entries."""
    return {key for key, in select_in(session, _CROWDED_DOCUMENT_BUCKETS.replace("{cap}", str(int(cap))),
                                      sorted(set(keys)))}


def index_document(
    session: Session, document_id: int, signature: Optional[np.ndarray], settings: Settings,
    shingles: Optional[np.ndarray] = None,
) -> Found:
    """Replace the document's bands and verified pairs; returns what it duplicates.

    With the document's ``shingles`` (its distinct shingle hashes), each candidate is
    verified exactly: the pair's similarity is the true Jaccard similarity of the two
    shingle sets, so a copy just above the threshold is not lost to the MinHash estimate's
    noise (about +-0.035 at 0.8 with 128 permutations). Without them it is the estimate.
    """
    connection = session.connection()
    _DROP_DOCUMENT_BANDS.run(connection, document=document_id)
    _DROP_DOCUMENT_PAIRS.run(connection, document=document_id)
    me = _CONTENT_HASH_AND_PATH.first(connection, document=document_id)
    pairs: dict[int, tuple[float, bool]] = {}
    found = Found()
    for (other,) in _SAME_CONTENT.rows(connection, content_hash=me.content_hash, document=document_id, path=me.path):
        pairs[other] = (1.0, True)
    if signature is not None:
        keys = band_keys(signature, settings.document)
        insert_rows(session, DocumentBand.__table__, ("document_id", "band_key"), [(document_id, k) for k in keys])
        crowded = _crowded_document_buckets(session, keys, settings.bucket_cap)
        found.oversized_buckets += len(crowded)
        lookup = sorted({k for k in keys if k not in crowded})
        candidates = {other for other, in select_in(session, _BAND_NEIGHBOURS, lookup)} - set(pairs) - {document_id}
        verified: list = []
        for batch in chunks(sorted(candidates)):
            verified.extend(
                row for row in connection.execute(_SIGNED_LATEST, {"ids": batch, "path": me.path})
                if row.signature is not None
            )
        theirs = stored_shingles(session, [row.id for row in verified], settings) if shingles is not None else {}
        for row in verified:
            if shingles is not None:
                similarity = jaccard(shingles, theirs[row.id])
            else:
                similarity = estimate_jaccard(signature, from_blob(row.signature))
            pairs[row.id] = (similarity, row.content_hash == me.content_hash)
    insert_rows(session, DocumentPair.__table__, _PAIR_COLUMNS, [
        (min(document_id, other), max(document_id, other), float(similarity), exact)
        for other, (similarity, exact) in sorted(pairs.items())
    ])
    for similarity, exact in pairs.values():
        if exact:
            found.exact += 1
        elif similarity >= settings.near_duplicate_threshold:
            found.near += 1
    return found


_TEXTS = f"SELECT id, text FROM {Document.__tablename__} WHERE id {{in}}"
#: Content passages' spans in each document's order.
_CONTENT_SPANS = (
    f"SELECT document_id, start_offset, end_offset FROM {Passage.__tablename__}"
    " WHERE document_id {in} AND boilerplate_id IS NULL ORDER BY document_id, seq"
)


def stored_shingles(session: Session, document_ids: list[int], settings: Settings) -> dict[int, np.ndarray]:
    """The shingle sets of stored documents, rebuilt from their text and content passages
    (the same words their signatures were made from)."""
    out: dict[int, np.ndarray] = {}
    document_ids = sorted(set(document_ids))
    texts = dict(select_in(session, _TEXTS, document_ids))
    spans: dict[int, list[tuple[int, int]]] = {doc_id: [] for doc_id in document_ids}
    for document_id, start, end in select_in(session, _CONTENT_SPANS, document_ids):
        spans[document_id].append((start, end))
    for doc_id in document_ids:
        text = texts.get(doc_id) or ""
        out[doc_id] = document_shingles([passage_words(text[a:b], settings) for a, b in spans[doc_id]], settings)
    return out


def remove_document(
    session: Session, document_id: int, settings: Settings, busy: Optional[BusyBuckets] = None,
    changes: Optional[IndexWatcher] = None,
) -> None:
    """Take a document (e.g. a superseded version) out of both indexes (``busy``,
    ``changes``: see :func:`remove_passages`)."""
    session.execute(delete(DocumentBand).where(DocumentBand.document_id == document_id))
    passage_ids = list(session.scalars(select(Passage.id).where(Passage.document_id == document_id)))
    remove_passages(session, passage_ids, settings, busy, changes)


#: Passages whose band keys :func:`passage_candidates` looks up, and :func:`add_passages`
#: writes, together. A passage's candidates and rows do not depend on the others'; for a
#: document of the longest accepted (5 million characters, some 51,000 passages and 1.9
#: million band keys) the lookup held 304 MB at once and the rows 101 MB (tracemalloc). News
#: articles have a few dozen passages.
PASSAGES_AT_A_TIME = 4_096


def add_passages(
    session: Session, signed: list[tuple[int, bytes]], settings: Settings, *, replace: bool = False,
    band_keys: Optional[Mapping[int, Sequence[int]]] = None, busy: Optional[BusyBuckets] = None,
    changes: Optional[IndexWatcher] = None,
) -> None:
    """Put passages into the passage index: into its small table of recent rows (see
    :class:`RecentPassageBand` and :func:`merge_recent_bands`).

    ``replace``: some may be indexed already (a document indexed again after its
    boilerplate changed); their rows are taken out first, so that no row is in both tables.
    ``band_keys``: the keys of some passages by id, computed already (see :func:`keys_of`).
    ``busy``, ``changes``: told what is added (see :class:`BusyBuckets` and
    provenance.prefetch.IndexChanges).
    """
    if len(signed) > PASSAGES_AT_A_TIME:
        for start in range(0, len(signed), PASSAGES_AT_A_TIME):
            add_passages(session, signed[start : start + PASSAGES_AT_A_TIME], settings, replace=replace,
                         band_keys=band_keys, busy=busy, changes=changes)
        return
    rows = [(key, passage_id) for passage_id, blob in signed for key in set(keys_of(passage_id, blob, settings, band_keys))]
    if replace:
        _delete_bands(session, rows, busy, changes)
    if rows:
        insert_rows(session, RecentPassageBand.__table__, ("band_key", "passage_id"), rows, ignore_duplicates=True)
        for watcher in (busy, changes):
            if watcher is not None:
                watcher.added(rows)


#: Recent passage band rows (about 700 per document) that make a merge worth it. A merge
#: rewrites most of the big table's pages, so it costs about the same whatever it moves (3 s
#: at 20,000 documents for 0.5 or 2 million rows, timed once) and that cost grows with the
#: corpus; a batch's commit rewrites the recent pages its rows landed on, more as the recent
#: table grows. 3,000 new documents into a 56,000-document database (``bench/stages.py --db
#: DB --new 3000 --recent-bands N``, 1 and 2 million in turn, twice): merges 21.6 and 14.9 s
#: -> 10.4 and 10.8 s, commits 8.4 and 8.1 -> 9.1 and 10.6 s, the whole ingest 207.1 and
#: 186.9 -> 194.5 and 178.7 s; at 20,000 the two were even (see bench/README.md). A merge comes
#: every 2,800 documents or so. Merges per document fall as the size grows and commits cost
#: more, so the best size grows with the square root of the big table's: a fixed one is a
#: compromise.
RECENT_BANDS_MAX = 2_000_000


class Merge(NamedTuple):
    """What :func:`merge_recent_bands` found: the recent rows, and whether it moved them."""

    rows: int
    moved: bool


def merge_recent_bands(
    session: Session, at_least: Optional[int] = None, starting: Optional[Callable[[int], None]] = None,
) -> Merge:
    """Move the recent passage band rows into the big table, in key order, when there are
    ``at_least`` of them (default :data:`RECENT_BANDS_MAX`). Call it in a writer's
    transaction; readers see the rows in one table or the other, never in neither.

    ``starting`` is called with the number of rows just before they are moved: a merge took
    13-18 s at 100,000 documents, long enough for a progress display to say why it stalls."""
    at_least = RECENT_BANDS_MAX if at_least is None else at_least
    connection = session.connection()
    waiting = connection.scalar(select(func.count()).select_from(RecentPassageBand)) or 0
    if not waiting or waiting < at_least:
        return Merge(waiting, False)
    if starting is not None:
        starting(waiting)
    sqlite = connection.dialect.name == "sqlite"
    connection.exec_driver_sql(
        f"INSERT {'OR IGNORE ' if sqlite else ''}INTO {PassageBand.__tablename__} (band_key, passage_id) "
        f"SELECT band_key, passage_id FROM {RecentPassageBand.__tablename__} ORDER BY band_key, passage_id"
        + ("" if sqlite else " ON CONFLICT DO NOTHING")
    )
    connection.execute(delete(RecentPassageBand))
    return Merge(waiting, True)


@lru_cache(maxsize=4096)
def passage_band_keys(blob: bytes, sketch: SketchSettings) -> Sequence[int]:
    """Band keys of a stored passage signature, memoised: a new document's passages are
    banded when stored and again when looked up, in the same transaction."""
    return tuple(band_keys(from_blob(blob), sketch))


def keys_of(
    passage_id: int, blob: bytes, settings: Settings, known: Optional[Mapping[int, Sequence[int]]] = None,
) -> Sequence[int]:
    """A passage's band keys: from ``known`` (those prepare computed, in a worker process
    when there are several, see provenance.prepare) or else from its signature."""
    keys = known.get(passage_id) if known else None
    return keys if keys else passage_band_keys(blob, settings.passage)


def remove_passages(
    session: Session, passage_ids: list[int], settings: Settings, busy: Optional[BusyBuckets] = None,
    changes: Optional[IndexWatcher] = None,
) -> None:
    """Take passages out of the passage index (``busy``, ``changes``: told what is taken
    out, see :class:`BusyBuckets` and provenance.prefetch.IndexChanges).

    The index has no passage_id column index (see :class:`PassageBand`): each passage's
    rows are found by recomputing its band keys from its stored signature.
    """
    for batch in chunks(sorted(set(passage_ids))):
        pairs = [
            (key, row.id)
            for row in session.execute(
                select(Passage.id, Passage.signature).where(Passage.id.in_(batch), Passage.signature.is_not(None))
            )
            for key in set(passage_band_keys(row.signature, settings.passage))
        ]
        _delete_bands(session, pairs, busy, changes)


def _delete_bands(
    session: Session, pairs: list[tuple[int, int]], busy: Optional[BusyBuckets] = None,
    changes: Optional[IndexWatcher] = None,
) -> None:
    """Delete (band_key, passage_id) rows from both tables of the passage index."""
    for table in (RecentPassageBand.__table__, PassageBand.__table__):
        delete_rows(session, table, ("band_key", "passage_id"), pairs)
    for watcher in (busy, changes):
        if watcher is not None:
            watcher.removed(pairs)


def _from_both_tables(columns: str, condition: str, group_by: str = "") -> str:
    """``SELECT columns ... WHERE condition [GROUP BY group_by]`` over both tables of the
    passage index, in one statement (one snapshot, whatever a merge commits meanwhile)."""
    grouped = f" GROUP BY {group_by}" if group_by else ""
    return " UNION ALL ".join(
        f"SELECT {columns} FROM {table} WHERE {condition}{grouped}"
        for table in (PassageBand.__tablename__, RecentPassageBand.__tablename__)
    )


#: Members of a batch of passage buckets: range scans of the key alone, a row per bucket
#: and table with its members' ids joined by commas. At 100,000 documents a new document's
#: buckets hold some 7,000 members (most in the few busy buckets of common words), and a
#: row per member cost more to hand over and loop through than SQLite took to find them.
BUCKET_MEMBERS = _from_both_tables("band_key, group_concat(passage_id)", "band_key {in}", group_by="band_key")
#: How many members each of a batch of passage buckets holds, counted by SQLite without
#: handing the rows over, and only up to ``{limit}`` in each table: at 100,000 documents
#: three quarters of the rows in a new text's buckets were in the few buckets too crowded
#: to use (a one-off count over 59 new texts), and counting them whole took 10.6-16.1 ms of
#: a lookup against 5.4-6.4 ms stopped at the limit (the same buckets found crowded; one-off
#: timings of the statements alone).
_BUCKET_SIZES = "WITH k(band_key) AS ({values}) SELECT band_key, " + " + ".join(
    f"(SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {table}.band_key = k.band_key LIMIT {{limit}}))"
    for table in (PassageBand.__tablename__, RecentPassageBand.__tablename__)
) + " FROM k"
#: The members on PostgreSQL, as one index probe per key whatever the planner makes of the
#: tables' sizes, planned afresh each time (see select_in), and at most ``{limit}`` per key.
#: Asked for ``band_key = ANY(keys)`` it scanned the whole of a table whenever it judged
#: that cheaper or kept a plan made when the table was small: a new database's first 1,000
#: documents read 238 million rows in 900 such scans (a one-off count). OFFSET 0 keeps the
#: subquery from being flattened into a join that the planner could turn back into a scan.
_BUCKET_MEMBERS_POSTGRESQL = (
    "SELECT k.band_key, m.passage_id FROM unnest(CAST({array} AS BIGINT[])) AS k(band_key) CROSS JOIN LATERAL ("
    + _from_both_tables("passage_id", "band_key = k.band_key")
    + " LIMIT {limit} OFFSET 0) AS m"
)


def _bucket_members(
    session: Session, keys: list[int], limit: int, count_first: bool, busy_over: Optional[int] = None,
) -> tuple[dict[int, list[int]], set[int], Optional[set[int]]]:
    """The members (passage ids) of the buckets ``keys`` by key, empty buckets left out; the
    keys of buckets holding ``limit`` members or more that were not read whole; and, when
    counted, the keys of the buckets holding more than ``busy_over`` members but under
    ``limit``, not read either (None when not counted). PostgreSQL reads at most ``limit``
    members of each bucket; SQLite reads them all, unless ``count_first``: then it counts
    them first and reads only the buckets under ``limit`` and not over ``busy_over``."""
    if session.connection().dialect.name == "postgresql":
        sql = _BUCKET_MEMBERS_POSTGRESQL.replace("{limit}", str(int(limit)))
        members: dict[int, list[int]] = {}
        for key, passage_id in select_in(session, BUCKET_MEMBERS, keys, postgresql=sql):
            members.setdefault(key, []).append(passage_id)
        return members, set(), None
    if not count_first:
        return _joined_members(session, keys), set(), None
    full: set[int] = set()
    busy: set[int] = set()
    usable: list[int] = []
    for key, size in select_in(session, _BUCKET_SIZES.replace("{limit}", str(int(limit))), keys):
        if size >= limit:  # either table alone, or the two together, holds the limit
            full.add(key)
        elif busy_over is not None and size > busy_over:
            busy.add(key)
        elif size:
            usable.append(key)
    return _joined_members(session, usable), full, busy


def _joined_members(session: Session, keys: list[int]) -> dict[int, list[int]]:
    """Bucket members by key, from :data:`BUCKET_MEMBERS`'s joined ids (SQLite)."""
    return joined_members(select_in(session, BUCKET_MEMBERS, keys))


def joined_members(rows: Iterable[tuple[int, str]]) -> dict[int, list[int]]:
    """Bucket members by key from the rows of :data:`BUCKET_MEMBERS`: a row per bucket and
    table, its members' ids joined by commas."""
    members: dict[int, list[int]] = {}
    for key, joined in rows:
        ids = list(map(int, joined.split(",")))
        if key in members:  # in both tables
            members[key].extend(ids)
        else:
            members[key] = ids
    return members


def buckets_ahead(settings: Settings) -> str:
    """What a writer is about to read for a batch of bucket keys (``{in}``), to be read ahead
    of it (see provenance.db.readahead and Ingestor._read_ahead_once_waited): the big
    table's rows of the buckets, and the compact sketches of the members of those not busy,
    the candidates that :func:`passage_candidates` finds there. Counted, so that SQLite reads
    their pages without handing the rows over. The recent table is small and read often."""
    quiet = settings.lone_band_bucket_max or settings.bucket_cap
    return (
        f"SELECT count(*) FROM {PassagePrefilter.__tablename__} WHERE passage_id IN ("
        f"SELECT passage_id FROM {PassageBand.__tablename__} WHERE band_key IN ("
        f"SELECT band_key FROM {PassageBand.__tablename__} WHERE band_key {{in}}"
        f" GROUP BY band_key HAVING count(*) <= {int(quiet)}))"
    )


def read_buckets_ahead(ahead: ReadAhead, documents: Iterable, settings: Settings) -> None:
    """Have ``ahead`` read :func:`buckets_ahead` for each of ``documents`` (prepared), in
    order: what an ingest or a lookup of them will read."""
    statement = buckets_ahead(settings)
    for prepared in documents:
        ahead.read(statement, sorted({key for passage in prepared.passages for key in passage.band_keys}))


#: Bucket members a :class:`BusyBuckets` holds at most (8 bytes each).
BUSY_MEMBERS_MAX = 4_000_000


class BusyBuckets:
    """The members of passage buckets too busy for a lone band (see
    :func:`passage_candidates`), kept across the documents of a writer's run.

    Busy buckets are those of common words, and the same few are met again and again:
    1,000 new documents into 19,640 read 25,728 of them, 11,987 distinct, and 81% of their
    2.1 million members had been read before in the run (into 1,000: 97% of 269,519; a
    one-off count, see bench/README.md).
    Unlike a stored passage's sketch, a bucket changes as passages are stored, so the
    writer tells this what it adds to the passage index and takes out of it
    (:func:`add_passages`, :func:`remove_passages`), and it is forgotten whenever that may
    not be all: when a transaction that used it does not commit, and when anything else
    may have written since (:meth:`begin`). Only for SQLite, which says whether it did.
    """

    def __init__(self, capacity: Optional[int] = None):
        self.capacity = BUSY_MEMBERS_MAX if capacity is None else capacity
        self._members: OrderedDict[int, array] = OrderedDict()  # least recently used first
        self._held = 0
        self._seen: Optional[tuple] = None
        #: Busy buckets wanted, and how many of them were at hand (see bench/stages.py).
        self.asked = 0
        self.at_hand = 0

    def __len__(self) -> int:
        return len(self._members)

    def clear(self) -> None:
        self._members.clear()
        self._held = 0

    def begin(self, session: Session) -> None:
        """Call it as a transaction that uses it begins: everything is forgotten if the
        database may have changed since the last one :meth:`ended` (another connection
        committed, or this one wrote in between, as a merge of the passage index does)."""
        state = connection_state(session)
        if state is None or state != self._seen:
            self.clear()
        self._seen = state

    def ended(self, session: Session) -> None:
        """Call it as a transaction that used it is about to commit."""
        self._seen = connection_state(session)

    def take(self, keys: Iterable[int]) -> dict[int, array]:
        """The members of those of ``keys`` held."""
        held = {key: self._members[key] for key in keys if key in self._members}
        for key in held:
            self._members.move_to_end(key)
        return held

    def keep(self, key: int, members: list[int]) -> None:
        self.discard(key)
        self._members[key] = array("q", members)
        self._held += len(members)
        while self._held > self.capacity:
            self._held -= len(self._members.popitem(last=False)[1])

    def discard(self, key: int) -> None:
        members = self._members.pop(key, None)
        if members is not None:
            self._held -= len(members)

    def added(self, rows: Iterable[tuple[int, int]]) -> None:
        """(band_key, passage_id) rows just written to the passage index."""
        for key, passage_id in rows:
            members = self._members.get(key)
            if members is not None:
                members.append(passage_id)
                self._held += 1

    def removed(self, rows: Iterable[tuple[int, int]]) -> None:
        """(band_key, passage_id) rows just deleted from the passage index."""
        for key, passage_id in rows:
            members = self._members.get(key)
            if members is None:
                continue
            try:
                members.remove(passage_id)
            except ValueError:  # not a member
                continue
            self._held -= 1


#: The passages found in two or more of a batch of buckets (one passage's busy ones, see
#: :func:`passage_candidates`), grouped by SQLite rather than handed over row by row.
_IN_TWO_BUCKETS = (
    f"SELECT passage_id FROM ({_from_both_tables('passage_id', 'band_key {in}')}) GROUP BY passage_id HAVING count(*) > 1"
)


def passage_candidates(
    session: Session, signed: list[tuple[int, bytes]], document_id: int, settings: Settings,
    oversized: Optional[list[int]] = None, crowded: Optional[set[int]] = None, count_first: bool = False,
    band_keys: Optional[Mapping[int, Sequence[int]]] = None, busy: Optional[BusyBuckets] = None,
    at_hand: Optional[tuple[Mapping[int, list[int]], frozenset]] = None,
) -> dict[int, set[int]]:
    """For each of the document's signed passages, the passages of other documents that
    share a band with it.

    Buckets holding more than ``settings.bucket_cap`` other passages are skipped (and their
    keys appended to ``oversized``). They are found by the lookup itself; ``crowded`` (kept
    by the caller across documents) remembers them, so a crowded bucket is read at most once
    per ingest run. ``count_first``: on SQLite, count each bucket's members before reading
    them, so that a crowded bucket is never read. That pays for a single lookup, which has
    no such memory (at 101,200 documents it saved about 10 ms of 100-130 per new text,
    timed in pairs in both orders), and not for an ingest, which would count every bucket
    of every document (1,000 documents into 1,000: 3.3 s more in the bucket reads).
    ``band_keys``: as for :func:`add_passages`. ``busy``: the members of busy buckets read
    earlier in the run (see :class:`BusyBuckets`); those found now are added to it.
    ``at_hand``: the members of every one of the passages' buckets, empty ones left out, and
    the keys of those crowded, read already (see provenance.prefetch): nothing is read here.

    A passage that shares a single band with another, through a bucket holding more than
    ``settings.lone_band_bucket_max`` other passages, is not its candidate (see Settings).
    Counted first, such busy buckets are not read either: SQLite finds the members of two
    of a passage's busy buckets (59 new texts at 100,000 documents, this way and reading
    them in turn, twice: median lookup 46.2 and 36.9 ms against 50.1 and 39.6 ms).
    """
    crowded = set() if crowded is None else crowded
    if len(signed) > PASSAGES_AT_A_TIME:
        found_in_slices: dict[int, set[int]] = {}
        for start in range(0, len(signed), PASSAGES_AT_A_TIME):
            found_in_slices.update(passage_candidates(
                session, signed[start : start + PASSAGES_AT_A_TIME], document_id, settings, oversized=oversized,
                crowded=crowded, count_first=count_first, band_keys=band_keys, busy=busy, at_hand=at_hand,
            ))
        return found_in_slices
    by_key: dict[int, list[int]] = {}
    for passage_id, blob in signed:
        for key in keys_of(passage_id, blob, settings, band_keys):
            by_key.setdefault(key, []).append(passage_id)
    skipped = {key for key in by_key if key in crowded}
    # The document's own passages are dropped here rather than by joining every bucket
    # member to its passage row (one random read per candidate).
    own = {passage_id for (passage_id,) in _OWN_PASSAGES.rows(session.connection(), document=document_id)}
    # A bucket with more members than the cap and the document's own passages together is
    # crowded whichever they are: its members are not all read.
    limit = settings.bucket_cap + len(own) + 1
    lone_max = settings.lone_band_bucket_max
    # Counted, a bucket busier than the lone-band limit with the document's own passages
    # on top is not read: SQLite finds which of its members are in another busy bucket too.
    # (A passage's keys must fit one statement for that.)
    busy_over = lone_max + len(own) if lone_max and settings.passage.bands <= IN_CHUNK else None
    wanted = by_key.keys() - skipped
    if at_hand is not None:
        known, full = at_hand
        full = full & wanted
        held, counted_busy = {}, None
        members = {key: known[key] for key in wanted - full if key in known}
        busy = None  # nothing read to keep
    else:
        held = busy.take(wanted) if busy is not None else {}
        members, full, counted_busy = _bucket_members(
            session, sorted(wanted - held.keys()), limit, count_first, busy_over
        )
    crowded.update(full)
    skipped.update(full)
    members.update(held)
    read = members  # as stored, the document's own passages included: what is kept
    if own:
        members = {key: [candidate for candidate in ids if candidate not in own] for key, ids in members.items()}
    found: dict[int, set[int]] = {}
    busy_of: dict[int, set[int]] = {}  # mine -> its keys whose buckets are too busy for a lone band
    for key in counted_busy or ():
        for mine in by_key[key]:
            busy_of.setdefault(mine, set()).add(key)
    for key, candidates in members.items():
        if not candidates:  # the document's own passages alone
            continue
        if len(candidates) > settings.bucket_cap:
            crowded.add(key)
            skipped.add(key)
            if busy is not None:
                busy.discard(key)
            continue
        if lone_max and len(candidates) > lone_max:
            if busy is not None:
                busy.asked += 1
                if key in held:
                    busy.at_hand += 1
                else:
                    busy.keep(key, read[key])
            for mine in by_key[key]:
                busy_of.setdefault(mine, set()).add(key)
            continue
        for mine in by_key[key]:
            found.setdefault(mine, set()).update(candidates)
    for mine, keys in busy_of.items():
        # Through busy buckets a candidate needs a second band: a busy one, counted here, or
        # one whose bucket is not busy, which made it a candidate above.
        if len(keys) < 2:
            continue
        if counted_busy is None:
            shared = Counter(chain.from_iterable(members[key] for key in keys))
            twice = [candidate for candidate, bands in shared.items() if bands > 1]
        else:
            twice = [candidate for (candidate,) in select_in(session, _IN_TWO_BUCKETS, sorted(keys))
                     if candidate not in own]
        if twice:
            found.setdefault(mine, set()).update(twice)
    if oversized is not None:
        oversized.extend(sorted(skipped))
    return found
