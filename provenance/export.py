"""Export the lineage as a W3C PROV document, built with the ``prov`` package.

Mapping (PROV-DM): documents (each version) and their reused passages are entities; each
ingest run is an activity (``wasGeneratedBy``); publishers and credited agencies are agents
(``wasAttributedTo``, and ``prv:credits`` for a credit found in the text); derivations are
``wasDerivedFrom`` with a subtype: ``prov:Quotation`` for copied text (duplicate,
near-duplicate, syndicated), ``prv:Rewrite`` for reworded text, ``prov:Revision`` for a new
version of the same file. Evidence (scores, spans, reason, settings) rides as attributes.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import prov.model as pm
from prov.serializers.provjson import encode_json_document
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from . import __version__, manifest
from .db.models import Citation, Derivation, Document, IngestRun, Passage, PassageMatch
from .lineage import edges
from .render import to_json
from .report import resolve_document

NAMESPACE = "https://provenance.invalid/ns#"
_SUBTYPE = {
    "duplicate": pm.PROV["Quotation"],
    "near-duplicate": pm.PROV["Quotation"],
    "syndicated": pm.PROV["Quotation"],
    "revision": pm.PROV["Revision"],
}


def build(session: Session, document: Optional[str] = None) -> pm.ProvDocument:
    """A PROV document for the whole database, or for one document's lineage neighbourhood."""
    doc = pm.ProvDocument()
    ns = doc.add_namespace("prv", NAMESPACE)
    settings = manifest.load(session)
    selected: Optional[set[int]] = None
    if document is not None:
        root = resolve_document(session, document)
        selected = _neighbourhood(session, root.id)
    # What the export states about a document, read as plain rows: its text and signature
    # stay in the database (as ORM objects, 100,000 documents held 1.9 GB).
    query = select(*_DOCUMENT_COLUMNS).order_by(Document.id)
    if selected is not None:
        query = query.where(Document.id.in_(selected))
    documents = {d.id: d for d in session.execute(query)}
    runs = {r.id: r for r in session.scalars(select(IngestRun).where(IngestRun.id.in_({d.run_id for d in documents.values()})))}
    for run in runs.values():
        doc.activity(
            ns[f"run/{run.id}"], run.started_at, run.finished_at,
            {pm.PROV_TYPE: ns["IngestRun"], ns["settingsFingerprint"]: run.settings_fingerprint,
             ns["toolVersion"]: run.tool_version, ns["documentsAdded"]: run.documents_added,
             ns["status"]: run.status},
        )
    tool = doc.agent(ns["software/provenance"], {pm.PROV_TYPE: pm.PROV["SoftwareAgent"], ns["version"]: __version__})
    for run in runs.values():
        doc.wasAssociatedWith(ns[f"run/{run.id}"], tool)
    publishers: set[str] = set()
    for d in documents.values():
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
        doc.entity(ns[f"document/{d.id}"], attributes)
        doc.wasGeneratedBy(ns[f"document/{d.id}"], ns[f"run/{d.run_id}"], d.ingested_at)
        if d.source:
            agent_id = ns[f"publisher/{_slug(d.source)}"]
            if d.source not in publishers:
                doc.agent(agent_id, {pm.PROV_TYPE: pm.PROV["Organization"], ns["name"]: d.source, ns["role"]: "publisher"})
                publishers.add(d.source)
            doc.wasAttributedTo(ns[f"document/{d.id}"], agent_id)
    agencies: set[str] = set()
    for citation in session.scalars(select(Citation).where(Citation.document_id.in_(documents)).order_by(Citation.id)):
        agent_id = ns[f"agency/{_slug(citation.agency)}"]
        if citation.agency not in agencies:
            doc.agent(agent_id, {pm.PROV_TYPE: pm.PROV["Organization"], ns["name"]: citation.agency, ns["role"]: "agency"})
            agencies.add(citation.agency)
        doc.influence(
            ns[f"document/{citation.document_id}"], agent_id, ns[f"citation/{citation.id}"],
            {pm.PROV_TYPE: ns["Credit"], ns["text"]: citation.text,
             ns["span"]: f"{citation.start_offset}-{citation.end_offset}"},
        )
    fingerprint = settings.fingerprint() if settings is not None else None
    for edge in edges(session, set(documents)):
        if edge.derived_id not in documents or edge.source_id not in documents:
            continue
        attributes = {pm.PROV_TYPE: _SUBTYPE.get(edge.relation, ns["Rewrite"]), ns["relation"]: edge.relation,
                      ns["reason"]: edge.reason}
        if edge.score is not None:
            attributes[ns["score"]] = edge.score
            attributes[ns["coverage"]] = edge.coverage
            attributes[ns["credited"]] = bool(edge.credited)
        if fingerprint is not None and edge.relation != "revision":
            attributes[ns["settingsFingerprint"]] = fingerprint
        identifier = ns[f"derivation/{edge.derived_id}-{edge.source_id}-{edge.relation}"]
        doc.wasDerivedFrom(ns[f"document/{edge.derived_id}"], ns[f"document/{edge.source_id}"], identifier=identifier,
                           other_attributes=attributes)
    _passages(session, doc, ns, documents)
    return doc


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


def _passages(session: Session, doc: pm.ProvDocument, ns, documents: dict) -> None:
    """Reused passages as entities that are part of their documents, with the passage-level
    derivation that is the evidence."""
    derived_passage, source_passage = aliased(Passage), aliased(Passage)
    rows = session.execute(
        select(PassageMatch.id, PassageMatch.label, PassageMatch.similarity, PassageMatch.jaccard,
               PassageMatch.containment_derived, PassageMatch.containment_source,
               *_Passage.columns(derived_passage, "derived"), *_Passage.columns(source_passage, "source"))
        .join(Derivation, Derivation.id == PassageMatch.derivation_id)
        .join(derived_passage, derived_passage.id == PassageMatch.derived_passage_id)
        .join(source_passage, source_passage.id == PassageMatch.source_passage_id)
        .where(Derivation.derived_id.in_(documents), Derivation.source_id.in_(documents))
        .order_by(PassageMatch.id)
    )
    made: set[int] = set()
    for match in rows:
        dp, sp = _Passage.of(match, "derived"), _Passage.of(match, "source")
        for passage in (dp, sp):
            if passage.id not in made:
                doc.entity(ns[f"passage/{passage.id}"], {
                    pm.PROV_TYPE: ns["Passage"], ns["span"]: f"{passage.start_offset}-{passage.end_offset}",
                })
                doc.specializationOf(ns[f"passage/{passage.id}"], ns[f"document/{passage.document_id}"])
                made.add(passage.id)
        subtype = pm.PROV["Quotation"] if match.label in ("verbatim", "syndicated") else ns["Rewrite"]
        doc.wasDerivedFrom(
            ns[f"passage/{dp.id}"], ns[f"passage/{sp.id}"], identifier=ns[f"match/{match.id}"],
            other_attributes={pm.PROV_TYPE: subtype, ns["label"]: match.label, ns["similarity"]: match.similarity,
                              ns["jaccard"]: match.jaccard, ns["containmentDerived"]: match.containment_derived,
                              ns["containmentSource"]: match.containment_source},
        )


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
    if fmt == "prov-json":
        # The prov package's own PROV-JSON mapping, written by render.to_json rather than by
        # the standard library's pure-Python indenting encoder (at 101,200 documents the
        # latter was most of a 72-second export). Non-ASCII text is written as UTF-8, not escaped.
        return to_json(encode_json_document(document)) + "\n"
    if fmt == "prov-n":
        return document.get_provn() + "\n"
    raise ValueError(f"unknown PROV format {fmt!r}; use prov-json or prov-n")
