"""The schema. Documents, their passages and signatures, the persisted LSH band tables,
verified duplicate pairs, the boilerplate library, derivations with passage evidence,
citations, ingest runs and the settings manifest.

Change it only together with a migration in ``migrations/versions`` (a test checks that
the two agree).
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class ManifestEntry(Base):
    """Settings that signed this database (``settings`` JSON and its ``fingerprint``)."""

    __tablename__ = "manifest"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RowCount(Base):
    """A table's rows, counted as they come and go, so that no one scans the table to know.

    On SQLite, migration 0012's triggers keep the ``document`` and ``passage`` rows (counting
    the 1.8 million passages of 100,000 documents read 34 MB of index: 0.7 s with a cold page
    cache); a table rebuilt by a later migration must have its triggers made again. Not on PostgreSQL,
    where ingests that write at once would queue on the one counter row; there the tables
    are counted."""

    __tablename__ = "row_count"
    table_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer)


class IngestRun(Base):
    """One ``provenance ingest`` invocation (a PROV activity)."""

    __tablename__ = "ingest_run"
    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")
    settings_fingerprint: Mapped[str] = mapped_column(String(32))
    tool_version: Mapped[str] = mapped_column(String(32))
    arguments: Mapped[str] = mapped_column(Text, default="")
    files_seen: Mapped[int] = mapped_column(Integer, default=0)
    documents_added: Mapped[int] = mapped_column(Integer, default=0)
    versions_added: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    #: The process running it: a 'running' run whose process is gone was killed.
    host: Mapped[Optional[str]] = mapped_column(String(255))
    pid: Mapped[Optional[int]] = mapped_column(Integer)


class Document(Base):
    """One version of one input document, with its extracted text."""

    __tablename__ = "document"
    __table_args__ = (
        UniqueConstraint("path", "version"),
        Index(None, "content_hash"),
        Index(None, "is_latest", "path"),
        # Every column that listings read, by id, kept apart from the rows, each of which
        # carries its whole text: what `inspect documents`, the report's documents, its
        # duplicate clusters and the per-publisher counts read (see provenance.report.latest_listing
        # and clusters, provenance.inspect.sources).
        Index("ix_document_listing", "id", "is_latest", "path", "version", "source", "format", "size_bytes",
              "encoding", "content_hash", "published_at", "ingested_at", "run_id"),
        # Deleting a document looks for the version after it: unindexed, SQLite read every
        # row for each one deleted (migration 0014). On SQLite only the documents that have an
        # earlier version; PostgreSQL indexes it whole (see ix_passage_boilerplate_id).
        Index("ix_document_previous_version_id", "previous_version_id",
              sqlite_where=text("previous_version_id IS NOT NULL")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    previous_version_id: Mapped[Optional[int]] = mapped_column(ForeignKey("document.id"))
    is_latest: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[Optional[str]] = mapped_column(Text)
    external_id: Mapped[Optional[str]] = mapped_column(Text)
    url: Mapped[Optional[str]] = mapped_column(Text)
    title: Mapped[Optional[str]] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(Integer)
    encoding: Mapped[str] = mapped_column(String(32))
    content_hash: Mapped[str] = mapped_column(String(32))
    published_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    ingested_at: Mapped[datetime] = mapped_column(DateTime)
    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    word_count: Mapped[int] = mapped_column(Integer, default=0)
    content_word_count: Mapped[int] = mapped_column(Integer, default=0)
    signature: Mapped[Optional[bytes]] = mapped_column(LargeBinary)


class DocumentBand(Base):
    """Persisted LSH index of document signatures: one row per (document, band)."""

    __tablename__ = "document_band"
    document_id: Mapped[int] = mapped_column(
        ForeignKey("document.id", ondelete="CASCADE"), primary_key=True
    )
    band_key: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)


class DocumentPair(Base):
    """A verified candidate pair (``first_id < second_id``) with its estimated similarity."""

    __tablename__ = "document_pair"
    first_id: Mapped[int] = mapped_column(
        ForeignKey("document.id", ondelete="CASCADE"), primary_key=True
    )
    second_id: Mapped[int] = mapped_column(
        ForeignKey("document.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    similarity: Mapped[float] = mapped_column(Float)
    exact: Mapped[bool] = mapped_column(Boolean, default=False)


class Passage(Base):
    """A span of a document; ``boilerplate_id`` tags it (never deletes it)."""

    __tablename__ = "passage"
    __table_args__ = (
        UniqueConstraint("document_id", "seq"),
        # On SQLite only the tagged passages (some 7,000 of 1.8 million at 100,000 documents):
        # indexed whole, the index told SQLite that a boilerplate id, NULL included, holds some
        # 13 passages, and reads of a few documents' content passages (boilerplate_id IS NULL)
        # walked its 1.8 million NULL entries instead (migration 0013). PostgreSQL's statistics
        # count the NULLs; naming its dialect here would import it for every command (27 ms).
        Index("ix_passage_boilerplate_id", "boilerplate_id", sqlite_where=text("boilerplate_id IS NOT NULL")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("document.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    block: Mapped[int] = mapped_column(Integer)
    start_offset: Mapped[int] = mapped_column(Integer)
    end_offset: Mapped[int] = mapped_column(Integer)
    key_hash: Mapped[int] = mapped_column(BigInteger, index=True)
    word_count: Mapped[int] = mapped_column(Integer)
    content_word_count: Mapped[int] = mapped_column(Integer)
    boilerplate_id: Mapped[Optional[int]] = mapped_column(ForeignKey("boilerplate.id", ondelete="SET NULL"))
    signature: Mapped[Optional[bytes]] = mapped_column(LargeBinary)


class PassagePrefilter(Base):
    """A compact copy of a signed passage's sketch, for the first and cheapest test of a
    candidate (:func:`provenance.derive.likely_sources`): the low byte of each signature
    value (128 bytes instead of 512) and the content-word count.

    Equal values have equal low bytes, so the share of equal low bytes is never below the
    share of equal values: a candidate that fails the estimate floors on these fails them
    on the full signature too, and only the few that pass (6.5% of 452,492 candidate pairs
    of 200 documents new to 20,000, in a one-off count) are read from ``passage``. The rows that grow with the
    corpus are read from a table a quarter the size of ``passage``.
    """

    __tablename__ = "passage_prefilter"
    passage_id: Mapped[int] = mapped_column(ForeignKey("passage.id", ondelete="CASCADE"), primary_key=True)
    content_word_count: Mapped[int] = mapped_column(Integer)
    low_bytes: Mapped[bytes] = mapped_column(LargeBinary)


class _PassageBandRows:
    band_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    passage_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class PassageBand(_PassageBandRows, Base):
    """Persisted LSH index of passage signatures: one row per band of every content passage
    (with :class:`RecentPassageBand`, where new rows wait).

    By far the biggest table (37 rows per passage), so it is a single B-tree ordered for
    the lookup (``band_key`` first; WITHOUT ROWID on SQLite), with no second index and no
    foreign key to check on every insert. Rows are removed by recomputing their keys from
    the passage's stored signature (:func:`provenance.index.remove_passages`), always
    before the passage itself goes.
    """

    __tablename__ = "passage_band"
    __table_args__ = {"sqlite_with_rowid": False}


class RecentPassageBand(_PassageBandRows, Base):
    """New passage band rows, moved into :class:`PassageBand` in key order when there are
    enough of them (:func:`provenance.index.merge_recent_bands`).

    Band keys are random, so each row inserted straight into the big table dirties a
    different page, and every commit rewrote thousands of them. This table stays small
    enough for the page cache; a merge then writes each page of the big one once. A
    lookup reads both tables in one statement.
    """

    __tablename__ = "passage_band_recent"
    __table_args__ = {"sqlite_with_rowid": False}


class Boilerplate(Base):
    """The boilerplate library: recurring page chrome, learned or set by a user.

    ``status`` is ``boilerplate`` or ``content`` (a user's override that stops learning);
    ``origin`` says why: ``corpus`` (seen in many documents), ``repeated`` (repeats inside
    one document) or ``user``.
    """

    __tablename__ = "boilerplate"
    id: Mapped[int] = mapped_column(primary_key=True)
    key_hash: Mapped[int] = mapped_column(BigInteger, unique=True)
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="boilerplate")
    origin: Mapped[str] = mapped_column(String(16))
    document_count: Mapped[int] = mapped_column(Integer, default=0)
    occurrence_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class BoilerplateDocument(Base):
    """Which documents a boilerplate entry was seen in."""

    __tablename__ = "boilerplate_document"
    boilerplate_id: Mapped[int] = mapped_column(
        ForeignKey("boilerplate.id", ondelete="CASCADE"), primary_key=True
    )
    document_id: Mapped[int] = mapped_column(
        ForeignKey("document.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    occurrences: Mapped[int] = mapped_column(Integer, default=1)


class Derivation(Base):
    """``derived`` took text from ``source`` (earlier by published_at, else ingestion)."""

    __tablename__ = "derivation"
    __table_args__ = (UniqueConstraint("derived_id", "source_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    derived_id: Mapped[int] = mapped_column(ForeignKey("document.id", ondelete="CASCADE"))
    source_id: Mapped[int] = mapped_column(
        ForeignKey("document.id", ondelete="CASCADE"), index=True
    )
    relation: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    coverage: Mapped[float] = mapped_column(Float)
    credited: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id"), index=True)


class PassageMatch(Base):
    """Evidence of a derivation: one derived passage aligned with one source passage."""

    __tablename__ = "passage_match"
    id: Mapped[int] = mapped_column(primary_key=True)
    derivation_id: Mapped[int] = mapped_column(
        ForeignKey("derivation.id", ondelete="CASCADE"), index=True
    )
    derived_passage_id: Mapped[int] = mapped_column(
        ForeignKey("passage.id", ondelete="CASCADE"), index=True
    )
    source_passage_id: Mapped[int] = mapped_column(
        ForeignKey("passage.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(16))
    similarity: Mapped[float] = mapped_column(Float)
    #: The aligned evidence: the part of each passage the texts share (copied text is
    #: trimmed to its first and last shared word 3-gram; reworded text keeps the passage).
    derived_start: Mapped[int] = mapped_column(Integer)
    derived_end: Mapped[int] = mapped_column(Integer)
    source_start: Mapped[int] = mapped_column(Integer)
    source_end: Mapped[int] = mapped_column(Integer)
    #: MinHash estimate between the two passages; NULL when the evidence came from exact alignment.
    estimated_jaccard: Mapped[Optional[float]] = mapped_column(Float)
    jaccard: Mapped[float] = mapped_column(Float)
    containment_derived: Mapped[float] = mapped_column(Float)
    containment_source: Mapped[float] = mapped_column(Float)
    content_overlap: Mapped[float] = mapped_column(Float)


class Citation(Base):
    """An agency a document credits ("reported by TASS"), with the span that says so."""

    __tablename__ = "citation"
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(
        ForeignKey("document.id", ondelete="CASCADE"), index=True
    )
    agency: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    start_offset: Mapped[int] = mapped_column(Integer)
    end_offset: Mapped[int] = mapped_column(Integer)
