"""Shared databases (issue 6): every backend gives the same answers, and several ingests
writing to one database at once lose nothing, double nothing and miss no match.

Each test runs on SQLite and, when PROVENANCE_TEST_DB_URL names a PostgreSQL server, on
PostgreSQL too (a fresh database per test, dropped afterwards).

Comparing a parallel ingest with a serial one needs inputs whose result cannot depend on
the order in which documents arrive, since four processes interleave their documents in
an order nobody chooses:

- every document has its own ``published_at``, so the direction of a derivation never
  falls back to ingestion order;
- paths are the same files in both runs (absolute paths are the document identity);
- no document reuses text from two related documents at once: the lineage of an excerpt
  that matches both an original and its near-copy depends on which of the two was stored
  first (``derive._prefer_originals`` drops a source only when the copy relation is
  already known, and ``derive._named_sources`` names a passage's earliest and closest
  sources among those stored), so each planted derivative reuses exactly one document;
- no short line recurs across unrelated documents, so no boilerplate is learned mid-run.

The serial result is checked against a serial ingest in the reverse order first: if that
ever differs, the corpus (or the matching) has become order-dependent and the parallel
comparison would prove nothing.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import aliased

from conftest import BELTA_SEED, TASS_SEED, made_up_words, near_copy
from provenance.cli import cli
from provenance.db.migrate import upgrade_to_head
from provenance.db.models import Derivation, Document, IngestRun
from provenance.db.session import make_engine, session_scope, write_scope
from provenance import ingest as ingest_module
from provenance.ingest import IngestSummary, Ingestor
from provenance.prepare import prepare
from provenance.reader import RawDocument

CLI = [sys.executable, "-m", "provenance"]
START = datetime(2026, 1, 1, 8, 0)


# -- a corpus whose result does not depend on arrival order -----------------------------
def _vocabulary(rng: random.Random, size: int = 20000) -> list[str]:
    # A large vocabulary: unrelated documents share almost no words.
    return made_up_words(rng, size, 5, 10)


def _article(rng: random.Random, vocabulary: list[str], paragraphs: int = 8) -> str:
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(2, 3)):
            words = [rng.choice(vocabulary) for _ in range(rng.randint(10, 16))]
            sentences.append(" ".join(words).capitalize() + ".")
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def _excerpt(rng: random.Random, vocabulary: list[str], kept: list[str]) -> str:
    """Copied paragraphs between paragraphs of the excerpt's own."""
    return "\n\n".join([_article(rng, vocabulary, 1), *kept, _article(rng, vocabulary, 1)])


def write_corpus(folder: Path, seed: int = 6) -> list[Path]:
    """About forty one-document JSONL files: the two seeds, three excerpts of seed 000 (from
    parts that do not overlap), a near-copy of seed 001, ten generated originals with four
    near-copies and four excerpts of them, and unrelated documents. Returns the files."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    documents: list[tuple[str, str, int]] = []  # (name, text, minutes after START)

    belta, tass = BELTA_SEED.read_text(encoding="utf-8"), TASS_SEED.read_text(encoding="utf-8")
    belta_lines = belta.split("\n")
    documents += [("seed-belta", belta, 0), ("seed-tass", tass, 5)]
    for number, (start, end) in enumerate([(0, 4), (8, 12), (16, 20)]):
        excerpt = _excerpt(rng, vocabulary, ["\n".join(belta_lines[start:end])])
        documents.append((f"belta-excerpt-{number}", excerpt, 60 + number))
    documents.append(("tass-near-copy", near_copy(tass, changes=3, boilerplate=[]), 70))

    for number in range(10):
        original = _article(rng, vocabulary)
        documents.append((f"original-{number}", original, 100 + 10 * number))
        if number < 4:
            copy = near_copy(original, changes=3, boilerplate=[])
            documents.append((f"original-{number}-near-copy", copy, 400 + number))
        elif number < 8:
            paragraphs = original.split("\n\n")
            documents.append((f"original-{number}-excerpt", _excerpt(rng, vocabulary, paragraphs[2:5]), 400 + number))
    while len(documents) < 40:
        number = len(documents)
        documents.append((f"unrelated-{number}", _article(rng, vocabulary, rng.randint(3, 8)), 800 + number))

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text, minutes in documents:
        path = folder / f"{name}.jsonl"
        record = {"id": name, "source": name.split("-")[0], "text": text,
                  "published_at": (START + timedelta(minutes=minutes)).isoformat()}
        path.write_text(json.dumps(record) + "\n", encoding="utf-8")
        files.append(path)
    return files


def split_for_writers(files: list[Path], writers: int = 4, shared: int = 3) -> list[list[Path]]:
    """Disjoint shares dealt round-robin, so that a document and the one it is planted next
    to (its source or its derivative) go to neighbouring writers at the same position and
    are stored at about the same moment: the case a missing lock gets wrong. Each writer
    also gets the first ``shared`` files of the next writer's share (overlapping inputs:
    stored once, "unchanged" for the other)."""
    shares = [files[n::writers] for n in range(writers)]
    return [shares[n] + shares[(n + 1) % writers][:shared] for n in range(writers)]


# -- what a database holds, as comparable sets ------------------------------------------
def stored(url: str) -> dict:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            documents = session.execute(
                select(Document.path, Document.content_hash, Document.version, Document.is_latest)
            ).all()
            derived, source = aliased(Document), aliased(Document)
            derivations = session.execute(
                select(derived.path, source.path, Derivation.relation)
                .join(derived, derived.id == Derivation.derived_id).join(source, source.id == Derivation.source_id)
            ).all()
    finally:
        engine.dispose()
    report = CliRunner().invoke(cli, ["--db", url, "report", "--format", "json", "--no-timestamps"])
    assert report.exit_code == 0, report.output
    clusters = {
        frozenset([cluster["canonical"]["path"], *(member["path"] for member in cluster["members"])])
        for cluster in json.loads(report.stdout)["clusters"]
    }
    return {
        "documents": Counter((row.path, row.content_hash) for row in documents),
        "versions": {(row.version, row.is_latest) for row in documents},
        "clusters": clusters,
        "derivations": Counter(tuple(row) for row in derivations),
    }


def ingest_process(url: str, paths: list[Path]) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "--db", url, "ingest", *map(str, paths), "--format", "json", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process: subprocess.Popen) -> dict:
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["failed"] == 0 and summary["skipped"] == 0, summary["problems"][:3]
    return summary


def serial_ingest(url: str, files: list[Path]) -> dict:
    return finish(ingest_process(url, files))


# -- the tests ----------------------------------------------------------------------------
def test_concurrent_ingests_equal_a_serial_ingest(tmp_path, db_url, new_database):
    """Four `provenance ingest` processes started at once on one new database, over
    disjoint and overlapping shares of the corpus, store what one serial ingest stores."""
    files = write_corpus(tmp_path / "corpus")
    assert len(files) == 40

    serial_url = new_database("serial")
    serial_ingest(serial_url, sorted(files))
    expected = stored(serial_url)
    reverse_url = new_database("reverse")
    serial_ingest(reverse_url, sorted(files, reverse=True))
    assert stored(reverse_url) == expected, "the corpus is order-dependent: fix the corpus before judging concurrency"

    # The premise of the comparison: the corpus has duplicates and derivations to miss.
    relations = Counter(relation for _, _, relation in expected["derivations"])
    assert relations["near-duplicate"] >= 5 and relations["syndicated"] >= 7, relations
    assert len(expected["clusters"]) >= 5

    shares = split_for_writers(files)
    processes = [ingest_process(db_url, share) for share in shares]  # all at once, on a new database
    summaries = [finish(process) for process in processes]

    got = stored(db_url)
    assert set(got["documents"].values()) == {1}, [k for k, n in got["documents"].items() if n > 1]
    assert got["documents"] == expected["documents"]
    assert got["versions"] == {(1, True)}
    assert got["clusters"] == expected["clusters"]
    assert got["derivations"] == expected["derivations"]
    assert sum(s["documents_added"] for s in summaries) == 40
    assert sum(s["unchanged"] for s in summaries) == sum(len(share) for share in shares) - 40
    assert sum(s["versions_added"] for s in summaries) == 0


def test_backends_give_the_same_report(tmp_path, db_url, new_database):
    """Seeds plus planted derivatives: the JSON report on this backend equals SQLite's, byte
    for byte (ids, scores, spans, evidence), and the SQL views answer the same rows."""
    files = write_corpus(tmp_path / "corpus")[:12]
    runner = CliRunner()
    sqlite_url = f"sqlite:///{tmp_path / 'reference.db'}"
    outputs = {}
    for url in (sqlite_url, db_url):
        for batch in (files[:2], files[2:]):  # seeds first, then what was planted, as two runs
            result = runner.invoke(cli, ["--db", url, "ingest", *map(str, batch), "--format", "json"])
            assert result.exit_code == 0, result.output
        report = runner.invoke(cli, ["--db", url, "report", "--format", "json", "--no-timestamps"])
        assert report.exit_code == 0, report.output
        views = runner.invoke(cli, ["--db", url, "inspect", "sql", "--format", "json",
                                    "SELECT derived_path, source_path, relation, score, coverage, credited "
                                    "FROM derivations_with_paths ORDER BY derived_path, source_path"])
        assert views.exit_code == 0, views.output
        rows = [{**row, "credited": bool(row["credited"])} for row in json.loads(views.stdout)]
        outputs[url] = (json.loads(report.stdout), rows)
    (reference, reference_rows), (report, rows) = outputs[sqlite_url], outputs[db_url]
    assert report["derivations"], "nothing planted was found"
    assert report == reference
    assert rows == reference_rows


def test_a_writer_waits_for_the_writer_before_it_and_sees_its_work(db_url):
    """The writer lock: a second write transaction cannot start until the first ends,
    and then sees what the first committed (so no document misses another)."""
    engine = make_engine(db_url)
    upgrade_to_head(engine)
    seen, events = [], []

    def second_writer():
        with write_scope(engine) as session:
            events.append("second started")
            seen.append(session.scalar(select(func.count()).select_from(IngestRun)))

    try:
        with write_scope(engine) as session:
            session.add(IngestRun(started_at=START, status="running", settings_fingerprint="x", tool_version="test"))
            session.flush()
            thread = threading.Thread(target=second_writer)
            thread.start()
            thread.join(timeout=1.5)
            assert thread.is_alive() and events == [], "the second writer did not wait for the first"
            events.append("first commits")
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert events == ["first commits", "second started"] and seen == [1]
    finally:
        engine.dispose()


def test_nul_escaped_in_jsonl_is_stored(tmp_path, db_url):
    """PostgreSQL text cannot hold NUL: a "\\u0000" in a JSONL field becomes U+FFFD, as a raw
    NUL byte in a text file does, so the document is stored on every backend."""
    feed = tmp_path / "feed.jsonl"
    record = {"id": "a", "title": "nul\u0000title", "text": "Minsk talks \u0000 resume " + "with many more words " * 4}
    feed.write_text(json.dumps(record) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["--db", db_url, "ingest", str(feed), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["documents_added"] == 1
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            text, title = session.execute(select(Document.text, Document.title)).one()
    finally:
        engine.dispose()
    assert "\x00" not in text + title and text.startswith("Minsk talks \ufffd resume") and title == "nul\ufffdtitle"


def _ingestor(url: str) -> Ingestor:
    engine = make_engine(url)
    upgrade_to_head(engine)
    return Ingestor(engine)


def _prepared(text: str, path: str, ingestor: Ingestor):
    raw = RawDocument(path=path, text=text, format="text", encoding="utf-8", size_bytes=len(text), source="test")
    return prepare(raw, ingestor.settings)


def test_transient_errors_are_retried_and_counted_once(db_url, monkeypatch):
    ingestor = _ingestor(db_url)
    real_store, calls = Ingestor._store, []

    def flaky(self, session, prepared, summary):
        calls.append(1)
        outcome = real_store(self, session, prepared, summary)  # counts, then fails: must not be kept
        if len(calls) < 3:
            raise OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))
        return outcome

    monkeypatch.setattr(Ingestor, "_store", flaky)
    monkeypatch.setattr("provenance.ingest.RETRY_DELAY", 0.001)
    summary = IngestSummary(run_id=ingestor._start_run("test"))
    prepared = _prepared(BELTA_SEED.read_text(encoding="utf-8"), "/x/belta.txt", ingestor)
    outcome = ingestor.store_document(prepared, summary)
    assert outcome == "added" and len(calls) == 3
    assert (summary.documents_added, summary.failed, summary.problems) == (1, 0, [])
    assert stored(db_url)["documents"] and set(stored(db_url)["documents"].values()) == {1}


def test_same_document_stored_by_another_writer_is_unchanged(db_url, monkeypatch):
    """A unique-key collision because another process stored the same path and content
    first is "unchanged", not a failure."""
    ingestor = _ingestor(db_url)
    prepared = _prepared(TASS_SEED.read_text(encoding="utf-8"), "/x/tass.txt", ingestor)
    ingestor.store_document(prepared, IngestSummary(run_id=ingestor._start_run("other writer")))

    def collide(self, session, prepared, summary):
        collision = sqlite3.IntegrityError("UNIQUE constraint failed: document.path, document.version")
        raise IntegrityError("INSERT INTO document ...", {}, collision)

    monkeypatch.setattr(Ingestor, "_store", collide)
    summary = IngestSummary(run_id=ingestor._start_run("test"))
    assert ingestor.store_document(prepared, summary) == "unchanged"
    assert (summary.unchanged, summary.failed) == (1, 0)


def test_persistent_errors_fail_the_document_alone(db_url, monkeypatch):
    ingestor = _ingestor(db_url)
    calls = []

    def locked(self, session, prepared, summary):
        calls.append(1)
        raise OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(Ingestor, "_store", locked)
    monkeypatch.setattr("provenance.ingest.RETRY_DELAY", 0.001)
    summary = IngestSummary(run_id=ingestor._start_run("test"))
    prepared = _prepared("A short text about nothing much at all.", "/x/a.txt", ingestor)
    assert ingestor.store_document(prepared, summary) == "failed"
    assert len(calls) == 5 and summary.failed == 1
    assert "database is locked" in summary.problems[0] and "after 5 attempts" in summary.problems[0]
    assert "\n" not in summary.problems[0]


def _batch(ingestor: Ingestor, tmp_path: Path) -> list:
    """Five prepared documents with known outcomes: seeds, an exact copy, two near-copies."""
    belta, tass = BELTA_SEED.read_text(encoding="utf-8"), TASS_SEED.read_text(encoding="utf-8")
    texts = {"belta.txt": belta, "bad.txt": near_copy(tass), "tass.txt": tass, "copy.txt": belta,
             "near.txt": near_copy(belta)}
    return [_prepared(text, str(tmp_path / name), ingestor) for name, text in texts.items()]


def test_a_failing_document_in_a_batch_is_rolled_back_alone(db_url, tmp_path, monkeypatch):
    """Documents are stored several per transaction: one that fails after writing part of
    itself rolls its batch back and leaves nothing behind, the others of its batch are then
    stored and counted one per transaction, and it is tried once more on its own before
    being reported."""
    ingestor = _ingestor(db_url)
    real_store, tried = Ingestor._store, []

    def fails_for_bad(self, session, prepared, summary):
        outcome = real_store(self, session, prepared, summary)
        if prepared.raw.path.endswith("bad.txt"):
            tried.append(prepared.raw.path)
            raise ValueError("broken after its rows were written")
        return outcome

    monkeypatch.setattr(Ingestor, "_store", fails_for_bad)
    summary = IngestSummary(run_id=ingestor._start_run("test"))
    events = []
    ingestor.store_documents(_batch(ingestor, tmp_path), summary, lambda *event: events.append(event))
    assert len(tried) == 2, "in the batch, then alone"
    assert (summary.documents_added, summary.failed, summary.exact_duplicates) == (4, 1, 1)
    assert "bad.txt" in summary.problems[0] and "ValueError" in summary.problems[0]
    assert [Path(e[1]).name for e in events if e[0] == "document"] == ["belta.txt", "tass.txt", "copy.txt", "near.txt"]
    got = stored(db_url)
    assert sorted(Path(path).name for path, _ in got["documents"]) == ["belta.txt", "copy.txt", "near.txt", "tass.txt"]
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        from provenance.db.models import Passage
        orphans = session.scalar(select(func.count()).select_from(Passage).where(
            Passage.document_id.not_in(select(Document.id))))
        assert orphans == 0
    engine.dispose()
    # Nothing links to the failed document (TASS, stored after it, would have been its source).
    assert {(Path(a).name, Path(b).name) for a, b, _ in got["derivations"]} == {
        ("copy.txt", "belta.txt"), ("near.txt", "belta.txt")}


def test_a_batch_that_cannot_commit_is_stored_one_document_at_a_time(db_url, tmp_path, monkeypatch):
    """A transient error (busy database, lost connection) inside a batch rolls the whole
    batch back; each of its documents is then stored in its own transaction, counted once."""
    ingestor = _ingestor(db_url)
    real_store, calls = Ingestor._store, []

    def busy_once(self, session, prepared, summary):
        calls.append(Path(prepared.raw.path).name)
        outcome = real_store(self, session, prepared, summary)
        if len(calls) == 3:
            raise OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))
        return outcome

    monkeypatch.setattr(Ingestor, "_store", busy_once)
    summary = IngestSummary(run_id=ingestor._start_run("test"))
    batch = _batch(ingestor, tmp_path)
    ingestor.store_documents(batch, summary)
    names = [Path(p.raw.path).name for p in batch]
    assert calls == names[:3] + names, "the batch up to the error, then every document alone"
    assert (summary.documents_added, summary.failed, summary.problems) == (5, 0, [])
    assert sorted(Path(path).name for path, _ in stored(db_url)["documents"]) == sorted(names)


def test_batch_size_does_not_change_what_is_stored(tmp_path, db_url, new_database, monkeypatch):
    """One document per transaction and the default batches give the same database."""
    files = sorted(write_corpus(tmp_path / "corpus"))[:24]
    results = {}
    for size, url in ((1, new_database("one-by-one")), (ingest_module.BATCH_DOCUMENTS, db_url)):
        monkeypatch.setattr(ingest_module, "BATCH_DOCUMENTS", size)
        result = CliRunner().invoke(cli, ["--db", url, "ingest", *map(str, files), "--format", "json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["documents_added"] == len(files)
        results[size] = stored(url)
    one_by_one, batched = results.values()
    assert batched == one_by_one
    assert len(batched["derivations"]) >= 10 and len(batched["clusters"]) >= 3, "the corpus has links to lose"


def _passage_bands(url: str) -> dict[str, set[tuple[int, int]]]:
    from provenance.db.models import PassageBand, RecentPassageBand

    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return {model.__tablename__: {tuple(row) for row in session.execute(select(model.band_key, model.passage_id))}
                    for model in (PassageBand, RecentPassageBand)}
    finally:
        engine.dispose()


def test_merging_recent_passage_bands_does_not_change_what_is_found(tmp_path, db_url, new_database, monkeypatch):
    """New passage bands wait in a small table and are moved into the big one in key order
    (index.merge_recent_bands). Merged after every batch of four documents, so later ones
    find earlier ones in the big table, or never merged: the same links either way, and
    every band row is in exactly one of the two tables."""
    from provenance import index as index_module

    files = sorted(write_corpus(tmp_path / "corpus"))[:24]
    monkeypatch.setattr(ingest_module, "BATCH_DOCUMENTS", 4)
    results, bands = {}, {}
    for at_least, url in ((1, new_database("merged")), (10**9, db_url)):
        monkeypatch.setattr(index_module, "RECENT_BANDS_MAX", at_least)
        result = CliRunner().invoke(cli, ["--db", url, "ingest", *map(str, files), "--format", "json"])
        assert result.exit_code == 0, result.output
        results[at_least], bands[at_least] = stored(url), _passage_bands(url)
    assert results[1] == results[10**9]
    assert len(results[1]["derivations"]) >= 10, "the corpus has links to lose"
    merged, waiting = bands[1], bands[10**9]
    assert merged["passage_band_recent"] == set() and waiting["passage_band"] == set()
    assert merged["passage_band"] == waiting["passage_band_recent"] and len(merged["passage_band"]) > 1000


def _planner_rows_after_ingest(tmp_path: Path, url: str, monkeypatch, documents: int, merge_at: int) -> dict:
    """Ingest ``documents`` of the corpus in batches of four, merging when ``merge_at``
    recent rows wait, with the end-of-ingest analysis turned off (so what the merges and
    batches refreshed is what is seen); returns each passage index table's row count and
    the planner's (``pg_class.reltuples``, -1 when never analysed)."""
    from sqlalchemy import text

    from provenance import index as index_module

    monkeypatch.setattr(ingest_module, "BATCH_DOCUMENTS", 4)
    monkeypatch.setattr(index_module, "RECENT_BANDS_MAX", merge_at)
    monkeypatch.setattr(ingest_module, "refresh_statistics", lambda engine: None)
    files = sorted(write_corpus(tmp_path / "corpus"))[:documents]
    result = CliRunner().invoke(cli, ["--db", url, "ingest", *map(str, files), "--format", "json"])
    assert result.exit_code == 0, result.output
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            planned = dict(connection.execute(text(
                "SELECT relname, reltuples FROM pg_class WHERE relname IN ('passage_band', 'passage_band_recent')"
            )).all())
            return {table: (connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one(), planned[table])
                    for table in planned}
    finally:
        engine.dispose()


def test_after_a_merge_the_planner_knows_both_passage_index_tables_sizes(tmp_path, db_url, monkeypatch):
    """PostgreSQL plans a lookup from the sizes its last analysis saw. After a merge moves
    the recent passage band rows into the big table, both tables are analysed at once (and
    the emptied one vacuumed), not at autovacuum's next round, during which a new database
    once ingested at a third of its rate."""
    if not db_url.startswith("postgresql"):
        pytest.skip("planner statistics of PostgreSQL; SQLite's plan for the lookup does not use them")
    found = _planner_rows_after_ingest(tmp_path, db_url, monkeypatch, documents=12, merge_at=1)
    rows = found["passage_band"][0]
    assert rows > 1000 and found["passage_band_recent"][0] == 0, "every batch was merged"
    # ANALYZE reads every row of a table this small, so its count is exact.
    assert found == {"passage_band": (rows, rows), "passage_band_recent": (0, 0)}


def test_the_planner_sees_the_recent_passage_bands_grow_between_merges(tmp_path, db_url, monkeypatch):
    """Without a merge, the table of recent passage band rows is analysed as it grows
    (db.session.analyse_grown_table), each time it has doubled: the planner does not guess
    its rows per key from an empty or never-analysed table."""
    if not db_url.startswith("postgresql"):
        pytest.skip("planner statistics of PostgreSQL")
    from provenance.db import session as session_module

    monkeypatch.setattr(session_module, "ANALYSE_AFTER_ROWS", 1)
    rows, planned = _planner_rows_after_ingest(tmp_path, db_url, monkeypatch, documents=16, merge_at=10**9)[
        "passage_band_recent"]
    # Analysed during the ingest (a never-analysed table has -1), the last time when the
    # rows of the batch before the last had doubled the rows it saw before.
    assert 0 < planned <= rows and 2 * planned > rows and rows > 1000


#: Every command, as a user would type it after ``provenance --db URL`` (DOC 1 is the BelTA seed).
EVERY_COMMAND = [
    ["db", "upgrade"],
    ["report", "--format", "json"],
    ["inspect", "--format", "json"],
    ["inspect", "documents", "--format", "json"],
    ["inspect", "document", "1", "--format", "json"],
    ["inspect", "runs", "--format", "json"],
    ["inspect", "sources", "--format", "json"],
    ["inspect", "boilerplate", "--format", "json"],
    ["inspect", "clusters", "--format", "json"],
    ["inspect", "sql", "--format", "json", "SELECT count(*) AS n FROM passage_band"],
    ["match", str(BELTA_SEED), "--format", "json"],
    ["explain", "1", "3", "--format", "json"],
    ["lineage", "1", "--format", "json"],
    ["export"],
    ["boilerplate", "add", "Share this article"],
    ["boilerplate", "list", "--format", "json"],
    ["boilerplate", "remove", "Share this article"],
    ["forget", "2", "--yes"],
    ["db", "vacuum"],
    ["db", "current"],
]


def test_every_command_works_on_this_backend(tmp_path, db_url, seed_copies):
    """`--db URL` works for every command, on SQLite and PostgreSQL alike."""
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db_url, "ingest", str(BELTA_SEED), str(TASS_SEED), str(seed_copies["near"]),
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["documents_added"] == 3
    for command in EVERY_COMMAND:
        result = runner.invoke(cli, ["--db", db_url, *command])
        assert result.exit_code == 0, (command, result.output)
        assert "Traceback" not in result.output, (command, result.output)
    assert stored(db_url)["derivations"] == Counter({(str(seed_copies["near"]), str(BELTA_SEED), "near-duplicate"): 1})


def test_bulk_insert_skips_keys_already_stored_and_delete_takes_exact_rows(db_url, monkeypatch):
    """The band tables' bulk insert (arrays through unnest on PostgreSQL, executemany on
    SQLite) stores every row once, in batches, and skips rows already there when asked;
    the bulk delete removes exactly the rows named, whole keys matched."""
    from provenance.db import bulk
    from provenance.db.models import DocumentBand, PassageBand

    monkeypatch.setattr(bulk, "BATCH_ROWS", 7)  # several batches per call
    engine = make_engine(db_url)
    upgrade_to_head(engine)
    try:
        with write_scope(engine) as session:
            run = IngestRun(started_at=START, status="running", settings_fingerprint="x", tool_version="test")
            session.add(run)
            session.flush()
            document = Document(path="/x", format="text", size_bytes=1, encoding="utf-8", content_hash="h",
                                ingested_at=START, run_id=run.id, text="x")
            session.add(document)
            session.flush()
            keys = [-(2**63), -1, 0, 1, 2**63 - 1, *range(100, 150)]
            names = ("document_id", "band_key")
            rows = [(document.id, key) for key in keys]
            bulk.insert_rows(session, DocumentBand.__table__, names, rows)
            bulk.insert_rows(session, DocumentBand.__table__, names, rows[:3] + [(document.id, 7)], ignore_duplicates=True)
            with pytest.raises(IntegrityError):
                with session.begin_nested():
                    bulk.insert_rows(session, DocumentBand.__table__, names, rows[:1])
        with session_scope(engine) as session:
            got = sorted(session.scalars(select(DocumentBand.band_key)))
            passages = [(key, document.id) for key in range(1000, 1020)]
            bulk.insert_rows(session, PassageBand.__table__, ("band_key", "passage_id"), passages)
            # Some stored keys, one key with another passage and one key never stored.
            bulk.delete_rows(session, PassageBand.__table__, ("band_key", "passage_id"),
                             passages[:10] + [(1015, document.id + 1), (-5, document.id)])
            left = sorted(tuple(row) for row in session.execute(select(PassageBand.band_key, PassageBand.passage_id)))
            bulk.delete_rows(session, DocumentBand.__table__, ("document_id", "band_key"), [(document.id, 7), (document.id, -1)])
            documents_left = sorted(session.scalars(select(DocumentBand.band_key)))
    finally:
        engine.dispose()
    assert got == sorted([*keys, 7])
    assert left == passages[10:]
    assert documents_left == sorted(keys[:1] + keys[2:])


def test_a_streamed_report_reads_one_snapshot_while_an_ingest_commits(tmp_path, db_url):
    """A report written as it is built reads its derivations after its counts, seconds
    later on a big corpus: what an ingest commits meanwhile must appear in neither, on
    either backend (PostgreSQL reads it in one REPEATABLE READ transaction)."""
    from provenance import report as reporting
    from provenance.db.session import snapshot_scope

    files = write_corpus(tmp_path / "corpus")[:12]
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", db_url, "ingest", *map(str, files[:6])]).exit_code == 0
    engine = make_engine(db_url, read_only=True)
    try:
        with snapshot_scope(engine) as session:
            streamed = reporting.build(session, timestamps=False, stream=True)
            counted = streamed["summary"]["derivations"]
            result = runner.invoke(cli, ["--db", db_url, "ingest", *map(str, files[6:]), "--format", "json"])
            assert result.exit_code == 0, result.output
            listed = list(streamed["derivations"])
        with snapshot_scope(engine) as session:
            after = reporting.build(session, timestamps=False)
    finally:
        engine.dispose()
    assert 0 < counted < len(after["derivations"]), "derivations before the ingest, and more after it"
    assert len(listed) == counted == len(streamed["derivations"])
    before = {document["id"] for document in streamed["documents"]}
    assert all({d["derived"]["id"], d["source"]["id"]} <= before for d in listed)
