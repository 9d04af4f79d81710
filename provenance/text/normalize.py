"""Normalisation and tokenisation: what newsroom copy varies, made equal.

``normalize`` is pure and idempotent: NFKC, case folding, typographic quotes and dashes to
ASCII, soft hyphens and zero-width characters removed, whitespace collapsed.
"""

from __future__ import annotations

import re
import unicodedata

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff\u180e"), None)
_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u00ab": '"', "\u00bb": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
        "\u2015": "-", "\u2212": "-",
    }
)
_WHITESPACE = re.compile(r"\s+")
_DIGITS = re.compile(r"\d+")
# A word is a run of letters/digits (any script) with inner apostrophes; CJK is split below.
_WORD = re.compile(r"\w+(?:'\w+)*")
_CJK = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f]+"
)

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each few
    for from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves said says say one two may might must shall us upon within without
    would could also however"""
    .split()
)


def normalize(text: str) -> str:
    """Return the comparison form of ``text``; ``normalize(normalize(t)) == normalize(t)``."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    text = text.casefold().translate(_PUNCTUATION)
    # NFKC again: casefold can produce sequences that NFKC would fold further.
    text = unicodedata.normalize("NFKC", text)
    return _WHITESPACE.sub(" ", text).strip()


def tokens(normalized: str) -> list[str]:
    """Words of an already normalised text; runs of CJK characters become character bigrams."""
    if not _CJK.search(normalized):
        return [word.replace("'", "") for word in _WORD.findall(normalized)]
    out: list[str] = []
    for word in _WORD.findall(normalized):
        if _CJK.search(word):
            out.extend(_split_cjk(word))
        else:
            out.append(word.replace("'", ""))
    return out


def _split_cjk(word: str) -> list[str]:
    pieces: list[str] = []
    position = 0
    for run in _CJK.finditer(word):
        if run.start() > position:
            pieces.append(word[position : run.start()])
        chars = run.group()
        if len(chars) == 1:
            pieces.append(chars)
        else:
            pieces.extend(chars[i : i + 2] for i in range(len(chars) - 1))
        position = run.end()
    if position < len(word):
        pieces.append(word[position:])
    return pieces


def content_words(words: list[str]) -> list[str]:
    """Words that carry meaning, lightly stemmed: what survives a rewording."""
    return [_stem(w) for w in words if w not in STOPWORDS and (len(w) > 2 or not w.isascii())]


def _stem(word: str) -> str:
    # A crude prefix stem: "approved"/"approving"/"approval" meet at "approv".
    return word[:6] if len(word) > 6 else word


def boilerplate_key_text(normalized: str) -> str:
    """The form under which recurring chrome is counted: digits masked (dates, counters)."""
    return _DIGITS.sub("0", normalized)


_TRANSLIT = str.maketrans({
    "а": "a", "б": "b", "в": "v", "г": "g", "ґ": "g", "д": "d", "е": "e", "ё": "e", "є": "e", "ж": "zh",
    "з": "z", "и": "i", "і": "i", "ї": "i", "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ў": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch",
    "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu", "я": "ya",
    "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th", "ι": "i", "κ": "k",
    "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p", "ρ": "r", "σ": "s", "ς": "s", "τ": "t",
    "υ": "y", "φ": "f", "χ": "ch", "ψ": "ps", "ω": "o",
})
_VOWELS = re.compile(r"(?<=.)[aeiouy]+")
_DOUBLES = re.compile(r"(.)\1+")


def transliterate(word: str) -> str:
    """Cyrillic and Greek letters to Latin (a simple scientific-style table)."""
    return word.translate(_TRANSLIT)


def phonetic_key(word: str) -> str:
    """A spelling-tolerant key: transliterated, inner vowels dropped, doubles collapsed.

    "lukashenko", "lukashenka" and "лукашенко" all become "lkshnk". Digits pass through.
    """
    latin = transliterate(word)
    if not latin.isalpha() or not latin.isascii():
        return latin
    return _DOUBLES.sub(r"\1", _VOWELS.sub("", latin.replace("kh", "h").replace("zh", "z")))
