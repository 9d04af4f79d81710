"""Ingest: read inputs, store each document atomically, learn boilerplate, index, match.

The only module that calls every step. Each document is stored all or nothing, several
documents per transaction: a failure rolls back its batch, the batch is stored again one
document per transaction, and the ingest goes on with the next.

Several ingests may write to one database at once (processes on one machine sharing a
SQLite file, or machines sharing PostgreSQL). Reading, normalising and signing run in
parallel; each document's store (look up its path, match it against the index, write it)
holds the database-wide writer lock, so it sees every document committed before it and
no two documents miss each other.
"""

from __future__ import annotations

import gc
import itertools
import json
import multiprocessing
import os
import random
import signal
import socket
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, Optional, Union

from sqlalchemy import Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from . import __version__, derive, index, manifest, prefetch, sketch
from .collect import fewer_collections
from .db.bulk import DriverStatement, insert_rows, select_in
from .db.models import (
    Boilerplate,
    BoilerplateDocument,
    Citation,
    Document,
    IngestRun,
    Passage,
    PassageBand,
    PassagePrefilter,
    RecentPassageBand,
)
from .db.readahead import Clocks, ReadAhead, clocks, waited_on_disk
from .db.session import (
    analyse_grown_table, is_transient, is_unique_violation, refresh_moved_tables, refresh_statistics, session_scope,
    write_scope,
)
from .errors import InputError, ProvenanceError
from .prepare import (
    PreparedDocument, PreparedPassage, content_hash, content_shingles, document_shingles, document_signature,
    passage_words, prepare,
)
from .reader import DEFAULT_MAX_BYTES, STDIN, InputFile, RawDocument, discover, document_path, read
from .settings import Settings
from .cluster import UnionFind
from .sketch import estimate_jaccard, from_blob, to_blob


@dataclass
class IngestSummary:
    """What one run did; ``problems`` holds one line per skipped or failed input."""

    run_id: int
    files_seen: int = 0
    documents_added: int = 0
    versions_added: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    derivations: int = 0
    #: Derivations dropped since a document published before their source became the earliest
    #: or closest source of the same text (an archive ingested newest first).
    derivations_retired: int = 0
    boilerplate_learned: int = 0
    #: Documents shorter than the shingle size: signed as one shingle of all their words.
    short_documents: int = 0
    #: LSH buckets skipped as over-full (a template or boilerplate signal).
    oversized_buckets: int = 0
    problems: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: Wall seconds of the whole run (reading, signing, storing, statistics).
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def absorb(self, other: "IngestSummary") -> None:
        """Add the counts of ``other`` (one document's committed attempt) to these."""
        for name, value in other.__dict__.items():
            if name != "run_id" and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, getattr(self, name) + value)


#: Events reported while ingesting: ("start", files, bytes) once, ("file", path) before each
#: input, ("read", bytes) as input is consumed (a file, or a JSONL line), ("document", path,
#: outcome) after each stored document, ("problem", message) for each skipped input, and
#: ("merge", rows) and ("merged", rows) around a merge of the passage index's recent rows.
EventHandler = Callable[..., None]


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


#: Statements every new document runs, built once and sent to the driver (see DriverStatement
#: and provenance.index).
_LATEST_VERSION = DriverStatement(select(Document.id, Document.content_hash, Document.version).where(
    Document.path == bindparam("path"), Document.is_latest.is_(True)
))
_STORED_HASHES = select(Document.path, Document.content_hash).where(
    Document.path.in_(bindparam("paths", expanding=True)), Document.is_latest.is_(True)
)
_INSERT_DOCUMENT = DriverStatement(insert(Document.__table__).returning(Document.__table__.c.id), column_keys=(
    "path", "version", "previous_version_id", "is_latest", "source", "external_id", "url", "title", "format",
    "size_bytes", "encoding", "content_hash", "published_at", "ingested_at", "run_id", "text", "word_count",
    "content_word_count",
))
_PASSAGE_COLUMNS = ("document_id", "seq", "block", "start_offset", "end_offset", "key_hash", "word_count",
                    "content_word_count", "signature")
_CITATION_COLUMNS = ("document_id", "agency", "text", "start_offset", "end_offset")
_PASSAGE_IDS = DriverStatement(select(Passage.seq, Passage.id).where(Passage.document_id == bindparam("document")))
#: Latest documents holding a passage key, for :meth:`Ingestor._recurs_independently`.
_DOCUMENTS_WITH_KEY = DriverStatement(
    select(Document.id, Document.signature, Document.content_hash)
    .join(Passage, Passage.document_id == Document.id)
    .where(Passage.key_hash == bindparam("key"), Document.is_latest.is_(True))
    .distinct()
    .order_by(Document.id)
    .limit(256)
)
_SIGN_DOCUMENT = DriverStatement(
    update(Document.__table__)
    .where(Document.__table__.c.id == bindparam("document"))
    .values(signature=bindparam("signature"), content_word_count=bindparam("content_word_count"))
)
#: The library's entries for a document's passage keys, and how many distinct contents (latest
#: versions) hold each key: sent to the driver (see select_in), as an expanding IN list is
#: rendered again by SQLAlchemy for every execution.
_LIBRARY_ENTRIES = f"SELECT key_hash, id, status FROM {Boilerplate.__tablename__} WHERE key_hash {{in}}"
_CONTENTS_HOLDING = (
    f"SELECT p.key_hash, count(DISTINCT d.content_hash) FROM {Passage.__tablename__} AS p"
    f" JOIN {Document.__tablename__} AS d ON d.id = p.document_id"
    " WHERE p.key_hash {in} AND d.is_latest GROUP BY p.key_hash"
)

#: Statements that tag a new document's passages with boilerplate already in the library,
#: built once and sent as executemany: most documents carry a site's chrome, and one
#: statement per line and table was a tenth of the ingest time.
_TAG_PASSAGE = (
    update(Passage.__table__)
    .where(Passage.__table__.c.id == bindparam("passage"))
    .values(boilerplate_id=bindparam("entry"))
)
_SEEN_IN = insert(BoilerplateDocument.__table__).values(
    boilerplate_id=bindparam("entry"), document_id=bindparam("document"), occurrences=bindparam("occurrences")
)
_COUNT_SEEN = (
    update(Boilerplate.__table__)
    .where(Boilerplate.__table__.c.id == bindparam("entry"))
    .values(
        document_count=Boilerplate.__table__.c.document_count + 1,
        occurrence_count=Boilerplate.__table__.c.occurrence_count + bindparam("occurrences"),
    )
)


def _tag_own_passages(session: Session, document_id: int, tags: list[tuple[int, int]]) -> None:
    """Tag a new document's passages, given as (boilerplate id, passage id), and count
    the document once per entry."""
    if not tags:
        return
    connection = session.connection()
    connection.execute(_TAG_PASSAGE, [{"entry": entry, "passage": passage} for entry, passage in tags])
    seen = [
        {"entry": entry, "document": document_id, "occurrences": occurrences}
        for entry, occurrences in sorted(Counter(entry for entry, _ in tags).items())
    ]
    connection.execute(_SEEN_IN, seen)
    connection.execute(_COUNT_SEEN, seen)


#: Attempts at one document's transaction when it meets a deadlock, a serialization
#: failure or "database is locked"; waits grow from RETRY_DELAY seconds, with jitter.
STORE_ATTEMPTS = 5
RETRY_DELAY = 0.05


class Ingestor:
    """Stores documents into one database under its settings manifest."""

    def __init__(self, engine: Engine, settings: Optional[Settings] = None):
        self.engine = engine
        with session_scope(engine) as session:
            stored = manifest.load(session)
        if stored is not None and settings is None:
            self.settings = stored
        else:  # first use, or a request to check: under the writer lock, so it is recorded once
            with write_scope(engine) as session:
                self.settings = manifest.ensure(session, settings)
        self.policy = self.settings.match_policy()
        #: Passage LSH buckets found over the cap, remembered so each is read only once.
        self.crowded_buckets: set[int] = set()
        self.sketches = derive.SketchCache()
        #: Busy passage buckets' members, kept across documents (SQLite only, see the class).
        self.busy_buckets = index.BusyBuckets() if engine.dialect.name == "sqlite" else None
        self._statistics_due = BATCH_DOCUMENTS
        #: Reads the passage buckets of documents to come on connections of its own, once a
        #: document's storing has waited on the disk (see :meth:`_read_ahead_once_waited`),
        #: until the end of :meth:`ingest_items`.
        self._read_ahead: Optional[ReadAhead] = None
        #: What this writer added to the passage index, to complete the buckets that worker
        #: processes read (see provenance.prefetch); during a run with workers on SQLite.
        self._changes: Optional[prefetch.IndexChanges] = None

    # -- the boilerplate library, by hand ----------------------------------------------
    def mark(self, text: str, status: str) -> dict:
        """Mark text as ``boilerplate`` or ``content`` and correct every document it is in."""
        if status not in ("boilerplate", "content"):
            raise ValueError(f"status must be 'boilerplate' or 'content', not {status!r}")
        if not text.strip():
            raise ProvenanceError("give the text to mark, e.g. provenance boilerplate add \"Next Article\"")
        key = boilerplate_key(text)
        summary = IngestSummary(run_id=0)
        with self._writing() as session:
            entry = session.scalar(select(Boilerplate).where(Boilerplate.key_hash == key))
            if entry is None:
                entry = Boilerplate(key_hash=key, text=text.strip(), status=status, origin="user",
                                    document_count=0, occurrence_count=0, created_at=utcnow())
                session.add(entry)
            else:
                entry.status, entry.origin = status, "user"
            session.flush()
            if status == "boilerplate":
                affected = self._tag_key(session, entry.id, key)
                for document_id in sorted(affected):
                    self._refresh(session, document_id, summary)
            else:
                affected = self._untag_key(session, entry.id)
            return {"text": entry.text, "status": status, "documents_changed": len(affected)}

    def unmark(self, text: str) -> dict:
        """Forget a hand-made mark; learning decides again from the next ingest on."""
        key = boilerplate_key(text)
        with self._writing() as session:
            entry = session.scalar(select(Boilerplate).where(Boilerplate.key_hash == key))
            if entry is None:
                raise ProvenanceError(f"{text!r} is not in the boilerplate library; see `provenance boilerplate list`")
            affected = self._untag_key(session, entry.id)
            session.execute(delete(Boilerplate).where(Boilerplate.id == entry.id))
            return {"text": entry.text, "status": "removed", "documents_changed": len(affected)}

    def _untag_key(self, session: Session, boilerplate_id: int) -> set[int]:
        """Turn passages tagged with an entry back into content and re-match their documents."""
        untagged = session.execute(
            update(Passage).where(Passage.boilerplate_id == boilerplate_id).values(boilerplate_id=None)
            .returning(Passage.document_id)
        ).scalars().all()
        session.execute(delete(BoilerplateDocument).where(BoilerplateDocument.boilerplate_id == boilerplate_id))
        session.execute(update(Boilerplate).where(Boilerplate.id == boilerplate_id).values(document_count=0, occurrence_count=0))
        summary = IngestSummary(run_id=0)
        for document_id in sorted(set(untagged)):
            text = session.scalar(select(Document.text).where(Document.id == document_id))
            rows = session.execute(
                select(Passage.id, Passage.start_offset, Passage.end_offset).where(Passage.document_id == document_id)
            ).all()
            words = {row.id: passage_words(text[row.start_offset : row.end_offset], self.settings) for row in rows}
            self._index_document(session, document_id, words, summary, rematch=True)
        return set(untagged)

    # -- runs -------------------------------------------------------------------------
    def ingest_paths(
        self,
        paths: list[str],
        *,
        source: Optional[str] = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        on_event: EventHandler = lambda *args: None,
        arguments: str = "",
        workers: int = 1,
    ) -> IngestSummary:
        items = list(discover(paths))
        files = [item for item in items if isinstance(item, InputFile)]
        on_event("start", len(files), sum(_size(item) for item in files))
        return self.ingest_items(items, source=source, max_bytes=max_bytes, on_event=on_event, arguments=arguments, workers=workers)

    def ingest_items(
        self,
        items: Iterable[Union[InputFile, InputError]],
        *,
        source: Optional[str] = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        on_event: EventHandler = lambda *args: None,
        arguments: str = "",
        workers: int = 1,
    ) -> IngestSummary:
        """Read and sign files (in ``workers`` processes when > 1), then store them in
        batches (:meth:`store_documents`), always in input order so that results never
        depend on the number of workers."""
        started = time.monotonic()
        summary = IngestSummary(run_id=self._start_run(arguments))
        self._statistics_due = BATCH_DOCUMENTS  # see _refresh_statistics_as_grown
        files = []
        for item in items:
            if isinstance(item, InputError):
                self._problem(summary, item, on_event, hard=False)
            else:
                files.append(item)
        if any(item.path == STDIN for item in files):
            workers = 1  # standard input can only be read here
        pool = (self._start_workers(workers)
                if workers > 1 and (len(files) > 1 or any(item.format == "jsonl" for item in files)) else None)
        stop = StopOnCtrlC()
        finished = False
        batch = _Batch()
        try:
            with stop, fewer_collections():
                for item, outcome in prepared_stream(files, source=source, max_bytes=max_bytes, settings=self.settings,
                                                     pool=pool, workers=workers, stored=self._stored_hashes):
                    if stop.requested:  # between documents: each is committed or not at all
                        break
                    if outcome is None:  # the file's first outcome follows
                        summary.files_seen += 1
                        on_event("file", item.path)
                        if item.format != "jsonl":
                            on_event("read", _size(item))
                        continue
                    if item.format == "jsonl" and not isinstance(outcome, InputError):
                        on_event("read", outcome.raw.size_bytes + 1)
                    if isinstance(outcome, InputError):
                        self._problem(summary, outcome, on_event, hard=outcome.reason.startswith(PREPARE_FAILED))
                    elif batch.add(outcome):
                        self.store_documents(batch.take(), summary, on_event, stop)
                if not stop.requested:
                    self.store_documents(batch.take(), summary, on_event, stop)
                finished = True
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            self._stop_reading_ahead()
            if pool:
                pool.terminate()
            self._changes = None
            summary.interrupted = summary.interrupted or stop.requested
            if summary.interrupted:
                # A KeyboardInterrupt raised inside a statement (an executemany) leaves the
                # sqlite3 cursor alive in the traceback's reference cycle, and with it the
                # write lock of its closed connection: collect it before recording the run.
                gc.collect()
            self._finish_run(summary, "interrupted" if summary.interrupted else "completed" if finished else "failed")
        if summary.documents_added or summary.versions_added:
            refresh_statistics(self.engine)
        summary.seconds = round(time.monotonic() - started, 3)
        return summary

    def _start_workers(self, workers: int):
        """A pool of ``workers`` processes that prepare documents and, on a SQLite file, read
        their passage buckets too (see provenance.prefetch)."""
        context = multiprocessing.get_context("spawn")
        path = prefetch.sqlite_file(self.engine)
        if path is None:
            return context.Pool(workers, initializer=_ignore_ctrl_c)
        commits = context.Value("q", 0)
        self._changes = prefetch.IndexChanges(commits)
        try:
            with self._writing():  # the state the next transaction is compared with (IndexChanges.begin)
                pass
        except Exception:  # a busy database: the first snapshots are not used
            pass
        return context.Pool(workers, initializer=_start_worker,
                            initargs=(path, commits, self.settings, WORKER_NICENESS))

    def ingest_document(self, raw: RawDocument, summary: IngestSummary, on_event: EventHandler = lambda *a: None) -> str:
        """Prepare and store one document; returns the outcome word."""
        prepared = _prepare_or_error(raw, self.settings)
        if isinstance(prepared, InputError):
            self._problem(summary, prepared, on_event, hard=True)
            return "failed"
        return self.store_document(prepared, summary, on_event)

    def store_documents(
        self, batch: list[PreparedDocument], summary: IngestSummary, on_event: EventHandler = lambda *a: None,
        stop: Optional["StopOnCtrlC"] = None,
    ) -> None:
        """Store prepared documents in input order, several in one transaction.

        One commit per batch instead of per document: a commit writes every index page the
        transaction changed, and the documents of a batch change many of the same pages. If
        any document fails, or the batch cannot commit (a busy database, a lost connection),
        the whole batch is rolled back and each of its documents is stored in a transaction
        of its own (:meth:`store_document`, which reports one that fails again), so each
        document is still all or nothing. No savepoint per document: SQLite copies every
        page a savepoint first changes to a sub-journal, which at 10,000 documents doubled
        the cost of inserting a document's passage bands. A stop request ends the batch
        early; what it stored is committed. After a batch the passage index's recent rows
        are merged into its big table if there are enough (:meth:`_merge_recent_bands`).
        """
        self._store_batch(batch, summary, on_event, stop)
        if stop is None or not stop.requested:
            self._merge_recent_bands(on_event)
            self._refresh_statistics_as_grown(summary)

    def _refresh_statistics_as_grown(self, summary: IngestSummary) -> None:
        """On SQLite, each time the documents stored in this run double (from a batch's
        worth), let the planner see the tables' sizes (:func:`refresh_statistics`, a no-op
        for tables that have not grown much). A run also does so at its end, but a long run
        into a database analysed when it was small (a first ingest of one file) was planned
        for that size meanwhile: 1,500 documents after one took 623 s against 18 s into a new
        database, reading every stored passage once for each document's candidates."""
        stored = summary.documents_added + summary.versions_added
        if stored < self._statistics_due or self.engine.dialect.name != "sqlite":
            return
        refresh_statistics(self.engine)
        self._statistics_due = 2 * stored

    def _store_batch(
        self, batch: list[PreparedDocument], summary: IngestSummary, on_event: EventHandler,
        stop: Optional["StopOnCtrlC"],
    ) -> None:
        if len(batch) <= 1:
            for prepared in batch:
                self.store_document(prepared, summary, on_event)
            return
        stored: list[tuple[PreparedDocument, str, IngestSummary]] = []
        if self._read_ahead is not None:
            self._read_ahead_buckets(batch)
        try:
            with self._writing() as session:
                for position, prepared in enumerate(batch):
                    if stop is not None and stop.requested:
                        break
                    counts = IngestSummary(run_id=summary.run_id)  # kept only if the batch commits
                    since = clocks()
                    stored.append((prepared, self._store(session, prepared, counts), counts))
                    self._read_ahead_once_waited(session, since, batch[position + 1:])
        except KeyboardInterrupt:
            raise
        except Exception:
            for prepared in batch:
                if stop is not None and stop.requested:
                    break
                self.store_document(prepared, summary, on_event)
            return
        for prepared, outcome, counts in stored:
            summary.absorb(counts)
            on_event("document", prepared.raw.path, outcome)

    def _read_ahead_once_waited(self, session: Session, since: Clocks, coming: list[PreparedDocument]) -> None:
        """Start reading ahead if storing a document since ``since`` (:func:`clocks`) waited on
        the disk (:func:`waited_on_disk`), beginning with the documents ``coming`` next.

        A database the page cache does not hold (a big archive left alone for a while, or
        after a reboot) is read a page at a time, each document's some 650 bucket keys
        landing all over the passage index: 200 documents into 100,000 took 22.6-25.3 s from
        a cold cache against 6.4-8.1 s warm, and 15.7-17.5 s cold with the buckets and their
        candidates' sketches read ahead (one-off, see bench/README.md). Read first by other
        connections, several at once, the pages are in the page cache when the writer gets
        there. From a warm cache that would only read them twice, hence the wait."""
        if self._read_ahead is None and waited_on_disk(since):
            self._read_ahead = ReadAhead(session)
            self._read_ahead_buckets(coming)

    def _read_ahead_buckets(self, batch: list[PreparedDocument]) -> None:
        """Have the buckets of those of ``batch`` that no worker read (see provenance.prefetch)
        read ahead: a worker's own reads have just brought the others' pages into the page cache."""
        if self._read_ahead.active:  # a SQLite file (PostgreSQL waits on its server)
            unread = [prepared for prepared in batch if prepared.buckets is None]
            index.read_buckets_ahead(self._read_ahead, unread, self.settings)

    def _stop_reading_ahead(self) -> None:
        if self._read_ahead is not None:
            self._read_ahead.close()
            self._read_ahead = None

    def _merge_recent_bands(self, on_event: EventHandler = lambda *a: None) -> None:
        """Between batches, in a transaction of its own: move the passage index's recent
        rows into its big table once there are enough (see index.merge_recent_bands). A busy
        database only postpones it to the next batch. PostgreSQL's planner is told the
        tables' sizes after a merge (see refresh_moved_tables) and as the recent rows grow
        (see analyse_grown_table). A merge is announced ("merge", rows) and its end
        ("merged", rows), whether it committed or not."""
        started: list[int] = []

        def starting(rows: int) -> None:
            started.append(rows)
            on_event("merge", rows)

        try:
            try:
                with self._writing() as session:  # moves rows, changes no bucket: see BusyBuckets
                    merge = index.merge_recent_bands(session, starting=starting)
            except Exception as error:
                if not is_transient(error):
                    raise
                return
            if merge.moved:
                refresh_moved_tables(self.engine, RecentPassageBand.__tablename__, PassageBand.__tablename__)
            else:
                analyse_grown_table(self.engine, RecentPassageBand.__tablename__, merge.rows)
        finally:
            if started:
                on_event("merged", started[0])

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A writer's transaction (:func:`write_scope`) for whatever changes documents or
        the passage index: what was learned from the database in it (passage sketches, see
        derive.SketchCache; busy and crowded buckets) is forgotten when it does not commit."""
        watchers = [watcher for watcher in (self.busy_buckets, self._changes) if watcher is not None]
        try:
            with write_scope(self.engine) as session:
                self.sketches.begin(session)
                for watcher in watchers:
                    watcher.begin(session)
                yield session
                for watcher in watchers:
                    watcher.ended(session)
        except BaseException:
            self.sketches.clear()
            self.crowded_buckets.clear()
            if self.busy_buckets is not None:
                self.busy_buckets.clear()
            if self._changes is not None:
                self._changes.rolled_back()
            raise
        if self._changes is not None:
            self._changes.committed()

    def store_document(self, prepared: PreparedDocument, summary: IngestSummary, on_event: EventHandler = lambda *a: None) -> str:
        """Store one prepared document in its own transaction; returns the outcome word.

        The transaction holds the writer lock from its start (see :func:`write_scope`). It is
        run again from scratch after a transient error (deadlock, serialization failure,
        "database is locked"); a unique-key collision with the same content at the same
        path means another ingest stored this document first: "unchanged", not a failure.
        """
        for attempt in range(1, STORE_ATTEMPTS + 1):
            counts = IngestSummary(run_id=summary.run_id)  # kept only if the attempt commits
            try:
                with self._writing() as session:
                    outcome = self._store(session, prepared, counts)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # one document's failure must not stop the run
                if is_unique_violation(error) and self._stored_by_another(prepared):
                    summary.unchanged += 1
                    outcome = "unchanged"
                    break
                if attempt < STORE_ATTEMPTS and (is_transient(error) or is_unique_violation(error)):
                    time.sleep(RETRY_DELAY * 2 ** (attempt - 1) * (1 + random.random()))
                    continue
                reason = f"could not be stored ({type(error).__name__}: {_first_line(error)})"
                if attempt > 1:
                    reason += f" after {attempt} attempts"
                self._problem(summary, InputError(prepared.raw.path, reason), on_event, hard=True)
                return "failed"
            summary.absorb(counts)
            break
        on_event("document", prepared.raw.path, outcome)
        return outcome

    def _stored_by_another(self, prepared: PreparedDocument) -> bool:
        """True when the latest version at the document's path has its content."""
        try:
            with session_scope(self.engine) as session:
                stored = session.scalar(
                    select(Document.content_hash)
                    .where(Document.path == prepared.raw.path, Document.is_latest.is_(True))
                )
        except Exception:  # the caller reports the original error
            return False
        return stored == prepared.content_hash

    def _problem(self, summary: IngestSummary, error: InputError, on_event: EventHandler, hard: bool) -> None:
        if hard:
            summary.failed += 1
        else:
            summary.skipped += 1
        summary.problems.append(str(error))
        on_event("problem", str(error))

    def _start_run(self, arguments: str) -> int:
        with write_scope(self.engine) as session:
            close_abandoned_runs(session)
            run = IngestRun(
                started_at=utcnow(),
                status="running",
                settings_fingerprint=self.settings.fingerprint(),
                tool_version=__version__,
                arguments=arguments,
                host=socket.gethostname(),
                pid=os.getpid(),
            )
            session.add(run)
            session.flush()
            return run.id

    def _finish_run(self, summary: IngestSummary, status: str) -> None:
        with write_scope(self.engine) as session:
            session.execute(
                update(IngestRun)
                .where(IngestRun.id == summary.run_id)
                .values(
                    finished_at=utcnow(),
                    status=status,
                    files_seen=summary.files_seen,
                    documents_added=summary.documents_added,
                    versions_added=summary.versions_added,
                    unchanged=summary.unchanged,
                    skipped=summary.skipped,
                    failed=summary.failed,
                )
            )

    # -- one document -----------------------------------------------------------------
    def _stored_hashes(self, paths: list[str]) -> dict[str, str]:
        """The content hash of the latest version stored under each of ``paths`` (see
        :class:`Unchanged`), read on a connection of its own between the writer's batches
        (or ahead of them, for units sent to workers): a hash read too early only costs a
        document its preparation, since the writer compares again."""
        if not paths:
            return {}
        with self.engine.connect() as connection:
            return dict(connection.execute(_STORED_HASHES, {"paths": paths}).all())

    def _store(self, session: Session, prepared: Union[PreparedDocument, Unchanged], summary: IngestSummary) -> str:
        raw = prepared.raw
        connection = session.connection()
        latest = _LATEST_VERSION.first(connection, path=raw.path)
        if latest is not None and latest.content_hash == prepared.content_hash:
            summary.unchanged += 1
            return "unchanged"
        if isinstance(prepared, Unchanged):  # stored anew since it was read: prepared now
            prepared = prepare(raw, self.settings, prepared.content_hash)
        if latest is not None:
            session.execute(update(Document).where(Document.id == latest.id).values(is_latest=False))
            index.remove_document(session, latest.id, self.settings, self.busy_buckets, self._changes)
        document_id = _INSERT_DOCUMENT.scalar(
            connection,
            path=raw.path,
            version=latest.version + 1 if latest else 1,
            previous_version_id=latest.id if latest else None,
            is_latest=True,
            source=raw.source,
            external_id=raw.external_id,
            url=raw.url,
            title=raw.title,
            format=raw.format,
            size_bytes=raw.size_bytes,
            encoding=raw.encoding,
            content_hash=prepared.content_hash,
            published_at=raw.published_at,
            ingested_at=utcnow(),
            run_id=summary.run_id,
            text=raw.text,
            word_count=prepared.word_count,
            content_word_count=0,  # counted as it is signed (_index_document)
        )
        passage_ids = self._insert_passages(session, document_id, prepared)
        affected = self._tag_boilerplate(session, document_id, prepared, passage_ids, summary)
        insert_rows(session, Citation.__table__, _CITATION_COLUMNS, [
            (document_id, citation.agency, citation.text, citation.start, citation.end)
            for citation in prepared.citations
        ])
        by_id = {passage_ids[p.seq]: p for p in prepared.passages}
        self._index_document(session, document_id, {pid: p.words for pid, p in by_id.items()}, summary,
                             rematch=True, new=True, prepared=by_id, buckets=prepared.buckets)
        for other_id in sorted(affected - {document_id}):
            self._refresh(session, other_id, summary)
        if prepared.word_count < self.settings.document.shingle_size:
            summary.short_documents += 1
        if latest is not None:
            summary.versions_added += 1
            return "new version"
        summary.documents_added += 1
        return "added"

    def _insert_passages(self, session: Session, document_id: int, prepared: PreparedDocument) -> dict[int, int]:
        if not prepared.passages:
            return {}
        rows = [
            (document_id, p.seq, p.block, p.start, p.end, p.key_hash, len(p.words), p.content_word_count,
             to_blob(p.signature) if p.signature is not None else None)
            for p in prepared.passages
        ]
        # One executemany, then the ids by (document, seq): RETURNING in parameter order
        # would make SQLAlchemy send the rows one statement at a time. Both inserts go
        # through insert_rows, without SQLAlchemy's per-row parameter processing.
        insert_rows(session, Passage.__table__, _PASSAGE_COLUMNS, rows)
        ids = dict(_PASSAGE_IDS.rows(session.connection(), document=document_id))
        insert_rows(session, PassagePrefilter.__table__, ("passage_id", "content_word_count", "low_bytes"), [
            (ids[p.seq], p.content_word_count, sketch.low_bytes(p.signature).tobytes())
            for p in prepared.passages if p.signature is not None
        ])
        return ids

    # -- boilerplate ------------------------------------------------------------------
    def _tag_boilerplate(
        self,
        session: Session,
        document_id: int,
        prepared: PreparedDocument,
        passage_ids: dict[int, int],
        summary: IngestSummary,
    ) -> set[int]:
        """Tag this document's boilerplate, promoting recurring passages to the library.

        Returns the ids of earlier documents whose passages were newly tagged: their
        signatures and matches must be corrected.
        """
        settings = self.settings
        eligible = [p for p in prepared.passages if 0 < len(p.words) <= settings.boilerplate_max_words]
        if not eligible:
            return set()
        keys = sorted({p.key_hash for p in eligible})
        library = {key: (entry_id, status) for key, entry_id, status in select_in(session, _LIBRARY_ENTRIES, keys)}
        repeats = Counter(p.key_hash for p in eligible)
        unknown = [k for k in keys if k not in library]
        recurring: set[int] = set()
        if unknown:
            counts = select_in(session, _CONTENTS_HOLDING, unknown)
            crowded = [key for key, count in counts if count >= settings.boilerplate_min_documents]
            if crowded:
                known = {k for k, (_, status) in library.items() if status == "boilerplate"}
                mine = document_signature(
                    [p.words for p in prepared.passages if p.key_hash not in known and repeats[p.key_hash] < 2],
                    settings,
                )
                recurring = {
                    key for key in crowded if self._recurs_independently(session, key, document_id, mine)
                }
        affected: set[int] = set()
        first_text = {}
        for p in eligible:
            first_text.setdefault(p.key_hash, prepared.raw.text[p.start : p.end])
        known = {key: entry_id for key, (entry_id, status) in library.items() if status == "boilerplate"}
        if known:
            _tag_own_passages(session, document_id, [
                (known[p.key_hash], passage_ids[p.seq]) for p in prepared.passages if p.key_hash in known
            ])
        for key in keys:
            if key in library:
                continue
            origin = None
            if key in recurring:
                origin = "corpus"
            elif repeats[key] > 1:
                origin = "repeated"
            if origin is None:
                continue
            boilerplate_id = session.execute(
                insert(Boilerplate)
                .values(key_hash=key, text=first_text[key], status="boilerplate", origin=origin,
                        document_count=0, occurrence_count=0, created_at=utcnow())
                .returning(Boilerplate.id)
            ).scalar_one()
            summary.boilerplate_learned += 1
            affected |= self._tag_key(session, boilerplate_id, key)
        return affected

    def _recurs_independently(self, session: Session, key: int, document_id: int, mine) -> bool:
        """True when ``key`` occurs in enough *unrelated* documents to be page chrome.

        Copies of one article (same content, or similar signatures) count once, so an
        article carried by three sites does not turn its own short lines into boilerplate.
        """
        settings = self.settings
        rows = _DOCUMENTS_WITH_KEY.rows(session.connection(), key=key)
        signatures = {
            row.id: (mine if row.id == document_id else (from_blob(row.signature) if row.signature else None))
            for row in rows
        }
        forest = UnionFind()
        for index_a, a in enumerate(rows):
            forest.find(a.id)
            for b in rows[:index_a]:
                same = a.content_hash == b.content_hash
                if not same and signatures[a.id] is not None and signatures[b.id] is not None:
                    same = estimate_jaccard(signatures[a.id], signatures[b.id]) >= settings.boilerplate_family_similarity
                if same:
                    forest.union(a.id, b.id)
        return len(forest.groups()) >= settings.boilerplate_min_documents

    def _tag_key(self, session: Session, boilerplate_id: int, key: int) -> set[int]:
        """Tag every untagged passage with ``key`` (a newly learned entry) and record where
        it was seen; returns the documents tagged."""
        condition = [Passage.key_hash == key, Passage.boilerplate_id.is_(None)]
        tagged = session.execute(
            update(Passage).where(*condition).values(boilerplate_id=boilerplate_id)
            .execution_options(synchronize_session=False)  # no Passage objects are loaded here
            .returning(Passage.document_id)
        ).scalars().all()
        for document_id, occurrences in sorted(Counter(tagged).items()):
            session.execute(
                insert(BoilerplateDocument).values(
                    boilerplate_id=boilerplate_id, document_id=document_id, occurrences=occurrences
                )
            )
        if tagged:
            session.execute(
                update(Boilerplate).where(Boilerplate.id == boilerplate_id).values(
                    document_count=Boilerplate.document_count + len(set(tagged)),
                    occurrence_count=Boilerplate.occurrence_count + len(tagged),
                )
            )
        return set(tagged)

    # -- indexing and matching --------------------------------------------------------
    def _index_document(
        self,
        session: Session,
        document_id: int,
        words_by_passage: dict[int, list[str]],
        summary: IngestSummary,
        rematch: bool = False,
        new: bool = False,
        prepared: Optional[dict[int, PreparedPassage]] = None,
        buckets: Optional[prefetch.BucketSnapshot] = None,
    ) -> None:
        """(Re)sign a document from its content passages, find its duplicates and sources.

        ``new``: the document was just stored, so none of its passages is indexed yet.
        ``prepared``: its passages by id as prepare made them, with the token hashes and band
        keys computed there (see :class:`PreparedPassage`). ``buckets``: their buckets as a
        worker read them (see provenance.prefetch)."""
        connection = session.connection()
        content = derive.CONTENT_PASSAGES.rows(connection, document=document_id)
        content_words_lists = [words_by_passage[row.id] for row in content]
        if prepared is not None:
            shingles = content_shingles([prepared[row.id] for row in content], self.settings)
            keys = {passage_id: passage.band_keys for passage_id, passage in prepared.items()}
        else:
            shingles, keys = document_shingles(content_words_lists, self.settings), None
        signature = sketch.signature(shingles, self.settings.document) if len(shingles) else None
        _SIGN_DOCUMENT.run(
            connection, document=document_id, signature=to_blob(signature) if signature is not None else None,
            content_word_count=sum(len(w) for w in content_words_lists),
        )
        found = index.index_document(session, document_id, signature, self.settings, shingles=shingles)
        summary.exact_duplicates += found.exact
        summary.near_duplicates += found.near
        summary.oversized_buckets += found.oversized_buckets
        signed = [(row.id, row.signature) for row in content if row.signature is not None]
        # Matched before its passages are indexed: the buckets then hold only other documents'
        # passages, and a new document's own band rows (some 600) are not read back.
        if rematch:
            at_hand = None
            if buckets is not None and self._changes is not None and keys is not None:
                at_hand = self._changes.members(buckets, [key for each in keys.values() for key in each])
                if at_hand is not None:
                    self.sketches.offer(buckets.sketch_ids, buckets.sketch_word_counts, buckets.sketch_low_bytes)
            found = derive.derive(
                session, document_id, signed, words_by_passage, self.settings, crowded=self.crowded_buckets,
                sketches=self.sketches, band_keys=keys, busy=self.busy_buckets, at_hand=at_hand,
            )
            summary.derivations += found.derivations
            summary.derivations_retired += found.retired
        index.add_passages(session, signed, self.settings, replace=not new, band_keys=keys, busy=self.busy_buckets,
                           changes=self._changes)

    def _refresh(self, session: Session, document_id: int, summary: IngestSummary) -> None:
        """Correct an earlier document after some of its passages became boilerplate.

        Works from the stored text: no file is read again.
        """
        text = session.scalar(select(Document.text).where(Document.id == document_id))
        rows = session.execute(
            select(Passage.id, Passage.start_offset, Passage.end_offset, Passage.boilerplate_id)
            .where(Passage.document_id == document_id)
        ).all()
        tagged = [row.id for row in rows if row.boilerplate_id is not None]
        index.remove_passages(session, tagged, self.settings, self.busy_buckets, self._changes)
        derive.drop_matches_of(session, tagged)
        words_by_passage = {row.id: passage_words(text[row.start_offset : row.end_offset], self.settings) for row in rows}
        self._index_document(session, document_id, words_by_passage, summary)
        derive.recompute_document(session, document_id, self.settings)


def close_abandoned_runs(session: Session) -> list[int]:
    """Mark 'interrupted' the runs still 'running' whose process on this host is gone
    (killed with kill -9, or the machine stopped), with the documents they did store.

    Runs of other hosts, and of a live process (possibly a reused pid), are left alone.
    Returns the ids of the runs closed.
    """
    rows = session.execute(
        select(IngestRun.id, IngestRun.pid)
        .where(IngestRun.status == "running", IngestRun.host == socket.gethostname(), IngestRun.pid.is_not(None))
    ).all()
    closed = [row.id for row in rows if not _process_alive(row.pid)]
    for run_id in closed:
        counts = dict(session.execute(
            select(Document.version > 1, func.count()).where(Document.run_id == run_id).group_by(Document.version > 1)
        ).all())
        session.execute(
            update(IngestRun).where(IngestRun.id == run_id)
            .values(status="interrupted", documents_added=counts.get(False, 0), versions_added=counts.get(True, 0))
        )
    return closed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    try:  # Linux: a killed process its parent has not reaped yet is a zombie, not alive
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


#: A batch stored in one transaction (see :meth:`Ingestor.store_documents`) ends at this
#: many documents, this much text, or this many seconds after its first document arrived,
#: whichever comes first: enough to share index-page writes, short enough that the writer
#: lock is held for a few seconds and a killed ingest loses little work. 128 documents or
#: 5 s rather than 32 or 2 s: the commits of 1,000 new documents into 1,000 took 0.89 and
#: 0.77 s against 1.95 and 1.91 s (``bench/stages.py`` on both checkouts, alternating).
BATCH_DOCUMENTS = 128
BATCH_CHARACTERS = 4_000_000
BATCH_SECONDS = 5.0


class _Batch:
    """Prepared documents waiting to be stored together."""

    def __init__(self) -> None:
        self.documents: list[PreparedDocument] = []
        self.characters = 0
        self.started = 0.0

    def add(self, prepared: PreparedDocument) -> bool:
        """Add a document; True when the batch is full and should be stored now."""
        if not self.documents:
            self.started = time.monotonic()
        self.documents.append(prepared)
        self.characters += len(prepared.raw.text)
        return (len(self.documents) >= BATCH_DOCUMENTS or self.characters >= BATCH_CHARACTERS
                or time.monotonic() - self.started >= BATCH_SECONDS)

    def take(self) -> list[PreparedDocument]:
        documents, self.documents, self.characters = self.documents, [], 0
        return documents


class StopOnCtrlC:
    """While entered (in the main thread), Ctrl-C asks the ingest to stop between two
    documents instead of raising KeyboardInterrupt wherever it lands, which could be in
    the middle of a statement; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopOnCtrlC":
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _ignore_ctrl_c() -> None:
    """Worker processes leave Ctrl-C (sent to the whole process group) to the writer, which
    stops the run; a worker dying of it would leave the pool waiting for its result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: How much nicer to the CPU than the writer the workers that read buckets are (``nice``):
#: they only need to keep ahead of it, and taking turns with it on two cores slowed it down
#: by about what they took off its work (see bench/README.md).
WORKER_NICENESS = 10


def _start_worker(path: str, commits, settings: Settings, niceness: int = 0) -> None:
    """A worker that also reads the passage buckets of what it prepares (see provenance.prefetch)."""
    _ignore_ctrl_c()
    if niceness:
        os.nice(niceness)
    prefetch.start_worker(path, commits, settings)


PREPARE_FAILED = "could not be prepared"


def _first_line(error: Exception) -> str:
    """The driver's own message, without SQLAlchemy's statement and parameter dump."""
    text = str(getattr(error, "orig", None) or error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


#: Longest document text matched, in characters. Segmenting and indexing cost grows with the
#: text (4.95 million characters: about 13 s and a peak RSS of 350 MB to ingest, by
#: ``python bench/memory.py --long-document 4950000``); a longer "document" is a dump or a
#: corpus in one file, to be split into articles.
MAX_DOCUMENT_CHARS = 5_000_000


def _size(item: InputFile) -> int:
    """The file's size in bytes (0 for standard input or when it cannot be read)."""
    try:
        return 0 if item.path == STDIN else os.path.getsize(item.path)
    except OSError:
        return 0


@dataclass(frozen=True)
class Unchanged:
    """A document whose text is what the latest version stored under its path holds, as
    read before it was prepared: not prepared (the writer checks it again, see
    Ingestor._store). Re-reading a folder of 5,200 files already stored took 9.9 s, 83% of
    it preparing documents that were then found unchanged (a py-spy profile, one-off)."""

    raw: RawDocument
    content_hash: str
    passages: tuple = ()  # nothing to read ahead for it


#: Paths -> the content hash of the latest version stored under each (those stored only).
StoredHashes = Callable[[list[str]], dict[str, str]]


def _prepare_or_error(
    raw: RawDocument, settings: Settings, stored_hash: Optional[str] = None,
) -> Union[PreparedDocument, Unchanged, InputError]:
    """The document prepared, or an error that names it; :class:`Unchanged` when its text
    has ``stored_hash``, the content hash of the latest version stored under its path."""
    if len(raw.text) > MAX_DOCUMENT_CHARS:
        return InputError(
            raw.path,
            f"text is {len(raw.text):,} characters, over the {MAX_DOCUMENT_CHARS:,}-character limit for one "
            "document; split it into separate documents (e.g. one JSONL line each)",
        )
    try:
        digest = None
        if stored_hash is not None:
            digest = content_hash(raw.text)
            if digest == stored_hash:
                return Unchanged(raw, digest)
        return prepare(raw, settings, digest)
    except Exception as error:  # one document's failure must not stop the run
        return InputError(raw.path, f"{PREPARE_FAILED} ({type(error).__name__}: {error})")


#: Documents (or characters) per unit of work sent to a worker process, and units in
#: flight per worker: what bounds the memory of a parallel ingest, whatever the input size.
UNIT_DOCUMENTS = 64
UNIT_CHARACTERS = 2_000_000
UNITS_PER_WORKER = 4


def prepared_stream(
    files: list[InputFile], *, source: Optional[str], max_bytes: int, settings: Settings,
    pool=None, workers: int = 1, stored: Optional[StoredHashes] = None,
) -> Iterator[tuple[InputFile, Union[PreparedDocument, Unchanged, InputError, None]]]:
    """``(file, None)`` when a file starts, then ``(file, outcome)`` for each of its prepared
    documents or errors, in input order.

    Nothing is read ahead more than a few units: a JSONL file is read :data:`UNIT_DOCUMENTS`
    lines at a time and each document prepared just before it is stored (or, with a
    ``pool``, sent to the workers in units of :data:`UNIT_DOCUMENTS` with at most
    :data:`UNITS_PER_WORKER` units per worker in flight), so memory does not grow with the
    size of the input.

    With a pool, the first unit is prepared here, while the workers start (a new process
    imports for about half a second before it prepares anything) and take the next ones:
    the caller stores its documents instead of waiting.

    ``stored``: the content hashes of what is stored under the documents' paths, asked for
    a document (or a unit) at a time; a document whose text is unchanged is not prepared
    (see :class:`Unchanged`).
    """
    stored = stored or (lambda paths: {})
    if pool is None:
        for start in range(0, len(files), UNIT_DOCUMENTS):
            window = files[start : start + UNIT_DOCUMENTS]
            # One question for the window's files (a JSONL file's documents are asked for
            # as they are read): one a file took a third of re-reading 5,200 stored files.
            known = stored([document_path(item) for item in window if item.format != "jsonl"])
            for item in window:
                yield item, None
                for outcome in _prepared_documents(
                    item, source=source, max_bytes=max_bytes, settings=settings,
                    stored=stored if item.format == "jsonl" else _known_only(known),
                ):
                    yield item, outcome
        return
    units = _units(files, source=source, max_bytes=max_bytes)
    first = next(units, None)
    if first is None:
        return

    def work(unit) -> tuple:
        return unit, source, max_bytes, settings, stored(_unit_paths(unit))

    in_flight: deque = deque(
        pool.apply_async(prepare_unit, work(unit)) for unit in itertools.islice(units, workers * UNITS_PER_WORKER - 1)
    )
    yield from _unit_outcomes(prepare_unit(*work(first)))
    for unit in units:
        in_flight.append(pool.apply_async(prepare_unit, work(unit)))
        while len(in_flight) >= workers * UNITS_PER_WORKER:
            yield from _unit_outcomes(in_flight.popleft().get())
    while in_flight:
        yield from _unit_outcomes(in_flight.popleft().get())


def _prepared_documents(
    item: InputFile, *, source: Optional[str], max_bytes: int, settings: Settings, stored: StoredHashes,
):
    """Read, normalise, segment and sign one input file, a document at a time; what is
    stored under the documents' paths is asked for :data:`UNIT_DOCUMENTS` documents at a
    time (a JSONL feed read here would otherwise ask once a line)."""
    documents = read(item, source=source, max_bytes=max_bytes)
    failure: Optional[InputError] = None
    while failure is None:
        window: list = []
        try:
            for document in documents:
                window.append(document)
                if len(window) == UNIT_DOCUMENTS:
                    break
        except Exception as error:  # a reader bug costs this file (after its good JSONL lines), not the run
            failure = InputError(item.path, f"{PREPARE_FAILED} ({type(error).__name__}: {_first_line(error)})")
        known = stored([document.path for document in window if not isinstance(document, InputError)])
        for document in window:
            yield document if isinstance(document, InputError) else _prepare_or_error(
                document, settings, known.get(document.path))
        if len(window) < UNIT_DOCUMENTS:
            break
    if failure is not None:
        yield failure


def _units(files: list[InputFile], *, source: Optional[str], max_bytes: int):
    """Units of work for the workers: lists of ``(file, first, documents)`` parts. A JSONL
    file is read here and cut into units of decoded documents; other files are read by the
    worker (``documents`` None), up to :data:`UNIT_DOCUMENTS` of them (or
    :data:`UNIT_CHARACTERS` bytes) to a unit. One file to a unit starved the writer: it takes
    a batch of documents at a time, the window of units in flight held only a few, and it
    waited for the rest to be handed over one by one (2.3 s of 18 in a profile of 1,000
    files with two workers)."""
    small: list = []
    size = 0
    for item in files:
        if item.format != "jsonl":
            small.append((item, True, None))
            size += _size(item)
            if len(small) >= UNIT_DOCUMENTS or size >= UNIT_CHARACTERS:
                yield small
                small, size = [], 0
            continue
        if small:
            yield small
            small, size = [], 0
        unit: list = []
        characters, first = 0, True
        try:
            for document in read(item, source=source, max_bytes=max_bytes):
                unit.append(document)
                characters += len(document.text) if isinstance(document, RawDocument) else 0
                if len(unit) >= UNIT_DOCUMENTS or characters >= UNIT_CHARACTERS:
                    yield [(item, first, unit)]
                    unit, characters, first = [], 0, False
        except Exception as error:  # as in _prepared_documents
            unit.append(InputError(item.path, f"{PREPARE_FAILED} ({type(error).__name__}: {_first_line(error)})"))
        if unit or first:
            yield [(item, first, unit)]
    if small:
        yield small


def prepare_unit(unit, source: Optional[str], max_bytes: int, settings: Settings, known: dict[str, str]):
    """The CPU-bound half of ingest for one unit, in a worker process: for each of its parts,
    the file, whether the part starts the file, and its prepared documents or errors.
    ``known``: the content hashes stored under the unit's paths (see :func:`_unit_paths`)."""
    done = []
    for item, first, documents in unit:
        if documents is None:
            outcomes = list(_prepared_documents(
                item, source=source, max_bytes=max_bytes, settings=settings, stored=_known_only(known),
            ))
        else:
            outcomes = [d if isinstance(d, InputError) else _prepare_or_error(d, settings, known.get(d.path))
                        for d in documents]
        prefetch.attach(outcomes)
        done.append((item, first, outcomes))
    return done


def _known_only(known: dict[str, str]) -> StoredHashes:
    return lambda paths: {path: known[path] for path in paths if path in known}


def _unit_paths(unit) -> list[str]:
    """The paths a unit's documents are stored under: a JSONL part's documents are decoded
    already; any other file holds one document, under :func:`document_path`."""
    return [path for item, _, documents in unit
            for path in ([document_path(item)] if documents is None
                         else [d.path for d in documents if not isinstance(d, InputError)])]


def _unit_outcomes(done) -> Iterator[tuple[InputFile, Union[PreparedDocument, InputError, None]]]:
    for item, first, outcomes in done:
        if first:
            yield item, None
        for outcome in outcomes:
            yield item, outcome


def boilerplate_key(text: str) -> int:
    """The library key of a piece of text (its normalised, digit-masked form)."""
    from .prepare import signed64
    from .text.normalize import boilerplate_key_text, normalize

    import xxhash

    return signed64(xxhash.xxh3_64_intdigest(boilerplate_key_text(normalize(text)).encode("utf-8")))


def run_arguments(paths: list[str], **options) -> str:
    return json.dumps({"paths": paths, **options}, sort_keys=True, default=str)
