"""Credited sources: "reported by TASS", "BelTA reports", "according to Reuters", "(AP)".

Only credits in a crediting phrase count: a bare mention of an agency in a story about
that agency is not an attribution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Canonical agency name -> spellings (matched case-sensitively for acronyms).
AGENCIES: dict[str, tuple[str, ...]] = {
    "TASS": ("TASS", "ТАСС"),
    "BelTA": ("BelTA", "BELTA", "БелТА"),
    "Reuters": ("Reuters",),
    "AP": ("AP", "Associated Press"),
    "AFP": ("AFP", "Agence France-Presse", "Agence France Presse"),
    "RIA Novosti": ("RIA Novosti", "РИА Новости"),
    "Interfax": ("Interfax", "Интерфакс"),
    "Xinhua": ("Xinhua",),
    "Bloomberg": ("Bloomberg",),
    "dpa": ("dpa", "DPA"),
    "UPI": ("UPI",),
    "Anadolu": ("Anadolu Agency", "Anadolu"),
    "Kyodo": ("Kyodo",),
    "EFE": ("EFE",),
    "ANSA": ("ANSA",),
    "Ukrinform": ("Ukrinform",),
    "PTI": ("PTI", "Press Trust of India"),
    "Yonhap": ("Yonhap",),
    "Sputnik": ("Sputnik",),
    "PA": ("PA Media",),
}
_SPELLING = {spelling: name for name, spellings in AGENCIES.items() for spelling in spellings}
_NAMES = "|".join(sorted(map(re.escape, _SPELLING), key=len, reverse=True))
_AGENCY = rf"(?i:the\s+)?(?P<agency>{_NAMES})(?i:\s+news\s+agency)?"
_BEFORE = (
    r"(?i:reported\s+by|according\s+to|cited\s+by|quoted\s+by|citing|via|as\s+reported\s+by|"
    r"told|sources?:|source\s*-|with\s+reference\s+to|сообщает|передает|по\s+данным)"
)
_AFTER = r"(?i:reports?|reported|said|says|writes|wrote|quoted|cited|informs|notes|noted|learned)"
_PATTERNS = (
    re.compile(rf"\b{_BEFORE}\s+{_AGENCY}\b"),
    re.compile(rf"\b{_AGENCY}\s+{_AFTER}\b"),
    re.compile(rf"\((?P<agency>{_NAMES})\)"),
    re.compile(rf"^\s*(?P<agency>{_NAMES})\s*[:\-\u2013\u2014]", re.MULTILINE),
)


@dataclass(frozen=True)
class Citation:
    agency: str
    text: str
    start: int
    end: int


def citations(text: str) -> list[Citation]:
    """Every crediting phrase in ``text``, in order, one per span."""
    found: dict[tuple[int, int], Citation] = {}
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            span = (match.start(), match.end())
            if any(s <= span[0] < e or span[0] <= s < span[1] for s, e in found):
                continue
            found[span] = Citation(_SPELLING[match.group("agency")], match.group(0).strip(), *span)
    return [found[span] for span in sorted(found)]


def credited_agencies(text: str) -> set[str]:
    return {citation.agency for citation in citations(text)}
