"""Shingles, MinHash signatures and LSH band keys.

Signatures are datasketch ``MinHash`` values (affine32 scheme, its permutations) of 32-bit
xxhash values of word shingles, computed in batched numpy operations; they are stored as little-endian uint32 BLOBs and banded into
signed 64-bit keys that live in an indexed database table, so the LSH index is persisted
and incremental instead of held in memory.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import xxhash

from .settings import SketchSettings

_MASK32 = np.uint64(0xFFFFFFFF)
# Odd 64-bit multipliers for position-dependent shingle mixing (fixed: part of the format).
_POSITION_MULTIPLIERS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5,
     0x94D049BB133111EB, 0xBF58476D1CE4E5B9, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53],
    dtype=np.uint64,
)


@lru_cache(maxsize=1 << 18)
def token_hash(token: str) -> int:
    """64-bit hash of one token, memoised: news vocabulary repeats heavily."""
    return xxhash.xxh3_64_intdigest(token.encode())


def shingle_hashes(words: list[str], size: int) -> np.ndarray:
    """Distinct 32-bit hashes of the word ``size``-grams of ``words``.

    A text shorter than ``size`` words becomes one shingle of all its words, so it never gets
    an empty signature; an empty text gives an empty array.
    """
    return shingles_of(token_hashes(words), size)


def token_hashes(words: list[str]) -> np.ndarray:
    """:func:`token_hash` of each word, in order (uint64): what :func:`shingles_of` combines.
    Worth keeping when the same words are shingled again in other company (a document's
    content passages, known only once its boilerplate is)."""
    return np.fromiter((token_hash(w) for w in words), dtype=np.uint64, count=len(words))


def shingles_of(hashes: np.ndarray, size: int) -> np.ndarray:
    """:func:`shingle_hashes` of the words whose :func:`token_hashes` are ``hashes``."""
    if not len(hashes):
        return np.empty(0, dtype=np.uint32)
    size = min(size, len(hashes), len(_POSITION_MULTIPLIERS))
    count = len(hashes) - size + 1
    with np.errstate(over="ignore"):
        combined = hashes[:count] * _POSITION_MULTIPLIERS[0]
        for offset in range(1, size):
            combined ^= hashes[offset : offset + count] * _POSITION_MULTIPLIERS[offset]
    folded = ((combined >> np.uint64(32)) ^ combined) & _MASK32
    return np.unique(folded.astype(np.uint32))


@lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The affine32 permutation parameters (odd multipliers a, offsets b; uint32[num_perm])
    that datasketch's ``MinHash(num_perm, seed, scheme="affine32")`` draws from
    ``numpy.random.RandomState(seed)``. Drawn here the same way (a test compares them with
    datasketch's) so that ingest and its workers need not import datasketch and scipy,
    about 0.7 s and 45 MB per process."""
    generator = np.random.RandomState(seed)
    multipliers = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    offsets = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return multipliers, offsets


#: MurmurHash3's 32-bit finalizer (shifts and multipliers), the pre-mix datasketch's
#: affine32 scheme applies to each input hash before the affine permutations.
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
#: Input hashes permuted per numpy operation: bounds the (rows x num_perm) work array.
_SIGN_ROWS = 4096


def _fmix32(values: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX32
    values = values ^ (values >> s1)
    values = values * m1
    values = values ^ (values >> s2)
    values = values * m2
    return values ^ (values >> s3)


def signature(hashes: np.ndarray, sketch: SketchSettings) -> np.ndarray:
    """MinHash hash values (uint32, ``num_perm`` long) of a set of shingle hashes.

    The values are datasketch's ``MinHash(scheme="affine32")`` fed the same hashes through
    ``update_batch`` (a test checks it), computed here in whole-array numpy operations:
    ``update_batch`` calls the hash function once per value in Python, which made signing
    the largest cost of preparing a document.
    """
    return signatures([hashes], sketch)[0]


def signatures(hash_sets: list[np.ndarray], sketch: SketchSettings) -> list[np.ndarray]:
    """:func:`signature` of each set of hashes, permuted together in a few array operations
    (a document's passages are signed in one call)."""
    multipliers, offsets = _permutations(sketch.num_perm, sketch.seed)
    empty = np.full(sketch.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
    sizes = [len(h) for h in hash_sets]
    if not any(sizes):
        return [empty.copy() for _ in hash_sets]
    mixed = _fmix32(np.concatenate([np.asarray(h, dtype=np.uint32) for h in hash_sets]))
    ends = np.cumsum(sizes)
    out = [empty.copy() for _ in hash_sets]
    for low in range(0, len(mixed), _SIGN_ROWS):
        block = mixed[low : low + _SIGN_ROWS, None] * multipliers + offsets  # wraps mod 2**32
        high = low + len(block)
        # The sets with values in this block: from the first ending after ``low`` on.
        for index in range(int(np.searchsorted(ends, low, side="right")), len(sizes)):
            first, last = max(int(ends[index]) - sizes[index], low), min(int(ends[index]), high)
            if first >= high:
                break
            if first < last:
                np.minimum(out[index], block[first - low : last - low].min(axis=0), out=out[index])
    return out


def to_blob(values: np.ndarray) -> bytes:
    return values.astype("<u4", copy=False).tobytes()


def low_bytes(values: np.ndarray) -> np.ndarray:
    """The low byte of each signature value (see :class:`provenance.db.models.PassagePrefilter`)."""
    return np.asarray(values, dtype=np.uint32).astype(np.uint8)


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<u4")


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """MinHash estimate of the Jaccard similarity: the share of equal hash values."""
    if len(a) != len(b):
        raise ValueError(f"signatures of different lengths ({len(a)} and {len(b)}) cannot be compared")
    return float(np.count_nonzero(a == b)) / len(a)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sets of distinct hashes (as from :func:`shingle_hashes`)."""
    if not len(a) and not len(b):
        return 1.0
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared)


def band_keys(values: np.ndarray, sketch: SketchSettings) -> list[int]:
    """One signed 64-bit key per band; the band index is hashed in, so one column suffices."""
    data = values.astype("<u4", copy=False).tobytes()
    width = 4 * sketch.rows
    keys = []
    for band in range(sketch.bands):
        # Sliced as bytes rather than as arrays copied out one by one: 8.7 instead of 15.7 µs.
        key = xxhash.xxh3_64_intdigest(data[band * width : (band + 1) * width], seed=band)
        keys.append(key - (1 << 64) if key >= 1 << 63 else key)
    return keys
