"""Shape report and inspection data for people and programs: table, JSON, CSV, HTML.

Document text is data: control characters are neutralised for terminals and every piece of
text is escaped in HTML.
"""

from __future__ import annotations

import codecs
import csv
import html
import io
import json
import re
from typing import Iterable, Iterator, Sequence, TextIO, Union

import orjson
from tabulate import tabulate

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(text: object) -> str:
    """Text with terminal control sequences and bidi overrides made visible, not obeyed."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", str(text))


def to_json(data: object) -> str:
    """``json.dumps(data, indent=2, ensure_ascii=False)`` as orjson writes it, several times
    as fast (the entries of the JSON report of 101,200 documents: 0.2-0.7 instead of 3.7-4.8 s); the
    same text but for the spelling of a few floats (0.00001, not 1e-05). What orjson
    refuses (a lone surrogate, an integer past 64 bits) goes through the standard library."""
    try:
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(data, indent=2, ensure_ascii=False)


#: Entries of a top-level list encoded together by :func:`write_json`: one encoder call
#: and one write per batch instead of per entry (the whole JSON report of 101,200
#: documents has 150,000 entries).
JSON_BATCH = 1000


def write_json(data: dict, handle: TextIO) -> None:
    """Write the JSON of ``to_json(data)`` to ``handle`` without first building it
    whole: the entries of a top-level list, or of any other iterable there (such as the
    report's streamed documents and derivations), are encoded and written
    :data:`JSON_BATCH` at a time. The whole JSON report of 100,000 documents is 160 MB of
    text, and its encoder's pieces took as much memory again.

    Where ``handle`` writes UTF-8 to a binary buffer (stdout, a file), orjson's bytes go
    there as they are: decoding them, indenting the text two spaces further and encoding it
    again took 0.106 s of the 32,000-document report's entries, against 0.041 s for orjson
    indenting them at the right depth itself (a one-off, in process)."""
    write_pieces(_json_pieces(data), handle)


def write_pieces(pieces: Iterable[Union[bytes, str]], handle: TextIO) -> None:
    """Write text given in pieces, each UTF-8 bytes or text, to ``handle``: the bytes go to
    its binary buffer as they are where it writes UTF-8 to one (see :func:`write_json`)."""
    binary = getattr(handle, "buffer", None)
    if binary is not None and codecs.lookup(handle.encoding or "").name == "utf-8":
        handle.flush()  # what was written as text before goes first
        errors = handle.errors or "strict"
        for piece in pieces:
            binary.write(piece if isinstance(piece, bytes) else piece.encode("utf-8", errors))
    else:
        for piece in pieces:
            handle.write(piece if isinstance(piece, str) else piece.decode("utf-8"))


def _json_pieces(data: dict) -> Iterator[Union[bytes, str]]:
    """The text of ``to_json(data)`` in pieces, UTF-8 bytes from orjson or text from the
    standard library where orjson refuses a value (see :func:`to_json`)."""
    if not data:
        yield "{}"
        return
    separator = "{\n"
    for key, value in data.items():
        yield f"{separator}  {json.dumps(key, ensure_ascii=False)}: "
        separator = ",\n"
        if value is None or isinstance(value, (str, int, float, dict)):
            yield one_level_in(value)
            continue
        opening = "[\n"
        for batch in _batches(value, JSON_BATCH):
            yield opening
            # "[\n    A,\n    B\n  ]" one level in: the entries, each line four spaces in.
            yield one_level_in(batch)[2:-4]
            opening = ",\n"
        yield "[]" if opening == "[\n" else "\n  ]"
    yield "\n}"


#: What :func:`one_level_in` cuts off its encoder's text: '{\n  "_": ' and '\n}'.
_WRAPPER = (len('{\n  "_": '), -len("\n}"))


def one_level_in(value: object) -> Union[bytes, str]:
    """``to_json(value)`` as it reads as a value inside an object: every line after the
    first two spaces further in. The encoder indents it so, inside an object of one key."""
    try:
        encoded: Union[bytes, str] = orjson.dumps({"_": value}, option=orjson.OPT_INDENT_2)
    except TypeError:  # see to_json
        encoded = json.dumps({"_": value}, indent=2, ensure_ascii=False)
    return encoded[_WRAPPER[0]:_WRAPPER[1]]


#: What :func:`members_two_levels_in` cuts off its encoder's text: '{\n  "_": {\n' and '\n  }\n}'.
_TWO_LEVELS = (len('{\n  "_": {\n'), -len("\n  }\n}"))


def members_two_levels_in(members: dict) -> Union[bytes, str]:
    """The members of ``members`` as ``to_json`` writes them in an object that is itself
    inside the top-level one: each ``"key": value`` four spaces in, joined by ",\n", without
    the braces, so that an object's members can be written a batch at a time."""
    try:
        encoded: Union[bytes, str] = orjson.dumps({"_": members}, option=orjson.OPT_INDENT_2)
    except TypeError:  # see to_json
        encoded = json.dumps({"_": members}, indent=2, ensure_ascii=False)
    return encoded[_TWO_LEVELS[0]:_TWO_LEVELS[1]]


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cleaned = [[safe(c) if isinstance(c, str) else ("" if c is None else c) for c in row] for row in rows]
    return tabulate(cleaned, headers=list(headers), tablefmt="simple", disable_numparse=True)


def to_csv(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()


def records(items: list[dict], fmt: str) -> str:
    """A list of flat dicts as table, CSV or JSON."""
    if fmt == "json":
        return to_json(items)
    headers = list(items[0]) if items else []
    rows = [[_cell(item.get(h)) for h in headers] for item in items]
    return to_csv(headers, rows) if fmt == "csv" else table(headers, rows)


def _flatten(data: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _cell(value: object) -> object:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def mapping(data: dict, fmt: str) -> str:
    """One record (a summary) as key/value table, CSV or JSON."""
    if fmt == "json":
        return to_json(data)
    rows = [[key, _cell(value)] for key, value in _flatten(data).items()]
    return to_csv(["key", "value"], rows) if fmt == "csv" else table(["key", "value"], rows)


# -- report ---------------------------------------------------------------------------
REPORT_CSV_HEADERS = ["kind", "group", "document_id", "path", "relation", "similarity",
                      "other_id", "other_path", "coverage", "credited", "reason"]


def report_rows(report: dict) -> list[list[object]]:
    rows: list[list[object]] = []
    for cluster in report["clusters"]:
        canonical = cluster["canonical"]
        rows.append(["cluster", cluster["id"], canonical["id"], canonical["path"], "canonical", 1.0,
                     "", "", "", "", canonical["reason"]])
        for member in cluster["members"]:
            rows.append(["cluster", cluster["id"], member["id"], member["path"], member["relation"],
                         member["similarity"], canonical["id"], canonical["path"], "", "", ""])
    for number, d in enumerate(report["derivations"], start=1):
        rows.append(["derivation", number, d["derived"]["id"], d["derived"]["path"], d["relation"], d["score"],
                     d["source"]["id"], d["source"]["path"], d["coverage"], d["credited"], d["reason"]])
    return rows


def report_csv(report: dict) -> str:
    return to_csv(REPORT_CSV_HEADERS, report_rows(report))


TERMINAL_EXCERPT = 300


def clip(text: str, limit: int = TERMINAL_EXCERPT) -> str:
    """One line of at most about ``limit`` characters: long evidence keeps its head and
    tail so the terminal stays readable (JSON and HTML carry the whole text)."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    keep = limit // 2 - 10
    head, tail = line[:keep].rsplit(" ", 1)[0], line[-keep:].split(" ", 1)[-1]
    return f"{head} … [{len(line) - len(head) - len(tail)} more characters] … {tail}"


#: Splits a text into its gaps and words, alternately, so that each distinct word is looked up
#: once, not each of the 16 million words of the HTML report of 101,200 documents.
_WORDS_AND_GAPS = re.compile(r"(\w+)")


def _mark_shared(pieces: list[str], shared: set[str], style) -> str:
    """``pieces`` (a text split by :data:`_WORDS_AND_GAPS`) joined again, each word whose
    casefold is in ``shared`` passed through ``style``."""
    marked = {w: style(w) if w.casefold() in shared else w for w in set(pieces[1::2])}
    pieces[1::2] = [marked[w] for w in pieces[1::2]]
    return "".join(pieces)


def _folded_words(pieces: list[str]) -> set[str]:
    return {w.casefold() for w in set(pieces[1::2])}  # each distinct word once


def highlight_shared(text: str, other: str, style) -> str:
    """``text`` (clipped to one line) with the words it shares with ``other`` passed through ``style``."""
    return _mark_shared(_WORDS_AND_GAPS.split(safe(clip(text))), _folded_words(_WORDS_AND_GAPS.split(other)), style)


def not_shown(report: dict, section: str, noun: str) -> list[str]:
    """The line saying how many entries of a section a limited report leaves out, if any."""
    summary = report["summary"]
    if "shown" not in summary:
        return []
    return more_not_shown(summary["totals"][section] - summary["shown"][section], noun, summary["limit"])


def more_not_shown(hidden: int, noun: str, limit: int) -> list[str]:
    """The line saying that a listing cut at ``--limit`` leaves ``hidden`` entries out, if any."""
    return [f"... {hidden} more {noun} not shown (--limit {limit}); --limit 0 lists all"] if hidden > 0 else []


def report_text(report: dict, style=lambda s: s, passages: bool = True) -> str:
    """The terminal report: clusters, then derivations with passages side by side."""
    out = [safe(report["summary"]["message"]), ""]  # it can name paths, which are data
    if report["clusters"]:
        out.append("Duplicate clusters")
        rows = []
        for cluster in report["clusters"]:
            rows.append([cluster["id"], cluster["canonical"]["id"], cluster["canonical"]["path"], "canonical", "1.00"])
            for m in cluster["members"]:
                rows.append(["", m["id"], m["path"], m["relation"], f"{m['similarity']:.2f}"])
        out.append(table(["cluster", "doc", "path", "relation", "similarity"], rows))
        out.extend(not_shown(report, "clusters", "cluster(s)"))
        out.append("")
    if report["derivations"]:
        out.append("Derivations (derived <- source)")
        rows = [
            [d["derived"]["id"], d["derived"]["path"], d["source"]["id"], d["source"]["path"], d["relation"],
             f"{d['score']:.2f}", f"{d['coverage']:.0%}", "yes" if d["credited"] else "no"]
            for d in report["derivations"]
        ]
        out.append(table(["derived", "path", "source", "source path", "relation", "score", "coverage", "credited"], rows))
        out.extend(not_shown(report, "derivations", "derivation(s)"))
        out.append("")
        if passages:
            for d in report["derivations"]:
                if not d["passages"]:
                    continue
                out.append(safe(f"#{d['derived']['id']} <- #{d['source']['id']} {d['relation']} ({d['reason']})"))
                for p in d["passages"]:
                    out.append(f"  [{p['label']} {p['similarity']:.2f}] derived {p['derived_span']} | source {p['source_span']}")
                    out.append("    derived: " + highlight_shared(p.get("derived_text", ""), p.get("source_text", ""), style))
                    out.append("    source:  " + highlight_shared(p.get("source_text", ""), p.get("derived_text", ""), style))
                out.append("")
    if report["boilerplate"]:
        out.append("Boilerplate library (excluded from matching)")
        out.append(table(["text", "documents", "occurrences", "origin"],
                         [[b["text"][:70], b["documents"], b["occurrences"], b["origin"]] for b in report["boilerplate"]]))
        out.extend(not_shown(report, "boilerplate", "boilerplate line(s)"))
        out.append("")
    if report["citations"]:
        out.append("Credited sources")
        out.append(table(["doc", "path", "agency", "text"],
                         [[c["document"]["id"], c["document"]["path"], c["agency"], c["text"]] for c in report["citations"]]))
        out.extend(not_shown(report, "citations", "credit(s)"))
    return "\n".join(out).rstrip() + "\n"


_HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin:.5em 0 1.5em}
.pair div{background:#f7f7f7;padding:.5em;white-space:pre-wrap}
mark{background:#ffe08a}.label{font-weight:bold}
"""


def report_html(report: dict) -> str:
    """One self-contained HTML page; every piece of document text is escaped."""
    return "".join(report_html_parts(report))


def report_html_parts(report: dict) -> Iterator[str]:
    """:func:`report_html` a piece at a time, for writing a page of 100,000 documents (1.1 GB
    of HTML) without holding it whole."""
    e = lambda value: html.escape(str(value), quote=True)  # noqa: E731
    mark = lambda word: f"\x00{word}\x01"  # noqa: E731 - placeholder, replaced after escaping

    def highlighted(pair: tuple[str, str]) -> tuple[str, str]:
        """Both texts, each with the words the other has marked (each split once)."""
        split = [_WORDS_AND_GAPS.split(text.replace("\x00", "").replace("\x01", "")) for text in pair]
        folded = [_folded_words(pieces) for pieces in split]
        first, second = (
            e(_mark_shared(pieces, shared, mark)).replace("\x00", "<mark>").replace("\x01", "</mark>")
            for pieces, shared in zip(split, reversed(folded))
        )
        return first, second

    def more(section: str, noun: str) -> list[str]:
        return [f"<p><em>{e(line)}</em></p>" for line in not_shown(report, section, noun)]

    yield "<!DOCTYPE html><html><head><meta charset='utf-8'><title>provenance report</title>"
    yield f"<style>{_HTML_STYLE}</style></head><body>"
    yield "<h1>provenance report</h1>"
    yield f"<p>{e(report['summary']['message'])}</p>"
    if report["clusters"]:
        yield "<h2>Duplicate clusters</h2><table><tr><th>cluster</th><th>document</th><th>path</th><th>relation</th><th>similarity</th></tr>"
        for cluster in report["clusters"]:
            c = cluster["canonical"]
            yield f"<tr><td>{e(cluster['id'])}</td><td>{e(c['id'])}</td><td>{e(c['path'])}</td><td>canonical: {e(c['reason'])}</td><td>1.00</td></tr>"
            for m in cluster["members"]:
                yield f"<tr><td></td><td>{e(m['id'])}</td><td>{e(m['path'])}</td><td>{e(m['relation'])}</td><td>{m['similarity']:.2f}</td></tr>"
        yield "</table>"
        yield from more("clusters", "cluster(s)")
    if report["derivations"]:
        yield "<h2>Derivations</h2>"
        for d in report["derivations"]:
            yield (
                f"<h3>{e(d['derived']['path'])} &larr; {e(d['source']['path'])}</h3>"
                f"<p><span class='label'>{e(d['relation'])}</span> score {d['score']:.2f}, coverage {d['coverage']:.0%}, "
                f"{'credited' if d['credited'] else 'uncredited'}; {e(d['reason'])}</p>"
            )
            for p in d["passages"]:
                derived, source = highlighted((p.get("derived_text", ""), p.get("source_text", "")))
                yield (
                    f"<p>{e(p['label'])} {p['similarity']:.2f}: derived {e(p['derived_span'])}, source {e(p['source_span'])}</p>"
                    f"<div class='pair'><div>{derived}</div><div>{source}</div></div>"
                )
        yield from more("derivations", "derivation(s)")
    if report["boilerplate"]:
        yield "<h2>Boilerplate library</h2><table><tr><th>text</th><th>documents</th><th>occurrences</th><th>origin</th></tr>"
        for b in report["boilerplate"]:
            yield f"<tr><td>{e(b['text'])}</td><td>{b['documents']}</td><td>{b['occurrences']}</td><td>{e(b['origin'])}</td></tr>"
        yield "</table>"
        yield from more("boilerplate", "boilerplate line(s)")
    if report["citations"]:
        yield "<h2>Credited sources</h2><table><tr><th>document</th><th>agency</th><th>text</th></tr>"
        for c in report["citations"]:
            yield f"<tr><td>{e(c['document']['path'])}</td><td>{e(c['agency'])}</td><td>{e(c['text'])}</td></tr>"
        yield "</table>"
        yield from more("citations", "credit(s)")
    yield "</body></html>\n"


def explain_text(data: dict, style=lambda s: s) -> str:
    out = [
        f"A #{data['a']['id']} {safe(data['a']['path'])}",
        f"B #{data['b']['id']} {safe(data['b']['path'])}",
        f"verdict: {data['verdict']}",
        "",
        table(["measure", "value"], [
            ["estimated Jaccard (MinHash)", f"{data['estimated_jaccard']:.4f}"],
            [f"exact Jaccard ({data['shingle_size']}-word shingles)", f"{data['jaccard']:.4f}"],
            ["containment of A in B", f"{data['containment_a_in_b']:.4f}"],
            ["containment of B in A", f"{data['containment_b_in_a']:.4f}"],
            ["shared shingles", str(data["shared_shingle_count"])],
            ["settings fingerprint", data["settings"]["fingerprint"]],
        ]),
        "",
    ]
    if data["passages"]:
        out.append("matched passages")
        for p in data["passages"]:
            out.append(f"  [{p['label']} {p['similarity']:.2f}] A {p['a_span']} | B {p['b_span']}")
            out.append("    A: " + highlight_shared(p["a_text"], p["b_text"], style))
            out.append("    B: " + highlight_shared(p["b_text"], p["a_text"], style))
        out.append("")
    if data["shared_shingles"]:
        out.append("shared shingles (first %d)" % len(data["shared_shingles"]))
        out.extend("  " + safe(s) for s in data["shared_shingles"])
        out.append("")
    for side in ("a", "b"):
        excluded = data["boilerplate_excluded"][side]
        if excluded:
            out.append(f"boilerplate excluded from {side.upper()}: " + "; ".join(safe(e["text"][:40]) for e in excluded))
    return "\n".join(out).rstrip() + "\n"


def explain_html(data: dict) -> str:
    """The explanation as one self-contained page; all document text escaped."""
    e = lambda value: html.escape(str(value), quote=True)  # noqa: E731
    rows = "".join(
        f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>"
        for k, v in (
            ("estimated Jaccard", data["estimated_jaccard"]), ("exact Jaccard", data["jaccard"]),
            ("containment of A in B", data["containment_a_in_b"]), ("containment of B in A", data["containment_b_in_a"]),
            ("shared shingles", data["shared_shingle_count"]), ("settings fingerprint", data["settings"]["fingerprint"]),
        )
    )
    pairs = "".join(
        f"<p>{e(p['label'])} {p['similarity']:.2f}: A {e(p['a_span'])}, B {e(p['b_span'])}</p>"
        f"<div class='pair'><div>{e(p['a_text'])}</div><div>{e(p['b_text'])}</div></div>"
        for p in data["passages"]
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>provenance explain</title>"
        f"<style>{_HTML_STYLE}</style></head><body><h1>Why A and B match</h1>"
        f"<p>A: {e(data['a']['path'])}<br>B: {e(data['b']['path'])}</p><p><b>{e(data['verdict'])}</b></p>"
        f"<table>{rows}</table><h2>Matched passages</h2>{pairs or '<p>none</p>'}</body></html>\n"
    )
