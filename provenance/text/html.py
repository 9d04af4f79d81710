"""Visible text of an HTML page with its block structure (one block a line), via lxml."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

import lxml.etree
import lxml.html

_SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "canvas"}
_BLOCK = {
    "pre", "address", "article", "aside", "blockquote", "body", "br", "dd", "details", "dialog", "div",
    "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4",
    "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary",
    "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "option", "button", "label",
}
_SOURCE_BREAKS = str.maketrans("\r\n\t", "   ")
_PUBLISHED_META = ("article:published_time", "og:published_time", "date", "dc.date", "pubdate")


@dataclass(frozen=True)
class HtmlPage:
    text: str
    title: Optional[str]
    published_at: Optional[datetime]


def extract(data: bytes, encoding: str) -> HtmlPage:
    """The page's text, title and publication date; an unparseable page has no text.

    Raises LookupError when libxml2 does not know ``encoding`` (Python may: cp037), so the
    caller can refuse that one file with a message.
    """
    try:
        parser = lxml.html.HTMLParser(encoding=encoding, remove_comments=True)
        root = lxml.html.document_fromstring(data, parser=parser)
    except (lxml.etree.ParserError, ValueError):
        return HtmlPage("", None, None)
    title = root.findtext(".//title")
    parts: list[str] = []
    _walk(root, parts)
    lines = [" ".join(line.split()) for line in "".join(parts).split("\n")]
    text = "\n".join(line for line in lines if line)
    return HtmlPage(text, " ".join(title.split()) if title else None, _published(root))


def _flow(text: str, preformatted: bool) -> str:
    """Source line breaks are only whitespace in HTML, except inside <pre>."""
    return text if preformatted else text.translate(_SOURCE_BREAKS)


def _walk(element, parts: list[str], preformatted: bool = False) -> None:
    tag = element.tag if isinstance(element.tag, str) else ""
    tag = tag.lower()
    if tag in _SKIP:
        if element.tail:
            parts.append(_flow(element.tail, preformatted))
        return
    block = tag in _BLOCK
    inner = preformatted or tag == "pre"
    if block:
        parts.append("\n")
    if element.text and isinstance(element.tag, str):
        parts.append(_flow(element.text, inner))
    for child in element:
        _walk(child, parts, inner)
    if block:
        parts.append("\n")
    if element.tail:
        parts.append(_flow(element.tail, preformatted))


def _published(root) -> Optional[datetime]:
    from .dates import parse_datetime

    for meta in root.iter("meta"):
        name = (meta.get("property") or meta.get("name") or "").lower()
        if name in _PUBLISHED_META and meta.get("content"):
            parsed = parse_datetime(meta.get("content"))
            if parsed:
                return parsed
    for time in root.iter("time"):
        if time.get("datetime"):
            parsed = parse_datetime(time.get("datetime"))
            if parsed:
                return parsed
    return None
