"""Passage-level detection on the seeds and on cases planted from them in the tests."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from conftest import made_up_words
from provenance.cli import cli
from provenance.db.models import Boilerplate, Passage
from provenance.db.session import make_engine, session_scope

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
SEED_000 = SEEDS / "000_21d20b42f286ae20.txt"
SEED_001 = SEEDS / "001_5e92cb80f85b5761.txt"

HEADER = "The Minsk Herald, independent daily news since 1991\nHome | Politics | Economy | Sport | Culture | Opinion\n"
FOOTER = (
    "\nCopyright The Minsk Herald. All rights reserved. Reproduction of our articles without the written "
    "permission of the editors is strictly prohibited.\nPrevious Article\nNext Article\n"
)
UNRELATED = [
    "The city council approved a new budget for public transport on Monday, adding twenty buses and extending "
    "the tram line to the northern districts by next spring.",
    "Farmers in the Gomel region reported a record potato harvest this autumn, crediting favourable weather and "
    "new irrigation systems that were installed across the region last year.",
    "A new exhibition of contemporary painting opened at the national art museum, featuring more than two "
    "hundred works by young artists from twelve countries.",
]


def run(db: Path, *args: str, ok: bool = True):
    result = CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def report(db: Path, *args: str) -> dict:
    return json.loads(run(db, "report", "--format", "json", *args).stdout)


def seed_lines(path: Path = SEED_000) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")


def derivation(data: dict, derived: Path, source: Path) -> dict | None:
    for item in data["derivations"]:
        if item["derived"]["path"] == str(derived.resolve()) and item["source"]["path"] == str(source.resolve()):
            return item
    return None


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "passages.db"


def test_seeds_boilerplate_credits_and_independence(db):
    run(db, "ingest", str(SEEDS))
    data = report(db)
    learned = {b["text"]: b for b in data["boilerplate"]}
    assert {"No time to read?", "Get a summary"} <= set(learned)
    assert learned["No time to read?"]["occurrences"] == 2
    credits = {(c["document"]["path"], c["agency"]) for c in data["citations"]}
    assert (str(SEED_000.resolve()), "BelTA") in credits
    assert (str(SEED_001.resolve()), "TASS") in credits
    assert not any(a == str(SEED_000.resolve()) and b == "TASS" for a, b in credits)
    assert data["derivations"] == [] and data["clusters"] == []
    # Tagged, never deleted: the passages are still stored.
    with session_scope(make_engine(f"sqlite:///{db}")) as session:
        tagged = session.scalars(select(Passage).where(Passage.boilerplate_id.is_not(None))).all()
        assert len(tagged) == 4


def test_copy_wrapped_in_another_sites_boilerplate_is_a_near_duplicate(db, tmp_path):
    copy = tmp_path / "other-site" / "copy.txt"
    copy.parent.mkdir()
    copy.write_text(HEADER + SEED_000.read_text(encoding="utf-8") + FOOTER, encoding="utf-8")
    run(db, "ingest", str(SEEDS))
    run(db, "ingest", str(copy))
    data = report(db)
    found = derivation(data, copy, SEED_000)
    assert found is not None and found["relation"] == "near-duplicate"
    assert found["credited"] is True  # the copy keeps "reported by BelTA"
    assert any(
        c["canonical"]["path"] == str(SEED_000.resolve()) and [m["path"] for m in c["members"]] == [str(copy.resolve())]
        for c in data["clusters"]
    )


def test_excerpt_inside_unrelated_text_is_syndicated_with_exact_spans(db, tmp_path):
    lines = seed_lines()
    excerpt = "\n".join(lines[8:12])
    text = UNRELATED[0] + "\n" + excerpt + "\n" + UNRELATED[1] + "\n"
    planted = tmp_path / "planted" / "excerpt.txt"
    planted.parent.mkdir()
    planted.write_text(text, encoding="utf-8")
    run(db, "ingest", str(SEED_000))
    run(db, "ingest", str(planted))
    found = derivation(report(db), planted, SEED_000)
    assert found is not None and found["relation"] == "syndicated"
    assert found["credited"] is False
    seed_text = SEED_000.read_text(encoding="utf-8")
    for p in found["passages"]:
        (d_start, d_end), (s_start, s_end) = p["derived_span"], p["source_span"]
        assert text[d_start:d_end] == p["derived_text"]
        assert seed_text[s_start:s_end] == p["source_text"]
    # Together the matched passages cover exactly the planted excerpt, in both texts.
    derived_spans = sorted(p["derived_span"] for p in found["passages"])
    source_spans = sorted(p["source_span"] for p in found["passages"])
    assert derived_spans[0][0] == text.index(excerpt) and derived_spans[-1][1] == text.index(excerpt) + len(excerpt)
    assert source_spans[0][0] == seed_text.index(excerpt) and source_spans[-1][1] == seed_text.index(excerpt) + len(excerpt)
    for spans, body in ((derived_spans, text), (source_spans, seed_text)):
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert body[end:start].strip() == "", "a gap inside the excerpt was not matched"
    for p in found["passages"]:
        assert p["label"] == "verbatim" and p["derived_text"] == p["source_text"]
    assert 0.5 < found["coverage"] < 0.9


def test_reworded_sentences_are_rewritten(db, tmp_path):
    reworded = (
        "Alexander Lukashenko, the president of Belarus, has made an important move to deepen military relations "
        "with Russia by endorsing a proposed change to the military technical cooperation agreement of 2009.\n"
        "The country's foreign ministry has earlier stressed how strategically important it is to host these drills, "
        "notably the stationing of the Russian-developed 'Oreshnik' hypersonic missile system, a long-range weapon able to carry nuclear warheads.\n"
        + UNRELATED[2] + "\n"
    )
    planted = tmp_path / "planted" / "rewritten.txt"
    planted.parent.mkdir()
    planted.write_text(reworded, encoding="utf-8")
    run(db, "ingest", str(SEEDS))
    run(db, "ingest", str(planted))
    data = report(db)
    found = derivation(data, planted, SEED_000)
    assert found is not None and found["relation"] == "rewritten"
    assert {p["label"] for p in found["passages"]} == {"rewritten"}
    assert all(p["measures"]["jaccard"] < 0.3 for p in found["passages"])
    assert derivation(data, planted, SEED_001) is None


def test_shared_header_and_footer_are_boilerplate_not_duplicates(db, tmp_path):
    site = tmp_path / "minsk-herald"
    site.mkdir()
    paths = []
    for number, body in enumerate(UNRELATED):
        path = site / f"article-{number}.txt"
        path.write_text(HEADER + body + FOOTER, encoding="utf-8")
        paths.append(path)
    # Two articles: the shared chrome is not yet known to be chrome.
    run(db, "ingest", str(paths[0]))
    run(db, "ingest", str(paths[1]))
    # The third makes it recur in three documents: earlier results are corrected.
    run(db, "ingest", str(paths[2]))
    data = report(db)
    learned = {b["text"] for b in data["boilerplate"]}
    assert {"Previous Article", "Next Article", "Home | Politics | Economy | Sport | Culture | Opinion"} <= learned
    assert all(b["documents"] >= 3 for b in data["boilerplate"])
    assert data["clusters"] == []
    assert data["derivations"] == []


def test_late_boilerplate_corrects_earlier_derivation(db, tmp_path):
    site = tmp_path / "minsk-herald"
    site.mkdir()
    long_header = (
        "The Minsk Herald brings independent reporting on politics, business, culture and sport every day.\n"
    )
    paths = []
    for number, body in enumerate(UNRELATED):
        path = site / f"article-{number}.txt"
        path.write_text(long_header + body + FOOTER, encoding="utf-8")
        paths.append(path)
    run(db, "ingest", str(paths[0]), str(paths[1]))
    before = report(db)
    assert derivation(before, paths[1], paths[0]) is not None, "two pages sharing a long header look related at first"
    run(db, "ingest", str(paths[2]))
    after = report(db)
    assert after["derivations"] == []
    assert any(b["text"].startswith("The Minsk Herald brings") for b in after["boilerplate"])


def test_boilerplate_add_remove_and_content_override(db, tmp_path):
    run(db, "ingest", str(SEEDS))
    run(db, "boilerplate", "add", "Previous Article")
    listed = json.loads(run(db, "boilerplate", "list", "--format", "json").stdout)
    assert {"text": "Previous Article", "status": "boilerplate", "origin": "user"}.items() <= next(
        item for item in listed if item["text"] == "Previous Article"
    ).items()
    engine = make_engine(f"sqlite:///{db}")
    with session_scope(engine) as session:
        entry = session.scalar(select(Boilerplate).where(Boilerplate.text == "Previous Article"))
        assert session.scalars(select(Passage).where(Passage.boilerplate_id == entry.id)).all()
    run(db, "boilerplate", "add", "--content", "No time to read?")
    with session_scope(engine) as session:
        entry = session.scalar(select(Boilerplate).where(Boilerplate.text == "No time to read?"))
        assert entry.status == "content"
        assert not session.scalars(select(Passage).where(Passage.boilerplate_id == entry.id)).all()
    run(db, "boilerplate", "remove", "Previous Article")
    listed = json.loads(run(db, "boilerplate", "list", "--format", "json").stdout)
    assert "Previous Article" not in {item["text"] for item in listed}
    missing = run(db, "boilerplate", "remove", "never seen", ok=False)
    assert missing.exit_code != 0 and "not in the boilerplate library" in missing.output


def test_direction_follows_published_at(db, tmp_path):
    text = SEED_000.read_text(encoding="utf-8")
    lines = seed_lines()
    feed = tmp_path / "feed.jsonl"
    feed.write_text(
        json.dumps({"id": "late", "text": UNRELATED[0] + "\n" + "\n".join(lines[:6]), "published_at": "2025-09-20T10:00:00Z"}) + "\n"
        + json.dumps({"id": "early", "text": text, "published_at": "2025-09-18T08:00:00+02:00"}) + "\n",
        encoding="utf-8",
    )
    run(db, "ingest", str(feed))
    data = report(db)
    [found] = data["derivations"]
    assert found["derived"]["path"].endswith("#late") and found["source"]["path"].endswith("#early")
    assert "published" in found["reason"]
    # Passage spans are oriented with the direction: the derived span lies in the derived text.
    late_text = UNRELATED[0] + "\n" + "\n".join(lines[:6])
    for p in found["passages"]:
        start, end = p["derived_span"]
        assert late_text[start:end] == p["derived_text"]


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def test_html_report_escapes_document_text(db, tmp_path):
    hostile = tmp_path / "hostile" / "copy.txt"
    hostile.parent.mkdir()
    seed = SEED_000.read_text(encoding="utf-8")
    hostile.write_text(
        seed.replace("significant step", "significant <script>alert(1)</script><img src=x onerror=alert(2)> step", 1),
        encoding="utf-8",
    )
    run(db, "ingest", str(SEED_000), str(hostile))
    out = tmp_path / "report.html"
    run(db, "report", "--format", "html", "-o", str(out))
    page = out.read_text(encoding="utf-8")
    parser = _Elements()
    parser.feed(page)
    assert "script" not in parser.tags and "img" not in parser.tags
    assert "&lt;script&gt;" in page
    assert "mark" in parser.tags  # matched words are highlighted


def test_report_for_one_document_and_inspect_passages(db, tmp_path):
    planted = tmp_path / "planted" / "excerpt.txt"
    planted.parent.mkdir()
    excerpt = "\n".join(seed_lines()[8:12])
    planted.write_text(UNRELATED[0] + "\n" + excerpt + "\n", encoding="utf-8")
    run(db, "ingest", str(SEEDS), str(planted))
    data = report(db, "--document", str(planted))
    assert [d["id"] for d in data["documents"]] and len(data["documents"]) == 1
    assert all(str(planted.resolve()) in (d["derived"]["path"], d["source"]["path"]) for d in data["derivations"])
    detail = json.loads(run(db, "inspect", "document", str(planted), "--format", "json").stdout)
    start = len(UNRELATED[0]) + 1
    for passage in detail["passages"]:
        labels = {m["label"] for m in passage["matches"]}
        if passage["span"][0] >= start:
            assert labels == {"verbatim"}, passage
        else:
            assert labels == set(), passage
    seed = json.loads(run(db, "inspect", "document", str(SEED_001), "--format", "json").stdout)
    assert [p["tag"] for p in seed["passages"]].count("boilerplate") == 4
    table = run(db, "report").stdout
    opening = " ".join(excerpt.split()[:6])
    assert "syndicated" in table and re.search(r"derived: " + re.escape(opening), table)
    evidence = [line for line in table.splitlines() if line.lstrip().startswith(("derived:", "source:"))]
    assert evidence and all(len(line) < 400 for line in evidence)  # long evidence is clipped to one line


def test_estimated_overlap_is_shared_words_over_the_smaller_vocabulary():
    from provenance.derive import estimated_overlap

    # A = 10 words, B = 20 words, 5 shared: Jaccard 5/25, overlap 5/10.
    assert estimated_overlap(np.array([0.2]), 10, np.array([20]))[0] == pytest.approx(0.5)
    assert estimated_overlap(np.array([1.0]), 12, np.array([12]))[0] == pytest.approx(1.0)


@pytest.mark.parametrize("pairs_per_step", [None, 1])
def test_candidates_sharing_only_a_few_words_are_not_scored(tmp_path, monkeypatch, pairs_per_step):
    """A stored passage that shares 9 of its 30 content words with a new one (Jaccard 0.18,
    above the estimate floor; overlap 0.3, far from any grade) is dropped before the costly
    exact scoring; a reworded passage sharing 26 of 30 is kept. Candidates are handed to
    likely_sources directly, so the test does not depend on which LSH bands collide; with
    ``pairs_per_step`` 1 each pair is estimated in an array operation of its own."""
    from provenance import derive, manifest

    if pairs_per_step:
        monkeypatch.setattr(derive, "_PAIRS_PER_STEP", pairs_per_step)
    from provenance.prepare import prepare
    from provenance.reader import RawDocument

    def passage(words):
        return " ".join(words).capitalize() + "."

    # Letters first: words are stemmed to their first six characters.
    stored_words = [f"{chr(97 + i // 26)}{chr(97 + i % 26)}stored" for i in range(30)]
    chance = stored_words[:9] + [f"{chr(97 + i // 26)}{chr(97 + i % 26)}fresh" for i in range(21)]
    reworded = stored_words[:26] + ["other", "different", "novel", "changed"][:4]
    db = tmp_path / "filter.db"
    source = tmp_path / "source.txt"
    source.write_text(passage(stored_words) + "\n", encoding="utf-8")
    run(db, "ingest", str(source), "--quiet")
    engine = make_engine(f"sqlite:///{db}")
    with session_scope(engine) as session:
        settings = manifest.load(session)
        stored = session.scalar(select(Passage.id).where(Passage.signature.is_not(None)))
        mine = {}
        for seq, words in enumerate([chance, reworded]):
            text = passage(words)
            prepared = prepare(RawDocument(path=f"new{seq}", text=text, format="text", encoding="utf-8",
                                           size_bytes=len(text)), settings)
            mine[seq] = prepared.passages[0]
        likely = derive.likely_sources(
            session, {seq: {stored} for seq in mine}, {seq: p.signature for seq, p in mine.items()},
            {seq: p.words for seq, p in mine.items()}, {},
        )
    engine.dispose()
    assert [seq for seq, _, _ in likely] == [1], "only the rewording is scored"


def test_a_candidate_is_judged_on_its_full_signature_not_its_low_bytes(tmp_path):
    """Candidates are first tested on the low byte of each signature value (an upper bound
    of the estimate), then on the full signature: a passage whose every value differs from
    the stored one only above the low byte passes the first test and is still dropped,
    and those that pass carry the estimate of the full signatures."""
    from provenance import derive, manifest
    from provenance.prepare import passage_words
    from provenance.sketch import from_blob

    text = " ".join(f"{chr(97 + i // 26)}{chr(97 + i % 26)}stored" for i in range(30)).capitalize() + "."
    db = tmp_path / "prefilter.db"
    source = tmp_path / "source.txt"
    source.write_text(text + "\n", encoding="utf-8")
    run(db, "ingest", str(source), "--quiet")
    engine = make_engine(f"sqlite:///{db}")
    with session_scope(engine) as session:
        settings = manifest.load(session)
        stored, blob = session.execute(select(Passage.id, Passage.signature).where(Passage.signature.is_not(None))).one()
        words = passage_words(text, settings)
        same = from_blob(blob)
        high_bits_differ = same ^ np.uint32(0x100)
        half = same.copy()
        half[::2] ^= np.uint32(0x100)
        likely = derive.likely_sources(
            session, {0: {stored}, 1: {stored}, 2: {stored}}, {0: high_bits_differ, 1: same, 2: half},
            {0: words, 1: words, 2: words}, {},
        )
    engine.dispose()
    assert [(mine, row.id, estimate) for mine, row, estimate in likely] == [(1, stored, 1.0), (2, stored, 0.5)]


def test_cached_sketches_are_read_once_and_checked_when_used(tmp_path, monkeypatch):
    """An ingest run keeps stored passages' compact sketches (derive.SketchCache): the second
    time a passage is a candidate its sketch is not read again, but a passage whose document has
    since been superseded is still not offered as a source; a commit by another
    connection empties the cache (SQLite gives a deleted passage's id to the next one)."""
    from sqlalchemy import update

    from provenance import derive, manifest
    from provenance.db.models import Document
    from provenance.prepare import prepare
    from provenance.reader import RawDocument

    text = " ".join(f"{chr(97 + i // 26)}{chr(97 + i % 26)}stored" for i in range(30)).capitalize() + "."
    db = tmp_path / "cache.db"
    source = tmp_path / "source.txt"
    source.write_text(text + "\n", encoding="utf-8")
    run(db, "ingest", str(source), "--quiet")
    sketch_reads = []
    real_select_in = derive.select_in

    def counting_select_in(session, sql, values):
        if sql == derive.PREFILTERS:
            sketch_reads.append(list(values))
        return real_select_in(session, sql, values)

    monkeypatch.setattr(derive, "select_in", counting_select_in)
    engine = make_engine(f"sqlite:///{db}")
    cache = derive.SketchCache()
    try:
        with session_scope(engine) as session:
            cache.begin(session)
            settings = manifest.load(session)
            stored = session.scalar(select(Passage.id).where(Passage.signature.is_not(None)))
            mine = prepare(RawDocument(path="copy", text=text, format="text", encoding="utf-8", size_bytes=len(text)),
                           settings).passages[0]

            def sources():
                likely = derive.likely_sources(session, {0: {stored}}, {0: mine.signature}, {0: mine.words}, {},
                                               cache=cache)
                return [row.id for _, row, _ in likely]

            assert sources() == [stored]
            assert sources() == [stored]
            assert sketch_reads == [[stored], []], "the second lookup reads no sketch"
            session.execute(update(Document).values(is_latest=False))
            assert sources() == [], "a superseded document's passage is not a source, cached or not"
        with session_scope(engine) as session:
            cache.begin(session)
            assert len(cache) == 1, "this connection's own commit keeps the cache"
        other = make_engine(f"sqlite:///{db}")
        with session_scope(other) as session:
            session.execute(update(Document).values(is_latest=True))
        other.dispose()
        with session_scope(engine) as session:
            cache.begin(session)
            assert len(cache) == 0, "another connection's commit empties it"
    finally:
        engine.dispose()


def test_lookups_sharing_a_sketch_cache_answer_as_alone_and_read_each_sketch_once(db, tmp_path, monkeypatch):
    """match_text(sketches=...) keeps stored passages' sketches across lookups: the same
    answers as a lookup on its own, no sketch read twice on one connection, and none kept
    for a lookup on another connection (SQLite's data_version counts per connection)."""
    from provenance import derive
    from provenance.lookup import match_text

    run(db, "ingest", str(SEED_000), str(SEED_001), "--quiet")
    lines = seed_lines(SEED_001)
    texts = [SEED_001.read_text(encoding="utf-8"), "\n".join(lines[len(lines) // 3 :])]
    sketch_reads = []
    real_select_in = derive.select_in

    def counting_select_in(session, sql, values):
        if sql == derive.PREFILTERS:
            sketch_reads.extend(values)
        return real_select_in(session, sql, values)

    monkeypatch.setattr(derive, "select_in", counting_select_in)
    engine, other = make_engine(f"sqlite:///{db}"), make_engine(f"sqlite:///{db}")
    shared = derive.SketchCache()
    try:
        with session_scope(engine) as session:
            alone = [match_text(session, text) for text in texts]
            assert all(answer["passages"] for answer in alone), "each text reuses passages of the seeds"
            del sketch_reads[:]
            assert [match_text(session, text, sketches=shared) for text in texts] == alone
            assert sketch_reads and len(sketch_reads) == len(set(sketch_reads)), "each sketch read once"
            del sketch_reads[:]
            assert [match_text(session, text, sketches=shared) for text in texts] == alone
            assert sketch_reads == [], "all at hand the second time"
        with session_scope(other) as session:
            assert [match_text(session, text, sketches=shared) for text in texts] == alone
            assert sketch_reads, "another connection's lookups read the sketches again"
    finally:
        engine.dispose()
        other.dispose()


def _stored_sketches(session) -> dict:
    """Every stored passage's compact sketch, read through the ORM: {id: (word count, low bytes)}."""
    from provenance import derive

    return {
        sketch.passage_id: (sketch.content_word_count, sketch.low_bytes)
        for sketch in session.scalars(select(derive.PassagePrefilter))
    }


def _sketches_by_id(found) -> dict:
    """What a :class:`provenance.derive.SketchCache` returned, as :func:`_stored_sketches` gives it."""
    return {
        int(pid): (int(count), low.tobytes()) for pid, count, low in zip(found.ids, found.word_counts, found.low_bytes)
    }


@pytest.mark.parametrize("capacity", [1, 3])
def test_sketches_sharing_a_cache_slot_are_each_returned_with_their_own_values(db, capacity):
    """The sketch cache has one slot per ``id % capacity``: passages read in the same call
    can share a slot, and each must still come back with its own word count and low bytes,
    at once and when asked again."""
    from provenance import derive

    run(db, "ingest", str(SEED_000), str(SEED_001), "--quiet")
    engine = make_engine(f"sqlite:///{db}")
    try:
        with session_scope(engine) as session:
            truth = _stored_sketches(session)
            assert len(truth) > 2 * capacity, "the seeds give more signed passages than slots"
            unsigned = max(session.scalars(select(Passage.id))) + 1  # no sketch: left out
            ids = np.array(sorted(truth) + [unsigned])
            cache = derive.SketchCache(capacity=capacity)
            for attempt in range(2):
                found = cache.sketches(session, ids)
                assert found.ids.tolist() == sorted(truth)
                assert _sketches_by_id(found) == truth, f"attempt {attempt + 1}"
            assert cache.asked == 2 * len(ids)
            assert 0 < cache.at_hand <= capacity, "the second call found what the slots kept"
    finally:
        engine.dispose()


def test_a_growing_sketch_cache_keeps_what_it_held_and_stops_at_its_capacity(db, monkeypatch):
    """The cache's arrays start small and grow as sketches are read: what they held before
    growing is still at hand after, with its own values, and they never pass ``capacity``."""
    from provenance import derive

    run(db, "ingest", str(SEED_000), str(SEED_001), "--quiet")
    monkeypatch.setattr(derive, "FIRST_SLOTS", 2)
    engine = make_engine(f"sqlite:///{db}")
    try:
        with session_scope(engine) as session:
            truth = _stored_sketches(session)
            ids = sorted(truth)
            assert len(ids) > 8, "the seeds give enough signed passages to grow past two slots"
            capacity = 4 * len(ids)
            cache = derive.SketchCache(capacity=capacity)
            assert cache.slots == 2
            for one in ids:  # one at a time: the arrays grow several times
                cache.sketches(session, np.array([one]))
            assert len(ids) < cache.slots <= capacity
            assert len(cache) == len(ids), "every sketch read is still held after growing"
            found = cache.sketches(session, np.array(ids))
            assert cache.at_hand == len(ids), "the second pass reads nothing"
            assert _sketches_by_id(found) == truth
            small = derive.SketchCache(capacity=3)
            small.sketches(session, np.array(ids))
            assert small.slots == 3, "never more slots than its capacity"
    finally:
        engine.dispose()


def test_html_evidence_marks_each_word_the_other_side_shares():
    """Side by side, a word is marked where the other text has it too (whatever its case),
    only there, and its text stays escaped; stray marker bytes in a text mark nothing."""
    from provenance.render import report_html

    passage = {"label": "rewritten", "similarity": 0.5, "derived_span": [0, 1], "source_span": [0, 1],
               "derived_text": "The Minister said <b>yes</b> to\x00 ДА, the minister",
               "source_text": "the MINISTER denied it: да\x01"}
    derivation = {"derived": {"id": 2, "path": "b.txt"}, "source": {"id": 1, "path": "a.txt"}, "relation": "rewritten",
                  "score": 0.5, "coverage": 0.5, "credited": False, "reason": "r", "passages": [passage]}
    page = report_html({"summary": {"message": "m"}, "clusters": [], "derivations": [derivation],
                        "boilerplate": [], "citations": []})
    derived, source = re.findall(r"<div class='pair'><div>(.*?)</div><div>(.*?)</div></div>", page)[0]
    assert derived == ("<mark>The</mark> <mark>Minister</mark> said &lt;b&gt;yes&lt;/b&gt; to <mark>ДА</mark>, "
                       "<mark>the</mark> <mark>minister</mark>")
    assert source == "<mark>the</mark> <mark>MINISTER</mark> denied it: <mark>да</mark>"


def _long_seed_lines(count: int) -> list[str]:
    """Lines of seed 000 too long ever to be learned as boilerplate, however often copied."""
    lines = [line for line in seed_lines() if len(line.split()) > 20]
    assert len(lines) >= count, "seed 000 has too few long lines"
    return lines[:count]


def _sources_of(data: dict, derived: Path) -> set[str]:
    return {Path(item["source"]["path"]).parent.name for item in data["derivations"]
            if item["derived"]["path"] == str(derived.resolve())}


def test_text_copied_by_many_sites_names_its_original_not_every_copy(db, tmp_path):
    """Three sites syndicate the same excerpt of the wire story; a fourth copies it too.
    Its lineage names the wire story, which every copy already points to."""
    excerpt = "\n".join(_long_seed_lines(3))
    paths = []
    for number, surrounding in enumerate(UNRELATED + ["A fourth site's own opening sentence about the weekend "
                                                      "football results and the weather in the capital."]):
        path = tmp_path / f"site{number}" / "story.txt"
        path.parent.mkdir()
        path.write_text(surrounding + "\n" + excerpt + "\n", encoding="utf-8")
        paths.append(path)
    run(db, "ingest", str(SEED_000))
    for path in paths:
        run(db, "ingest", str(path))
    data = report(db)
    for path in paths:
        assert _sources_of(data, path) == {"seeds"}, (path, data["derivations"])
        found = derivation(data, path, SEED_000)
        assert found["relation"] == "syndicated"
        assert "".join(p["derived_text"] for p in found["passages"]).replace("\n", "") == excerpt.replace("\n", "")


def test_text_copied_from_a_copy_that_changed_it_names_that_copy(db, tmp_path):
    """A site reworded a few words of the wire story's excerpt; a later text takes that
    site's version word for word. Its passages match the site verbatim and the wire story
    only as a syndication with edits: the lineage names the site, whose own derivation
    names the wire story."""
    lines = _long_seed_lines(3)
    edited = [line.replace(" the ", " this ", 1) for line in lines]
    assert edited != lines
    site = tmp_path / "site" / "story.txt"
    site.parent.mkdir()
    site.write_text(UNRELATED[0] + "\n" + "\n".join(edited) + "\n", encoding="utf-8")
    later = tmp_path / "later" / "story.txt"
    later.parent.mkdir()
    later.write_text(UNRELATED[1] + "\n" + "\n".join(edited) + "\n", encoding="utf-8")
    run(db, "ingest", str(SEED_000))
    run(db, "ingest", str(site))
    run(db, "ingest", str(later))
    data = report(db)
    assert _sources_of(data, site) == {"seeds"}
    assert _sources_of(data, later) == {"site"}, data["derivations"]
    assert derivation(data, later, site)["relation"] == "syndicated"


def _templated_story(rng, number: int) -> str:
    """An automated earnings report: every one shares its sentences' words but for the
    company, the city and the figures."""
    company = rng.choice(["Northern Energy", "Global Holdings", "United Motors", "Pacific Foods", "Royal Mining"])
    city = rng.choice(["Minsk", "Berlin", "Warsaw", "Riga", "Vilnius", "Prague"])

    def n() -> int:
        return rng.randint(10, 999)

    return "\n\n".join([
        f"{company} reported quarterly revenue of {n()} million dollars, up {n()} percent from a year earlier, "
        f"the company said in a statement issued in {city} on Monday.",
        f"Net income came in at {n()} million dollars, or {n()} cents per share, while analysts polled by the "
        f"agency had expected earnings of {n()} cents per share on revenue of {n()} million dollars.",
        f"Shares of {company} rose {n()} percent to {n()} dollars in early trading in {city}, and the company "
        f"said it expects full-year sales between {n()} and {n()} million dollars.",
        f"Story {number} of the automated earnings service.",
    ]) + "\n"


@pytest.mark.parametrize("newest_first", [False, True], ids=["oldest-first", "newest-first"])
def test_a_story_type_every_document_shares_gives_derivations_in_proportion_to_documents(db, tmp_path, newest_first):
    """Automated reports share every sentence but for names and figures, so each matches
    every earlier one. Each passage names at most two sources (its earliest and closest),
    so the derivations grow with the documents, not with their pairs; also when the feed
    comes newest first, each report published before every one stored (a crawler paging
    back through an archive): the sources it supersedes are retired, and every report but
    the first published keeps a source."""
    rng = random.Random(5)
    feed = tmp_path / "earnings.jsonl"
    count = 40
    records = [{"id": f"r{k}", "text": _templated_story(rng, k)} for k in range(count)]
    if newest_first:
        for k, record in enumerate(records):
            record["published_at"] = f"2025-10-{31 - k // 24:02d}T{23 - k % 24:02d}:00:00Z"
    feed.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    summary = json.loads(run(db, "ingest", str(feed), "--format", "json").stdout)
    data = report(db)
    assert data["derivations"], "the shared sentences are reuse all the same"
    assert summary["derivations"] - summary["derivations_retired"] == len(data["derivations"])
    assert (summary["derivations_retired"] > 0) == newest_first
    for item in data["derivations"]:
        assert item["relation"] == "syndicated"
        if newest_first:
            assert "published" in item["reason"]
    per_document = {}
    for item in data["derivations"]:
        per_document.setdefault(item["derived"]["path"], set()).add(item["source"]["path"])
    matched_passages = {}
    for item in data["derivations"]:
        matched_passages.setdefault(item["derived"]["path"], set()).update(
            tuple(p["derived_span"]) for p in item["passages"])
    for derived, sources in per_document.items():
        assert len(sources) <= 2 * len(matched_passages[derived]), (derived, len(sources))
    assert len(data["derivations"]) <= 2 * 3 * count  # three shared sentences a document
    first_published = f"{feed}#r{count - 1 if newest_first else 0}"
    assert set(per_document) == {f"{feed}#{record['id']}" for record in records} - {first_published}


def test_reports_of_a_story_type_crawled_newest_first_each_keep_a_source_past_the_limits(db, tmp_path, monkeypatch):
    """Reports of one story type crawled newest first, more of them than a passage's
    candidates scored: each arrival is published before every report stored, and estimates
    (names and figures), not dates, make its cut. The report published next after it is
    kept all the same, so no report but the first published is left without a source."""
    from provenance import derive

    monkeypatch.setattr(derive, "SCORED_PER_PASSAGE", 3)
    monkeypatch.setattr(derive, "READ_PER_PASSAGE", 8)
    rng = random.Random(3)
    count = 24
    records = [{"id": f"r{k:02d}", "text": _templated_story(rng, k),
                "published_at": f"2025-10-{30 - k // 24:02d}T{23 - k % 24:02d}:00:00Z"} for k in range(count)]
    feed = tmp_path / "earnings.jsonl"
    feed.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    run(db, "ingest", str(feed))
    published = {record["id"]: record["published_at"] for record in records}
    sources: dict[str, set[str]] = {}
    for source, derived in _lineage(db):
        assert published[source] < published[derived], (source, derived)
        sources.setdefault(derived, set()).add(source)
    assert sorted(sources) == sorted(published.keys() - {f"r{count - 1:02d}"}), "every report but the first published"


def test_a_passage_is_scored_against_its_likeliest_candidates_only(monkeypatch):
    """Past the limit, a passage keeps the candidates of the highest estimates, then the
    earliest stored, in the order they came; other passages keep all of theirs."""
    from provenance import derive

    def candidate(passage_id):
        return derive.CandidatePassage(passage_id, passage_id, 0, 10, None, 8, f"doc{passage_id}", None)

    monkeypatch.setattr(derive, "SCORED_PER_PASSAGE", 3)
    likely = [(1, candidate(c), e) for c, e in [(10, 0.5), (11, 0.9), (12, 0.5), (13, 0.7), (14, 0.5)]]
    likely += [(2, candidate(c), e) for c, e in [(20, 0.2), (21, 0.3)]]
    kept = derive._likeliest(likely)
    assert [(mine, row.id) for mine, row, _ in kept] == [(1, 10), (1, 11), (1, 13), (2, 20), (2, 21)]
    monkeypatch.setattr(derive, "SCORED_PER_PASSAGE", 5)
    assert derive._likeliest(likely) == likely


def test_a_dated_new_passage_keeps_the_candidate_published_next_after_it(monkeypatch):
    """Past the limits, both cuts keep the candidate published next after a dated new
    document in place of the last kept; not when it is undated, when a candidate is, or when
    none is published after it (dates as SQLite's driver returns them)."""
    from provenance import derive

    monkeypatch.setattr(derive, "SCORED_PER_PASSAGE", 2)
    monkeypatch.setattr(derive, "READ_PER_PASSAGE", 2)
    estimates = {10: 0.9, 11: 0.8, 12: 0.5, 13: 0.4}

    def dated(dates):
        return {passage_id: f"2025-01-{day:02d} 00:00:00.000000" if day else None for passage_id, day in dates.items()}

    def kept_by_both(dates, after):
        likely = [(1, derive.CandidatePassage(i, i, 0, 10, None, 8, f"doc{i}", dates[i]), estimate)
                  for i, estimate in estimates.items()]
        scored = [row.id for _, row, _ in derive._likeliest(likely, after)]
        ids = np.array(list(estimates))
        asked = []

        def published(wanted):
            asked.append(sorted(wanted))
            return {i: dates[i] for i in wanted}

        read = derive._highest_bounds(np.arange(4), np.zeros(4, dtype=np.int64), np.array(list(estimates.values())),
                                      ids, published=published, after=after)
        return scored, ids[read].tolist(), asked

    days = dated({10: 5, 11: 4, 12: 2, 13: 3})
    assert kept_by_both(days, "2025-01-01 00:00:00.000000") == ([10, 12], [10, 12], [[10, 11, 12, 13]])
    assert kept_by_both(days, None) == ([10, 11], [10, 11], [])
    assert kept_by_both(days, "2025-01-06 00:00:00.000000")[:2] == ([10, 11], [10, 11])
    assert kept_by_both(dated({10: 5, 11: 4, 12: 2, 13: 0}), "2025-01-01 00:00:00.000000")[:2] == ([10, 11], [10, 11])


def _edited_copies() -> tuple[list[str], list[str]]:
    """Three lines of seed 000 as a site edited them, and as a later text edited the site's."""
    site_version = [" ".join(w if k % 7 else w.upper() + "X" for k, w in enumerate(line.split()))
                    for line in _long_seed_lines(3)]
    return site_version, [line.replace(" ", " really ", 1) for line in site_version]


def _ingest_dated(db, folder: Path, name: str, text: str, published: str) -> None:
    """Ingest one document, ``name`` of ``folder/name.jsonl``, published at ``published``."""
    path = folder / f"{name}.jsonl"
    path.write_text(json.dumps({"id": name, "text": text, "published_at": published}) + "\n", encoding="utf-8")
    run(db, "ingest", str(path))


def _lineage(db) -> set[tuple[str, str]]:
    """(source, derived) of every derivation reported, by JSONL record id."""
    return {(item["source"]["path"].rsplit("#", 1)[1], item["derived"]["path"].rsplit("#", 1)[1])
            for item in report(db)["derivations"]}


def test_a_copy_closer_to_the_text_than_the_original_is_named_beside_it(db, tmp_path):
    """A site edited the wire story's excerpt; a later text edits that version once more.
    Both match as syndications with edits, the site more closely: the lineage names the
    original (the earliest) and the site (the closest)."""
    site_version, later_version = _edited_copies()
    texts = {"site": UNRELATED[0] + "\n" + "\n".join(site_version), "later": UNRELATED[1] + "\n" + "\n".join(later_version)}
    paths = {}
    for name, body in texts.items():
        paths[name] = tmp_path / name / "story.txt"
        paths[name].parent.mkdir()
        paths[name].write_text(body + "\n", encoding="utf-8")
    run(db, "ingest", str(SEED_000))
    run(db, "ingest", str(paths["site"]))
    run(db, "ingest", str(paths["later"]))
    data = report(db)
    assert _sources_of(data, paths["later"]) == {"seeds", "site"}, data["derivations"]
    to_site, to_wire = derivation(data, paths["later"], paths["site"]), derivation(data, paths["later"], SEED_000)
    assert to_site["relation"] == to_wire["relation"] == "syndicated"
    assert to_site["score"] > to_wire["score"]


def test_a_closer_copy_stays_named_when_the_original_arrives_last(tmp_path):
    """The same edited copies as above, dated, ingested oldest first and newest first: the
    wire story arriving last supersedes neither the site as the later text's closest source
    nor itself as the site's."""
    site_version, later_version = _edited_copies()
    records = [("wire", SEED_000.read_text(encoding="utf-8"), "2025-09-18T08:00:00Z"),
               ("site", UNRELATED[0] + "\n" + "\n".join(site_version), "2025-09-19T08:00:00Z"),
               ("later", UNRELATED[1] + "\n" + "\n".join(later_version), "2025-09-20T08:00:00Z")]
    lineages = []
    for order in (records, records[::-1]):
        db = tmp_path / f"{len(lineages)}.db"
        for name, text, published in order:
            _ingest_dated(db, tmp_path, name, text, published)
        lineages.append(_lineage(db))
    assert lineages[0] == {("wire", "site"), ("wire", "later"), ("site", "later")}
    assert lineages[1] == lineages[0]


def test_a_wire_story_stored_after_its_copies_becomes_the_source_of_each(db, tmp_path):
    """The sites' copies are stored first, the wire story they copied (published before
    them) last: every copy then derives from it, not only the earliest or closest one."""
    excerpt = "\n".join(_long_seed_lines(3))
    sites = tmp_path / "sites.jsonl"
    sites.write_text("".join(
        json.dumps({"id": f"site{k}", "text": UNRELATED[k] + "\n" + excerpt, "published_at": f"2025-09-2{k}T10:00:00Z"})
        + "\n" for k in range(3)), encoding="utf-8")
    wire = tmp_path / "wire.jsonl"
    wire.write_text(json.dumps({"id": "wire", "text": SEED_000.read_text(encoding="utf-8"),
                                "published_at": "2025-09-18T08:00:00Z"}) + "\n", encoding="utf-8")
    run(db, "ingest", str(sites))
    run(db, "ingest", str(wire))
    data = report(db)
    from_wire = {item["derived"]["path"].rsplit("#", 1)[1] for item in data["derivations"]
                 if item["source"]["path"].endswith("#wire")}
    assert from_wire == {"site0", "site1", "site2"}, data["derivations"]
    for item in data["derivations"]:
        if item["source"]["path"].endswith("#wire"):
            assert item["relation"] == "syndicated" and "published" in item["reason"]


def test_copies_ingested_newest_first_name_the_sources_oldest_first_names(tmp_path):
    """Three sites copy one excerpt, a day apart. Ingested newest first, each arrives before
    the copy it was taken from and becomes one more source of every later one; the sources
    it supersedes are retired, so the lineage is the one ingesting oldest first gives: the
    first site is the source of the other two."""
    excerpt = "\n".join(_long_seed_lines(3))
    lineages = []
    for order in (range(3), reversed(range(3))):
        db = tmp_path / f"{len(lineages)}.db"
        for k in order:
            _ingest_dated(db, tmp_path, f"site{k}", UNRELATED[k] + "\n" + excerpt, f"2025-09-2{k}T10:00:00Z")
        lineages.append(_lineage(db))
    assert lineages[0] == {("site0", "site1"), ("site0", "site2")}
    assert lineages[1] == lineages[0]


@pytest.mark.parametrize("newest_first", [False, True], ids=["oldest-first", "newest-first"])
def test_copies_that_named_a_forgotten_source_find_their_sources_again(tmp_path, db_url, newest_first):
    """The wire story and three sites that copied one excerpt of it, a day apart: the wire
    story is a named source of each site (ingested newest first, the first site stays the
    closest source of the others: it holds the excerpt's lines together, the wire story
    apart). Once the wire story is forgotten, the first site is the source of the other
    two, as if the wire story had never been stored. On each backend."""
    excerpt = "\n".join(_long_seed_lines(3))
    db = db_url
    records = [("wire", SEED_000.read_text(encoding="utf-8"), "2025-09-19T08:00:00Z")] + [
        (f"site{k}", UNRELATED[k] + "\n" + excerpt, f"2025-09-2{k}T10:00:00Z") for k in range(3)]
    for name, text, published in records[::-1] if newest_first else records:
        _ingest_dated(db, tmp_path, name, text, published)

    from_wire = {("wire", "site0"), ("wire", "site1"), ("wire", "site2")}
    assert _lineage(db) == from_wire | ({("site0", "site1"), ("site0", "site2")} if newest_first else set())
    forgot = run(db, "forget", f"{tmp_path / 'wire.jsonl'}#wire", "--yes").stdout
    assert "sources found again for 3 document(s) that named a forgotten one" in forgot, forgot
    assert _lineage(db) == {("site0", "site1"), ("site0", "site2")}


def test_a_wire_story_copied_widely_and_crawled_newest_first_leaves_no_copy_without_a_source(db_url, tmp_path, monkeypatch):
    """A wire story excerpted by more sites than a passage's candidates read in full and
    scored, crawled newest first, the wire story last. Of candidates alike the earliest
    published are kept: each site is scored against those published just after it and
    becomes their source, and the wire story becomes the source of the earliest sites. Kept in
    ingestion order, only the latest copies were, and the earliest were left with no source
    (at the default limits, 118 of 150 sites; see bench/README.md). On each backend."""
    from provenance import derive

    db = db_url

    monkeypatch.setattr(derive, "SCORED_PER_PASSAGE", 3)
    monkeypatch.setattr(derive, "READ_PER_PASSAGE", 5)
    rng = random.Random(7)
    vocabulary = made_up_words(rng, 3000)
    excerpt = "\n".join(_long_seed_lines(3))
    published = {"wire": "2025-09-01T08:00:00Z"}
    records = [{"id": "wire", "text": SEED_000.read_text(encoding="utf-8"), "published_at": published["wire"]}]
    for k in range(1, 13):
        own = "\n".join(" ".join(rng.choice(vocabulary) for _ in range(30)).capitalize() + "." for _ in range(4))
        published[f"site{k:02d}"] = f"2025-09-{1 + k:02d}T10:00:00Z"
        records.append({"id": f"site{k:02d}", "text": own + "\n" + excerpt, "published_at": published[f"site{k:02d}"]})
    feed = tmp_path / "crawl.jsonl"
    feed.write_text("".join(json.dumps(record) + "\n" for record in reversed(records)), encoding="utf-8")
    run(db, "ingest", str(feed))

    sources: dict[str, set[str]] = {}
    for source, derived in _lineage(db):
        assert published[source] < published[derived], (source, derived)
        sources.setdefault(derived, set()).add(source)
    assert sorted(sources) == sorted(published.keys() - {"wire"}), "every site has a source"
    assert sources["site01"] == {"wire"}
    for site in sources:  # and the earliest source of each leads back to the wire story
        steps = [site]
        while steps[-1] != "wire" and len(steps) <= len(published):
            steps.append(min(sources[steps[-1]], key=published.get))
        assert steps[-1] == "wire", steps


def test_a_long_document_is_indexed_and_matched_a_few_passages_at_a_time(tmp_path, monkeypatch):
    """Band keys are looked up and written a slice of passages at a time (a document of 5
    million characters has some 51,000 passages): the stored rows and the report are those
    of all passages at once."""
    from provenance import derive, index, manifest
    from provenance.db.models import PassageBand, RecentPassageBand

    lines = seed_lines()
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "excerpt.txt").write_text(UNRELATED[0] + "\n" + "\n".join(lines[8:12]) + "\n", encoding="utf-8")
    (planted / "both.txt").write_text("\n".join(lines[2:7] + seed_lines(SEED_001)[4:9]) + "\n", encoding="utf-8")
    results = []
    for at_a_time in (index.PASSAGES_AT_A_TIME, 2):
        monkeypatch.setattr(index, "PASSAGES_AT_A_TIME", at_a_time)
        db = tmp_path / f"sliced-{at_a_time}.db"
        run(db, "ingest", str(SEEDS))
        run(db, "ingest", str(planted))
        with session_scope(make_engine(f"sqlite:///{db}")) as session:
            bands = sorted(session.execute(select(PassageBand.band_key, PassageBand.passage_id)).all()
                           + session.execute(select(RecentPassageBand.band_key, RecentPassageBand.passage_id)).all())
            # Each seed's passages looked up again: candidates among the other documents.
            candidates = [
                index.passage_candidates(session, [(p.id, p.signature) for p in derive.CONTENT_PASSAGES.rows(
                    session.connection(), document=document_id) if p.signature is not None],
                    document_id, manifest.load(session))
                for document_id in (1, 2)
            ]
        results.append((report(db, "--no-timestamps"), bands, candidates))
    (whole, whole_bands, whole_candidates), (sliced, sliced_bands, sliced_candidates) = results
    assert len(whole["derivations"]) >= 3 and len(whole_bands) > 100
    assert all(len(found) > 4 for found in whole_candidates)
    assert sliced == whole
    assert sliced_bands == whole_bands
    assert sliced_candidates == whole_candidates


def test_a_passage_reads_in_full_only_its_candidates_of_the_highest_bounds(monkeypatch):
    """Past the limit, a passage's candidates read in full are those of the highest upper
    bounds, then the earliest stored, returned in pair order; other passages keep all."""
    from provenance import derive

    monkeypatch.setattr(derive, "READ_PER_PASSAGE", 2)
    mine_of = np.array([0, 0, 0, 0, 1, 1, 2])
    bound_of = np.array([0.5, 0.9, 0.5, 0.7, 0.2, 0.3, 0.4])
    id_of = np.array([10, 11, 12, 13, 20, 21, 30])
    pairs = np.array([0, 1, 2, 3, 4, 5, 6])
    assert derive._highest_bounds(pairs, mine_of, bound_of, id_of).tolist() == [1, 3, 4, 5, 6]
    assert derive._highest_bounds(np.array([0, 2, 4]), mine_of, bound_of, id_of).tolist() == [0, 2, 4]
    monkeypatch.setattr(derive, "READ_PER_PASSAGE", 1)
    assert derive._highest_bounds(np.array([0, 2, 4]), mine_of, bound_of, id_of).tolist() == [0, 4]
    assert derive._highest_bounds(np.array([], dtype=np.intp), mine_of, bound_of, id_of).tolist() == []


def test_of_candidates_alike_the_earliest_published_are_read_and_scored(monkeypatch):
    """Candidates tied at the last bound kept, or at the last estimate scored, are kept
    earliest published first (by their documents' dates, asked only about the tied ones),
    and in ingestion order when any of them is undated."""
    from provenance import derive

    monkeypatch.setattr(derive, "READ_PER_PASSAGE", 2)
    mine_of = np.array([0, 0, 0, 0, 1])
    bound_of = np.array([0.9, 0.5, 0.5, 0.5, 0.3])
    id_of = np.array([10, 11, 12, 13, 20])
    pairs = np.arange(5)
    asked = []

    def published(dates):
        def lookup(ids):
            asked.append(ids)
            return {passage_id: dates.get(passage_id) for passage_id in ids}
        return lookup

    dated = {11: "2025-03-01", 12: "2025-01-01", 13: "2025-02-01"}
    assert derive._highest_bounds(pairs, mine_of, bound_of, id_of, published(dated)).tolist() == [0, 2, 4]
    assert asked == [[11, 12, 13]]
    assert derive._highest_bounds(pairs, mine_of, bound_of, id_of, published({**dated, 13: None})).tolist() == [0, 1, 4]
    assert derive._highest_bounds(pairs, mine_of, bound_of, id_of).tolist() == [0, 1, 4]

    def candidate(passage_id, published_at):
        return derive.CandidatePassage(passage_id, passage_id, 0, 10, None, 8, f"doc{passage_id}", published_at)

    monkeypatch.setattr(derive, "SCORED_PER_PASSAGE", 2)
    likely = [(1, candidate(c, dated.get(c, "2025-06-01")), e) for c, e in [(10, 0.9), (11, 0.5), (12, 0.5), (13, 0.5)]]
    assert [row.id for _, row, _ in derive._likeliest(likely)] == [10, 12]
    likely[3] = (1, candidate(13, None), 0.5)
    assert [row.id for _, row, _ in derive._likeliest(likely)] == [10, 11]


def test_a_story_stored_after_its_copies_is_read_once_to_credit_them_all(db, tmp_path, monkeypatch):
    """A wire story stored after the sites that excerpt it (published before them) becomes
    the source of each in one ingest. Each summary credits the story's agency only where the
    site names it, and what is read of the story for those summaries (the agencies it
    credits) is read once, not once a site (see derive.DocumentsRead)."""
    from provenance import derive

    rng = random.Random(11)
    vocabulary = made_up_words(rng, 2000)
    excerpt = "\n".join([line for line in _long_seed_lines(6) if "BelTA" not in line][:3])  # credits only its own
    naming_belta = set()
    records = []
    for k in range(1, 9):
        own = " ".join(rng.choice(vocabulary) for _ in range(30)).capitalize()
        agency = "BelTA" if k % 2 else "TASS"
        if agency == "BelTA":
            naming_belta.add(f"site{k}")
        records.append({"id": f"site{k}", "text": f"{own}, according to {agency}.\n{excerpt}",
                        "published_at": f"2025-09-{10 + k:02d}T10:00:00Z"})
    sites, wire = tmp_path / "sites.jsonl", tmp_path / "wire.jsonl"
    sites.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    wire.write_text(json.dumps({"id": "wire", "text": SEED_000.read_text(encoding="utf-8"),
                                "published_at": "2025-09-01T08:00:00Z"}) + "\n", encoding="utf-8")
    run(db, "ingest", str(sites))
    wire_id = len(records) + 1
    credits_read = []
    read_credits = derive._agencies

    def recording(connection, document_id):
        credits_read.append(document_id)
        return read_credits(connection, document_id)

    monkeypatch.setattr(derive, "_agencies", recording)
    run(db, "ingest", str(wire))

    data = report(db)
    assert next(d["id"] for d in data["documents"] if d["path"].endswith("#wire")) == wire_id
    from_wire = {item["derived"]["path"].rsplit("#", 1)[1]: item for item in data["derivations"]
                 if item["source"]["path"].endswith("#wire")}
    assert sorted(from_wire) == sorted(record["id"] for record in records)
    assert {site for site, item in from_wire.items() if item["credited"]} == naming_belta
    assert credits_read.count(wire_id) == 1, credits_read


def test_a_statement_sent_to_the_driver_reads_and_writes_what_sqlalchemy_would(db_url):
    """The statements run for every document and derivation go to the driver's cursor
    (db.bulk.DriverStatement): compiled for each backend's parameter style, an INSERT ...
    RETURNING gives the new id, the rows come back with their columns' names, parameters are
    stored as SQLAlchemy stores them (timestamps too), and an expanding IN (which cannot be
    compiled once) is refused. On each backend."""
    from sqlalchemy import bindparam, delete, insert, text

    from provenance.db.bulk import DriverStatement
    from provenance.db.models import Derivation, Document

    run(db_url, "ingest", str(SEEDS))
    new = DriverStatement(insert(Derivation.__table__).returning(Derivation.__table__.c.id),
                          column_keys=("derived_id", "source_id", "relation", "score", "coverage", "credited",
                                       "reason", "run_id"))
    read = DriverStatement(select(Derivation.derived_id, Derivation.source_id, Derivation.relation, Derivation.score,
                                  Derivation.credited).where(Derivation.id == bindparam("derivation")))
    drop = DriverStatement(delete(Derivation).where(Derivation.id == bindparam("derivation")))
    with session_scope(make_engine(db_url)) as session:
        first, second = session.scalars(select(Document.id).order_by(Document.id)).all()[:2]
        run_id = session.scalar(select(Document.run_id).where(Document.id == second))
        connection = session.connection()
        made = new.scalar(connection, derived_id=second, source_id=first, relation="rewritten", score=0.75,
                          coverage=0.5, credited=True, reason="planted by the test", run_id=run_id)
        assert isinstance(made, int)
        stored = session.get(Derivation, made)
        assert (stored.derived_id, stored.source_id, stored.relation, stored.score, stored.credited) == (
            second, first, "rewritten", 0.75, True)
        row = read.first(connection, derivation=made)
        assert (row.derived_id, row.source_id, row.relation, row.score, bool(row.credited)) == (
            second, first, "rewritten", 0.75, True)
        assert read.first(connection, derivation=made + 1000) is None
        drop.run(connection, derivation=made)
        assert read.rows(connection, derivation=made) == []
        expanding = DriverStatement(select(Derivation.id).where(Derivation.id.in_(bindparam("ids", expanding=True))))
        with pytest.raises(ValueError, match="expanding IN"):
            expanding.rows(connection, ids=[made])

        # Parameters are converted as SQLAlchemy converts them: a document stored both ways,
        # with timestamps with and without microseconds and none, is stored alike.
        stored_as = session.execute(select(Document.__table__).where(Document.id == first)).one()._asdict()
        columns = [name for name in stored_as if name not in ("id", "path")]
        columns.insert(0, "path")  # read back below and left out of the comparison
        insert_document = DriverStatement(insert(Document.__table__).returning(Document.__table__.c.id),
                                          column_keys=columns)
        stored_row = text(f"SELECT {', '.join(columns)} FROM document WHERE id = :document")
        for published, ingested in ((datetime(2024, 5, 1), datetime(2026, 11, 29, 9, 30, 5, 250)),
                                    (None, datetime(2026, 11, 29, 9, 30, 5))):
            values = {**stored_as, "published_at": published, "ingested_at": ingested, "is_latest": False}
            by_sqlalchemy = connection.execute(
                insert(Document.__table__).returning(Document.__table__.c.id),
                {**{name: values[name] for name in columns}, "path": f"by SQLAlchemy, {published}"},
            ).scalar_one()
            by_the_driver = insert_document.scalar(
                connection, **{**{name: values[name] for name in columns}, "path": f"by the driver, {published}"}
            )
            assert by_the_driver != by_sqlalchemy
            as_stored = [connection.execute(stored_row, {"document": document_id}).one()[1:]
                         for document_id in (by_sqlalchemy, by_the_driver)]
            assert as_stored[0] == as_stored[1]
            assert session.get(Document, by_the_driver).published_at == published
            assert session.get(Document, by_the_driver).ingested_at == ingested
