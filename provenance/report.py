"""The duplicate and derivation report as plain data (the ``provenance.report/1`` contract).

Nothing here prints; :mod:`provenance.render` shapes the data for a terminal, CSV or HTML.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterator, Mapping, NamedTuple, Optional

from sqlalchemy import String, func, or_, select, text, type_coerce
from sqlalchemy.orm import Session, aliased

from . import manifest
from .cluster import components, star_clusters
from .db.bulk import chunks, plain_rows, select_in
from .db.models import Boilerplate, Citation, Derivation, Document, DocumentPair, PassageMatch, RowCount
from .db.readahead import ReadAhead, clocks, waited_on_disk
from .errors import ProvenanceError, path_text

# numpy (and provenance.sketch, which needs it) is imported only by highest_by_signature,
# for small corpora: importing it took a tenth of a second of every `report` and `inspect`.

SCHEMA = "provenance.report/1"
#: Clusters bigger than this are flagged: a real story rarely has this many copies, a
#: template or an over-broad threshold often does.
MAX_CLUSTER_SIZE = 100
#: A cluster whose mean similarity to its canonical is this close to the threshold is flagged.
LOW_COHESION_MARGIN = 0.05


def iso(value) -> Optional[str]:
    """``isoformat()`` of a datetime, or of a DateTime read as SQLite stores it (see
    :func:`timestamp_text`): "2026-11-27 02:47:17.592710" becomes "2026-11-27T02:47:17.592710",
    and zero microseconds are left out, as isoformat leaves them; any other text is parsed."""
    if not value:
        return None
    if not isinstance(value, str):
        return value.isoformat()
    if len(value) == 26 and value[10] == " " and value[19] == ".":
        return f"{value[:10]}T{value[11:19] if value.endswith('.000000') else value[11:]}"
    return datetime.fromisoformat(value).isoformat()


def timestamp_text(column, session: Session):
    """A DateTime ``column`` as a listing reads it, for :func:`iso`: on SQLite the stored text
    itself. Parsing 100,000 documents' two timestamps into datetimes and formatting them back
    took 0.3 s of `inspect documents --format json`."""
    return type_coerce(column, String).label(column.key) if session.connection().dialect.name == "sqlite" else column


def canonical_order(document) -> tuple:
    """Earliest by published_at (documents without one come after), then ingestion order, then path."""
    return (document.published_at is None, document.published_at or datetime.min, document.id, document.path)


def canonical_reason(canonical, members: list) -> str:
    if canonical.published_at is not None:
        return f"earliest published_at ({canonical.published_at.isoformat()})"
    dated = [m for m in members if m.published_at is not None]
    if dated:
        return "earliest ingested; no member has an earlier published_at"
    return f"earliest ingested (document {canonical.id}; no published_at in the cluster)"


def resolve_document(session: Session, reference: str) -> Document:
    """A document by id or by path (latest version); raises a one-line error otherwise."""
    query = select(Document)
    if reference.isdigit():
        found = session.scalar(query.where(Document.id == int(reference)))
    else:
        import os

        candidates = [path_text(reference), path_text(os.path.abspath(reference))]
        found = session.scalar(
            query.where(Document.path.in_(candidates), Document.is_latest.is_(True))
        )
    if found is None:
        raise ProvenanceError(f"no document {reference!r} in this database; see `provenance inspect documents`")
    return found


#: Superseded versions: few, and found through an index that leads with is_latest. Setting them
#: aside costs less than testing is_latest on the documents a pair or derivation joins.
_SUPERSEDED = select(Document.id).where(Document.is_latest.is_(False))


#: What clusters need of a document, read as plain rows (at 30,000 documents building ORM
#: objects took as long as the rest of `inspect`) and kept as :class:`_Member` tuples. The
#: signature is read only for a group that needs it.
_CLUSTER_COLUMNS = (Document.id, Document.path, Document.content_hash, Document.published_at)


def _id_led_index(columns: tuple) -> Optional[str]:
    """The name of an index of the document table that leads with its id and holds
    ``columns`` (migration 0010's ix_document_listing), if there is one."""
    names = {column.name for column in columns}
    return next((index.name for index in Document.__table__.indexes
                 if index.columns[0] is Document.__table__.c.id and names <= {column.name for column in index.columns}),
                None)


def from_id_led_index(session: Session, columns: tuple) -> str:
    """``SELECT columns FROM document``, on SQLite told to read them from the id-led index
    that holds them (if there is one). A document row carries its whole text; left to its
    planner, SQLite looked each row up, or scanned the rows, whenever the sampled statistics
    counted more rows in the index than in the table (see :func:`latest_listing`)."""
    sql = f"SELECT {', '.join(column.name for column in columns)} FROM {Document.__tablename__}"
    index = _id_led_index(columns)
    if index and session.connection().dialect.name == "sqlite":
        sql += f" INDEXED BY {index}"
    return sql


def _listed_by_id(session: Session, columns: tuple, ids: list[int]) -> list[tuple]:
    """``columns`` of the documents ``ids``, sent straight to the driver (provenance.db.bulk.
    select_in), from the listing index (:func:`from_id_led_index`)."""
    return select_in(session, from_id_led_index(session, columns) + " WHERE id {in}", ids)


def latest_listing(session: Session, columns: tuple, limit: Optional[int] = None) -> list[tuple]:
    """``columns`` of the latest documents in order of id (the first ``limit``), as the
    driver hands them over (timestamps as SQLite stores them, see :func:`iso`).

    Latest as "not among the superseded", and SQLite told to walk the id-led index that
    holds the columns: asked by is_latest, it looked each latest document's row up, with
    its whole text, and sorted them (at 100,000 documents with a cold page cache, 7.4 s
    against 0.12 s); asked this way but left to its planner, it scanned the table's rows,
    texts and all, whenever the sampled statistics counted more rows in the index than in
    the table (13,200 against 10,602 in a database read at 32,000 documents: warm, 0.25-0.31 s
    against 0.09-0.15 s from the index, a one-off loop)."""
    sql = from_id_led_index(session, columns)
    sql += f" WHERE id NOT IN (SELECT id FROM {Document.__tablename__} WHERE is_latest = :is_latest) ORDER BY id"
    parameters: dict = {"is_latest": False}
    if limit is not None:
        sql, parameters["limit"] = sql + " LIMIT :limit", limit
    return plain_rows(session, text(sql).bindparams(**parameters))


class _Member(NamedTuple):
    """A clustered document: :data:`_CLUSTER_COLUMNS`, in their order."""

    id: int
    path: str
    content_hash: str
    published_at: Optional[datetime]


#: What the report lists of a document, read as plain rows too (100,000 documents as ORM
#: objects took 5 s, as rows 0.3 s); also what its clusters need, so they need not read again.
_REPORT_COLUMNS = (*_CLUSTER_COLUMNS, Document.source, Document.ingested_at)


class Stars(NamedTuple):
    """Duplicate clusters before they are written out: each (canonical id, [(member id,
    similarity to it), ...]), in the report's order, and the clustered documents by id."""

    stars: list[tuple[int, list[tuple[int, float]]]]
    members: dict[int, _Member]
    threshold: float


def clusters(
    session: Session, threshold: float, documents: Optional[dict] = None, focus: Optional[int] = None,
) -> list[dict]:
    """Exact and near-duplicate clusters of latest documents; members scored to the canonical.

    ``focus``: only the clusters drawn from that document's group of duplicates, reading
    only those documents (what `report --document` needs, at any corpus size)."""
    return cluster_entries(cluster_stars(session, threshold, documents, focus))


def cluster_stars(
    session: Session, threshold: float, documents: Optional[dict] = None, focus: Optional[int] = None,
) -> Stars:
    """The clusters of :func:`clusters`, not yet written out: what writing out the first few
    needs (:func:`cluster_entries`). At 100,000 documents writing out all 8,284 took about a
    fifth of the whole."""
    verified, groups = _linked_groups(session, threshold)
    if focus is not None:
        groups = [group for group in groups if focus in group]
    return _stars(session, groups, verified, threshold, documents)


def count_clusters(session: Session, threshold: float) -> int:
    """How many clusters :func:`cluster_stars` makes, reading only the documents of groups
    of three or more. Two linked documents always make one cluster: the second is a copy of
    the first or was verified similar to it at the threshold, which is what linked them. At
    100,000 documents 6,804 of the 8,251 groups are such pairs, and the others hold 4,806
    documents of 18,414."""
    verified, groups = _linked_groups(session, threshold)
    pairs = sum(1 for group in groups if len(group) == 2)
    return pairs + len(_stars(session, [group for group in groups if len(group) > 2], verified, threshold).stars)


def _linked_groups(session: Session, threshold: float) -> tuple[dict[tuple[int, int], float], list[list[int]]]:
    """Every verified pair between latest documents and its similarity, and the groups of
    documents that those at the threshold link."""
    # Every verified pair (exact Jaccard, see provenance.index.index_document) between
    # latest documents, read once: those at the threshold link documents into groups; all
    # give member-to-centre similarities in _stars, the MinHash estimate standing in for
    # pairs that never were candidates.
    # Run on the connection: plain rows need nothing of the ORM's result handling, which took
    # a third of this function at 101,200 documents (52,000 pairs, 18,000 documents).
    connection = session.connection()
    superseded = set(session.scalars(_SUPERSEDED))
    verified: dict[tuple[int, int], float] = {}
    linked = []
    for first, second, similarity, exact in connection.execute(
        select(DocumentPair.first_id, DocumentPair.second_id, DocumentPair.similarity, DocumentPair.exact)
    ).all():
        if superseded and (first in superseded or second in superseded):
            continue
        verified[(first, second)] = similarity
        if exact or similarity >= threshold:
            linked.append((first, second))
    return verified, components(sorted(linked)) if linked else []


def _stars(
    session: Session, groups: list[list[int]], verified: dict[tuple[int, int], float], threshold: float,
    documents: Optional[dict] = None,
) -> Stars:
    """The star clusters of ``groups`` (see provenance.cluster), in the report's order."""
    if not groups:
        return Stars([], {}, threshold)
    group_of = {i: group for group in groups for i in group}
    # Clustered documents as _Member tuples: the steps below read their fields some ten times
    # each, and a row's attribute took about 1 us against a tuple's 0.05.
    by_id = {i: _Member(*documents[i][:3], _stored_datetime(documents[i][3])) for i in group_of if i in documents} \
        if documents else {}
    # At 100,000 documents the 18,414 documents of the groups took 0.05 s warm and 0.38-0.44 s
    # with a cold page cache, where one statement for every document in a pair (28,363,
    # through a UNION of the pairs' ids, typed by SQLAlchemy) took 0.26 and 0.55-0.57 s (one-off).
    missing = sorted(set(group_of) - set(by_id))
    for id_, path, content_hash, published_at in _listed_by_id(session, _CLUSTER_COLUMNS, missing):
        by_id[id_] = _Member(id_, path, content_hash, _stored_datetime(published_at))
    signatures: dict[int, Optional[bytes]] = {}

    def signature(i: int) -> Optional[bytes]:
        """Read, for the whole group, the first time one of its pairs was never verified
        (rare: the pairs a group is made of were all verified when they were candidates)."""
        if i not in signatures:
            for batch in chunks(group_of[i]):
                signatures.update(
                    session.execute(select(Document.id, Document.signature).where(Document.id.in_(batch))).all()
                )
        return signatures[i]

    def similarity(a: int, b: int) -> float:
        if by_id[a].content_hash == by_id[b].content_hash:
            return 1.0
        known = verified.get((min(a, b), max(a, b)))
        if known is not None:
            return known
        mine, theirs = signature(a), signature(b)
        if mine is None or theirs is None:
            return 0.0
        return stored_agreement(mine, theirs)

    order = {i: canonical_order(by_id[i]) for i in group_of}
    stars = [star for group in groups
             for star in star_clusters(sorted(group, key=order.__getitem__), similarity, threshold)]
    stars.sort(key=lambda star: order[star[0]])
    return Stars(stars, by_id, threshold)


def duplicate_counts(found: Stars) -> tuple[int, int]:
    """Members of the clusters that are exact copies of their canonical, and near copies."""
    members = found.members
    exact = sum(1 for centre, joined in found.stars for member, _ in joined
                if members[member].content_hash == members[centre].content_hash)
    return exact, sum(len(joined) for _, joined in found.stars) - exact


def cluster_entries(found: Stars, limit: Optional[int] = None) -> list[dict]:
    """The report's entries of the first ``limit`` clusters of ``found`` (all when None)."""
    by_id, out = found.members, []
    for centre, joined in found.stars[:limit]:
        canonical = by_id[centre]
        members = [by_id[m] for m, _ in joined]
        cohesion = sum(value for _, value in joined) / len(joined)
        flags = []
        if len(joined) + 1 > MAX_CLUSTER_SIZE:
            flags.append("oversized")
        if cohesion < found.threshold + LOW_COHESION_MARGIN:
            flags.append("low-cohesion")
        out.append(
            {
                "id": canonical.id,
                "canonical": {"id": canonical.id, "path": canonical.path,
                              "reason": canonical_reason(canonical, members)},
                "members": [
                    {
                        "id": member,
                        "path": by_id[member].path,
                        "relation": "exact" if by_id[member].content_hash == canonical.content_hash else "near-duplicate",
                        "similarity": round(value, 4),
                    }
                    for member, value in joined
                ],
                "size": len(joined) + 1,
                "cohesion": round(cohesion, 4),
                "flags": flags,
            }
        )
    return out


def _stored_datetime(value) -> Optional[datetime]:
    """A DateTime as the driver hands it over: SQLite's stored text ("2026-11-27 02:47:17.592710",
    as SQLAlchemy writes it) parsed, anything else as it is."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def stored_agreement(a: bytes, b: bytes) -> float:
    """:func:`provenance.sketch.estimate_jaccard` of two stored signatures, read as they are
    stored: the share of equal 4-byte values. The few pairs a report compares do not pay
    for importing numpy (a tenth of a second)."""
    if len(a) != len(b) or len(a) % 4:
        raise ValueError(f"signatures of {len(a)} and {len(b)} bytes cannot be compared")
    values_a, values_b = memoryview(a).cast("I"), memoryview(b).cast("I")
    return sum(x == y for x, y in zip(values_a, values_b)) / len(values_a)


def _between_latest(document_id: Optional[int]) -> list:
    """Conditions for the derivations between latest documents (involving ``document_id``).

    Latest as "not among the superseded": tested on the two documents' rows, SQLite started
    from the documents and sorted every derivation to give the first 20 (0.19 s at 100,000
    documents, the count 0.17 s); this way it walks the derivations in order and stops
    (under 10 ms; the count 10 ms)."""
    conditions = [Derivation.derived_id.not_in(_SUPERSEDED), Derivation.source_id.not_in(_SUPERSEDED)]
    if document_id is not None:
        conditions.append(or_(Derivation.derived_id == document_id, Derivation.source_id == document_id))
    return conditions


def count_rows(session: Session, model: type) -> int:
    """A table's rows: as SQLite's triggers counted them (:class:`~provenance.db.models.RowCount`),
    else counted."""
    table = model.__table__
    counted = session.scalar(select(RowCount.rows).where(RowCount.table_name == table.name))
    return counted if counted is not None else session.scalar(select(func.count()).select_from(table)) or 0


def count_documents(session: Session) -> int:
    """Latest documents: every version less the superseded ones, which are few (counting the
    latest instead read 6.8 MB of index at 100,000 documents: 0.14-0.16 s of `inspect` with a
    cold page cache)."""
    superseded = session.scalar(select(func.count()).select_from(_SUPERSEDED.subquery())) or 0
    return count_rows(session, Document) - superseded


def count_derivations(session: Session, document_id: Optional[int] = None) -> int:
    return session.scalar(select(func.count()).select_from(Derivation).where(*_between_latest(document_id))) or 0


#: A derivation and its passage matches as the report shows them, read as plain rows (the
#: 40,641 derivations and 40,757 matches of 101,200 documents: 4.5 s as ORM objects, 2.6-3.3 s).
_DERIVATION_COLUMNS = (Derivation.id, Derivation.derived_id, Derivation.source_id, Derivation.relation, Derivation.score,
                       Derivation.coverage, Derivation.credited, Derivation.reason)
_MATCH_COLUMNS = (PassageMatch.derivation_id, PassageMatch.label, PassageMatch.similarity, PassageMatch.derived_start,
                  PassageMatch.derived_end, PassageMatch.source_start, PassageMatch.source_end,
                  PassageMatch.estimated_jaccard, PassageMatch.jaccard, PassageMatch.containment_derived,
                  PassageMatch.containment_source, PassageMatch.content_overlap)


#: Derivations whose evidence and texts are read and shaped together: bounds what a whole
#: report holds at once when it is written as it is built (``build(stream=True)``).
DERIVATION_BATCH = 1000


class Listing:
    """A report list built a batch at a time whenever it is iterated, with its length known
    up front, so a whole report can be written without first holding it in memory."""

    def __init__(self, count: int, entries: Callable[[], Iterator[dict]]):
        self._count = count
        self._entries = entries

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[dict]:
        return self._entries()


def _derivation_rows(
    session: Session, document_id: Optional[int], limit: Optional[int], paths: Optional[Mapping[int, str]] = None,
) -> list[tuple]:
    """:data:`_DERIVATION_COLUMNS` of the derivations listed, then their two documents' paths,
    taken from ``paths`` (every latest document's, when the caller has listed them) or read."""
    query = select(*_DERIVATION_COLUMNS).where(*_between_latest(document_id)).order_by(
        Derivation.derived_id, Derivation.source_id
    )
    connection = session.connection()
    rows = connection.execute(query.limit(limit) if limit is not None else query).all()
    if paths is None:
        # From the listing index: joined to the rows, the whole report's 40,065 derivations
        # with their two paths took 2.6-2.8 s at 100,000 documents with a cold page cache,
        # 0.5-0.7 s this way.
        ids = sorted({i for row in rows for i in row[1:3]})
        paths = dict(_listed_by_id(session, (Document.id, Document.path), ids))
    return [(*row, paths[row[1]], paths[row[2]]) for row in rows]


def derivations(
    session: Session, document_id: Optional[int] = None, evidence: bool = True, limit: Optional[int] = None,
) -> list[dict]:
    """Directed derivations with their passage evidence, between latest documents; the
    first ``limit`` of them (by derived, then source document) when given. Without
    ``evidence``, each derivation's ``"passages"`` is None: not read."""
    return list(_derivation_entries(session, _derivation_rows(session, document_id, limit), evidence))


def _derivation_entries(session: Session, rows: list, evidence: bool = True) -> Iterator[dict]:
    """The report entries of derivation ``rows``, their evidence and texts read
    :data:`DERIVATION_BATCH` derivations at a time, not a query per derivation. Once a
    batch's reads have waited on the disk (a cold page cache), the evidence and texts of
    the batches after it are read ahead on other connections (see provenance.db.readahead);
    from a warm cache that would only read them twice."""
    batches = list(chunks(rows, DERIVATION_BATCH))
    ahead: Optional[ReadAhead] = None
    try:
        for number, batch in enumerate(batches):
            since = clocks()
            found = _evidence(session, batch) if evidence else None
            if ahead is None and found is not None and number + 1 < len(batches) and waited_on_disk(since):
                ahead = ReadAhead(session)
                for later in batches[number + 1:]:
                    ahead.read(_MATCHES_AHEAD, [row[0] for row in later])
                    ahead.read(_TEXTS_AHEAD, sorted({i for row in later for i in row[1:3]}))
            yield from _derivation_batch(batch, found)
    finally:
        if ahead is not None:
            ahead.close()


#: A batch of derivations' passage matches, each derivation's in the report's order, and
#: their documents' texts: sent straight to the driver (provenance.db.bulk.select_in), as
#: an ORM select with an expanding IN took 0.3 s of the whole JSON report of 101,200
#: documents only to compile its IN lists.
_MATCHES = (
    f"SELECT {', '.join(column.name for column in _MATCH_COLUMNS)} FROM {PassageMatch.__tablename__}"
    " WHERE derivation_id {in} ORDER BY derived_start, source_start, id"
)
_TEXTS = f"SELECT id, text FROM {Document.__tablename__} WHERE id {{in}}"
#: The same rows, read ahead (aggregated: read, not handed over). Every derivation's two
#: documents, although those without evidence are not quoted: 1 of 39,809 at 100,000.
_MATCHES_AHEAD = f"SELECT max(derived_end) FROM {PassageMatch.__tablename__} WHERE derivation_id {{in}}"
_TEXTS_AHEAD = f"SELECT sum(length(text)) FROM {Document.__tablename__} WHERE id {{in}}"


#: A batch's passage matches by derivation, and the texts they quote by document.
_BatchEvidence = tuple[dict[int, list[tuple]], dict[int, str]]


def _evidence(session: Session, items: list) -> _BatchEvidence:
    """The passage matches of a batch of derivations by derivation, and the texts they quote."""
    matches_of: dict[int, list[tuple]] = {}
    for match in select_in(session, _MATCHES, [row[0] for row in items]):
        matches_of.setdefault(match[0], []).append(match)
    texts = dict(select_in(session, _TEXTS, sorted({i for row in items if row[0] in matches_of for i in row[1:3]})))
    return matches_of, texts


def _derivation_batch(items: list, evidence: Optional[_BatchEvidence]) -> list[dict]:
    """Entries of a batch of derivations, with ``evidence`` (:func:`_evidence`) if read."""
    # Rows are unpacked in their columns' order (_DERIVATION_COLUMNS and the two paths,
    # _MATCH_COLUMNS): reading a row's attributes took longer than building its entry.
    matches_of, texts = evidence if evidence is not None else ({}, {})
    out = []
    for (derivation_id, derived_id, source_id, relation, score, coverage, credited, reason, derived_path,
         source_path) in items:
        passages = []
        for (_, label, similarity, d_start, d_end, s_start, s_end, estimated_jaccard, jaccard, containment_derived,
             containment_source, content_overlap) in matches_of.get(derivation_id, []):
            item = {
                "label": label,
                "similarity": similarity,
                "derived_span": [d_start, d_end],
                "source_span": [s_start, s_end],
                "measures": {
                    "estimated_jaccard": estimated_jaccard,
                    "jaccard": jaccard,
                    "containment_derived": containment_derived,
                    "containment_source": containment_source,
                    "content_overlap": content_overlap,
                },
                "derived_text": texts[derived_id][d_start:d_end],
                "source_text": texts[source_id][s_start:s_end],
            }
            passages.append(item)
        out.append(
            {
                "derived": {"id": derived_id, "path": derived_path},
                "source": {"id": source_id, "path": source_path},
                "relation": relation,
                "score": score,
                "coverage": coverage,
                "credited": credited,
                "reason": reason,
                "passages": passages if evidence is not None else None,
            }
        )
    return out


def boilerplate(session: Session) -> list[dict]:
    rows = session.execute(
        select(Boilerplate).where(Boilerplate.status == "boilerplate").order_by(Boilerplate.document_count.desc(), Boilerplate.id)
    ).scalars()
    return [
        {"text": b.text, "documents": b.document_count, "occurrences": b.occurrence_count, "origin": b.origin}
        for b in rows
    ]


def _citations_of_latest(columns, document_id: Optional[int]):
    query = (
        select(*columns).select_from(Citation)
        .join(Document, Document.id == Citation.document_id).where(Document.is_latest.is_(True))
    )
    return query.where(Citation.document_id == document_id) if document_id is not None else query


def count_citations(session: Session, document_id: Optional[int] = None) -> int:
    return session.scalar(_citations_of_latest([func.count()], document_id)) or 0


def citations(session: Session, document_id: Optional[int] = None, limit: Optional[int] = None) -> list[dict]:
    query = _citations_of_latest([Citation, Document.path], document_id).order_by(
        Citation.document_id, Citation.start_offset
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        {"document": {"id": c.document_id, "path": path}, "agency": c.agency, "text": c.text,
         "span": [c.start_offset, c.end_offset]}
        for c, path in session.execute(query)
    ]


def highest_pair(session: Session) -> Optional[dict]:
    first, second = aliased(Document), aliased(Document)
    row = session.execute(
        select(DocumentPair.similarity, first.path, second.path)
        .join(first, first.id == DocumentPair.first_id)
        .join(second, second.id == DocumentPair.second_id)
        .where(first.is_latest.is_(True), second.is_latest.is_(True))
        .order_by(DocumentPair.similarity.desc(), DocumentPair.first_id, DocumentPair.second_id)
        .limit(1)
    ).first()
    return {"similarity": row[0], "paths": [row[1], row[2]]} if row else None


#: Beyond this many documents the "nothing found" message does not compare all pairs.
ALL_PAIRS_LIMIT = 2000


def highest_by_signature(session: Session, limit: int = ALL_PAIRS_LIMIT) -> Optional[dict]:
    """The most similar pair of latest documents by their stored MinHash signatures, for
    saying how close "nothing found" came when no pair even shared an LSH band. Compares
    all pairs, so only up to ``limit`` documents; None beyond that or with < 2 signed."""
    rows = session.execute(
        select(Document.id, Document.path, Document.signature)
        .where(Document.is_latest.is_(True), Document.signature.is_not(None)).order_by(Document.id).limit(limit + 1)
    ).all()
    if len(rows) < 2 or len(rows) > limit:
        return None
    import numpy as np

    from .sketch import from_blob

    signatures = np.stack([from_blob(row.signature) for row in rows])
    best = (-1.0, 0, 0)
    for i in range(len(rows) - 1):
        agreement = (signatures[i + 1 :] == signatures[i]).mean(axis=1)
        j = int(np.argmax(agreement))  # first of the highest: ties go to the lower id
        if agreement[j] > best[0]:
            best = (float(agreement[j]), i, i + 1 + j)
    similarity, i, j = best
    return {"similarity": similarity, "paths": [rows[i].path, rows[j].path]}


def build(
    session: Session, threshold: Optional[float] = None, document: Optional[str] = None, timestamps: bool = True,
    limit: Optional[int] = None, stream: bool = False, evidence: bool = True, brief: bool = False,
) -> dict:
    """The whole report; ``document`` (id or path) narrows it to one document.

    With ``timestamps=False`` the ingestion times are left out, so the same input gives a
    byte-identical report whenever it was ingested. With ``limit``, each list (documents,
    clusters, derivations, boilerplate, credits) holds at most that many entries, the
    first in the report's order, and only their texts are read; the summary still counts
    everything and says what is shown (``summary["shown"]``). A terminal report of a large
    corpus then costs what the duplicate clusters cost, not what every passage does.
    With ``stream=True`` the documents and derivations are :class:`Listing` s, built a
    batch at a time as they are iterated inside ``session`` (for output written as it is
    built, such as ``render.write_json``): the passages and texts of 100,000 documents are
    never all in memory at once, and derivations never iterated are never read. With
    ``evidence=False`` each derivation's ``"passages"`` is None: neither the passage matches
    nor the texts they quote are read (most of a whole report's reading; what the CSV needs).
    With ``brief=True`` each document entry holds only its id and path (what
    :func:`dataset_plan` needs; the CSV lists no documents), read from an index rather than the document rows: at
    100,000 documents the whole listing took 0.7-1.0 s, its two columns 0.2-0.4 s.
    """
    settings = manifest.load(session)
    if settings is None:
        raise ProvenanceError("this database holds no documents yet; run `provenance ingest PATH` first")
    threshold = settings.near_duplicate_threshold if threshold is None else threshold
    if not 0.0 < threshold <= 1.0:
        raise ProvenanceError(f"--threshold must be in (0, 1], got {threshold}")
    if limit is not None and limit < 0:
        raise ProvenanceError(f"--limit must be 0 or more, got {limit}")
    focus = resolve_document(session, document) if document else None
    focus_id = focus.id if focus else None
    columns = (Document.id, Document.path) if brief else (*_REPORT_COLUMNS[:-1], timestamp_text(Document.ingested_at, session))
    if focus is None:
        if brief:  # the (is_latest, path) index holds the two columns, and is the smaller
            query = select(*columns).where(Document.is_latest.is_(True)).order_by(Document.id)
            shown = session.connection().execute(query.limit(limit) if limit is not None else query).all()
        else:
            shown = latest_listing(session, _REPORT_COLUMNS, limit)
        document_count = len(shown) if limit is None else count_documents(session)
        # The clusters read what they need of their members themselves when the listing is brief.
        found = cluster_stars(session, threshold, None if brief else {row[0]: row for row in shown})
    else:
        shown = session.execute(select(*columns).where(Document.id == focus.id)).all() if focus.is_latest else []
        document_count = len(shown)
        found = cluster_stars(session, threshold, focus=focus.id)
        found = found._replace(stars=[
            (centre, joined) for centre, joined in found.stars
            if centre == focus.id or any(member == focus.id for member, _ in joined)
        ])
    # Only the clusters listed are written out (a terminal report lists the first 20).
    cluster_list = cluster_entries(found, limit)
    boilerplate_list = boilerplate(session)

    def document_entries() -> Iterator[dict]:
        if brief:
            yield from ({"id": id_, "path": path} for id_, path in shown)
            return
        # Unpacked in _REPORT_COLUMNS' order: a row's attributes took twice as long.
        for id_, path, content_hash, published_at, source, ingested_at in shown:
            entry = {"id": id_, "path": path, "source": source, "content_hash": content_hash,
                     "published_at": iso(published_at)}
            if timestamps:
                entry["ingested_at"] = iso(ingested_at)
            yield entry

    def derivation_entries() -> Iterator[dict]:
        # Listed whole, the latest documents' paths are at hand for the derivations, which are
        # between latest documents: reading them again took 0.06-0.16 s at 100,000 (one-off).
        paths = {row[0]: row[1] for row in shown} if focus is None and limit is None else None
        return _derivation_entries(session, _derivation_rows(session, focus_id, limit, paths), evidence)

    if stream:  # not even the derivations' rows are read until they are listed
        derivation_count = count_derivations(session, focus_id)
        listed = Listing(derivation_count if limit is None else min(limit, derivation_count), derivation_entries)
    else:
        listed = derivations(session, focus_id, evidence, limit=limit)
        derivation_count = len(listed) if limit is None else count_derivations(session, focus_id)
    report = {
        "schema": SCHEMA,
        "threshold": threshold,
        "documents": Listing(len(shown), document_entries) if stream else list(document_entries()),
        "clusters": cluster_list,
        "derivations": listed,
        "boilerplate": boilerplate_list[:limit],
        "citations": citations(session, focus_id, limit=limit),
    }
    # Unlimited, each list is whole and counts itself; limited, what it left out is counted.
    totals = {
        "documents": document_count,
        "clusters": len(found.stars),
        "derivations": derivation_count,
        "boilerplate": len(boilerplate_list),
        "citations": len(report["citations"]) if limit is None else count_citations(session, focus_id),
    }
    report["summary"] = _summary(session, report, duplicate_counts(found), totals, threshold, limit)
    return report


def _summary(
    session: Session, report: dict, duplicates: tuple[int, int], totals: dict, threshold: float, limit: Optional[int],
) -> dict:
    counts = {
        "documents": totals["documents"],
        "clusters": totals["clusters"],
        "exact_duplicates": duplicates[0],
        "near_duplicates": duplicates[1],
        "derivations": totals["derivations"],
    }
    if counts["clusters"] or counts["derivations"]:
        message = (
            f"{counts['clusters']} cluster(s) of duplicates and {counts['derivations']} derivation(s) "
            f"among {counts['documents']} document(s) at threshold {threshold}"
        )
    else:
        best = highest_pair(session) or highest_by_signature(session)
        if best is None:
            message = (
                f"nothing found among {counts['documents']} document(s): no pair of documents shared an LSH "
                f"band (no candidate near threshold {threshold}) and no passages were reused"
            )
        else:
            message = (
                f"nothing found among {counts['documents']} document(s): no pair above threshold {threshold}; "
                f"highest similarity {best['similarity']:.2f} between {best['paths'][0]} and {best['paths'][1]}"
                ", and no passages were reused"
            )
            counts["highest"] = {"similarity": round(best["similarity"], 4), "paths": best["paths"]}
    if limit is not None:
        counts["limit"] = limit
        counts["shown"] = {key: len(report[key]) for key in totals}
        counts["totals"] = totals
    return {**counts, "message": message}


def dataset_plan(report: dict, keep: str) -> list[dict]:
    """One record per document: its cluster, role, and whether a deduplicated dataset keeps it.

    ``keep``: ``canonical`` keeps each cluster's canonical member, ``earliest`` the first
    ingested member, ``none`` keeps no clustered document. Unclustered documents are kept.
    Nothing is deleted: this is the plan a pipeline acts on.
    """
    if keep not in ("canonical", "earliest", "none"):
        raise ProvenanceError(f"--keep must be canonical, earliest or none, not {keep!r}")
    placement: dict[int, dict] = {}
    for cluster in report["clusters"]:
        ids = [cluster["canonical"]["id"]] + [m["id"] for m in cluster["members"]]
        kept = {"canonical": cluster["canonical"]["id"], "earliest": min(ids), "none": None}[keep]
        placement[cluster["canonical"]["id"]] = {
            "cluster": cluster["id"], "role": "canonical", "relation": "canonical", "similarity": 1.0,
            "reason": cluster["canonical"]["reason"], "keep": cluster["canonical"]["id"] == kept,
        }
        for m in cluster["members"]:
            placement[m["id"]] = {
                "cluster": cluster["id"], "role": "member", "relation": m["relation"], "similarity": m["similarity"],
                "reason": f"{m['relation']} of document {cluster['canonical']['id']} (similarity {m['similarity']:.2f})",
                "keep": m["id"] == kept,
            }
    records = []
    for document in report["documents"]:
        info = placement.get(document["id"], {
            "cluster": None, "role": "unique", "relation": None, "similarity": None,
            "reason": "in no duplicate cluster", "keep": True,
        })
        records.append({"id": document["id"], "path": document["path"], **info})
    return records
