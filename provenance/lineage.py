"""Walk the lineage graph: what a document came from and what came from it, transitively.

Edges are derivations (derived -> source, with relation and score) and revisions (a new
version of a file -> the version it replaced). Returned as plain nested data; the CLI
renders it as an indented tree, JSON or Graphviz DOT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .db.models import Derivation, Document
from .report import resolve_document


@dataclass(frozen=True)
class Edge:
    derived_id: int
    source_id: int
    relation: str
    score: Optional[float]
    coverage: Optional[float]
    credited: Optional[bool]
    reason: str


def _describe(document: Document) -> dict:
    return {
        "id": document.id,
        "path": document.path,
        "version": document.version,
        "source": document.source,
        "published_at": document.published_at.isoformat() if document.published_at else None,
        "ingested_at": document.ingested_at.isoformat() if document.ingested_at else None,
    }


def _edges_of(session: Session, document_id: int, upward: bool) -> list[Edge]:
    column = Derivation.derived_id if upward else Derivation.source_id
    edges = [
        Edge(d.derived_id, d.source_id, d.relation, d.score, d.coverage, d.credited, d.reason)
        for d in session.scalars(select(Derivation).where(column == document_id).order_by(Derivation.id))
    ]
    if upward:
        previous = session.scalar(select(Document.previous_version_id).where(Document.id == document_id))
        if previous is not None:
            edges.append(Edge(document_id, previous, "revision", None, None, None, "new version of the same path"))
    else:
        # Found through ix_document_previous_version_id (migration 0014); unindexed, SQLite
        # read every document (0.2 s at 101,200), and this asked by path first.
        for newer in session.scalars(select(Document.id).where(Document.previous_version_id == document_id)):
            edges.append(Edge(newer, document_id, "revision", None, None, None, "new version of the same path"))
    return edges


def _walk(session: Session, document_id: int, upward: bool, seen: set[int], depth: int, max_depth: int) -> list[dict]:
    if depth >= max_depth:
        return []
    nodes = []
    for edge in _edges_of(session, document_id, upward):
        other_id = edge.source_id if upward else edge.derived_id
        other = session.get(Document, other_id)
        node = {
            **_describe(other),
            "relation": edge.relation,
            "score": edge.score,
            "coverage": edge.coverage,
            "credited": edge.credited,
            "reason": edge.reason,
        }
        if other_id in seen:
            node["repeated"] = True
            node["sources" if upward else "derived"] = []
        else:
            seen.add(other_id)
            node["sources" if upward else "derived"] = _walk(session, other_id, upward, seen, depth + 1, max_depth)
        nodes.append(node)
    return nodes


def lineage(session: Session, reference: str, max_depth: int = 50) -> dict:
    """The document, the tree of its sources and the tree of documents derived from it."""
    document = resolve_document(session, reference)
    return {
        "document": _describe(document),
        "sources": _walk(session, document.id, True, {document.id}, 0, max_depth),
        "derived": _walk(session, document.id, False, {document.id}, 0, max_depth),
    }


def edges(session: Session, document_ids: Optional[set[int]] = None) -> list[Edge]:
    """Every derivation and revision edge, optionally only those touching ``document_ids``."""
    query = select(Derivation.derived_id, Derivation.source_id, Derivation.relation, Derivation.score,
                   Derivation.coverage, Derivation.credited, Derivation.reason).order_by(Derivation.id)
    if document_ids is not None:
        query = query.where(or_(Derivation.derived_id.in_(document_ids), Derivation.source_id.in_(document_ids)))
    out = [Edge(*row) for row in session.execute(query)]  # plain rows: 40,641 ORM objects took a second
    revisions = select(Document.id, Document.previous_version_id).where(Document.previous_version_id.is_not(None))
    for newer, older in session.execute(revisions):
        if document_ids is None or newer in document_ids or older in document_ids:
            out.append(Edge(newer, older, "revision", None, None, None, "new version of the same path"))
    return out


def tree_text(data: dict) -> str:
    """An indented tree: sources above (<-), derived documents below (->)."""
    doc = data["document"]
    lines = [f"#{doc['id']} {doc['path']}" + (f" (published {doc['published_at']})" if doc["published_at"] else "")]

    def label(node: dict) -> str:
        score = f" {node['score']:.2f}" if node.get("score") is not None else ""
        credit = "" if node.get("credited") is None else (", credited" if node["credited"] else ", uncredited")
        when = node["published_at"] or f"ingested {node['ingested_at']}"
        return f"#{node['id']} {node['path']} [{node['relation']}{score}{credit}; {when}]" + (" (seen above)" if node.get("repeated") else "")

    def add(nodes: list[dict], key: str, arrow: str, indent: int) -> None:
        for node in nodes:
            lines.append("  " * indent + f"{arrow} " + label(node))
            add(node[key], key, arrow, indent + 1)

    if data["sources"]:
        lines.append("came from:")
        add(data["sources"], "sources", "<-", 1)
    if data["derived"]:
        lines.append("used by:")
        add(data["derived"], "derived", "->", 1)
    if not data["sources"] and not data["derived"]:
        lines.append("no known sources and no derived documents")
    return "\n".join(lines) + "\n"


def tree_dot(data: dict) -> str:
    """Graphviz DOT of the lineage (render with `dot -Tsvg`); labels are quoted and escaped."""

    def quote(text: object) -> str:
        return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    nodes: dict[int, str] = {}
    arcs: list[str] = []

    def visit(node: dict, key: str, child_of: int, upward: bool) -> None:
        nodes[node["id"]] = node["path"]
        derived, source = (child_of, node["id"]) if upward else (node["id"], child_of)
        score = f" {node['score']:.2f}" if node.get("score") is not None else ""
        arcs.append(f"  d{derived} -> d{source} [label={quote(node['relation'] + score)}];")
        for child in node[key]:
            visit(child, key, node["id"], upward)

    root = data["document"]
    nodes[root["id"]] = root["path"]
    for node in data["sources"]:
        visit(node, "sources", root["id"], True)
    for node in data["derived"]:
        visit(node, "derived", root["id"], False)
    out = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box];"]
    for node_id, path in sorted(nodes.items()):
        style = ", style=bold" if node_id == root["id"] else ""
        out.append(f"  d{node_id} [label={quote(f'#{node_id} {path}')}{style}];")
    out.extend(dict.fromkeys(arcs))
    out.append("}")
    return "\n".join(out) + "\n"
