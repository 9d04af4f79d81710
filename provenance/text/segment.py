"""Split a document into passages that keep their character offsets into the original text.

Lines are the unit of page chrome ("Previous Article"), sentences the unit of reuse. A
block is a run of lines that belong together (hard-wrapped prose is re-joined); each block
is cut into sentences, short sentences are merged with their neighbour and long ones cut
into windows, so every passage is big enough to compare and small enough to localise.
Invariant: ``text[p.start:p.end] == p.text`` and passages never overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence ends at terminal punctuation followed by space, or (scraped text glued
# together) directly by a capital after a lower-case word: "study.Bachelor's".
_SENTENCE_END = re.compile(
    r"[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019\u00bb)\]]*(?=\s+|$)|(?<=[a-z]{2})[.!?](?=[A-Z][a-z])"
)
_LINE_END_PUNCT = tuple(".!?:;\"'\u201d\u2019\u00bb)]\u2026\u3002")
_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class Passage:
    start: int
    end: int
    text: str
    block: int


def _lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-blank line, with surrounding whitespace trimmed."""
    spans = []
    position = 0
    for raw in text.splitlines(keepends=True):
        body = raw.rstrip("\r\n")
        stripped = body.strip()
        if stripped:
            start = position + (len(body) - len(body.lstrip()))
            spans.append((start, start + len(stripped)))
        position += len(raw)
    return spans


def _continues(text: str, line: tuple[int, int], following: tuple[int, int], blank_between: bool) -> bool:
    """True when ``following`` is the same paragraph as ``line``, hard-wrapped."""
    if blank_between:
        return False
    current = text[line[0] : line[1]]
    if current.endswith(_LINE_END_PUNCT):
        return False
    first = text[following[0]]
    if first.islower():
        return True
    return len(current) >= 60


def blocks(text: str) -> list[tuple[int, int]]:
    """Paragraph-like blocks: runs of lines joined when one wraps into the next."""
    lines = _lines(text)
    out: list[tuple[int, int]] = []
    for index, line in enumerate(lines):
        if out and index:
            previous = lines[index - 1]
            gap = text[previous[1] : line[0]]
            if _continues(text, previous, line, gap.count("\n") > 1):
                out[-1] = (out[-1][0], line[1])
                continue
        out.append(line)
    return out


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    position = start
    for match in _SENTENCE_END.finditer(text, start, end):
        if match.end() - position > 0:
            spans.append((position, match.end()))
        position = match.end()
        while position < end and text[position].isspace():
            position += 1
    if position < end:
        spans.append((position, end))
    return spans


def _word_count(text: str, start: int, end: int) -> int:
    return len(_WORDS.findall(text, start, end))


def _cut_long(text: str, start: int, end: int, max_words: int) -> list[tuple[int, int]]:
    """Cut a span into windows of at most ``max_words`` words, at word boundaries."""
    words = list(_WORDS.finditer(text, start, end))
    if len(words) <= max_words:
        return [(start, end)]
    spans = []
    window_start = start
    for index in range(max_words, len(words), max_words):
        cut = words[index].start()
        spans.append((window_start, _rstrip(text, window_start, cut)))
        window_start = cut
    spans.append((window_start, end))
    return spans


def _rstrip(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def segment(text: str, min_words: int = 6, max_words: int = 60) -> list[Passage]:
    """Passages of ``text`` in order; see the module docstring for the rules."""
    passages: list[Passage] = []
    for block_index, (block_start, block_end) in enumerate(blocks(text)):
        merged: list[tuple[int, int]] = []
        pending: tuple[int, int] | None = None
        for sentence in _sentences(text, block_start, block_end):
            if pending is not None:
                sentence = (pending[0], sentence[1])
                pending = None
            if _word_count(text, *sentence) < min_words:
                pending = sentence
                continue
            merged.append(sentence)
        if pending is not None:
            if merged and _word_count(text, merged[-1][0], pending[1]) <= max_words:
                merged[-1] = (merged[-1][0], pending[1])
            else:
                merged.append(pending)
        for span in merged:
            for start, end in _cut_long(text, span[0], span[1], max_words):
                passages.append(Passage(start, end, text[start:end], block_index))
    return passages
