"""What a database holds, as plain data: summary, documents, one document, runs."""

from __future__ import annotations

import os
from collections import Counter
from typing import Optional

from sqlalchemy import Engine, case, func, or_, select, text
from sqlalchemy.orm import Session

from . import manifest
from .db.bulk import plain_rows
from .db.migrate import current_revision, head_revision
from .db.models import (
    Boilerplate,
    Citation,
    Derivation,
    Document,
    DocumentPair,
    IngestRun,
    Passage,
    PassageMatch,
)
from .db.session import sqlite_path
from .report import (
    cluster_entries, cluster_stars, count_clusters, count_documents, count_rows, from_id_led_index, iso, latest_listing,
    resolve_document,
)


def summarise(engine: Engine, session: Session) -> dict:
    settings = manifest.load(session)
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    count = lambda query: session.scalar(query) or 0  # noqa: E731
    summary = {
        "database": path or engine.url.render_as_string(hide_password=True),
        "file_size_bytes": os.path.getsize(path) if path and os.path.exists(path) else None,
        "schema_revision": current_revision(engine),
        "schema_head": head_revision(),
        "documents": count_documents(session),
        "versions": count_rows(session, Document),
        "runs": count(select(func.count()).select_from(IngestRun)),
        "passages": count_rows(session, Passage),
        "boilerplate_passages": count(select(func.count()).select_from(Passage).where(Passage.boilerplate_id.is_not(None))),
        "boilerplate_library": count(select(func.count()).select_from(Boilerplate)),
        "derivations": count(select(func.count()).select_from(Derivation)),
        "citations": count(select(func.count()).select_from(Citation)),
        "settings_fingerprint": settings.fingerprint() if settings else None,
        "settings": settings.as_dict() if settings else None,
    }
    if settings is not None:
        summary["clusters"] = count_clusters(session, settings.near_duplicate_threshold)
        sketch = settings.document
        threshold = settings.near_duplicate_threshold
        summary["band_layout"] = {
            "bands": sketch.bands,
            "rows": sketch.rows,
            "candidate_probability": {
                f"{s:.2f}": round(sketch.candidate_probability(s), 4)
                for s in (max(0.0, threshold - 0.1), threshold, min(1.0, threshold + 0.1))
            },
        }
    return summary


#: What `inspect documents` lists of each latest document, in this order.
_LISTED_COLUMNS = (Document.id, Document.path, Document.version, Document.source, Document.format,
                   Document.size_bytes, Document.encoding, Document.content_hash, Document.published_at,
                   Document.ingested_at, Document.run_id)


def documents(session: Session, limit: Optional[int] = None) -> list[dict]:
    """The latest documents in order of id, the first ``limit`` when given."""
    rows = latest_listing(session, _LISTED_COLUMNS, limit)
    # Spelled out rather than zipped with the names (a row's _asdict() took 7 us, most of
    # 100,000 documents' listing; dict(zip()) and two assignments 0.4 s of the 1.1 s left).
    return [
        {"id": id_, "path": path, "version": version, "source": source, "format": format_,
         "size_bytes": size_bytes, "encoding": encoding, "content_hash": content_hash,
         "published_at": iso(published_at), "ingested_at": iso(ingested_at), "run_id": run_id}
        for (id_, path, version, source, format_, size_bytes, encoding, content_hash, published_at, ingested_at, run_id)
        in rows
    ]


def document(session: Session, reference: str) -> dict:
    found = resolve_document(session, reference)
    versions = session.execute(
        select(Document.id, Document.version, Document.content_hash, Document.ingested_at, Document.run_id)
        .where(Document.path == found.path).order_by(Document.version)
    ).all()
    pairs = session.execute(
        select(DocumentPair.first_id, DocumentPair.second_id, DocumentPair.similarity, DocumentPair.exact)
        .where(or_(DocumentPair.first_id == found.id, DocumentPair.second_id == found.id))
        .order_by(DocumentPair.similarity.desc())
    ).all()
    paths = dict(session.execute(select(Document.id, Document.path).where(
        Document.id.in_([p.first_id if p.second_id == found.id else p.second_id for p in pairs])
    )).all())
    tags = dict(session.execute(select(Boilerplate.id, Boilerplate.origin)).all())
    evidence = session.execute(
        select(PassageMatch.label, PassageMatch.similarity, PassageMatch.derived_start, PassageMatch.derived_end,
               PassageMatch.source_start, PassageMatch.source_end, Derivation.derived_id, Derivation.source_id)
        .join(Derivation, Derivation.id == PassageMatch.derivation_id)
        .where(or_(Derivation.derived_id == found.id, Derivation.source_id == found.id))
        .order_by(PassageMatch.id)
    ).all()
    passages = []
    for p in session.scalars(select(Passage).where(Passage.document_id == found.id).order_by(Passage.seq)):
        matches = []
        for m in evidence:
            role = "derived" if m.derived_id == found.id else "source"
            start, end = (m.derived_start, m.derived_end) if role == "derived" else (m.source_start, m.source_end)
            if start < p.end_offset and p.start_offset < end:
                matches.append({
                    "label": m.label, "similarity": m.similarity, "role": role,
                    "other_document": m.source_id if role == "derived" else m.derived_id,
                    "evidence_span": [start, end],
                })
        passages.append(
            {
                "seq": p.seq,
                "span": [p.start_offset, p.end_offset],
                "tag": "boilerplate" if p.boilerplate_id else "content",
                "boilerplate_origin": tags.get(p.boilerplate_id) if p.boilerplate_id else None,
                "text": found.text[p.start_offset : p.end_offset],
                "matches": matches,
            }
        )
    return {
        "id": found.id,
        "path": found.path,
        "source": found.source,
        "title": found.title,
        "url": found.url,
        "format": found.format,
        "encoding": found.encoding,
        "size_bytes": found.size_bytes,
        "content_hash": found.content_hash,
        "published_at": iso(found.published_at),
        "ingested_at": iso(found.ingested_at),
        "run_id": found.run_id,
        "versions": [{**v._asdict(), "ingested_at": iso(v.ingested_at)} for v in versions],
        "duplicates": [
            {
                "id": other,
                "path": paths.get(other),
                "similarity": round(p.similarity, 4),
                "relation": "exact" if p.exact else "candidate",
            }
            for p in pairs
            for other in [p.first_id if p.second_id == found.id else p.second_id]
        ],
        "citations": [
            {"agency": c.agency, "text": c.text, "span": [c.start_offset, c.end_offset]}
            for c in session.scalars(select(Citation).where(Citation.document_id == found.id).order_by(Citation.start_offset))
        ],
        "passages": passages,
    }


def runs(session: Session) -> list[dict]:
    rows = session.scalars(select(IngestRun).order_by(IngestRun.id)).all()
    return [
        {
            "id": r.id, "started_at": iso(r.started_at), "finished_at": iso(r.finished_at), "status": r.status,
            "files_seen": r.files_seen, "documents_added": r.documents_added, "versions_added": r.versions_added,
            "unchanged": r.unchanged, "skipped": r.skipped, "failed": r.failed,
            "settings_fingerprint": r.settings_fingerprint, "tool_version": r.tool_version,
        }
        for r in rows
    ]


#: Every document's id, whether it is the latest version, and its publisher.
_PUBLISHER_COLUMNS = (Document.id, Document.is_latest, Document.source)


def _publishers(session: Session) -> list[tuple]:
    """:data:`_PUBLISHER_COLUMNS` of every document. SQLite is told to read them from the
    id-led listing index (see report.latest_listing): left to its planner, it scanned the
    rows, each with its whole text, whenever the sampled statistics counted more rows in the
    index than in the table, as in the database grown to 100,000 documents on 29 November
    (`inspect sources` with a cold page cache 6.29 s; warm 0.89-0.96 s)."""
    return plain_rows(session, text(from_id_led_index(session, _PUBLISHER_COLUMNS)))


def sources(session: Session) -> list[dict]:
    """Per publisher: documents, and how often its documents were reused or reused others.

    Derivations and citations are counted by document, then credited to publishers in one
    pass over :data:`_PUBLISHER_COLUMNS`. Joined to the document rows instead, they read a row with
    its whole text for every document: at 100,000 documents with a cold page cache, 4.9 s of
    the 5.4 s this took (a one-off timing of its statements).
    """
    reused_by_document = dict(session.execute(
        select(Derivation.source_id, func.count()).group_by(Derivation.source_id)
    ).all())
    reusing_by_document = {
        row.derived_id: (row.derivations, row.credited)
        for row in session.execute(
            select(Derivation.derived_id, func.count().label("derivations"),
                   func.sum(case((Derivation.credited.is_(True), 1), else_=0)).label("credited"))
            .group_by(Derivation.derived_id)
        )
    }
    cited: dict[int, list[str]] = {}
    for document_id, agency in session.execute(select(Citation.document_id, Citation.agency).distinct()):
        cited.setdefault(document_id, []).append(agency)
    rows = _publishers(session)
    documents = Counter(source for _, latest, source in rows if latest)
    source_of = {document_id: source for document_id, _, source in rows}
    reused: Counter = Counter()
    for document_id, derivations in reused_by_document.items():
        reused[source_of[document_id]] += derivations
    reusing: Counter = Counter()
    credited: Counter = Counter()
    for document_id, (derivations, credited_derivations) in reusing_by_document.items():
        reusing[source_of[document_id]] += derivations
        credited[source_of[document_id]] += credited_derivations
    agencies: dict = {}
    for document_id, named in cited.items():
        agencies.setdefault(source_of[document_id], set()).update(named)
    return [
        {"source": name, "documents": documents[name], "reused_by_others": reused[name],
         "derived_from_others": reusing[name], "credited_derivations": credited[name],
         "agencies_credited": ", ".join(sorted(agencies.get(name, ())))}
        for name in sorted(documents, key=lambda n: (n is None, n or ""))
    ]


def boilerplate_library(session: Session) -> list[dict]:
    return [
        {"id": b.id, "text": b.text, "status": b.status, "origin": b.origin,
         "documents": b.document_count, "occurrences": b.occurrence_count}
        for b in session.scalars(select(Boilerplate).order_by(Boilerplate.document_count.desc(), Boilerplate.id))
    ]


def cluster_rows(
    session: Session, threshold: Optional[float] = None, limit: Optional[int] = None,
) -> tuple[list[dict], int]:
    """One row per member of the first ``limit`` duplicate clusters (all when None), canonical
    first; and how many clusters there are."""
    settings = manifest.load(session)
    threshold = threshold if threshold is not None else (settings.near_duplicate_threshold if settings else 0.8)
    found = cluster_stars(session, threshold)
    rows = []
    for cluster in cluster_entries(found, limit):
        rows.append({"cluster": cluster["id"], "document_id": cluster["canonical"]["id"], "path": cluster["canonical"]["path"],
                     "role": "canonical", "relation": "", "similarity": 1.0, "reason": cluster["canonical"]["reason"]})
        for m in cluster["members"]:
            rows.append({"cluster": cluster["id"], "document_id": m["id"], "path": m["path"], "role": "member",
                         "relation": m["relation"], "similarity": m["similarity"], "reason": ""})
    return rows, len(found.stars)


class ReadOnlyViolation(Exception):
    pass


def run_sql(url: str, statement: str, limit: int = 10000) -> tuple[list[str], list[list]]:
    """Run one statement on a read-only connection; a write is refused by the database.

    SQLite: the file is opened read-only and ``query_only`` is on. PostgreSQL: the session's
    transactions default to read-only, this one is ``READ ONLY``, and the statement goes
    through the extended query protocol, which takes exactly one statement (so "COMMIT;
    SET ...; DELETE ..." cannot leave the read-only transaction).
    """
    from sqlalchemy import text

    from .db.session import make_engine

    engine = make_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            try:
                if connection.dialect.name == "sqlite":
                    connection.exec_driver_sql("PRAGMA query_only = ON")
                    result = connection.execute(text(statement))
                    if not result.returns_rows:
                        return [], []
                    columns = list(result.keys())
                    rows = [list(row) for row in result.fetchmany(limit)]
                else:
                    connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                    cursor = connection.connection.dbapi_connection.cursor()
                    try:
                        # prepare=True: parsed as one prepared statement, never as a script.
                        cursor.execute(statement, prepare=True)
                        if cursor.description is None:
                            return [], []
                        columns = [column.name for column in cursor.description]
                        rows = [list(row) for row in cursor.fetchmany(limit)]
                    finally:
                        cursor.close()
            except Exception as error:  # the driver's own words name the problem
                message = str(getattr(error, "orig", error)).strip().splitlines()[0]
                lowered = message.lower()
                if "readonly" in lowered or "read-only" in lowered or "read only" in lowered or "query_only" in lowered:
                    raise ReadOnlyViolation(
                        "inspect sql is read-only: the statement tries to change the database; "
                        "use provenance commands (ingest, forget, boilerplate) to change data"
                    ) from error
                if "multiple commands" in lowered or "one statement at a time" in lowered:
                    raise ValueError("SQL error: inspect sql runs one statement at a time") from error
                raise ValueError(f"SQL error: {message}") from error
            finally:
                connection.rollback()
            return columns, rows
    finally:
        engine.dispose()
