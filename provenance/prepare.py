"""The CPU-bound half of ingest: normalise, segment, tokenise and sign one document.

Pure (no database), so it can run in worker processes; what depends on the corpus
(boilerplate, candidates) is decided later by :mod:`provenance.ingest`.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import xxhash

from . import sketch
from .reader import RawDocument
from .settings import Settings
from .text.attribution import Citation, citations
from .text.normalize import boilerplate_key_text, content_words, normalize, phonetic_key, tokens
from .text.segment import segment

if TYPE_CHECKING:
    from .prefetch import BucketSnapshot


@dataclass
class PreparedPassage:
    seq: int
    start: int
    end: int
    block: int
    key_hash: int
    words: list[str]
    content_word_count: int
    signature: Optional[np.ndarray]
    #: Computed here, in a worker process when there are several, rather than by the one
    #: writer that stores and matches every document in turn: the token hashes its document
    #: shingles are made of (see :func:`content_shingles`) and, when signed, its LSH band keys
    #: (an ``array('q')``: 8 bytes a key, where a tuple of Python ints took about 40; with one
    #: string a distinct word, see :func:`prepare`, a document of 4.95 million characters peaks
    #: at 350 MB instead of 460 MB, ``python bench/memory.py --long-document 4950000``).
    token_hashes: np.ndarray
    band_keys: Sequence[int] = ()


@dataclass
class PreparedDocument:
    raw: RawDocument
    content_hash: str
    word_count: int
    passages: list[PreparedPassage]
    citations: list[Citation]
    #: Its passages' buckets, read by the worker that prepared it (see provenance.prefetch).
    buckets: Optional["BucketSnapshot"] = None


def signed64(value: int) -> int:
    """Fold an unsigned 64-bit hash into the signed range a BIGINT column holds."""
    return value - (1 << 64) if value >= 1 << 63 else value


def content_hash(text: str) -> str:
    """xxh3_128 of the normalised text: equal for copies that differ only in case or spacing."""
    return xxhash.xxh3_128_hexdigest(normalize(text).encode("utf-8"))


def passage_words(text: str, settings: Settings) -> list[str]:
    """The comparison words of a piece of text under ``settings`` (transliterated if asked)."""
    return comparison_words(text, settings.transliterate)


def comparison_words(text: str, transliterate: bool) -> list[str]:
    """:func:`passage_words` given only the one setting it reads: a key short to hash for
    the memos of :mod:`provenance.derive`."""
    words = tokens(normalize(text))
    return [phonetic_key(w) for w in words] if transliterate else words


def passage_hashes(words: list[str], settings: Settings) -> Optional[np.ndarray]:
    """The hashed content-word set a passage is signed over, or None when it is too short
    to match."""
    vocabulary = sorted(set(content_words(words)))
    if len(vocabulary) < settings.passage_min_words:
        return None
    return sketch.shingle_hashes(vocabulary, settings.passage.shingle_size)


def prepare(raw: RawDocument, settings: Settings, digest: Optional[str] = None) -> PreparedDocument:
    """Segment, normalise and sign a document. ``digest``: its :func:`content_hash`, where
    the caller has computed it already (see provenance.ingest.Unchanged)."""
    passages = []
    total_words = 0
    # One string object a distinct word, shared by its occurrences: a long document repeats most
    # of its words (see PreparedPassage.band_keys for what both save).
    spellings: dict[str, str] = {}
    for seq, passage in enumerate(
        segment(raw.text, min_words=settings.passage_min_words, max_words=settings.passage_max_words)
    ):
        normalized = normalize(passage.text)
        words = tokens(normalized)
        if settings.transliterate:
            words = [phonetic_key(w) for w in words]
        words = [spellings.setdefault(word, word) for word in words]
        total_words += len(words)
        key = signed64(xxhash.xxh3_64_intdigest(boilerplate_key_text(normalized).encode("utf-8")))
        passages.append(
            PreparedPassage(
                seq=seq,
                start=passage.start,
                end=passage.end,
                block=passage.block,
                key_hash=key,
                words=words,
                content_word_count=len(content_words(words)),
                signature=None,
                token_hashes=sketch.token_hashes(words),
            )
        )
    # All passages signed in one batch: per-passage signing cost more than segmenting.
    hashed = [(passage, passage_hashes(passage.words, settings)) for passage in passages]
    hashed = [(passage, hashes) for passage, hashes in hashed if hashes is not None]
    for (passage, _), signature in zip(hashed, sketch.signatures([h for _, h in hashed], settings.passage)):
        passage.signature = signature
        passage.band_keys = array("q", sketch.band_keys(signature, settings.passage))
    digest = content_hash(raw.text) if digest is None else digest
    return PreparedDocument(raw, digest, total_words, passages, citations(raw.text))


def document_signature(word_lists: list[list[str]], settings: Settings) -> Optional[np.ndarray]:
    """Signature over the word shingles of the document's content passages, in order."""
    shingles = document_shingles(word_lists, settings)
    return sketch.signature(shingles, settings.document) if len(shingles) else None


def document_shingles(word_lists: list[list[str]], settings: Settings) -> np.ndarray:
    """The distinct shingle hashes of the document's content passages, in order: the set
    whose Jaccard similarity the signature estimates."""
    return sketch.shingle_hashes([word for words in word_lists for word in words], settings.document.shingle_size)


def content_shingles(passages: list[PreparedPassage], settings: Settings) -> np.ndarray:
    """:func:`document_shingles` of these passages' words, from their token hashes."""
    hashes = [p.token_hashes for p in passages]
    return sketch.shingles_of(np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64),
                              settings.document.shingle_size)
