"""Derivations: which document took text from which, in which direction, credited or not.

A derivation is assembled from aligned passage matches (the evidence) and the document
pair similarity; its relation, coverage and score are always recomputed from the stored
evidence, so correcting the evidence (new boilerplate) corrects the derivation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from . import index
from .db.models import Citation, Derivation, Document, DocumentPair, Passage, PassageMatch
from .match import score
from .prepare import passage_words
from .settings import Settings
from .sketch import estimate_jaccard, from_blob

#: Candidates below this estimated content-word Jaccard are not scored exactly.
_ESTIMATE_FLOOR = 0.15


@dataclass(frozen=True)
class Direction:
    derived_id: int
    source_id: int
    reason: str


def direction(a: Document | object, b: Document | object) -> Direction:
    """The source is the earlier by published_at, else by ingestion order."""
    if a.published_at is not None and b.published_at is not None and a.published_at != b.published_at:
        source, derived = (a, b) if a.published_at < b.published_at else (b, a)
        return Direction(
            derived.id, source.id,
            f"source published {source.published_at.isoformat()} before {derived.published_at.isoformat()}",
        )
    source, derived = (a, b) if a.id < b.id else (b, a)
    why = "same published_at" if a.published_at is not None and b.published_at is not None else "published_at unknown"
    return Direction(derived.id, source.id, f"source ingested first ({why}; document {source.id} before {derived.id})")


def derive(
    session: Session,
    document_id: int,
    signed: list[tuple[int, bytes]],
    words_by_passage: dict[int, list[str]],
    settings: Settings,
) -> int:
    """Find and store the derivations between a new document and earlier ones."""
    policy = settings.match_policy()
    candidates = index.passage_candidates(session, signed, document_id, settings)
    my_signatures = {pid: from_blob(blob) for pid, blob in signed}
    candidate_ids = sorted({c for found in candidates.values() for c in found})
    rows = {}
    for batch in index._chunks(candidate_ids):
        for row in session.execute(
            select(Passage.id, Passage.document_id, Passage.start_offset, Passage.end_offset, Passage.signature)
            .join(Document, Document.id == Passage.document_id)
            .where(Passage.id.in_(batch), Passage.boilerplate_id.is_(None), Document.is_latest.is_(True))
        ):
            rows[row.id] = row
    texts: dict[int, str] = {}
    words_cache: dict[int, list[str]] = {}
    best: dict[tuple[int, int], tuple] = {}
    for mine, found in sorted(candidates.items()):
        for candidate in sorted(found):
            row = rows.get(candidate)
            if row is None or row.signature is None:
                continue
            estimate = estimate_jaccard(my_signatures[mine], from_blob(row.signature))
            if estimate < _ESTIMATE_FLOOR:
                continue
            if candidate not in words_cache:
                if row.document_id not in texts:
                    texts[row.document_id] = session.scalar(select(Document.text).where(Document.id == row.document_id))
                words_cache[candidate] = passage_words(texts[row.document_id][row.start_offset : row.end_offset], settings)
            result = score(words_by_passage[mine], words_cache[candidate], policy)
            if result.label is None:
                continue
            key = (mine, row.document_id)
            if key not in best or result.similarity > best[key][1].similarity:
                best[key] = (candidate, result, estimate)
    by_source: dict[int, list] = {}
    for (mine, other_document), (candidate, result, estimate) in best.items():
        by_source.setdefault(other_document, []).append((mine, candidate, result, estimate))
    # Duplicates found at document level are derivations even without passage evidence.
    for first, second in session.execute(
        select(DocumentPair.first_id, DocumentPair.second_id).where(
            or_(DocumentPair.first_id == document_id, DocumentPair.second_id == document_id),
            or_(DocumentPair.exact.is_(True), DocumentPair.similarity >= settings.near_duplicate_threshold),
        )
    ):
        by_source.setdefault(second if first == document_id else first, [])
    _prefer_originals(session, by_source)
    created = 0
    me = session.get(Document, document_id)
    for other_id, matches in sorted(by_source.items()):
        other = session.get(Document, other_id)
        way = direction(me, other)
        forward = way.derived_id == document_id
        existing = session.scalar(
            select(Derivation.id).where(Derivation.derived_id == way.derived_id, Derivation.source_id == way.source_id)
        )
        if existing is not None:
            session.execute(delete(Derivation).where(Derivation.id == existing))
        derivation_id = session.execute(
            insert(Derivation).values(
                derived_id=way.derived_id, source_id=way.source_id, relation="pending", score=0.0,
                coverage=0.0, credited=False, reason=way.reason, run_id=me.run_id,
            ).returning(Derivation.id)
        ).scalar_one()
        if matches:
            session.execute(
                insert(PassageMatch),
                [
                    {
                        "derivation_id": derivation_id,
                        "derived_passage_id": mine if forward else candidate,
                        "source_passage_id": candidate if forward else mine,
                        "label": result.label,
                        "similarity": result.similarity,
                        "estimated_jaccard": round(estimate, 4),
                        "jaccard": result.jaccard,
                        "containment_derived": result.containment_a if forward else result.containment_b,
                        "containment_source": result.containment_b if forward else result.containment_a,
                        "content_overlap": result.content_overlap,
                    }
                    for mine, candidate, result, estimate in sorted(matches, key=lambda m: (m[0], m[1]))
                ],
            )
        if summarise(session, derivation_id, settings):
            created += 1
    return created


def _prefer_originals(session: Session, by_source: dict[int, list]) -> None:
    """Drop a source that is itself a copy of another source found for the same text.

    An excerpt matches the wire story and every near-copy of it; lineage should name the
    original (the copies already point to it), not each copy again.
    """
    candidates = set(by_source)
    if len(candidates) < 2:
        return
    copies = session.execute(
        select(Derivation.derived_id, Derivation.source_id).where(
            Derivation.derived_id.in_(candidates), Derivation.source_id.in_(candidates),
            Derivation.relation.in_(("duplicate", "near-duplicate")),
        )
    ).all()
    for copy_id, original_id in copies:
        mine_in_copy = {m[0] for m in by_source.get(copy_id, [])}
        mine_in_original = {m[0] for m in by_source.get(original_id, [])}
        if copy_id in by_source and by_source[copy_id] and mine_in_copy <= mine_in_original:
            del by_source[copy_id]


def summarise(session: Session, derivation_id: int, settings: Settings) -> bool:
    """Set relation, score, coverage and credit from the stored evidence.

    Deletes the derivation and returns False when the evidence no longer supports it.
    """
    derivation = session.execute(select(Derivation).where(Derivation.id == derivation_id)).scalar_one()
    derived_id, source_id = derivation.derived_id, derivation.source_id
    pair = session.execute(
        select(DocumentPair.similarity, DocumentPair.exact).where(
            DocumentPair.first_id == min(derived_id, source_id), DocumentPair.second_id == max(derived_id, source_id)
        )
    ).first()
    derived_passage = aliased(Passage)
    matches = session.execute(
        select(
            PassageMatch.label, PassageMatch.similarity, derived_passage.id,
            derived_passage.start_offset, derived_passage.end_offset, derived_passage.content_word_count,
        )
        .join(derived_passage, derived_passage.id == PassageMatch.derived_passage_id)
        .where(PassageMatch.derivation_id == derivation_id)
    ).all()
    content_chars = sum(
        end - start
        for start, end in session.execute(
            select(Passage.start_offset, Passage.end_offset).where(
                Passage.document_id == derived_id, Passage.boilerplate_id.is_(None)
            )
        )
    )
    seen: dict[int, tuple] = {}
    for match in matches:
        if match.id not in seen or match.similarity > seen[match.id].similarity:
            seen[match.id] = match
    matched_chars = sum(m.end_offset - m.start_offset for m in seen.values())
    copied_words = sum(m.content_word_count for m in seen.values() if m.label in ("verbatim", "syndicated"))
    all_words = sum(m.content_word_count for m in seen.values())
    coverage = min(1.0, matched_chars / content_chars) if content_chars else 0.0
    weighted = (
        sum(m.similarity * (m.end_offset - m.start_offset) for m in seen.values()) / matched_chars
        if matched_chars else 0.0
    )
    relation: Optional[str] = None
    value = weighted
    if pair is not None and pair.exact:
        relation, value = "duplicate", 1.0
    elif pair is not None and pair.similarity >= settings.near_duplicate_threshold:
        relation, value = "near-duplicate", pair.similarity
    elif copied_words >= settings.derivation_min_content_words:
        relation = "syndicated"
    elif all_words >= settings.derivation_min_content_words:
        relation = "rewritten"
    if relation is None:
        session.execute(delete(Derivation).where(Derivation.id == derivation_id))
        return False
    credited = bool(_agencies(session, derived_id) & (_agencies(session, source_id) | _publisher_agency(session, source_id)))
    session.execute(
        update(Derivation).where(Derivation.id == derivation_id).values(
            relation=relation, score=round(value, 4), coverage=round(coverage, 4), credited=credited,
        )
    )
    return True


def _agencies(session: Session, document_id: int) -> set[str]:
    return set(session.scalars(select(Citation.agency).where(Citation.document_id == document_id)))


def _publisher_agency(session: Session, document_id: int) -> set[str]:
    from .text.attribution import AGENCIES

    source = session.scalar(select(Document.source).where(Document.id == document_id)) or ""
    return {name for name, spellings in AGENCIES.items() if source in spellings or source.lower() == name.lower()}


def drop_matches_of(session: Session, passage_ids: list[int]) -> None:
    """Remove evidence that rests on passages now known to be boilerplate."""
    for batch in index._chunks(passage_ids):
        session.execute(
            delete(PassageMatch).where(
                or_(PassageMatch.derived_passage_id.in_(batch), PassageMatch.source_passage_id.in_(batch))
            )
        )


def recompute_document(session: Session, document_id: int, settings: Settings) -> None:
    """Re-derive every derivation the document takes part in from the remaining evidence."""
    for derivation_id in list(
        session.scalars(
            select(Derivation.id).where(
                or_(Derivation.derived_id == document_id, Derivation.source_id == document_id)
            )
        )
    ):
        summarise(session, derivation_id, settings)
