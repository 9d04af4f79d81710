"""Derivations: which document took text from which, in which direction, credited or not.

A derivation is assembled from aligned passage matches (the evidence) and the document
pair similarity; its relation, coverage and score are always recomputed from the stored
evidence, so correcting the evidence (new boilerplate) corrects the derivation.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Mapping, NamedTuple, Optional, Sequence

import numpy as np
from sqlalchemy import bindparam, delete, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from . import index
from .db.bulk import DriverStatement, insert_rows, select_in
from .db.models import Citation, Derivation, Document, DocumentPair, Passage, PassageMatch, PassagePrefilter
from .db.session import connection_state
from .align import Token, align, tokens_in
from .match import LABEL_STRENGTH, WordProfile, profile, score, shared_extent, strength
from .prepare import comparison_words, passage_words
from .settings import Settings
from .text.normalize import content_words, normalize, tokens
from .sketch import estimate_jaccard, from_blob, low_bytes

#: Candidates below this estimated content-word Jaccard are not scored exactly.
ESTIMATE_FLOOR = 0.15
#: ... nor those whose estimated content-word overlap (shared words over the smaller
#: passage's vocabulary, derived from the Jaccard estimate and the two vocabulary sizes)
#: is below this. Every grade needs most of the smaller passage's words in the other (a
#: rewording 0.6, see MatchPolicy); passages that merely share a field's common words
#: (the chance candidates that grow with the corpus) overlap far less. On the labelled
#: development data (bench/eval.py, every pair scored down to 0.3) 5 of 5,841 labelled
#: pairs fall below 0.45 and the scores are those of a floor at 0.3; 9 more lie between 0.45
#: and 0.5, where a floor costs PAN 2013 recall. bench/candidates.py (100 new documents
#: against 101,200 stored): 0.4 scores 50,794 candidates, 0.45 21,259, none labelled below 0.64.
OVERLAP_FLOOR = 0.45
#: Candidates scored exactly for one passage, the likeliest first (see :func:`_likeliest`).
#: Only text a whole feed repeats meets more: a wire story copied by dozens of sites, a
#: sentence every automated earnings report shares. Scoring them all made each new such
#: document cost as much as every earlier one; the lineage names only a passage's earliest
#: and closest sources anyway (see :func:`_named_sources`).
SCORED_PER_PASSAGE = 32
#: Candidates read in full for one passage, those of the highest upper bounds on their
#: low bytes first (see :func:`_highest_bounds`): a few times what is scored, since the
#: bound of a candidate can exceed its estimate. 2,000 automated reports (bench/templated.py)
#: read 5.8 million candidate rows in full without it, some 2,900 a report.
READ_PER_PASSAGE = 4 * SCORED_PER_PASSAGE


class Found(NamedTuple):
    """What :func:`derive` stored for one document: the derivations it found, and those it
    dropped as superseded by it (see :func:`_retire_superseded`), its own among them."""

    derivations: int
    retired: int


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
    crowded: Optional[set[int]] = None,
    sketches: Optional[SketchCache] = None,
    band_keys: Optional[dict[int, Sequence[int]]] = None,
    busy: Optional[index.BusyBuckets] = None,
    at_hand: Optional[tuple[Mapping[int, list[int]], frozenset]] = None,
) -> Found:
    """Find and store the derivations between a new document and earlier ones.

    ``crowded``: over-full LSH buckets already known (see :func:`index.passage_candidates`);
    ``sketches``: stored passages' sketches already read (see :class:`SketchCache`);
    ``band_keys``: the passages' band keys, if computed already (see :func:`index.keys_of`);
    ``busy``: busy buckets' members already read (see :class:`index.BusyBuckets`);
    ``at_hand``: every bucket's members, read already (see provenance.prefetch).
    """
    policy = settings.match_policy()
    candidates = index.passage_candidates(
        session, signed, document_id, settings, crowded=crowded, band_keys=band_keys, busy=busy, at_hand=at_hand,
    )
    my_signatures = {pid: from_blob(blob) for pid, blob in signed}
    texts: dict[int, str] = {}
    published = dict(select_in(session, _PUBLISHED, [document_id])).get(document_id)
    likely = likely_sources(session, candidates, my_signatures, words_by_passage, texts, cache=sketches,
                            published=published)
    documents = DocumentsRead(session.connection(), texts)
    mine_profiles: dict[int, WordProfile] = {}
    their_profiles: dict[int, WordProfile] = {}
    best: dict[tuple[int, int], tuple] = {}
    for mine, row, estimate in likely:
        if mine not in mine_profiles:
            mine_profiles[mine] = profile(words_by_passage[mine])
        if row.id not in their_profiles:
            source_text = texts[row.document_id][row.start_offset : row.end_offset]
            their_profiles[row.id] = _passage_profile(source_text, settings)
        result = score(mine_profiles[mine], their_profiles[row.id], policy)
        if result.label is None:
            continue
        key = (mine, row.document_id)
        if key not in best or result.similarity > best[key][1].similarity:
            best[key] = (row.id, result, estimate)
    named = _named_sources(session, document_id, best)
    by_source: dict[int, list] = {}
    for (mine, other_document), (candidate, result, estimate) in best.items():
        if (mine, other_document) in named:
            by_source.setdefault(other_document, []).append((mine, candidate, result, estimate))
    for other_document, matches in by_source.items():
        matches.extend(
            _extend(session, document_id, other_document, matches, words_by_passage, texts, my_signatures, settings,
                    documents)
        )
    # Duplicates found at document level are derivations even without passage evidence.
    connection = session.connection()
    for first, second in _DUPLICATE_PAIRS.rows(
        connection, document=document_id, threshold=settings.near_duplicate_threshold
    ):
        by_source.setdefault(second if first == document_id else first, [])
    _prefer_originals(session, by_source, found_by_passages={other for _, other in best})
    created = 0
    if not by_source:
        return Found(0, 0)
    dating = {row.id: row for batch in index.chunks(sorted({document_id, *by_source}))
              for row in connection.execute(_DATING, {"ids": batch})}
    me = dating[document_id]
    later: list[int] = []  # documents published before this one but stored after it
    for other_id, matches in sorted(by_source.items()):
        way = direction(me, dating[other_id])
        forward = way.derived_id == document_id
        _DROP_DERIVATION.run(connection, derived=way.derived_id, source=way.source_id)
        derivation_id = _NEW_DERIVATION.scalar(
            connection, derived_id=way.derived_id, source_id=way.source_id, relation="pending", score=0.0,
            coverage=0.0, credited=False, reason=way.reason, run_id=me.run_id,
        )
        if matches:
            evidence = _evidence(session, document_id, other_id, matches, words_by_passage, texts, settings, documents)
            rows = []
            for item in evidence:
                derived_side, source_side = (item.mine, item.other) if forward else (item.other, item.mine)
                rows.append((  # in the order of _MATCH_COLUMNS
                    derivation_id, derived_side[0], source_side[0], item.label, item.similarity,
                    derived_side[1], derived_side[2], source_side[1], source_side[2],
                    None if item.estimate is None else round(item.estimate, 4), item.jaccard,
                    item.containment_mine if forward else item.containment_other,
                    item.containment_other if forward else item.containment_mine,
                    item.content_overlap,
                ))
            insert_rows(session, PassageMatch.__table__, _MATCH_COLUMNS, rows)
            if not forward:
                later.append(other_id)
        if summarise(session, derivation_id, settings, documents):
            created += 1
    return Found(created, _retire_superseded(session, document_id, later, settings, documents))


class CandidatePassage(NamedTuple):
    """A stored passage that may be a source, as :func:`likely_sources` returns it."""

    id: int
    document_id: int
    start_offset: int
    end_offset: int
    signature: Optional[bytes]
    content_word_count: int
    path: str
    #: Its document's, as the driver returns it (text on SQLite): compared only to others.
    published_at: object


#: Statements run for every new document, built once (see provenance.index).
_DUPLICATE_PAIRS = DriverStatement(select(DocumentPair.first_id, DocumentPair.second_id).where(
    or_(DocumentPair.first_id == bindparam("document"), DocumentPair.second_id == bindparam("document")),
    or_(DocumentPair.exact.is_(True), DocumentPair.similarity >= bindparam("threshold")),
))
#: What :func:`direction` needs of documents, and the run that found the derivation: read at once
#: for the new document and those it derives with (a copy of a wire story meets dozens).
_DATING = select(Document.id, Document.published_at, Document.run_id).where(
    Document.id.in_(bindparam("ids", expanding=True))
)
_PUBLISHED = f"SELECT id, published_at FROM {Document.__tablename__} WHERE id {{in}}"
_DROP_DERIVATION = DriverStatement(delete(Derivation).where(
    Derivation.derived_id == bindparam("derived"), Derivation.source_id == bindparam("source")
))
_NEW_DERIVATION = DriverStatement(
    insert(Derivation.__table__).returning(Derivation.__table__.c.id),
    column_keys=("derived_id", "source_id", "relation", "score", "coverage", "credited", "reason", "run_id"),
)
#: The columns of a derivation's evidence as derive writes them.
_MATCH_COLUMNS = (
    "derivation_id", "derived_passage_id", "source_passage_id", "label", "similarity", "derived_start",
    "derived_end", "source_start", "source_end", "estimated_jaccard", "jaccard", "containment_derived",
    "containment_source", "content_overlap",
)

#: A candidate's compact sketch (see :class:`PassagePrefilter`): content-word count and the
#: low byte of each signature value.
PREFILTERS = (
    f"SELECT passage_id, content_word_count, low_bytes FROM {PassagePrefilter.__tablename__} WHERE passage_id {{in}}"
)
#: Which of these passages may still be sources (content passages of latest documents),
#: with what scoring needs of them.
_STILL_SOURCES = (
    f"SELECT p.{', p.'.join(CandidatePassage._fields[:-2])}, d.path, d.published_at"
    f" FROM {Passage.__tablename__} AS p JOIN {Document.__tablename__} AS d ON d.id = p.document_id"
    " WHERE p.id {in} AND p.boilerplate_id IS NULL AND d.is_latest"
)
#: When the documents of these passages were published (see :func:`_highest_bounds`).
_PASSAGES_PUBLISHED = (
    f"SELECT p.id, d.published_at FROM {Passage.__tablename__} AS p"
    f" JOIN {Document.__tablename__} AS d ON d.id = p.document_id WHERE p.id {{in}}"
)

#: (mine, candidate) signature pairs compared per array operation: bounds the work array
#: (some 10 MB with 128-value signatures) whatever the number of candidates.
_PAIRS_PER_STEP = 8_192

#: Compact sketches an ingest run keeps in memory, in arrays of some 140 bytes a slot with
#: 128-value signatures (112 MB when every slot is used). 1,000 new documents into
#: ``bench/scale.py`` databases (``bench/stages.py --db DB --sketch-cache N``, see
#: bench/README.md): into 20,000 they ask for 2.2 million, 11.6% of them for the first
#: time, and 400,000 slots held all the others; into 56,000 they ask for 4.5 million, and
#: with 400,000, 800,000 and 1.6 million slots 59.6%, 76.7% and 84.4% were at hand (the candidate
#: filter 23.1 and 25.0, 19.1 and 18.8, and 16.7 s; peak RSS 235, 285 and 323 MB).
SKETCH_CACHE_SIZE = 800_000
#: Slots a sketch cache starts with (see :class:`SketchCache`).
FIRST_SLOTS = 16_384


class Sketches(NamedTuple):
    """Compact sketches of stored passages: ``ids`` in ascending order, and for each its
    content-word count and the low byte of each signature value (a row of ``low_bytes``)."""

    ids: np.ndarray
    word_counts: np.ndarray
    low_bytes: np.ndarray


class SketchCache:
    """Stored passages' compact sketches (content-word count, low bytes; see
    :class:`PassagePrefilter`), in numpy arrays with one slot per ``id % slots``.

    They never change once stored; whether the passage may be a source does (it can turn
    out to be boilerplate, its document can be superseded). So the candidates a run meets
    again and again (passages of common words) are read once, and only those that pass the
    estimate floors on them are read in full, at the time they are used. Passage ids are
    given in sequence, so a slot is taken over only by a passage stored ``slots`` passages
    later; a lookup of many ids is a few array operations.

    The arrays start at :data:`FIRST_SLOTS` and double, keeping what they hold, whenever
    the sketches written since they were made outnumber half their slots, up to
    ``capacity``: one lookup of a text (a few thousand candidates) then writes into a few
    megabytes instead of faulting in pages all over 112 MB, while an ingest soon has them all.
    """

    def __init__(self, capacity: Optional[int] = None):
        self.capacity = max(1, SKETCH_CACHE_SIZE if capacity is None else capacity)
        self._ids = np.full(min(self.capacity, FIRST_SLOTS), -1, dtype=np.int64)  # -1: an empty slot
        self._word_counts = np.zeros(len(self._ids), dtype=np.int32)
        self._low_bytes: Optional[np.ndarray] = None  # allocated when the signature length is known
        self._written = 0  # sketches written into these arrays
        self._seen: Optional[tuple] = None  # (driver connection, its data_version) at the last begin
        #: Sketches asked for, and how many of them were at hand (see bench/stages.py).
        self.asked = 0
        self.at_hand = 0

    def __len__(self) -> int:
        return int(np.count_nonzero(self._ids >= 0))

    @property
    def slots(self) -> int:
        """Slots the arrays have now (at most ``capacity``)."""
        return len(self._ids)

    def clear(self) -> None:
        """Forget every sketch: call it when a transaction that stored passages is rolled
        back (SQLite gives their ids to the next passages stored)."""
        self._ids.fill(-1)
        self._written = 0

    def begin(self, session: Session) -> None:
        """Call it as a transaction that uses the cache begins. On SQLite, where a deleted
        passage's id can be given to a new passage, every sketch is forgotten when another
        connection has committed since this one's last transaction, or when the connection
        is not the one used last (``PRAGMA data_version`` counts per connection)."""
        state = connection_state(session)
        if state is None:
            return
        if state[:2] != self._seen:  # its own writes add passages, which change no sketch
            self.clear()
        self._seen = state[:2]

    def sketches(self, session: Session, ids: np.ndarray) -> Sketches:
        """The compact sketches of the signed passages among ``ids`` (distinct, ascending)."""
        ids = np.asarray(ids, dtype=np.int64)
        slots = ids % self.slots
        held = self._ids[slots] == ids
        self.asked += len(ids)
        self.at_hand += int(np.count_nonzero(held))
        rows = select_in(session, PREFILTERS, ids[~held].tolist())
        read_ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        read_counts = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
        if self._low_bytes is None:
            if not rows:
                return Sketches(ids[:0], read_counts, np.empty((0, 0), dtype=np.uint8))
            self._low_bytes = np.zeros((self.slots, len(rows[0][2])), dtype=np.uint8)
        width = self._low_bytes.shape[1]
        read_low = np.frombuffer(b"".join(row[2] for row in rows), dtype=np.uint8)
        if read_low.size != len(rows) * width:
            raise ValueError(f"stored passage sketches of different lengths cannot be compared (this run's "
                             f"first had {width} values)")
        read_low = read_low.reshape(len(rows), width)
        # Results come from the hits and from what was read, never back from the slots: two
        # passages read now can share a slot.
        found = held.copy()
        word_counts = np.where(held, self._word_counts[slots], 0)
        low = self._low_bytes[slots]
        at = np.searchsorted(ids, read_ids)
        found[at] = True
        word_counts[at] = read_counts
        low[at] = read_low
        self._keep(read_ids, read_counts, read_low)
        return Sketches(ids[found], word_counts[found], low[found])

    def offer(self, ids: np.ndarray, word_counts: np.ndarray, low_bytes: bytes) -> None:
        """Keep sketches read elsewhere in this transaction's snapshot or an earlier one (a
        worker's, see provenance.prefetch): a stored passage's sketch never changes."""
        if not len(ids):
            return
        if self._low_bytes is None:
            self._low_bytes = np.zeros((self.slots, len(low_bytes) // len(ids)), dtype=np.uint8)
        width = self._low_bytes.shape[1]
        if len(low_bytes) != len(ids) * width:
            return  # sketches of another length: the filter reads and reports them
        self._keep(ids, word_counts, np.frombuffer(low_bytes, dtype=np.uint8).reshape(len(ids), width))

    def _keep(self, ids: np.ndarray, word_counts: np.ndarray, low_bytes: np.ndarray) -> None:
        """Write sketches into their slots, the arrays grown first when it is time."""
        self._written += len(ids)
        if 2 * self._written > self.slots and self.slots < self.capacity:
            self._grow(min(self.capacity, max(2 * self.slots, 2 * self._written)))
        slots = ids % self.slots
        self._ids[slots] = ids
        self._word_counts[slots] = word_counts
        self._low_bytes[slots] = low_bytes

    def _grow(self, slots: int) -> None:
        """Move what the arrays hold into arrays of ``slots`` slots."""
        kept = np.flatnonzero(self._ids >= 0)
        ids, word_counts, low_bytes = self._ids[kept], self._word_counts[kept], self._low_bytes[kept]
        self._ids = np.full(slots, -1, dtype=np.int64)
        self._word_counts = np.zeros(slots, dtype=np.int32)
        self._low_bytes = np.zeros((slots, low_bytes.shape[1]), dtype=np.uint8)
        self._written = len(kept)
        moved = ids % slots
        self._ids[moved] = ids
        self._word_counts[moved] = word_counts
        self._low_bytes[moved] = low_bytes


def likely_sources(
    session: Session, candidates: dict[int, set[int]], signatures: dict[int, np.ndarray],
    words: dict[int, list[str]], texts: dict[int, str], overlap_floor: float = OVERLAP_FLOOR,
    cache: Optional[SketchCache] = None, published: object = None,
) -> list[tuple[int, CandidatePassage, float]]:
    """(mine, row, estimate) for the LSH candidates worth scoring exactly: content passages of
    latest documents whose estimated Jaccard with ``mine`` reaches :data:`ESTIMATE_FLOOR` and
    whose estimated overlap reaches ``overlap_floor``, in order of ``mine`` then
    candidate. ``words``: the words of each of mine, whose distinct content words are its
    vocabulary (a stored passage's content-word count stands in for its own). Their
    documents' texts are added to ``texts``. ``cache``: compact sketches kept across calls.
    ``published``: when the new document was, as the driver returns it (see :func:`_likeliest`).

    Two passes with the same floors: on the low bytes of the signatures (an upper bound of
    the estimate, see :class:`PassagePrefilter`) for every candidate, then on the full
    signatures of the few that pass, read with what scoring needs. The result is what the
    full signatures alone give, but that a passage keeps at most :data:`READ_PER_PASSAGE`
    candidates after the first pass and :data:`SCORED_PER_PASSAGE` after the second (text a
    whole feed repeats: see those).
    """
    mine_order = sorted(mine for mine, found in candidates.items() if found)
    if not mine_order:
        return []
    # Every (mine, candidate) pair as arrays, in order of mine then candidate.
    per_mine = [np.fromiter(candidates[mine], dtype=np.int64, count=len(candidates[mine])) for mine in mine_order]
    pair_ids = np.concatenate(per_mine)
    pair_mine = np.repeat(np.arange(len(mine_order)), [len(found) for found in per_mine])
    order = np.lexsort((pair_ids, pair_mine))
    pair_ids, pair_mine = pair_ids[order], pair_mine[order]
    wanted = np.unique(pair_ids)
    cache = cache if cache is not None else SketchCache(capacity=len(wanted))  # one call: this call's size
    compact = cache.sketches(session, wanted)
    if not len(compact.ids):
        return []
    their_index = np.minimum(np.searchsorted(compact.ids, pair_ids), len(compact.ids) - 1)
    signed = compact.ids[their_index] == pair_ids  # candidates without a sketch are not signed
    mine_index, their_index = pair_mine[signed], their_index[signed]
    ours = np.stack([signatures[mine] for mine in mine_order])
    if compact.low_bytes.shape[1] != ours.shape[1]:
        raise ValueError(f"signatures of different lengths ({ours.shape[1]} and {compact.low_bytes.shape[1]}) "
                         "cannot be compared")
    vocabularies = np.array([len(set(content_words(words[mine]))) for mine in mine_order])

    def floors_met(estimates: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        overlaps = estimated_overlap(
            estimates, vocabularies[mine_index[pairs]], compact.word_counts[their_index[pairs]]
        )
        return (estimates >= ESTIMATE_FLOOR) & (overlaps >= overlap_floor)

    bounds = _estimates(compact.low_bytes, low_bytes(ours), their_index, mine_index)
    maybe = np.flatnonzero(floors_met(bounds, np.arange(len(mine_index))))
    maybe = _highest_bounds(
        maybe, mine_index, bounds, compact.ids[their_index],
        published=lambda ids: dict(select_in(session, _PASSAGES_PUBLISHED, ids)), after=published,
    )
    # Read in full now, not when the compact sketch was: the passage must still be content
    # of a latest document.
    current = {
        row.id: row
        for row in map(CandidatePassage._make,
                       select_in(session, _STILL_SOURCES, np.unique(compact.ids[their_index[maybe]]).tolist()))
        if row.signature is not None
    }
    maybe = np.array([k for k in maybe if int(compact.ids[their_index[k]]) in current], dtype=np.intp)
    if not len(maybe):
        return []
    rows = [current[int(compact.ids[their_index[k]])] for k in maybe]
    theirs = np.frombuffer(b"".join(row.signature for row in rows), dtype="<u4").reshape(len(rows), -1)
    estimates = _estimates(theirs, ours, np.arange(len(rows)), mine_index[maybe])
    likely = _likeliest([
        (mine_order[mine_index[k]], row, float(estimate))
        for k, row, estimate, met in zip(maybe, rows, estimates, floors_met(estimates, maybe)) if met
    ], published)
    load_texts(session, {row.document_id for _, row, _ in likely}, texts)
    return likely


def _highest_bounds(
    pairs: np.ndarray, mine_of: np.ndarray, bound_of: np.ndarray, id_of: np.ndarray,
    published: Optional[Callable[[list[int]], dict[int, object]]] = None, after: object = None,
) -> np.ndarray:
    """Of ``pairs`` (indexes into the pair arrays, ascending), at most
    :data:`READ_PER_PASSAGE` for each passage of mine: the highest bounds, then the earliest
    published, then the earliest stored (see :func:`_earliest_first`); in ascending order.
    ``published`` gives the publication dates of candidates by id; it is asked about a
    passage's candidates tied at the last bound kept, and, when the new document is dated
    (``after``, as the driver returns dates), about all of a passage's candidates, to keep
    the one published next after it as :func:`_likeliest` does."""
    mines = mine_of[pairs]
    if not len(pairs) or np.bincount(mines).max() <= READ_PER_PASSAGE:
        return pairs
    order = np.lexsort((id_of[pairs], -bound_of[pairs], mines))
    in_order, bound_in_order = mines[order], bound_of[pairs[order]]
    rank = np.arange(len(order)) - np.searchsorted(in_order, in_order, side="left")
    kept = rank < READ_PER_PASSAGE
    for first_dropped in np.flatnonzero(rank == READ_PER_PASSAGE) if published is not None else ():
        start = first_dropped - READ_PER_PASSAGE
        end = np.searchsorted(in_order, in_order[first_dropped], side="right")
        # A dated new document: every candidate's date is read once; else only the tied ones'.
        every = id_of[pairs[order[start:end]]].tolist() if after is not None else []
        dates = published(every) if every else None
        tie = bound_in_order[first_dropped]
        if bound_in_order[first_dropped - 1] == tie:
            tied = start + np.flatnonzero(bound_in_order[start:end] == tie)  # contiguous: bounds descend
            ids = id_of[pairs[order[tied]]].tolist()
            earliest = _earliest_first(published(ids) if dates is None else dates, ids)
            chosen = sorted(range(len(ids)), key=lambda k: earliest(ids[k]))
            kept[tied] = False
            kept[tied[chosen[: READ_PER_PASSAGE - (tied[0] - start)]]] = True
        if dates is not None:
            nearest = _next_after(dates, every, after)
            if nearest is not None and not kept[start + nearest]:
                kept[start + np.flatnonzero(kept[start:end])[-1]] = False  # the last kept
                kept[start + nearest] = True
    return np.sort(pairs[order[kept]])


def _next_after(dates: Mapping[int, object], ids: Sequence[int], after: object) -> Optional[int]:
    """The index in ``ids`` of the one published next after ``after``, when every one is
    dated (see :func:`_likeliest`); None when none is later, or one is undated."""
    if any(dates.get(item) is None for item in ids):
        return None
    later = [k for k, item in enumerate(ids) if dates[item] > after]
    return min(later, key=lambda k: (dates[ids[k]], ids[k])) if later else None


def _earliest_first(dates: Mapping[int, object], among: Iterable[int]) -> Callable[[int], tuple]:
    """A sort key of stored documents or passages, by id: their publication ``dates`` when
    every one of ``among`` has one, else the id, the order they were stored in. How lineage
    orders a passage's sources (:func:`_earliest_and_closest`), and how candidates alike are
    kept (:func:`_highest_bounds`, :func:`_likeliest`).

    Of candidates alike, those kept must include the earliest published: of those published
    before the new passage, the earliest is the source lineage names; of those published
    after it, the earliest have no other source stored. In ingestion order, an archive
    ingested newest first kept only the latest copies of a wire story syndicated widely, and
    its earliest copies were left with no source at all."""
    if any(dates.get(item) is None for item in among):
        return lambda item: (item,)
    return lambda item: (dates[item], item)


def _likeliest(
    likely: list[tuple[int, CandidatePassage, float]], published: object = None,
) -> list[tuple[int, CandidatePassage, float]]:
    """At most :data:`SCORED_PER_PASSAGE` of each passage's candidates (``likely`` is in
    order of mine then candidate): the highest estimates, then the earliest published when
    every candidate of the passage is dated, then the earliest stored (see
    :func:`_earliest_first`; :func:`_highest_bounds` asks the database for dates only where
    it needs them).

    When the new document is dated (``published``, as the driver returns dates) and so is
    every candidate, the one published next after it is kept in place of the last: it has
    no earlier source stored but the new document, which is its source. A story type every
    report shares, crawled newest first, is alike in every candidate but for names and
    figures, so estimates, not dates, made the cut, and a report whose only earlier one
    arrived after it could be left out of that one's cut and without a source."""
    counts = Counter(mine for mine, _, _ in likely)
    if not counts or max(counts.values()) <= SCORED_PER_PASSAGE:
        return likely
    kept = []
    for _, group in itertools.groupby(likely, key=lambda item: item[0]):
        group = list(group)
        if len(group) > SCORED_PER_PASSAGE:
            dates = {row.id: row.published_at for _, row, _ in group}
            earliest = _earliest_first(dates, dates)
            likeliest = heapq.nsmallest(SCORED_PER_PASSAGE, group, key=lambda item: (-item[2], earliest(item[1].id)))
            nearest = None if published is None else _next_after(dates, [row.id for _, row, _ in group], published)
            if nearest is not None and group[nearest] not in likeliest:
                likeliest[-1] = group[nearest]
            group = sorted(likeliest, key=lambda item: item[1].id)
        kept.extend(group)
    return kept


def _estimates(theirs: np.ndarray, ours: np.ndarray, their_index: np.ndarray, our_index: np.ndarray) -> np.ndarray:
    """Share of equal values of each (theirs[their_index[k]], ours[our_index[k]]) pair,
    :data:`_PAIRS_PER_STEP` pairs per array operation."""
    out = np.empty(len(their_index))
    for low in range(0, len(their_index), _PAIRS_PER_STEP):
        high = low + _PAIRS_PER_STEP
        out[low:high] = np.count_nonzero(theirs[their_index[low:high]] == ours[our_index[low:high]], axis=1)
    return out / ours.shape[1]


def estimated_overlap(jaccard: np.ndarray, mine: int, theirs: np.ndarray) -> np.ndarray:
    """Shared words over the smaller vocabulary, from Jaccard and the two sizes:
    |A & B| = J (|A| + |B|) / (1 + J)."""
    shared = jaccard * (mine + theirs) / (1.0 + jaccard)
    return shared / np.maximum(np.minimum(mine, theirs), 1)


_TEXTS = f"SELECT id, text FROM {Document.__tablename__} WHERE id {{in}}"


def load_texts(session: Session, document_ids: set[int], texts: dict[int, str]) -> None:
    """Add the texts of ``document_ids`` to ``texts``, a batch of documents per query."""
    texts.update(select_in(session, _TEXTS, sorted(document_ids - set(texts))))


@dataclass(frozen=True)
class Evidence:
    """One aligned piece of reuse, seen from the new document ("mine") and the other one.

    ``mine``/``other`` are (passage id, start, end): the passage the span starts in and the
    character span of the evidence itself.
    """

    mine: tuple[int, int, int]
    other: tuple[int, int, int]
    label: str
    similarity: float
    estimate: Optional[float]  # None for evidence found by exact alignment, not by MinHash
    jaccard: float
    containment_mine: float
    containment_other: float
    content_overlap: float


#: A document's content passages in order: what ingest signs and indexes, and what the
#: evidence and summary of each derivation are read from. Statements run for every document
#: or derivation are built once and sent to the driver (see :class:`DriverStatement`):
#: building one, and running it through the session, cost more than SQLite took to run it.
CONTENT_PASSAGES = DriverStatement(
    select(Passage.id, Passage.start_offset, Passage.end_offset, Passage.signature)
    .where(Passage.document_id == bindparam("document"), Passage.boilerplate_id.is_(None)).order_by(Passage.seq)
)
_PASSAGE_SPANS = f"SELECT id, start_offset, end_offset FROM {Passage.__tablename__} WHERE id {{in}}"
_TEXT = DriverStatement(select(Document.text).where(Document.id == bindparam("document")))


# Memos across derive calls, keyed by the text itself, so that no stored change (a passage
# turned boilerplate, a document forgotten and its id given again) can make them stale.
# A document that is a source of many, or a later copy that each earlier arrival becomes a
# source of (an archive crawled newest first), is read again by every derivation it is in:
# 150 sites excerpting a wire story, crawled newest first, made 4,304 derivations and
# tokenised the same few dozen documents and their passages for each (see bench/README.md).
@lru_cache(maxsize=128)
def _tokens_of(text: str, spans: tuple[tuple[int, int], ...]) -> tuple[Token, ...]:
    """:func:`tokens_in`, memoised: some 60 kB a news article of 3 kB (seed 001), a copy of
    a wire story's derivations within reach (:data:`SCORED_PER_PASSAGE`)."""
    return tuple(tokens_in(text, spans))


@lru_cache(maxsize=1024)
def _profile_of(text: str, transliterate: bool) -> WordProfile:
    """The scoring profile of a piece of text (a passage, an aligned span), memoised: some
    22 kB for a paragraph of 700 characters (seed 001's). Callers must not change it."""
    return profile(comparison_words(text, transliterate))


def _passage_profile(text: str, settings: Settings) -> WordProfile:
    return _profile_of(text, settings.transliterate)


@lru_cache(maxsize=4096)
def _content_word_count(text: str) -> int:
    """How many content words a span of a derived text holds, memoised for :func:`summarise`."""
    return len(content_words(tokens(normalize(text))))


class DocumentsRead:
    """What one :func:`derive` call reads of the documents it compares, read once for all its
    derivations: their texts, content passages and credited agencies do not change while it
    runs (it writes derivations and their evidence only). The new document is at one end of
    each derivation; a copy of a wire story crawled newest first is the derived end of a new
    derivation and of the one it retires (250 templated reports crawled that way made 17,871
    derivations, summarised 38,483 times, and read content passages 90,474 times)."""

    def __init__(self, connection: Connection, texts: Optional[dict[int, str]] = None):
        self.connection = connection
        self.texts = {} if texts is None else texts
        self._passages: dict[int, list] = {}
        self._tokens: dict[int, Sequence[Token]] = {}
        self._credits: dict[int, set[str]] = {}
        self._credited_as: dict[int, set[str]] = {}

    def text(self, document_id: int) -> str:
        if document_id not in self.texts:
            self.texts[document_id] = _TEXT.scalar(self.connection, document=document_id)
        return self.texts[document_id]

    def passages(self, document_id: int) -> list:
        """The document's content passages, in order (:data:`CONTENT_PASSAGES`)."""
        if document_id not in self._passages:
            self._passages[document_id] = CONTENT_PASSAGES.rows(self.connection, document=document_id)
        return self._passages[document_id]

    def content_chars(self, document_id: int) -> int:
        """Characters of the document's content passages (boilerplate left out)."""
        return sum(row.end_offset - row.start_offset for row in self.passages(document_id))

    def tokens(self, document_id: int) -> Sequence[Token]:
        """The document's words in its content passages, as alignment compares them."""
        if document_id not in self._tokens:
            spans = tuple((row.start_offset, row.end_offset) for row in self.passages(document_id))
            self._tokens[document_id] = _tokens_of(self.text(document_id), spans)
        return self._tokens[document_id]

    def credits(self, document_id: int) -> set[str]:
        """The agencies the document credits ("reported by TASS")."""
        if document_id not in self._credits:
            self._credits[document_id] = _agencies(self.connection, document_id)
        return self._credits[document_id]

    def credited_as(self, document_id: int) -> set[str]:
        """The agencies a copy of the document credits it as: those it credits, and its
        publisher's, when that is an agency (a TASS feed's own story)."""
        if document_id not in self._credited_as:
            self._credited_as[document_id] = (
                self.credits(document_id) | _publisher_agency(self.connection, document_id)
            )
        return self._credited_as[document_id]


def _evidence(
    session: Session, document_id: int, other_id: int, matches: list[tuple], words_by_passage: dict[int, list[str]],
    texts: dict[int, str], settings: Settings, documents: Optional[DocumentsRead] = None,
) -> list[Evidence]:
    """Passage matches plus exact alignment of the copied text between the two documents.

    Copied text is reported as aligned segments, whatever the sentence boundaries; passage
    matches that a segment already covers are dropped, reworded passages are kept.
    ``documents``: what was read of the two documents already (see :class:`DocumentsRead`).
    """
    documents = DocumentsRead(session.connection(), texts) if documents is None else documents
    texts = documents.texts
    for doc_id in (document_id, other_id):
        documents.text(doc_id)  # into texts, which the spans below are cut from
    spans = _aligned_spans(session, matches, words_by_passage, texts, document_id, other_id, settings)
    passages = {document_id: documents.passages(document_id), other_id: documents.passages(other_id)}
    segments = align(documents.tokens(document_id), documents.tokens(other_id),
                     gap=settings.alignment_gap, min_seeds=settings.alignment_min_seeds)
    # A segment must rest on passage evidence, or be long enough to stand on its own:
    # short runs of shared words ("United States of America") are not reuse.
    supported = [spans[(m[0], m[1])][0] for m in matches]
    segments = [
        s for s in segments
        if s.seeds >= settings.alignment_standalone_seeds
        or any(start < s.a_end and s.a_start < end for start, end in supported)
    ]
    out: list[Evidence] = []
    for segment in segments:
        segment = dataclasses.replace(
            segment,
            a_start=_widen_left(texts[document_id], segment.a_start),
            a_end=_widen_right(texts[document_id], segment.a_end),
            b_start=_widen_left(texts[other_id], segment.b_start), b_end=_widen_right(texts[other_id], segment.b_end),
        )
        result = score(
            _passage_profile(texts[document_id][segment.a_start : segment.a_end], settings),
            _passage_profile(texts[other_id][segment.b_start : segment.b_end], settings),
            settings.match_policy(),
        )
        label = "verbatim" if segment.identical else "syndicated"
        out.append(Evidence(
            (_passage_at(passages[document_id], segment.a_start), segment.a_start, segment.a_end),
            (_passage_at(passages[other_id], segment.b_start), segment.b_start, segment.b_end),
            label, 1.0 if segment.identical else round(max(result.containment_a, result.containment_b), 4), None,
            result.jaccard, result.containment_a, result.containment_b, result.content_overlap,
        ))
    covered = [(s.a_start, s.a_end) for s in segments]
    for mine, candidate, result, estimate in sorted(matches, key=lambda m: (m[0], m[1])):
        mine_span, other_span = spans[(mine, candidate)]
        overlap = sum(max(0, min(end, mine_span[1]) - max(start, mine_span[0])) for start, end in covered)
        if overlap >= 0.5 * (mine_span[1] - mine_span[0]):
            continue
        out.append(Evidence(
            (mine, *mine_span), (candidate, *other_span), result.label, result.similarity, estimate,
            result.jaccard, result.containment_a, result.containment_b, result.content_overlap,
        ))
    return sorted(out, key=lambda e: (e.mine[1], e.other[1]))


_CLOSING = set(".,;:!?\u2026\"')]}\u2019\u201d\u00bb")
_OPENING = set("\"'([{\u2018\u201c\u00ab")


def _widen_right(text: str, end: int) -> int:
    """Take in the punctuation that closes the last copied word ("Russia." not "Russia")."""
    while end < len(text) and text[end] in _CLOSING:
        end += 1
    return end


def _widen_left(text: str, start: int) -> int:
    while start > 0 and text[start - 1] in _OPENING:
        start -= 1
    return start


def _passage_at(passages: list, offset: int) -> int:
    """The passage holding ``offset`` (or the next one after it)."""
    for passage in passages:
        if passage.end_offset > offset:
            return passage.id
    return passages[-1].id


_ORIGINAL_WORD = re.compile(r"\w+(?:['\u2019\u2018\u02bc]\w+)*")


def _aligned_spans(
    session: Session, matches: list[tuple], words_by_passage: dict[int, list[str]], texts: dict[int, str],
    document_id: int, other_id: int, settings: Settings,
) -> dict[tuple[int, int], tuple[tuple[int, int], tuple[int, int]]]:
    """Character spans of the evidence in each text (``texts`` holds both documents'):
    copied passages trimmed to the part the two passages share, reworded ones whole."""
    ids = sorted({m[0] for m in matches} | {m[1] for m in matches})
    offsets = {passage_id: (start, end) for passage_id, start, end in select_in(session, _PASSAGE_SPANS, ids)}
    out = {}
    for mine, candidate, result, _ in matches:
        mine_span, other_span = offsets[mine], offsets[candidate]
        if result.label in ("verbatim", "syndicated"):
            mine_words = (words_by_passage.get(mine)
                          or _passage_profile(texts[document_id][slice(*mine_span)], settings).words)
            other_words = _passage_profile(texts[other_id][slice(*other_span)], settings).words
            mine_span = _trim(texts[document_id], mine_span, mine_words, other_words)
            other_span = _trim(texts[other_id], other_span, other_words, mine_words)
        out[(mine, candidate)] = (mine_span, other_span)
    return out


def _trim(text: str, span: tuple[int, int], words: list[str], other_words: list[str]) -> tuple[int, int]:
    """Narrow ``span`` to the words covered by shared 3-grams; unchanged when the original
    text's words cannot be lined up with the normalised ones (CJK, expansions)."""
    extent = shared_extent(words, other_words)
    if extent is None or extent == (0, len(words) - 1):
        return span
    located = list(_ORIGINAL_WORD.finditer(text, span[0], span[1]))
    if len(located) != len(words):
        return span
    return located[extent[0]].start(), located[extent[1]].end()


def _extend(
    session: Session,
    document_id: int,
    other_id: int,
    seeds: list[tuple],
    words_by_passage: dict[int, list[str]],
    texts: dict[int, str],
    my_signatures: dict,
    settings: Settings,
    documents: Optional[DocumentsRead] = None,
) -> list[tuple]:
    """Seed and extend: grow matched runs into neighbouring passages under looser thresholds.

    Heavily edited reuse keeps its order: the passage next to a copied one is usually the
    (reworded) next passage of the source, even when alone it would look too different.
    Returns the new matches, in the same shape as the seeds. ``documents``: see
    :class:`DocumentsRead`.
    """
    policy = settings.extension_policy()
    window = settings.extension_window
    documents = DocumentsRead(session.connection(), texts) if documents is None else documents
    mine_rows = [row.id for row in documents.passages(document_id)]
    other_rows = documents.passages(other_id)
    other_text = documents.text(other_id)
    other_profiles: dict[int, WordProfile] = {}

    def profile_of(index_in_other: int) -> WordProfile:
        row = other_rows[index_in_other]
        if row.id not in other_profiles:
            other_profiles[row.id] = _passage_profile(other_text[row.start_offset : row.end_offset], settings)
        return other_profiles[row.id]

    mine_index = {pid: i for i, pid in enumerate(mine_rows)}
    other_index = {row.id: i for i, row in enumerate(other_rows)}
    matched = {m[0]: other_index[m[1]] for m in seeds if m[0] in mine_index and m[1] in other_index}
    queue = sorted(matched)
    added = []
    while queue:
        mine = queue.pop()
        i, j = mine_index[mine], matched[mine]
        for step in range(-window, window + 1):
            ii = i + step
            if step == 0 or not 0 <= ii < len(mine_rows) or mine_rows[ii] in matched:
                continue
            words = words_by_passage.get(mine_rows[ii])
            if not words:
                continue
            mine_profile = profile(words)
            best = None
            for jj in range(max(0, j + step - window), min(len(other_rows), j + step + window + 1)):
                result = score(mine_profile, profile_of(jj), policy)
                if result.label and (best is None or result.similarity > best[0].similarity):
                    best = (result, jj)
            if best is None:
                continue
            result, jj = best
            row = other_rows[jj]
            mine_signature = my_signatures.get(mine_rows[ii])
            estimate = (
                estimate_jaccard(mine_signature, from_blob(row.signature))
                if mine_signature is not None and row.signature is not None else 0.0
            )
            matched[mine_rows[ii]] = jj
            queue.append(mine_rows[ii])
            added.append((mine_rows[ii], row.id, result, estimate))
    return added


def _named_sources(session: Session, document_id: int, best: dict[tuple[int, int], tuple]) -> set[tuple[int, int]]:
    """The (mine, other document) matches that name where each passage of mine came from:
    of the earlier documents it matches with its strongest label, the earliest and the
    closest; and every later document it matches, whose source the new one is.

    A passage of a wire story copied by fifty sites matches all fifty; lineage names the
    original (the copies already point to it) and the copy closest to the text, not every
    copy again. This also bounds a document's derivations by its passages: a story type every
    document shares (automated earnings or weather reports) used to make each new document
    derive from every earlier one, as many derivations as pairs. A wire story stored after
    its copies (published before them) becomes the source of each.
    """
    found_by_mine: dict[int, list[tuple[int, tuple[int, float]]]] = {}
    for (mine, other), (_, result, _) in best.items():
        found_by_mine.setdefault(mine, []).append((other, strength(result)))
    if all(len(found) == 1 for found in found_by_mine.values()):
        return set(best)
    dates = dict(select_in(session, _PUBLISHED, sorted({document_id} | {other for _, other in best})))

    def earlier(a: int, b: int) -> bool:  # as :func:`direction` orders a pair
        if dates[a] is not None and dates[b] is not None and dates[a] != dates[b]:
            return dates[a] < dates[b]
        return a < b

    named: set[tuple[int, int]] = set()
    for mine, found in found_by_mine.items():
        named.update((mine, other) for other, _ in found if earlier(document_id, other))
        sources = {other: rank_and_similarity for other, rank_and_similarity in found if earlier(other, document_id)}
        named.update((mine, other) for other in _earliest_and_closest(sources, dates))
    return named


def _earliest_and_closest(sources: dict[int, tuple[int, float]], dates: dict[int, object]) -> set[int]:
    """Of the documents a passage was taken from (each with its :func:`strength` there), the
    one or two that name its source: of those of the strongest label, the earliest (by
    ``dates``, the documents' published_at, when every one has it, else by ingestion order)
    and the closest (the highest similarity, ties to the earliest)."""
    if not sources:
        return set()
    earliest_first = _earliest_first(dates, sources)
    label = max(rank for rank, _ in sources.values())
    strongest = {other: similarity for other, (rank, similarity) in sources.items() if rank == label}
    highest = max(strongest.values())
    earliest = min(strongest, key=earliest_first)
    closest = min((other for other, similarity in strongest.items() if similarity == highest), key=earliest_first)
    return {earliest, closest}


#: A document's evidence, each aligned span with its source (see :func:`_retire_superseded`).
_EVIDENCE_OF = DriverStatement(
    select(PassageMatch.id, PassageMatch.derivation_id, Derivation.source_id, PassageMatch.label,
           PassageMatch.similarity, PassageMatch.derived_start, PassageMatch.derived_end)
    .join(Derivation, Derivation.id == PassageMatch.derivation_id)
    .where(Derivation.derived_id == bindparam("document"))
)


def _retire_superseded(
    session: Session, document_id: int, later: list[int], settings: Settings, documents: Optional[DocumentsRead] = None,
) -> int:
    """Keep the sources of each passage of ``later`` documents (which the new one, published
    before them, has just become a source of) to the earliest and the closest: the new one
    too, where an earlier source stored before it is both.

    An archive is often ingested newest first: a crawler pages back from today. Each story
    then arrives before the earlier ones it was taken from, and becomes one more source of
    every later copy: 250 automated reports of one story type ingested that way stored 17,868
    derivations, 603 with this (bench/templated.py --newest-first). A source no longer the
    earliest or the closest for any passage its evidence covers is retired, as
    :func:`_named_sources` would not have named it; a derivation left without evidence is
    dropped (see :func:`summarise`).

    Stored evidence is aligned spans, not passages: a span over three copied passages may be
    labelled ``syndicated`` where each passage scored ``verbatim``. So here any copy ranks
    alike, and a span is retired only where every passage it overlaps names other sources.
    Returns how many derivations were dropped. ``documents``: see :class:`DocumentsRead`.
    """
    if not later:
        return 0
    connection = session.connection()
    documents = DocumentsRead(connection) if documents is None else documents
    dates: dict[int, object] = {}
    touched: set[int] = set()
    retired: list[int] = []
    for derived_id in later:
        spans = _EVIDENCE_OF.rows(connection, document=derived_id)
        if len({span.source_id for span in spans}) < 2:
            continue
        dates.update(select_in(session, _PUBLISHED, sorted({span.source_id for span in spans} - dates.keys())))
        passages = documents.passages(derived_id)
        starts, ends = [p.start_offset for p in passages], [p.end_offset for p in passages]

        def overlapped(span) -> range:  # the passages a span overlaps (they are in text order)
            return range(bisect.bisect_right(ends, span.derived_start), bisect.bisect_left(starts, span.derived_end))

        sources_at: dict[int, dict[int, tuple[int, float]]] = {}
        for span in spans:
            rank = (min(LABEL_STRENGTH.get(span.label, 0), LABEL_STRENGTH["syndicated"]), span.similarity)
            for at in overlapped(span):
                sources = sources_at.setdefault(at, {})
                sources[span.source_id] = max(sources.get(span.source_id, rank), rank)
        kept_at = {at: _earliest_and_closest(sources, dates) for at, sources in sources_at.items()
                   if document_id in sources}
        for span in spans:
            covers = overlapped(span)
            if covers and all(at in kept_at and span.source_id not in kept_at[at] for at in covers):
                retired.append(span.id)
                touched.add(span.derivation_id)
    for batch in index.chunks(retired):
        session.execute(delete(PassageMatch).where(PassageMatch.id.in_(batch)))
    return sum(not summarise(session, derivation_id, settings, documents) for derivation_id in sorted(touched))


def _prefer_originals(session: Session, by_source: dict[int, list], found_by_passages: set[int]) -> None:
    """Drop a source that is itself a copy of another source found for the same text.

    An excerpt matches the wire story and every near-copy of it; lineage should name the
    original (the copies already point to it), not each copy again. ``found_by_passages``:
    the documents passages matched, before :func:`_named_sources` kept some of the matches.
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
        if copy_id in by_source and copy_id in found_by_passages and mine_in_copy <= mine_in_original:
            del by_source[copy_id]


#: What :func:`summarise` reads and writes, built once (see :data:`CONTENT_PASSAGES`; a
#: summary took 4.7-5.7 ms with statements built each time, 1.6-1.9 ms without).
_ENDS = DriverStatement(
    select(Derivation.derived_id, Derivation.source_id).where(Derivation.id == bindparam("derivation"))
)
_PAIR = DriverStatement(select(DocumentPair.similarity, DocumentPair.exact).where(
    DocumentPair.first_id == bindparam("first"), DocumentPair.second_id == bindparam("second")
))
_EVIDENCE_SPANS = DriverStatement(select(
    PassageMatch.label, PassageMatch.similarity, PassageMatch.derived_start, PassageMatch.derived_end
).where(PassageMatch.derivation_id == bindparam("derivation")))
_CITED_AGENCIES = DriverStatement(select(Citation.agency).where(Citation.document_id == bindparam("document")))
_SOURCE_NAME = DriverStatement(select(Document.source).where(Document.id == bindparam("document")))
_DROP_DERIVATION_BY_ID = DriverStatement(delete(Derivation).where(Derivation.id == bindparam("derivation")))
_SET_SUMMARY = DriverStatement(update(Derivation).where(Derivation.id == bindparam("derivation")).values(
    relation=bindparam("new_relation"), score=bindparam("new_score"), coverage=bindparam("new_coverage"),
    credited=bindparam("new_credited"),
))


def summarise(
    session: Session, derivation_id: int, settings: Settings, documents: Optional[DocumentsRead] = None,
) -> bool:
    """Set relation, score, coverage and credit from the stored evidence.

    Deletes the derivation and returns False when the evidence no longer supports it.
    ``documents``: what was read of the documents already (see :class:`DocumentsRead`).
    """
    connection = session.connection()
    documents = DocumentsRead(connection) if documents is None else documents
    derived_id, source_id = _ENDS.first(connection, derivation=derivation_id)
    pair = _PAIR.first(connection, first=min(derived_id, source_id), second=max(derived_id, source_id))
    matches = _EVIDENCE_SPANS.rows(connection, derivation=derivation_id)
    content_chars = documents.content_chars(derived_id)
    text = documents.text(derived_id) if matches else ""
    copied = _union([(m.derived_start, m.derived_end) for m in matches if m.label in ("verbatim", "syndicated")])
    everything = _union([(m.derived_start, m.derived_end) for m in matches])
    matched_chars = sum(end - start for start, end in everything)
    copied_words = sum(_content_word_count(text[start:end]) for start, end in copied)
    all_words = sum(_content_word_count(text[start:end]) for start, end in everything)
    coverage = min(1.0, matched_chars / content_chars) if content_chars else 0.0
    weighted_total = sum(m.similarity * (m.derived_end - m.derived_start) for m in matches)
    weighted_length = sum(m.derived_end - m.derived_start for m in matches)
    weighted = weighted_total / weighted_length if weighted_length else 0.0
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
        _DROP_DERIVATION_BY_ID.run(connection, derivation=derivation_id)
        return False
    credited = bool(documents.credits(derived_id) & documents.credited_as(source_id))
    _SET_SUMMARY.run(
        connection, derivation=derivation_id, new_relation=relation, new_score=round(value, 4),
        new_coverage=round(coverage, 4), new_credited=credited,
    )
    return True


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _agencies(connection: Connection, document_id: int) -> set[str]:
    return {agency for agency, in _CITED_AGENCIES.rows(connection, document=document_id)}


def _publisher_agency(connection: Connection, document_id: int) -> set[str]:
    from .text.attribution import AGENCIES

    source = _SOURCE_NAME.scalar(connection, document=document_id) or ""
    return {name for name, spellings in AGENCIES.items() if source in spellings or source.lower() == name.lower()}


def drop_matches_of(session: Session, passage_ids: list[int]) -> None:
    """Remove evidence that rests on passages now known to be boilerplate."""
    for batch in index.chunks(passage_ids):
        session.execute(
            delete(PassageMatch).where(
                or_(PassageMatch.derived_passage_id.in_(batch), PassageMatch.source_passage_id.in_(batch))
            )
        )


def rederive(session: Session, document_id: int, settings: Settings) -> Found:
    """Find a stored document's sources again, from its stored text and passages.

    Lineage names a passage's earliest and closest sources only (see :func:`_named_sources`,
    :func:`_retire_superseded`); when a named source is forgotten, the copies it stood for
    must be found again, or the document would be left with no source at all.
    """
    text = _TEXT.scalar(session.connection(), document=document_id)
    content = CONTENT_PASSAGES.rows(session.connection(), document=document_id)
    words_by_passage = {row.id: passage_words(text[row.start_offset : row.end_offset], settings) for row in content}
    signed = [(row.id, row.signature) for row in content if row.signature is not None]
    return derive(session, document_id, signed, words_by_passage, settings)


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
