"""Turn paths into documents: discover files, decode bytes, extract text, split JSONL.

Everything here reports a bad input as an :class:`InputError` naming the file and the
reason, instead of raising past the caller: one file's failure never stops an ingest.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import InputError, path_text
from .text.dates import parse_datetime

SUPPORTED_SUFFIXES = {".txt": "text", ".md": "markdown", ".html": "html", ".htm": "html", ".jsonl": "jsonl"}
STDIN = "-"
#: Files above this size are refused with a message rather than read into memory.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RawDocument:
    """A decoded document ready for ingest; ``path`` is unique per input (JSONL: ``file#id``)."""

    path: str
    text: str
    format: str
    encoding: str
    size_bytes: int
    source: Optional[str] = None
    external_id: Optional[str] = None
    url: Optional[str] = None
    title: Optional[str] = None
    published_at: Optional[datetime] = None


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str


def discover(paths: list[str]) -> Iterator[Union[InputFile, InputError]]:
    """Input files in a stable order: named files as given, folders walked recursively and
    sorted, only supported suffixes taken from folders, symlinked folders not followed."""
    for given in paths:
        if given == STDIN:
            yield InputFile(STDIN, "text")
            continue
        if os.path.isdir(given):
            yield from _walk(given)
        elif os.path.lexists(given) and not os.path.exists(given):
            yield InputError(given, _broken_link(given))
        elif not os.path.exists(given):
            yield InputError(given, "no such file or folder; check the path")
        else:
            suffix = Path(given).suffix.lower()
            yield InputFile(given, SUPPORTED_SUFFIXES.get(suffix, "text"))


def _broken_link(path: str) -> str:
    """Why a symbolic link leads nowhere: a loop, or a missing target."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop; fix or remove the link"
    return "dangling symbolic link; fix or remove the link"


def _walk(folder: str) -> Iterator[Union[InputFile, InputError]]:
    errors: list[InputError] = []

    def onerror(error: OSError) -> None:
        errors.append(InputError(error.filename or folder, f"cannot read folder ({error.strerror})"))

    for root, dirs, files in os.walk(folder, onerror=onerror):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from errors
        errors.clear()
        for name in sorted(files):
            if name.startswith("."):
                continue
            full = os.path.join(root, name)
            suffix = Path(name).suffix.lower()
            if suffix not in SUPPORTED_SUFFIXES:
                continue
            if os.path.islink(full) and not os.path.exists(full):
                yield InputError(full, _broken_link(full))
                continue
            yield InputFile(full, SUPPORTED_SUFFIXES[suffix])
    yield from errors


def document_path(item: InputFile) -> str:
    """The path a document read from a file that is not JSONL is stored under: absolute, or
    '-' for standard input."""
    return item.path if item.path == STDIN else path_text(os.path.abspath(item.path))


def read(item: InputFile, *, source: Optional[str] = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[Union[RawDocument, InputError]]:
    """Documents of one input file (several for JSONL), or the errors that stop them.

    A UTF-8 JSONL file is read a line at a time, so it may be of any size (``max_bytes``
    then limits each line); any other file is read whole and limited to ``max_bytes``.
    """
    if item.format == "jsonl" and item.path != STDIN:
        try:
            streamable = _utf8_jsonl(item.path)
        except OSError:
            streamable = False  # reported below by _read_bytes, with the reason
        if streamable:
            yield from _stream_jsonl(item.path, source, max_bytes)
            return
    try:
        data = _read_bytes(item.path, max_bytes)
    except InputError as error:
        yield error
        return
    if item.format == "jsonl":
        yield from _read_jsonl(item.path, data, source)
        return
    try:
        text, encoding = decode(data, item.path)
    except InputError as error:
        yield error
        return
    title = published = None
    if item.format == "html":
        from .text import html as html_text  # lxml: imported only when there is HTML to read

        try:
            page = html_text.extract(data, encoding)
        except LookupError:
            yield InputError(item.path, f"the HTML parser does not know its encoding ({encoding}); convert the file to UTF-8")
            return
        text, title, published = page.text, page.title, page.published_at
    if not text.strip():
        yield InputError(item.path, "no text (empty or whitespace only); nothing to ingest")
        return
    yield RawDocument(
        path=document_path(item),
        text=text,
        format=item.format,
        encoding=encoding,
        size_bytes=len(data),
        source=source if source is not None else _default_source(item.path),
        title=title,
        published_at=published,
    )


def _default_source(path: str) -> Optional[str]:
    if path == STDIN:
        return "stdin"
    return path_text(Path(os.path.abspath(path)).parent.name) or None


def _read_bytes(path: str, max_bytes: int) -> bytes:
    if path == STDIN:
        data = sys.stdin.buffer.read(max_bytes + 1)
    else:
        try:
            size = os.path.getsize(path)
            if size > max_bytes:
                raise InputError(
                    path,
                    f"file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit; "
                    "split it or raise --max-file-size",
                )
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
        except IsADirectoryError:
            raise InputError(path, "is a folder where a file was expected") from None
        except PermissionError:
            raise InputError(path, "permission denied; check the file's permissions") from None
        except OSError as error:
            raise InputError(path, f"cannot read ({error.strerror or error})") from None
    if len(data) > max_bytes:
        raise InputError(path, f"over the {max_bytes / 1e6:.0f} MB limit; split it or raise --max-file-size")
    return data


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)


_BINARY_MAGIC = (
    b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"%PDF", b"PK\x03\x04", b"\x7fELF", b"\x1f\x8b", b"BZh", b"SQLite format 3",
)
_LATIN_SINGLE_BYTE = {
    "cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4",
    "iso8859_9", "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16", "mac_latin2", "mac_roman",
}


def decode(data: bytes, path: str) -> tuple[str, str]:
    """Text and the encoding it was read with; binary data is refused."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                raise InputError(path, f"starts with a {encoding} byte-order mark but does not decode as {encoding}") from None
    head = data[:65536]
    if head.count(b"\x00") > max(2, len(head) // 100) or head.startswith(_BINARY_MAGIC):
        raise InputError(path, "binary file (NUL bytes or a binary signature), not text; remove it from the input")
    try:
        # A stray NUL in real text (it happens in scraped corpora) becomes U+FFFD: one
        # character for one, so offsets still point into the original.
        return data.decode("utf-8").replace("\x00", "\ufffd"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise InputError(path, "cannot detect the text encoding; convert the file to UTF-8")
    text, encoding = str(best).replace("\x00", "\ufffd"), best.encoding
    if encoding in _LATIN_SINGLE_BYTE:
        # Detectors often tie between Latin code pages on short Western text and pick a
        # Baltic or Central European one; Windows-1252 is by far the commonest in news copy.
        try:
            text, encoding = data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            pass
    controls = sum(1 for ch in text[:65536] if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls > max(8, len(text[:65536]) // 100):
        raise InputError(path, "looks binary (many control characters), not text; remove it from the input")
    return text, encoding


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


#: Bytes read per step when checking or skipping through a JSONL file.
_READ_CHUNK = 1 << 20


def _utf8_jsonl(path: str) -> bool:
    """True when the file is UTF-8 (with or without a BOM) and not binary: it can then be
    read line by line. Checked in one pass of 1 MB reads, so memory stays flat."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as handle:
        head = handle.read(65536)
        if any(head.startswith(bom) for bom, encoding in _BOMS if encoding != "utf-8-sig"):
            return False
        if head.count(b"\x00") > max(2, len(head) // 100) or head.startswith(_BINARY_MAGIC):
            return False
        chunk = head
        try:
            while chunk:
                decoder.decode(chunk)
                chunk = handle.read(_READ_CHUNK)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _stream_jsonl(path: str, source: Optional[str], max_line_bytes: int) -> Iterator[Union[RawDocument, InputError]]:
    """The documents of a UTF-8 JSONL file, one line in memory at a time."""
    base = path_text(os.path.abspath(path))
    try:
        handle = open(path, "rb")
    except OSError as error:
        yield InputError(path, f"cannot read ({error.strerror or error})")
        return
    with handle:
        number = 0
        while True:
            raw = handle.readline(max_line_bytes + 1)
            if not raw:
                return
            number += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line unread
                    raw = handle.readline(_READ_CHUNK)
                yield InputError(f"{path}:{number}", f"line is over the {max_line_bytes / 1e6:.0f} MB limit; "
                                                     "split the document or raise --max-file-size")
                continue
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            line = raw.decode("utf-8").rstrip("\r\n").replace("\x00", "\ufffd")
            yield from _jsonl_line(path, base, number, line, "utf-8", source)


def _read_jsonl(path: str, data: bytes, source: Optional[str]) -> Iterator[Union[RawDocument, InputError]]:
    """The documents of a JSONL file read whole (standard input, or a legacy encoding)."""
    try:
        text, encoding = decode(data, path)
    except InputError as error:
        yield error
        return
    base = path if path == STDIN else path_text(os.path.abspath(path))
    for number, line in enumerate(text.split("\n"), start=1):
        yield from _jsonl_line(path, base, number, line.rstrip("\r"), encoding, source)


def _jsonl_line(
    path: str, base: str, number: int, line: str, encoding: str, source: Optional[str]
) -> Iterator[Union[RawDocument, InputError]]:
    """The document on one JSONL line, an error naming ``path:number``, or nothing (blank)."""
    if not line.strip():
        return
    where = f"{path}:{number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        yield InputError(where, f"malformed JSON ({error.msg} at column {error.colno}); fix the line")
        return
    if not isinstance(record, dict):
        yield InputError(where, "a JSONL line must be an object with a \"text\" field")
        return
    # A NUL escaped in the JSON ("\u0000") becomes U+FFFD like a raw one (PostgreSQL text
    # cannot hold NUL; offsets stay the same), and so does a lone surrogate ("\ud800"),
    # which no database can store as text.
    record = {key: _UNSTORABLE.sub("\ufffd", value) if isinstance(value, str) else value
              for key, value in record.items()}
    body = record.get("text")
    if not isinstance(body, str) or not body.strip():
        yield InputError(where, "missing or empty \"text\" field; every line needs one")
        return
    published = parse_datetime(record.get("published_at"))
    if record.get("published_at") not in (None, "") and published is None:
        yield InputError(where, f"published_at {record.get('published_at')!r} is not an ISO 8601 date")
        return
    try:
        metadata = {name: _metadata_text(record.get(name), name) for name in ("id", "url", "source", "title")}
    except ValueError as error:
        yield InputError(where, f"{error}; fix the line")
        return
    external_id = metadata["id"]
    key = external_id if external_id is not None else f"L{number}"
    yield RawDocument(
        path=f"{base}#{key}",
        text=body,
        format="jsonl",
        encoding=encoding,
        size_bytes=len(line.encode("utf-8")),
        source=metadata["source"] if metadata["source"] is not None else (source if source is not None else _default_source(path)),
        external_id=external_id,
        url=metadata["url"],
        title=metadata["title"],
        published_at=published,
    )


def _metadata_text(value: object, name: str) -> Optional[str]:
    """A JSONL metadata field as text: numbers and booleans as JSON writes them; a list or
    an object has no one textual form, so it is refused (ValueError) rather than guessed."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise ValueError(f"\"{name}\" must be a string or a number, not a JSON {'array' if isinstance(value, list) else 'object'}")
