"""Export the lineage as a W3C PROV document, built with the ``prov`` package.

Mapping (PROV-DM): documents (each version) and their reused passages are entities; each
ingest run is an activity (``wasGeneratedBy``); publishers and credited agencies are agents
(``wasAttributedTo``, and ``prv:credits`` for a credit found in the text); derivations are
``wasDerivedFrom`` with a subtype: ``prov:Quotation`` for copied text (duplicate,
near-duplicate, syndicated), ``prv:Rewrite`` for reworded text, ``prov:Revision`` for a new
version of the same file. Evidence (scores, spans, reason, settings) rides as attributes.
"""

from __future__ import annotations

import json
import tempfile
from typing import IO, Iterable, Iterator, NamedTuple, Optional, Union

import prov.model as pm
from prov.serializers.provjson import encode_json_document
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from . import __version__, manifest
from .db.models import Citation, Derivation, Document, IngestRun, Passage, PassageMatch
from .lineage import edges
from .render import members_two_levels_in, one_level_in, to_json
from .report import resolve_document

NAMESPACE = "https://provenance.invalid/ns#"
_SUBTYPE = {
    "duplicate": pm.PROV["Quotation"],
    "near-duplicate": pm.PROV["Quotation"],
    "syndicated": pm.PROV["Quotation"],
    "revision": pm.PROV["Revision"],
}


#: Records in each PROV document that :func:`chunks` hands over. The whole database at
#: 100,000 documents built as one document took 49.6 s and a peak of 1.83 GB to export as
#: PROV-JSON, 34.6 s and 1.53 GB as PROV-N: the prov package's objects for every record.
CHUNK_RECORDS = 5_000
#: Rows read at a time, in order of id.
_ROWS_AT_A_TIME = 5_000


class _Chunk:
    """The PROV document being filled, and how many records it holds."""

    def __init__(self) -> None:
        self.doc = pm.ProvDocument()
        self.ns = self.doc.add_namespace("prv", NAMESPACE)
        self.records = 0


def chunks(session: Session, document: Optional[str] = None) -> Iterator[pm.ProvDocument]:
    """The PROV records of the whole database, or of one document's lineage neighbourhood,
    in order, in PROV documents of about :data:`CHUNK_RECORDS` records each (each declaring
    the ``prv`` namespace): together they are :func:`build`'s document, and :func:`pieces`
    writes them out without ever holding it whole. An unknown ``document`` is an error
    here, before any record."""
    selected: Optional[set[int]] = None
    if document is not None:
        root = resolve_document(session, document)
        selected = _neighbourhood(session, root.id)
    return _chunks(session, selected)


def _chunks(session: Session, selected: Optional[set[int]]) -> Iterator[pm.ProvDocument]:
    chunk = _Chunk()

    def full() -> Iterator[pm.ProvDocument]:
        nonlocal chunk
        if chunk.records >= CHUNK_RECORDS:
            yield chunk.doc
            chunk = _Chunk()

    documents = select(Document.run_id)
    if selected is not None:
        documents = documents.where(Document.id.in_(selected))
    runs = session.scalars(select(IngestRun).where(IngestRun.id.in_(documents)).order_by(IngestRun.id)).all()
    for run in runs:
        ns = chunk.ns
        chunk.doc.activity(
            ns[f"run/{run.id}"], run.started_at, run.finished_at,
            {pm.PROV_TYPE: ns["IngestRun"], ns["settingsFingerprint"]: run.settings_fingerprint,
             ns["toolVersion"]: run.tool_version, ns["documentsAdded"]: run.documents_added,
             ns["status"]: run.status},
        )
        chunk.records += 1
        yield from full()
    chunk.doc.agent(chunk.ns["software/provenance"],
                    {pm.PROV_TYPE: pm.PROV["SoftwareAgent"], chunk.ns["version"]: __version__})
    chunk.records += 1
    for run in runs:
        chunk.doc.wasAssociatedWith(chunk.ns[f"run/{run.id}"], chunk.ns["software/provenance"])
        chunk.records += 1
        yield from full()
    publishers: set[str] = set()
    exported: set[int] = set()
    # What the export states about a document, read as plain rows, a few thousand at a time:
    # its text and signature stay in the database (as ORM objects, 100,000 documents held 1.9 GB).
    for d in _in_order_of_id(session, select(*_DOCUMENT_COLUMNS), Document.id, selected):
        ns = chunk.ns
        exported.add(d.id)
        attributes = {
            pm.PROV_TYPE: ns["Document"], ns["path"]: d.path, ns["contentHash"]: d.content_hash,
            ns["version"]: d.version, ns["format"]: d.format, ns["encoding"]: d.encoding,
        }
        if d.published_at:
            attributes[ns["publishedAt"]] = d.published_at.isoformat()
        if d.url:
            attributes[ns["url"]] = d.url
        if d.title:
            attributes[ns["title"]] = d.title
        chunk.doc.entity(ns[f"document/{d.id}"], attributes)
        chunk.doc.wasGeneratedBy(ns[f"document/{d.id}"], ns[f"run/{d.run_id}"], d.ingested_at)
        chunk.records += 2
        if d.source:
            agent_id = ns[f"publisher/{_slug(d.source)}"]
            if d.source not in publishers:
                chunk.doc.agent(agent_id, {pm.PROV_TYPE: pm.PROV["Organization"], ns["name"]: d.source, ns["role"]: "publisher"})
                publishers.add(d.source)
                chunk.records += 1
            chunk.doc.wasAttributedTo(ns[f"document/{d.id}"], agent_id)
            chunk.records += 1
        yield from full()
    agencies: set[str] = set()
    for citation in _in_order_of_id(session, select(*_CITATION_COLUMNS), Citation.id, selected, Citation.document_id):
        ns = chunk.ns
        agent_id = ns[f"agency/{_slug(citation.agency)}"]
        if citation.agency not in agencies:
            chunk.doc.agent(agent_id, {pm.PROV_TYPE: pm.PROV["Organization"], ns["name"]: citation.agency, ns["role"]: "agency"})
            agencies.add(citation.agency)
            chunk.records += 1
        chunk.doc.influence(
            ns[f"document/{citation.document_id}"], agent_id, ns[f"citation/{citation.id}"],
            {pm.PROV_TYPE: ns["Credit"], ns["text"]: citation.text,
             ns["span"]: f"{citation.start_offset}-{citation.end_offset}"},
        )
        chunk.records += 1
        yield from full()
    settings = manifest.load(session)
    fingerprint = settings.fingerprint() if settings is not None else None
    for edge in edges(session, selected):
        if edge.derived_id not in exported or edge.source_id not in exported:
            continue
        ns = chunk.ns
        attributes = {pm.PROV_TYPE: _SUBTYPE.get(edge.relation, ns["Rewrite"]), ns["relation"]: edge.relation,
                      ns["reason"]: edge.reason}
        if edge.score is not None:
            attributes[ns["score"]] = edge.score
            attributes[ns["coverage"]] = edge.coverage
            attributes[ns["credited"]] = bool(edge.credited)
        if fingerprint is not None and edge.relation != "revision":
            attributes[ns["settingsFingerprint"]] = fingerprint
        identifier = ns[f"derivation/{edge.derived_id}-{edge.source_id}-{edge.relation}"]
        chunk.doc.wasDerivedFrom(ns[f"document/{edge.derived_id}"], ns[f"document/{edge.source_id}"],
                                 identifier=identifier, other_attributes=attributes)
        chunk.records += 1
        yield from full()
    made: set[int] = set()
    for match in _passage_matches(session, selected):
        ns = chunk.ns
        dp, sp = _Passage.of(match, "derived"), _Passage.of(match, "source")
        for passage in (dp, sp):
            if passage.id not in made:
                chunk.doc.entity(ns[f"passage/{passage.id}"], {
                    pm.PROV_TYPE: ns["Passage"], ns["span"]: f"{passage.start_offset}-{passage.end_offset}",
                })
                chunk.doc.specializationOf(ns[f"passage/{passage.id}"], ns[f"document/{passage.document_id}"])
                made.add(passage.id)
                chunk.records += 2
        subtype = pm.PROV["Quotation"] if match.label in ("verbatim", "syndicated") else ns["Rewrite"]
        chunk.doc.wasDerivedFrom(
            ns[f"passage/{dp.id}"], ns[f"passage/{sp.id}"], identifier=ns[f"match/{match.id}"],
            other_attributes={pm.PROV_TYPE: subtype, ns["label"]: match.label, ns["similarity"]: match.similarity,
                              ns["jaccard"]: match.jaccard, ns["containmentDerived"]: match.containment_derived,
                              ns["containmentSource"]: match.containment_source},
        )
        chunk.records += 1
        yield from full()
    yield chunk.doc


def build(session: Session, document: Optional[str] = None) -> pm.ProvDocument:
    """A PROV document for the whole database, or for one document's lineage neighbourhood,
    held whole (see :func:`pieces` to write one out)."""
    whole = pm.ProvDocument()
    whole.add_namespace("prv", NAMESPACE)
    for chunk in chunks(session, document):
        whole.update(chunk)
        _release(chunk)
    return whole


def _in_order_of_id(session: Session, query, id_column, selected: Optional[set[int]], selected_column=None) -> Iterator:
    """The rows of ``query`` in order of ``id_column``, :data:`_ROWS_AT_A_TIME` at a time;
    only those whose ``selected_column`` (``id_column`` by default) is in ``selected``."""
    if selected is not None:
        query = query.where((id_column if selected_column is None else selected_column).in_(selected))
    last = None
    while True:
        batch = session.execute(
            (query if last is None else query.where(id_column > last)).order_by(id_column).limit(_ROWS_AT_A_TIME)
        ).all()
        yield from batch
        if len(batch) < _ROWS_AT_A_TIME:
            return
        last = batch[-1].id


_CITATION_COLUMNS = (Citation.id, Citation.document_id, Citation.agency, Citation.text, Citation.start_offset,
                     Citation.end_offset)
_DOCUMENT_COLUMNS = (Document.id, Document.path, Document.content_hash, Document.version, Document.format,
                     Document.encoding, Document.published_at, Document.url, Document.title, Document.source,
                     Document.run_id, Document.ingested_at)


class _Passage(NamedTuple):
    """What the export states about a passage, read from one side of a passage match."""

    id: int
    document_id: int
    start_offset: int
    end_offset: int

    @staticmethod
    def columns(passage, side: str) -> list:
        return [getattr(passage, field).label(f"{side}_{field}") for field in _Passage._fields]

    @staticmethod
    def of(row, side: str) -> "_Passage":
        return _Passage(*(getattr(row, f"{side}_{field}") for field in _Passage._fields))


def _passage_matches(session: Session, selected: Optional[set[int]]) -> Iterator:
    """The passage matches of derivations between exported documents, with their two
    passages, in order of id: the reused passages are entities that are part of their
    documents, with the passage-level derivation that is the evidence."""
    derived_passage, source_passage = aliased(Passage), aliased(Passage)
    query = (
        select(PassageMatch.id, PassageMatch.label, PassageMatch.similarity, PassageMatch.jaccard,
               PassageMatch.containment_derived, PassageMatch.containment_source,
               *_Passage.columns(derived_passage, "derived"), *_Passage.columns(source_passage, "source"))
        .join(Derivation, Derivation.id == PassageMatch.derivation_id)
        .join(derived_passage, derived_passage.id == PassageMatch.derived_passage_id)
        .join(source_passage, source_passage.id == PassageMatch.source_passage_id)
    )
    if selected is not None:
        query = query.where(Derivation.derived_id.in_(selected), Derivation.source_id.in_(selected))
    return _in_order_of_id(session, query, PassageMatch.id, None)


def _neighbourhood(session: Session, document_id: int) -> set[int]:
    """The document and everything connected to it by lineage edges, transitively."""
    all_edges = edges(session)
    adjacency: dict[int, set[int]] = {}
    for edge in all_edges:
        adjacency.setdefault(edge.derived_id, set()).add(edge.source_id)
        adjacency.setdefault(edge.source_id, set()).add(edge.derived_id)
    seen, stack = {document_id}, [document_id]
    while stack:
        for other in adjacency.get(stack.pop(), ()):
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return seen


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "unnamed"


def serialize(document: pm.ProvDocument, fmt: str) -> str:
    """A PROV document held whole as text (see :func:`pieces` for a database's export)."""
    if fmt == "prov-json":
        # The prov package's own PROV-JSON mapping, written by render.to_json rather than by
        # the standard library's pure-Python indenting encoder (at 101,200 documents the
        # latter was most of a 72-second export). Non-ASCII text is written as UTF-8, not escaped.
        return to_json(encode_json_document(document)) + "\n"
    if fmt == "prov-n":
        return document.get_provn() + "\n"
    raise ValueError(f"unknown PROV format {fmt!r}; use prov-json or prov-n")


def pieces(session: Session, fmt: str, document: Optional[str] = None) -> Iterator[Union[bytes, str]]:
    """The text of ``serialize(build(session, document), fmt)`` in pieces, UTF-8 bytes or
    text, built and written a chunk of records at a time (see :func:`chunks`): the same
    text, without the whole document in memory."""
    if fmt == "prov-json":
        return _prov_json_pieces(chunks(session, document))
    if fmt == "prov-n":
        return _prov_n_pieces(chunks(session, document))
    raise ValueError(f"unknown PROV format {fmt!r}; use prov-json or prov-n")


def _prov_n_pieces(documents: Iterable[pm.ProvDocument]) -> Iterator[str]:
    """PROV-N: the records, each on a line of its own, between the document's header and end."""
    empty = pm.ProvDocument()
    empty.add_namespace("prv", NAMESPACE)
    header = empty.get_provn()  # "document", the prefix lines, then "endDocument"
    yield header[: -len(_PROV_N_END)]
    for doc in documents:
        yield "".join(f"\n  {record.get_provn()}" for record in doc.get_records())
        _release(doc)
    yield _PROV_N_END + "\n"


def _release(doc: pm.ProvDocument) -> None:
    """Let go of a chunk's records once it is written out. A prov record and its document
    refer to each other, so a chunk let go of whole waits for a full garbage collection:
    the PROV-JSON export at 100,000 documents peaked at 430 MB, against 224 MB released
    this way, and 220 MB with a full collection after each chunk, which took 11 s more
    (one-off, in process). Emptied through the document's own containers (prov 3.2.3);
    should they change, the chunk is only collected later."""
    for name in ("_records", "_id_map"):
        held = getattr(doc, name, None)
        if hasattr(held, "clear"):
            held.clear()


_PROV_N_END = "\nendDocument"
#: Bytes of a PROV-JSON section's entries kept in memory before they go to a temporary file.
_SPOOLED_BYTES = 4 << 20


def _prov_json_pieces(documents: Iterable[pm.ProvDocument]) -> Iterator[Union[bytes, str]]:
    """PROV-JSON groups records by kind ("entity", "wasDerivedFrom", ...), each kind an
    object keyed by the records' identifiers. Each chunk is encoded by the prov package,
    its entries added to their kind's section in a temporary file, and the sections written
    out in turn at the end. Records without an identifier get blank ones ("_:id1", ...)
    numbered within each chunk; they are numbered on across chunks, as in a whole document."""
    sections: dict[str, IO[bytes]] = {}
    prefix: dict = {}
    blank = 0
    try:
        for doc in documents:
            container = encode_json_document(doc)
            prefix = container.pop("prefix", prefix)
            numbered = 0
            for kind, entries in container.items():
                if not entries:
                    continue
                renamed = {}
                for key, value in entries.items():
                    if key.startswith("_:id"):
                        number = int(key[len("_:id"):])
                        numbered = max(numbered, number)
                        key = f"_:id{blank + number}"
                    renamed[key] = value
                section = sections.get(kind)
                if section is None:
                    section = sections[kind] = tempfile.SpooledTemporaryFile(_SPOOLED_BYTES)
                else:
                    section.write(b",\n")
                encoded = members_two_levels_in(renamed)
                section.write(encoded if isinstance(encoded, bytes) else encoded.encode("utf-8"))
            blank += numbered
            _release(doc)
        yield '{\n  "prefix": '
        yield one_level_in(prefix)
        for kind, section in sections.items():
            yield f",\n  {json.dumps(kind)}: {{\n"
            section.seek(0)
            yield from iter(lambda: section.read(1 << 20), b"")
            yield "\n  }"
        yield "\n}\n"
    finally:
        for section in sections.values():
            section.close()
