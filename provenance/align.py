"""Align copied text between two documents: seed on shared word 3-grams, merge, extend.

Passage matching finds *which* documents share text; this finds *exactly where*, whatever
the sentence and line boundaries are (scraped text often has none). Shared 3-grams that are
rare in both texts are seeds; seeds close together in both texts form a segment. The
classic text-alignment recipe (PAN shared task), kept small and pure.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from .text.normalize import normalize

_WORD = re.compile(r"\w+(?:['\u2019\u2018\u02bc]\w+)*")


class Token(NamedTuple):
    """A word as compared, and where it is. A tuple: the two texts of every derivation are
    tokenised whole, and a frozen dataclass cost twice as much to make (0.65 against 0.32 µs)."""

    word: str
    start: int
    end: int


@dataclass(frozen=True)
class Segment:
    """Aligned spans (character offsets) in text a and text b, with the evidence size."""

    a_start: int
    a_end: int
    b_start: int
    b_end: int
    seeds: int
    a_words: int
    identical: bool

    @property
    def density(self) -> float:
        return min(1.0, (self.seeds + 2) / self.a_words) if self.a_words else 0.0


@lru_cache(maxsize=1 << 16)
def _comparison_form(word: str) -> str:
    """A word as alignment compares it, memoised: news vocabulary repeats, and normalising
    one word at a time was most of the cost of tokenising the two texts of each derivation."""
    return normalize(word).replace("'", "")


def tokens_in(text: str, spans: list[tuple[int, int]]) -> list[Token]:
    """Normalised words of ``text`` inside ``spans`` (in order), with their offsets."""
    out = []
    for start, end in spans:
        for match in _WORD.finditer(text, start, end):
            word = _comparison_form(match.group())
            if word:
                out.append(Token(word, match.start(), match.end()))
    return out


def align(
    a: list[Token],
    b: list[Token],
    *,
    gap: int = 25,
    min_seeds: int = 4,
    max_frequency: int = 3,
) -> list[Segment]:
    """Segments of ``a`` copied from ``b`` (possibly with edits), in order of ``a``."""
    if len(a) < 3 or len(b) < 3:
        return []
    positions_b: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for j in range(len(b) - 2):
        positions_b[(b[j].word, b[j + 1].word, b[j + 2].word)].append(j)
    counts_a: dict[tuple[str, ...], int] = defaultdict(int)
    grams_a = [(a[i].word, a[i + 1].word, a[i + 2].word) for i in range(len(a) - 2)]
    for gram in grams_a:
        counts_a[gram] += 1
    seeds = [
        (i, j)
        for i, gram in enumerate(grams_a)
        if gram in positions_b and counts_a[gram] <= max_frequency and len(positions_b[gram]) <= max_frequency
        for j in positions_b[gram]
    ]
    # Grow clusters in order of a; a seed joins the cluster it continues in both texts,
    # the one nearest its diagonal when several are in reach (a repeated 3-gram can start
    # a stray cluster right next to the true copy).
    clusters: list[list[tuple[int, int]]] = []
    b_ranges: list[list[int]] = []  # [lowest, highest] b position of each cluster's seeds
    for i, j in seeds:
        best, best_drift = None, None
        for number in range(max(0, len(clusters) - 8), len(clusters)):
            last_i, last_j = clusters[number][-1]
            if i - last_i > gap:
                continue
            drift = abs((j - i) - (last_j - last_i))
            low, high = b_ranges[number]
            if low - gap <= j <= high + gap and (best_drift is None or drift < best_drift):
                best, best_drift = number, drift
        if best is None:
            clusters.append([(i, j)])
            b_ranges.append([j, j])
        else:
            clusters[best].append((i, j))
            b_ranges[best] = [min(b_ranges[best][0], j), max(b_ranges[best][1], j)]
    segments = []
    for cluster in clusters:
        cluster = _on_diagonal(cluster, gap)
        if len(cluster) < min_seeds:
            continue
        a_first, a_last = min(s[0] for s in cluster), max(s[0] for s in cluster) + 2
        b_first, b_last = min(s[1] for s in cluster), max(s[1] for s in cluster) + 2
        identical = [t.word for t in a[a_first : a_last + 1]] == [t.word for t in b[b_first : b_last + 1]]
        segments.append(
            Segment(a[a_first].start, a[a_last].end, b[b_first].start, b[b_last].end,
                    len({s[0] for s in cluster}), a_last - a_first + 1, identical)
        )
    return _merge(segments, gap)


def _on_diagonal(cluster: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Drop seeds far off the cluster's main diagonal (a repeated 3-gram matched elsewhere
    in b), so the b span covers the copy and not a stray repeat."""
    shifts = sorted(j - i for i, j in cluster)
    median = shifts[len(shifts) // 2]
    near = sorted((i, j) for i, j in cluster if abs((j - i) - median) <= gap)
    # Then locally: edits make the shift drift along a copy, but a stray seed (a common
    # 3-gram a few words off) jumps away from the seeds around it and would widen a span.
    tolerance = max(3, gap // 3)
    kept = []
    for k, (i, j) in enumerate(near):
        around = sorted(b - a for a, b in near[max(0, k - 3) : k + 4])
        if abs((j - i) - around[len(around) // 2]) <= tolerance:
            kept.append((i, j))
    return kept


def _merge(segments: list[Segment], gap: int) -> list[Segment]:
    """Join segments that overlap or touch in both texts (a copy split by an edit)."""
    merged: list[Segment] = []
    for segment in sorted(segments, key=lambda s: (s.a_start, s.b_start)):
        if merged:
            last = merged[-1]
            close_a = segment.a_start <= last.a_end + gap * 8
            close_b = segment.b_start <= last.b_end + gap * 8 and segment.b_end >= last.b_start - gap * 8
            if close_a and close_b:
                merged[-1] = Segment(
                    last.a_start, max(last.a_end, segment.a_end), min(last.b_start, segment.b_start),
                    max(last.b_end, segment.b_end), last.seeds + segment.seeds, last.a_words + segment.a_words,
                    last.identical and segment.identical,
                )
                continue
        merged.append(segment)
    return merged
