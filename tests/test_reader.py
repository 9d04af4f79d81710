"""Unit tests of provenance.reader: discover, read and decode."""

from __future__ import annotations

import codecs
import io
import json
import os
import random
import sys
from datetime import datetime

import pytest

from conftest import BELTA_SEED, TASS_SEED
from provenance.errors import InputError
from provenance.reader import STDIN, InputFile, RawDocument, decode, discover, read

WESTERN = (
    "The café on the corner reopened on Monday, and its owner said the naïve façade of the old building "
    "had been restored.\n“We wanted to keep the character of the place,” she said — adding that the menu "
    "now costs about 12 € per person.\nCritics called the résumé of the renovation a déjà vu of the 1990s, "
    "but regulars were pleased with the crème brûlée.\n"
)


def read_all(path, fmt=None, **kwargs) -> list:
    path = str(path)
    if fmt is None:
        (item,) = list(discover([path]))
        assert isinstance(item, InputFile), item
    else:
        item = InputFile(path, fmt)
    return list(read(item, **kwargs))


def only_error(results) -> InputError:
    assert len(results) == 1 and isinstance(results[0], InputError), results
    return results[0]


def only_document(results) -> RawDocument:
    assert len(results) == 1 and isinstance(results[0], RawDocument), results
    return results[0]


# -- discover -------------------------------------------------------------------------
def test_discover_walks_folders_sorted_and_filters(tmp_path):
    root = tmp_path / "corpus"
    (root / "b_sub").mkdir(parents=True)
    (root / "a_sub").mkdir()
    (root / ".hidden").mkdir()
    files = {
        root / "z.txt": "text", root / "m.md": "markdown", root / "page.HTML": "html",
        root / "b_sub" / "feed.jsonl": "jsonl", root / "a_sub" / "old.htm": "html",
    }
    for path in files:
        path.write_text("x", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / ".secret.txt").write_text("x", encoding="utf-8")
    (root / ".hidden" / "inside.txt").write_text("x", encoding="utf-8")

    found = list(discover([str(root)]))
    assert all(isinstance(f, InputFile) for f in found), found
    assert {f.path: f.format for f in found} == {str(p): fmt for p, fmt in files.items()}
    expected = [root / "m.md", root / "page.HTML", root / "z.txt", root / "a_sub" / "old.htm",
                root / "b_sub" / "feed.jsonl"]
    assert [f.path for f in found] == [str(p) for p in expected]


def test_discover_named_files_kept_in_order(tmp_path):
    second = tmp_path / "b.txt"
    first = tmp_path / "a.dat"  # unsupported suffix, but named explicitly: read as text
    second.write_text("x", encoding="utf-8")
    first.write_text("x", encoding="utf-8")
    found = list(discover([str(second), str(first), STDIN]))
    assert [(f.path, f.format) for f in found] == [(str(second), "text"), (str(first), "text"), (STDIN, "text")]


def test_discover_reports_missing_and_dangling(tmp_path):
    missing = tmp_path / "missing.txt"
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "gone.txt")
    found = list(discover([str(missing), str(link)]))
    assert len(found) == 2 and all(isinstance(f, InputError) for f in found)
    assert found[0].path == str(missing) and "no such file" in found[0].reason
    assert found[1].path == str(link) and "link" in found[1].reason
    assert str(missing) in str(found[0])


def test_discover_reports_symlink_loops_in_folders(tmp_path):
    (tmp_path / "loop.txt").symlink_to(tmp_path / "loop.txt")
    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to(tmp_path)  # a folder loop: symlinked folders are not followed
    found = list(discover([str(tmp_path)]))
    reasons = {os.path.basename(f.path): f.reason for f in found}
    assert all(isinstance(f, InputError) for f in found) and set(reasons) == {"loop.txt", "gone.txt"}
    assert reasons["loop.txt"].startswith("symbolic link loop") and reasons["gone.txt"].startswith("dangling")


# -- read: plain text -----------------------------------------------------------------
def test_read_text_file(seeds_dir):
    doc = only_document(read_all(BELTA_SEED))
    raw = BELTA_SEED.read_bytes()
    assert doc.text == raw.decode("utf-8")
    assert doc.path == os.path.abspath(BELTA_SEED)
    assert doc.format == "text"
    assert doc.encoding == "utf-8"
    assert doc.size_bytes == len(raw)
    assert doc.source == BELTA_SEED.parent.name
    assert doc.published_at is None and doc.title is None


def test_read_source_override(seeds_dir):
    assert only_document(read_all(TASS_SEED, source="Wire")).source == "Wire"


def test_read_relative_path_is_made_absolute(tmp_path, monkeypatch, belta_text):
    (tmp_path / "a.txt").write_text(belta_text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    doc = only_document(read_all("a.txt"))
    assert doc.path == str(tmp_path / "a.txt")
    assert doc.source == tmp_path.name


@pytest.mark.parametrize("content", [b"", b"   \n\t\r\n  ", "\ufeff  \n".encode("utf-8")])
def test_read_empty_or_whitespace(tmp_path, content):
    path = tmp_path / "blank.txt"
    path.write_bytes(content)
    error = only_error(read_all(path))
    assert error.path == str(path)
    assert "empty" in error.reason or "whitespace" in error.reason


def test_read_binary(tmp_path):
    path = tmp_path / "picture.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    error = only_error(read_all(path))
    assert error.path == str(path) and "binary" in error.reason


def test_read_over_size_limit(tmp_path, belta_text):
    path = tmp_path / "big.txt"
    path.write_text(belta_text, encoding="utf-8")
    error = only_error(read_all(path, max_bytes=100))
    assert error.path == str(path) and "limit" in error.reason
    assert only_document(read_all(path, max_bytes=len(belta_text.encode()) + 1)).text == belta_text


def test_read_folder_as_file(tmp_path):
    error = only_error(list(read(InputFile(str(tmp_path), "text"))))
    assert "folder" in error.reason


def test_read_unreadable(tmp_path, belta_text):
    path = tmp_path / "locked.txt"
    path.write_text(belta_text, encoding="utf-8")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that read a mode-000 file (root)")
        error = only_error(read_all(path))
    finally:
        path.chmod(0o644)
    assert error.path == str(path) and "permission" in error.reason


def test_read_stdin(monkeypatch, belta_text):
    data = belta_text.encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    doc = only_document(list(read(InputFile(STDIN, "text"))))
    assert doc.path == STDIN and doc.text == belta_text and doc.source == "stdin" and doc.size_bytes == len(data)


# -- read: HTML -----------------------------------------------------------------------
def test_read_html(tmp_path):
    path = tmp_path / "page.html"
    path.write_bytes(
        """<html><head><meta charset="utf-8"><title>Café news</title>
        <meta property="article:published_time" content="2024-02-03T04:05:06Z">
        <style>p { display: none }</style><script>window.x = "SECRET";</script></head>
        <body><div>Lead line</div><p>One <i>two</i> three.</p><p>Four<br>five</p></body></html>""".encode("utf-8")
    )
    doc = only_document(read_all(path))
    assert doc.format == "html"
    assert doc.title == "Café news"
    assert doc.published_at == datetime(2024, 2, 3, 4, 5, 6)
    assert "SECRET" not in doc.text and "display" not in doc.text
    assert doc.text.splitlines() == ["Lead line", "One two three.", "Four", "five"]


def test_read_html_without_text(tmp_path):
    path = tmp_path / "empty.html"
    path.write_text("<html><head><script>var a = 1;</script></head><body>  </body></html>", encoding="utf-8")
    error = only_error(read_all(path))
    assert error.path == str(path)


# -- read: JSONL ----------------------------------------------------------------------
def test_read_jsonl(tmp_path, belta_text):
    path = tmp_path / "wire" / "feed.jsonl"
    path.parent.mkdir()
    lines = [
        json.dumps({"id": 7, "text": belta_text, "url": "https://example.org/7", "source": "BelTA",
                    "published_at": "2024-01-02T03:04:05-01:00", "title": "Seven"}),
        "   ",
        "[1, 2, 3]",
        "{broken",
        json.dumps({"id": "no-text"}),
        json.dumps({"text": "   "}),
        json.dumps({"text": "A record without id or date, long enough to keep."}),
        json.dumps({"text": "Bad date here.", "published_at": "last Tuesday"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = read_all(path)
    documents = [r for r in results if isinstance(r, RawDocument)]
    errors = [r for r in results if isinstance(r, InputError)]

    assert [d.path for d in documents] == [f"{path}#7", f"{path}#L7"]
    first, second = documents
    assert first.external_id == "7" and first.url == "https://example.org/7" and first.source == "BelTA"
    assert first.title == "Seven" and first.text == belta_text and first.format == "jsonl"
    assert first.published_at == datetime(2024, 1, 2, 4, 4, 5)
    assert second.external_id is None and second.source == "wire" and second.published_at is None

    assert [e.path for e in errors] == [f"{path}:{n}" for n in (3, 4, 5, 6, 8)]
    assert "JSON" in errors[1].reason
    assert "text" in errors[2].reason and "text" in errors[3].reason
    assert "published_at" in errors[4].reason
    for error in errors:
        assert "\n" not in str(error)


def test_read_jsonl_source_option_is_default_only(tmp_path):
    path = tmp_path / "feed.jsonl"
    path.write_text(json.dumps({"text": "one two three four", "source": "Own"}) + "\n"
                    + json.dumps({"text": "five six seven eight"}) + "\n", encoding="utf-8")
    docs = read_all(path, source="Given")
    assert [d.source for d in docs] == ["Own", "Given"]


# -- decode ---------------------------------------------------------------------------
def test_decode_utf8_and_bom():
    assert decode(WESTERN.encode("utf-8"), "f") == (WESTERN, "utf-8")
    text, encoding = decode(codecs.BOM_UTF8 + WESTERN.encode("utf-8"), "f")
    assert text == WESTERN and encoding == "utf-8-sig"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_decode_utf16_utf32_with_bom(codec):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(codec, b"")
    data = bom + WESTERN.encode(codec)
    text, encoding = decode(data, "f")
    assert text.lstrip("\ufeff") == WESTERN
    assert "\ufeff" not in text
    assert codecs.lookup(encoding).name.startswith(codec[:6])


def test_decode_windows_1252():
    text, encoding = decode(WESTERN.encode("cp1252"), "f")
    assert text == WESTERN, f"decoded as {encoding}: {text[:100]!r}"
    assert codecs.lookup(encoding).name == codecs.lookup("cp1252").name


def test_decode_refuses_nul_bytes():
    with pytest.raises(InputError) as caught:
        decode(b"text\x00with\x00many\x00nul\x00bytes\x00", "some/file.txt")
    assert caught.value.path == "some/file.txt" and "binary" in caught.value.reason


def test_decode_keeps_offsets_of_text_with_a_stray_nul():
    body = ("Real prose scraped from the web. " * 20).encode() + b"\x00" + b" The end."
    text, encoding = decode(body, "scraped.txt")
    assert encoding == "utf-8" and len(text) == len(body) and text[body.index(b"\x00")] == "\ufffd"


def test_decode_refuses_undecodable_bytes():
    rng = random.Random(42)
    data = bytes(rng.randrange(128, 256) for _ in range(4096))
    with pytest.raises(InputError) as caught:
        decode(data, "garbled.txt")
    assert caught.value.path == "garbled.txt"
    assert "encoding" in caught.value.reason


def test_decode_bad_bom():
    with pytest.raises(InputError) as caught:
        decode(codecs.BOM_UTF8 + b"\xff\xfe\xfa bad", "f.txt")
    assert "utf-8" in caught.value.reason


def test_discover_a_folder_of_100k_small_files(tmp_path):
    """A 100,000-file folder is walked once, in a stable order, without reading the files."""
    folder = tmp_path / "many"
    folder.mkdir()
    names = [f"{n:06d}.txt" for n in range(100_000)]
    for name in names:
        (folder / name).touch()
    (folder / "notes.bin").touch()  # unsupported suffixes are left out
    found = discover([str(folder)])
    first = next(found)
    rest = list(found)
    assert isinstance(first, InputFile) and os.path.basename(first.path) == names[0]
    assert [os.path.basename(f.path) for f in rest] == names[1:]


# -- read: JSONL of any size, a line at a time ----------------------------------------------
def test_jsonl_over_the_size_limit_is_read_line_by_line(tmp_path):
    """A UTF-8 JSONL file is streamed: the file size limit applies to each line, so a feed
    bigger than --max-file-size is read, and an overlong line is reported with its number
    while the lines after it are still read."""
    path = tmp_path / "feed.jsonl"
    lines = [json.dumps({"id": n, "text": f"Story number {n} about the harbour and its cranes."}) for n in range(40)]
    lines[5] = json.dumps({"id": 5, "text": "word " * 400})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert path.stat().st_size > 1000
    results = read_all(path, max_bytes=1000)
    errors = [r for r in results if isinstance(r, InputError)]
    assert [e.path for e in errors] == [f"{path}:6"]
    assert "over the" in errors[0].reason and "--max-file-size" in errors[0].reason
    assert [d.external_id for d in results if isinstance(d, RawDocument)] == [str(n) for n in range(40) if n != 5]


def test_jsonl_lines_split_on_newlines_only(tmp_path):
    """JSON text may hold U+2028, U+0085 or a form feed unescaped; only "\\n" ends a record
    (str.splitlines would cut such a record in two and report both halves as broken)."""
    path = tmp_path / "feed.jsonl"
    text = "First sentence\u2028second sentence\x85third\x0cfourth, in one record."
    path.write_bytes((json.dumps({"id": "a", "text": text}, ensure_ascii=False) + "\r\n"
                      + json.dumps({"id": "b", "text": "Another record."}) + "\n").encode("utf-8"))
    documents = read_all(path)
    assert [(d.external_id, d.text) for d in documents] == [("a", text), ("b", "Another record.")]


def test_jsonl_in_a_legacy_encoding_is_still_read_whole(tmp_path):
    path = tmp_path / "feed.jsonl"
    path.write_bytes((json.dumps({"id": 1, "text": WESTERN}, ensure_ascii=False) + "\n").encode("cp1252"))
    (document,) = read_all(path)
    assert document.text == WESTERN and document.encoding == "cp1252"
    error = only_error(read_all(path, max_bytes=100))
    assert "limit" in error.reason, "read whole, the file limit still applies"
