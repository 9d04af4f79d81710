"""Questions about one text or one pair, answered from the persisted index without storing.

``match_text``: does this text duplicate or reuse anything stored? It reads only the band
tables and the candidates' rows, never the whole corpus; asked only about whole documents
(``passages=False``) it reads the small document band table alone. ``match_texts`` asks it
of many texts in turn, sharing what they read. ``explain``: why two stored
documents match or do not, with every measure behind the answer.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Iterable, Iterator, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import derive, index, manifest, sketch
from .db.models import Boilerplate, Document, DocumentBand, Passage
from .db.readahead import ReadAhead, clocks, waited_on_disk
from .errors import ProvenanceError
from .match import WordProfile, profile, score, strength
from .prepare import PreparedDocument, content_shingles, passage_words, prepare
from .reader import RawDocument
from .report import resolve_document
from .sketch import band_keys, estimate_jaccard, from_blob, jaccard, to_blob


def _settings(session: Session):
    settings = manifest.load(session)
    if settings is None:
        raise ProvenanceError("this database holds no documents yet; run `provenance ingest PATH` first")
    return settings


def match_text(
    session: Session, text: str, name: str = "<text>", threshold: Optional[float] = None, passages: bool = True,
    sketches: Optional[derive.SketchCache] = None,
) -> dict:
    """Near-duplicate documents and reused passages for ``text``; nothing is written.

    ``passages=False``: only the stored documents ``text`` duplicates (exact or near), and
    ``"passages"`` is None. The passage search is nearly all of a lookup's time on a big
    database, since a passage's buckets grow with the corpus while a document's stay small:
    at 101,200 documents the median lookup took 6.6-6.8 ms against 100-107 ms in full
    (``python bench/stages.py --db DB --stored 101200 --new 59 --rounds 0 --lookups``).

    ``sketches``: stored passages' compact sketches kept across calls (see
    :class:`provenance.derive.SketchCache`). A process that looks up many texts in one
    database passes the same one to each call: the candidates that common words bring
    come back text after text, and are then read once.
    """
    settings = _settings(session)
    return _match(session, settings, _prepared(name, text, settings), threshold, passages, sketches)


def _prepared(name: str, text: str, settings) -> PreparedDocument:
    raw = RawDocument(path=name, text=text, format="text", encoding="utf-8", size_bytes=len(text.encode("utf-8")))
    return prepare(raw, settings)


def _match(
    session: Session, settings, prepared: PreparedDocument, threshold: Optional[float], passages: bool,
    sketches: Optional[derive.SketchCache],
) -> dict:
    """:func:`match_text` of a text already prepared."""
    name, text = prepared.raw.path, prepared.raw.text
    threshold = settings.near_duplicate_threshold if threshold is None else threshold
    known = set(session.scalars(
        select(Boilerplate.key_hash).where(
            Boilerplate.key_hash.in_({p.key_hash for p in prepared.passages}), Boilerplate.status == "boilerplate"
        )
    ))
    content = [p for p in prepared.passages if p.key_hash not in known]
    shingles = content_shingles(content, settings)
    signature = sketch.signature(shingles, settings.document) if len(shingles) else None
    documents = []
    exact_ids = set(session.scalars(
        select(Document.id).where(Document.content_hash == prepared.content_hash, index.LATEST_AS_FILTER)
    ))
    candidate_ids = set(exact_ids)
    if signature is not None:
        keys = band_keys(signature, settings.document)
        candidate_ids |= set(session.scalars(select(DocumentBand.document_id).where(DocumentBand.band_key.in_(keys))))
    rows = []
    for batch in index.chunks(sorted(candidate_ids)):
        rows.extend(session.execute(
            select(Document.id, Document.path, Document.signature, Document.content_hash)
            .where(Document.id.in_(batch), Document.is_latest.is_(True))
        ))
    # Verified exactly, as ingest verifies them (see provenance.index.index_document).
    theirs = index.stored_shingles(
        session, [r.id for r in rows if r.signature and r.content_hash != prepared.content_hash], settings
    )
    for row in rows:
        exact = row.content_hash == prepared.content_hash
        similarity = 1.0 if exact else (
            jaccard(shingles, theirs[row.id]) if signature is not None and row.signature else 0.0
        )
        if exact or similarity >= threshold:
            documents.append({"id": row.id, "path": row.path, "relation": "exact" if exact else "near-duplicate",
                              "similarity": round(similarity, 4)})
    documents.sort(key=lambda d: (-d["similarity"], d["id"]))
    return {
        "text": {"name": name, "content_hash": prepared.content_hash, "passages": len(prepared.passages),
                 "boilerplate_passages": len(prepared.passages) - len(content)},
        "threshold": threshold,
        "documents": documents,
        "passages": _passage_matches(session, content, text, settings, sketches) if passages else None,
    }


def match_texts(
    session: Session, texts: Iterable[tuple[str, str]], threshold: Optional[float] = None, passages: bool = True,
) -> Iterator[dict]:
    """:func:`match_text` of each (name, text) in turn, as it is asked for, with one sketch
    cache for them all: the chance candidates that common words bring come back text after
    text, and are read once (``bench/stages.py --lookups`` times both ways).

    From a cold page cache (an archive left alone for a while) each text's passage buckets
    are read a page at a time, all over the file: 200 texts looked up at 100,000 documents
    took 23.4-24.0 s cold against 7.1-8.3 s warm. So once a lookup has waited on the disk
    (see provenance.db.readahead), the texts after it are prepared up to
    :data:`LOOK_AHEAD_TEXTS` ahead and what their lookups will read is read ahead on other
    connections: 13.5-13.7 s cold (one-off, see bench/README.md). The answers are the same,
    and still come one at a time."""
    settings = None  # read with the first text: none to look up is not an error here
    sketches = derive.SketchCache() if passages else None
    given = iter(texts)
    coming: deque[PreparedDocument] = deque()
    ahead: Optional[ReadAhead] = None
    try:
        while True:
            if coming:
                prepared = coming.popleft()
            else:
                following = next(given, None)
                if following is None:
                    return
                settings = _settings(session) if settings is None else settings
                prepared = _prepared(*following, settings)
            since = clocks()
            answer = _match(session, settings, prepared, threshold, passages, sketches)
            if ahead is None and passages and waited_on_disk(since):
                ahead = ReadAhead(session)
            if ahead is not None and ahead.active:
                _look_ahead(ahead, given, coming, settings)
            yield answer
    finally:
        if ahead is not None:
            ahead.close()


#: Texts :func:`match_texts` prepares and reads ahead of the one looked up, once lookups
#: wait on the disk (64 news articles prepared hold 7.1 MB).
LOOK_AHEAD_TEXTS = 64


def _look_ahead(ahead: ReadAhead, given: Iterator, coming: deque, settings) -> None:
    """Take texts from ``given`` until ``coming`` holds :data:`LOOK_AHEAD_TEXTS`, each
    prepared, its passage buckets and their candidates' sketches read ahead (the same rows
    as an ingest reads ahead, see provenance.index.read_buckets_ahead)."""
    for following in itertools.islice(given, LOOK_AHEAD_TEXTS - len(coming)):
        coming.append(_prepared(*following, settings))
        index.read_buckets_ahead(ahead, [coming[-1]], settings)  # read while the next is prepared


def _passage_matches(
    session: Session, content: list, text: str, settings, sketches: Optional[derive.SketchCache],
) -> list[dict]:
    if sketches is not None:
        sketches.begin(session)  # forgets them if another connection has written since
    signed = [(p.seq, to_blob(p.signature)) for p in content if p.signature is not None]
    by_seq = {p.seq: p for p in content}
    candidates = index.passage_candidates(session, signed, -1, settings, count_first=True,
                                          band_keys={p.seq: p.band_keys for p in content})
    # Filtered and read as when ingesting (provenance.derive).
    texts: dict[int, str] = {}
    likely: dict[int, list] = {}
    for seq, row, _ in derive.likely_sources(
        session, candidates, {seq: p.signature for seq, p in by_seq.items() if p.signature is not None},
        {seq: p.words for seq, p in by_seq.items()}, texts, cache=sketches,
    ):
        likely.setdefault(seq, []).append(row)
    policy = settings.match_policy()
    profiles: dict[int, WordProfile] = {}
    out = []
    for seq, found in sorted(likely.items()):
        best = None
        mine_profile = profile(by_seq[seq].words)
        for row in found:
            source_text = texts[row.document_id][row.start_offset : row.end_offset]
            if row.id not in profiles:
                profiles[row.id] = profile(passage_words(source_text, settings))
            result = score(mine_profile, profiles[row.id], policy)
            if result.label and (best is None or strength(result) > strength(best[0])):
                best = (result, row, source_text)
        if best is not None:
            result, row, source_text = best
            mine = by_seq[seq]
            out.append({
                "label": result.label, "similarity": result.similarity,
                "span": [mine.start, mine.end], "text": text[mine.start : mine.end],
                "document": {"id": row.document_id, "path": row.path},
                "document_span": [row.start_offset, row.end_offset], "document_text": source_text,
                "measures": {"jaccard": result.jaccard, "containment_text": result.containment_a,
                             "containment_document": result.containment_b, "content_overlap": result.content_overlap},
            })
    return out


def explain(session: Session, reference_a: str, reference_b: str, max_shingles: int = 25) -> dict:
    """Every measure behind the answer to "do A and B match?"."""
    settings = _settings(session)
    a, b = resolve_document(session, reference_a), resolve_document(session, reference_b)
    if a.id == b.id:
        raise ProvenanceError("give two different documents to explain")
    sides = {}
    for doc in (a, b):
        rows = session.execute(
            select(Passage.id, Passage.start_offset, Passage.end_offset, Passage.boilerplate_id)
            .where(Passage.document_id == doc.id).order_by(Passage.seq)
        ).all()
        content = [(r, passage_words(doc.text[r.start_offset : r.end_offset], settings)) for r in rows if r.boilerplate_id is None]
        excluded = [
            {"span": [r.start_offset, r.end_offset], "text": doc.text[r.start_offset : r.end_offset]}
            for r in rows if r.boilerplate_id is not None
        ]
        words = [w for _, ws in content for w in ws]
        sides[doc.id] = {"content": content, "excluded": excluded, "words": words}
    size = settings.document.shingle_size
    grams = {doc_id: _word_grams(side["words"], size) for doc_id, side in sides.items()}
    shared = grams[a.id] & grams[b.id]
    union = grams[a.id] | grams[b.id]
    estimated = (
        estimate_jaccard(from_blob(a.signature), from_blob(b.signature)) if a.signature and b.signature else 0.0
    )
    passages = []
    policy = settings.match_policy()
    for row_a, words_a in sides[a.id]["content"]:
        best = None
        for row_b, words_b in sides[b.id]["content"]:
            result = score(words_a, words_b, policy)
            if result.label and (best is None or result.similarity > best[0].similarity):
                best = (result, row_b)
        if best is not None:
            result, row_b = best
            passages.append({
                "label": result.label, "similarity": result.similarity,
                "a_span": [row_a.start_offset, row_a.end_offset], "b_span": [row_b.start_offset, row_b.end_offset],
                "a_text": a.text[row_a.start_offset : row_a.end_offset], "b_text": b.text[row_b.start_offset : row_b.end_offset],
                "measures": {"jaccard": result.jaccard, "containment_a": result.containment_a,
                             "containment_b": result.containment_b, "content_overlap": result.content_overlap},
            })
    jaccard = len(shared) / len(union) if union else 0.0
    verdict = _verdict(settings, a, b, jaccard, estimated, passages)
    return {
        "a": {"id": a.id, "path": a.path}, "b": {"id": b.id, "path": b.path},
        "verdict": verdict,
        "estimated_jaccard": round(estimated, 4),
        "jaccard": round(jaccard, 4),
        "containment_a_in_b": round(len(shared) / len(grams[a.id]), 4) if grams[a.id] else 0.0,
        "containment_b_in_a": round(len(shared) / len(grams[b.id]), 4) if grams[b.id] else 0.0,
        "shingle_size": size,
        "shared_shingles": [" ".join(g) for g in sorted(shared)[:max_shingles]],
        "shared_shingle_count": len(shared),
        "passages": passages,
        "boilerplate_excluded": {"a": sides[a.id]["excluded"], "b": sides[b.id]["excluded"]},
        "settings": {"fingerprint": settings.fingerprint(), **settings.as_dict()},
    }


def _word_grams(words: list[str], size: int) -> set[tuple[str, ...]]:
    if len(words) < size:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def _verdict(settings, a, b, jaccard: float, estimated: float, passages: list) -> str:
    threshold = settings.near_duplicate_threshold
    if a.content_hash == b.content_hash:
        return "exact duplicates: the normalised texts are identical"
    # Decided on the exact Jaccard similarity, as ingest decides (the estimate is shown too).
    measured = f"Jaccard {jaccard:.2f}, estimated {estimated:.2f}"
    if jaccard >= threshold:
        return f"near-duplicates: {measured}; >= threshold {threshold}"
    copied = [p for p in passages if p["label"] in ("verbatim", "syndicated")]
    if copied:
        return f"not near-duplicates ({measured}; < {threshold}), but {len(copied)} passage(s) copied"
    if passages:
        return f"not near-duplicates ({measured}; < {threshold}); {len(passages)} passage(s) reworded"
    return f"no match: {measured}; < {threshold} and no passage in common"

