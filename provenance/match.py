"""Score a pair of passages and grade the match: verbatim, syndicated or rewritten.

Pure functions over normalised words. Word 3-grams catch copying (light edits leave most
3-grams intact); content words catch rewording (the 3-grams are gone, the vocabulary stays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

from .text.normalize import content_words


@dataclass(frozen=True)
class MatchPolicy:
    """Thresholds that grade a passage pair; stored with the settings that produced results."""

    #: Share of the shorter passage's word 3-grams found in the other: near-verbatim copy.
    syndicated_min_containment: float = 0.5
    #: Share of the shorter passage's content words found in the other: reworded content.
    rewritten_min_overlap: float = 0.6
    #: A reworded passage must share at least this many content words.
    rewritten_min_shared: int = 6
    #: A passage needs this many content words to be matched at all.
    min_content_words: int = 5


@dataclass(frozen=True)
class PassageScore:
    label: Optional[str]
    similarity: float
    jaccard: float
    containment_a: float
    containment_b: float
    content_overlap: float
    shared_content_words: int


def trigrams(words: list[str]) -> set[tuple[str, ...]]:
    if len(words) < 3:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


class WordProfile(NamedTuple):
    """What scoring compares of a passage, built once however many candidates it is scored
    against (a new passage meets a dozen, a stored one several in a window)."""

    words: list[str]
    grams: set[tuple[str, ...]]
    content: set[str]
    #: The words joined with spaces and padded with one, for the excerpt test.
    padded: str


def profile(words: list[str]) -> WordProfile:
    return WordProfile(words, trigrams(words), set(content_words(words)), " " + " ".join(words) + " ")


def score(
    words_a: Union[list[str], WordProfile], words_b: Union[list[str], WordProfile], policy: MatchPolicy = MatchPolicy()
) -> PassageScore:
    """Measures and label for passage ``a`` (the derived side) against ``b`` (the source),
    given as words or as their :func:`profile`."""
    a = words_a if isinstance(words_a, WordProfile) else profile(words_a)
    b = words_b if isinstance(words_b, WordProfile) else profile(words_b)
    grams_a, grams_b = a.grams, b.grams
    shared = len(grams_a & grams_b)
    union = len(grams_a | grams_b)
    jaccard = shared / union if union else 0.0
    containment_a = shared / len(grams_a) if grams_a else 0.0
    containment_b = shared / len(grams_b) if grams_b else 0.0
    shared_content = len(a.content & b.content)
    smaller = min(len(a.content), len(b.content))
    overlap = shared_content / smaller if smaller else 0.0
    best_containment = max(containment_a, containment_b)
    label: Optional[str] = None
    similarity = 0.0
    if a.words and (a.words == b.words or _contains(b, a) or _contains(a, b)):
        label, similarity = "verbatim", 1.0
    elif best_containment >= policy.syndicated_min_containment:
        label, similarity = "syndicated", best_containment
    elif (
        overlap >= policy.rewritten_min_overlap
        and shared_content >= policy.rewritten_min_shared
    ):
        label, similarity = "rewritten", overlap
    return PassageScore(label, round(similarity, 4), round(jaccard, 4), round(containment_a, 4),
                        round(containment_b, 4), round(overlap, 4), shared_content)


LABEL_STRENGTH = {"verbatim": 3, "syndicated": 2, "rewritten": 1}


def strength(result: PassageScore) -> tuple[int, float]:
    """Copied beats reworded, then the higher score: a rewrite's content-word overlap and
    a copy's containment are not on one scale."""
    return LABEL_STRENGTH.get(result.label, 0), result.similarity


def _contains(haystack: WordProfile, needle: WordProfile) -> bool:
    """True when ``needle`` occurs as a contiguous run of words in ``haystack`` (an excerpt)."""
    if len(needle.words) < 3 or len(needle.words) > len(haystack.words):
        return False
    return needle.padded in haystack.padded


def shared_extent(words_a: list[str], words_b: list[str]) -> Optional[tuple[int, int]]:
    """Word range (first, last inclusive) of ``words_a`` covered by 3-grams it shares with
    ``words_b``; None when they share none. Trims a passage to the copied part."""
    grams_b = trigrams(words_b)
    if len(words_a) < 3:
        return (0, len(words_a) - 1) if words_a and tuple(words_a) in grams_b else None
    hits = [i for i in range(len(words_a) - 2) if tuple(words_a[i : i + 3]) in grams_b]
    if not hits:
        return None
    return hits[0], hits[-1] + 2
