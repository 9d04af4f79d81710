"""Passage buckets read by worker processes (provenance.prefetch): a snapshot brought up to
date by the writer holds what the writer would read itself, it is not used when that cannot
be known, and an ingest with workers stores what one without them does."""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import BELTA_SEED, TASS_SEED, made_up_words, record_read_ahead
from provenance import derive, prefetch
from provenance import ingest as ingest_module
from provenance.db.bulk import select_in
from provenance.db.migrate import upgrade_to_head
from provenance.db.session import database_url, make_engine, session_scope
from provenance.ingest import IngestSummary, Ingestor
from provenance.prepare import prepare
from provenance.reader import RawDocument
from provenance.settings import Settings


def _engine(path: Path):
    engine = make_engine(database_url(str(path)))
    upgrade_to_head(engine)
    return engine


def _raw(path: str, text: str) -> RawDocument:
    return RawDocument(path=path, text=text, format="txt", encoding="utf-8", size_bytes=len(text.encode()))


def _store(ingestor: Ingestor, *documents: tuple[str, str]) -> IngestSummary:
    """Store documents as an ingest's writer does, in one batch, without a run of their own
    (whose own transactions would look like another writer's, see IndexChanges.begin)."""
    summary = IngestSummary(run_id=ingestor.run_id)
    ingestor.store_documents([prepare(_raw(path, text), ingestor.settings) for path, text in documents], summary)
    return summary


def _write(folder: Path, name: str, text: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _reworded(text: str, every: int, word: str) -> str:
    words = text.split(" ")
    return " ".join(word if i % every == every // 2 else w for i, w in enumerate(words))


def _members_now(engine, keys: list[int]) -> dict[int, set[int]]:
    """What the writer reads for ``keys`` (index.BUCKET_MEMBERS), read afresh."""
    members: dict[int, set[int]] = {}
    with session_scope(engine) as session:
        for key, joined in select_in(session, prefetch.BUCKET_MEMBERS, keys):
            members.setdefault(key, set()).update(map(int, joined.split(",")))
    return members


@pytest.fixture
def writer(tmp_path):
    """An ingestor on a database holding the seeds, telling an IndexChanges what it does,
    and a snapshot reader on the same file, as a worker would have."""
    engine = _engine(tmp_path / "p.db")
    ingestor = Ingestor(engine)
    ingestor.run_id = ingestor.ingest_paths([str(BELTA_SEED), str(TASS_SEED)]).run_id
    commits = multiprocessing.Value("q", 0)
    changes = prefetch.IndexChanges(commits)
    ingestor._changes = changes
    with ingestor._writing():  # the state later transactions are compared with
        pass
    reader = prefetch.SnapshotReader(str(tmp_path / "p.db"), commits, ingestor.settings)
    return engine, ingestor, changes, reader


def _snapshot_of(reader, text: str, settings):
    document = prepare(_raw("new.txt", text), settings)
    reader.attach([document])
    keys = sorted({key for passage in document.passages for key in passage.band_keys})
    return document.buckets, keys


def test_a_snapshot_brought_up_to_date_holds_what_the_writer_would_read(writer, tmp_path):
    engine, ingestor, changes, reader = writer
    belta = BELTA_SEED.read_text(encoding="utf-8")
    snapshot, keys = _snapshot_of(reader, _reworded(belta, 9, "reportedly"), ingestor.settings)
    assert snapshot is not None and len(snapshot.members), "it shares buckets with the stored seed"
    held = {key for key in snapshot.keys.tolist()}
    # Then the writer adds to those buckets (near-copies of the seed), takes rows out of them
    # (a new version of one, stored under its path) and adds the new version's rows.
    _store(ingestor, ("copy.txt", _reworded(belta, 13, "allegedly")), ("other.txt", _reworded(belta, 7, "purportedly")))
    assert _store(ingestor, ("copy.txt", _reworded(belta, 5, "seemingly"))).versions_added == 1
    assert changes.commits > snapshot.commits

    at_hand = changes.members(snapshot, keys)

    assert at_hand is not None
    members, crowded = at_hand
    assert not crowded
    now = _members_now(engine, keys)
    assert {key: set(ids) for key, ids in members.items()} == now
    assert now != {key: set(snapshot.members[snapshot.bounds[i]:snapshot.bounds[i + 1]].tolist())
                   for i, key in enumerate(snapshot.keys.tolist())}, "the buckets changed since the snapshot"
    assert any(key not in held for key in now), "buckets empty in the snapshot gained members"
    assert changes.used == 1 and changes.read_instead == 0


def test_the_sketches_a_worker_read_are_those_the_writer_would_read(writer):
    engine, ingestor, changes, reader = writer
    belta = BELTA_SEED.read_text(encoding="utf-8")
    snapshot, keys = _snapshot_of(reader, _reworded(belta, 9, "reportedly"), ingestor.settings)
    assert len(snapshot.sketch_ids), "the quiet buckets' members come with their sketches"
    offered, fresh = derive.SketchCache(), derive.SketchCache()
    offered.offer(snapshot.sketch_ids, snapshot.sketch_word_counts, snapshot.sketch_low_bytes)
    ids = np.sort(snapshot.sketch_ids)
    with session_scope(engine) as session:
        given = offered.sketches(session, ids)
        read = fresh.sketches(session, ids)
    assert offered.at_hand == len(ids) and fresh.at_hand == 0
    assert given.ids.tolist() == read.ids.tolist() == ids.tolist()
    assert given.word_counts.tolist() == read.word_counts.tolist()
    assert given.low_bytes.tolist() == read.low_bytes.tolist()


def test_a_snapshot_is_not_used_across_another_process_commit(writer, tmp_path):
    engine, ingestor, changes, reader = writer
    belta = BELTA_SEED.read_text(encoding="utf-8")
    snapshot, keys = _snapshot_of(reader, _reworded(belta, 9, "reportedly"), ingestor.settings)
    assert snapshot is not None
    other = Ingestor(_engine(tmp_path / "p.db"))  # another writer on the same file
    other.ingest_paths([_write(tmp_path / "elsewhere", "copy.txt", _reworded(belta, 11, "allegedly"))])
    _store(ingestor, ("x.txt", _reworded(belta, 6, "seemingly")))

    assert changes.members(snapshot, keys) is None
    assert changes.read_instead == 1
    # One taken after that commit is used, and holds the other writer's rows.
    fresh, keys = _snapshot_of(reader, _reworded(belta, 9, "reportedly"), ingestor.settings)
    members, _ = changes.members(fresh, keys)
    assert {key: set(ids) for key, ids in members.items()} == _members_now(engine, keys)


def test_a_snapshot_older_than_the_changes_kept_is_not_used(writer, tmp_path, monkeypatch):
    engine, ingestor, changes, reader = writer
    belta = BELTA_SEED.read_text(encoding="utf-8")
    snapshot, keys = _snapshot_of(reader, _reworded(belta, 9, "reportedly"), ingestor.settings)
    for _ in range(prefetch.TRANSACTIONS_KEPT + 1):
        with ingestor._writing():
            pass
    assert changes.members(snapshot, keys) is None


def test_a_snapshot_is_not_used_across_a_batch_that_did_not_commit(writer, tmp_path, monkeypatch):
    engine, ingestor, changes, reader = writer
    belta = BELTA_SEED.read_text(encoding="utf-8")
    snapshot, keys = _snapshot_of(reader, _reworded(belta, 9, "reportedly"), ingestor.settings)
    store = Ingestor._store
    failed = []

    def fail_once(self, session, prepared, summary):
        outcome = store(self, session, prepared, summary)
        if not failed:  # after its changes to the index: the batch is rolled back, then stored again
            failed.append(prepared.raw.path)
            raise RuntimeError("the batch fails once")
        return outcome

    monkeypatch.setattr(Ingestor, "_store", fail_once)
    summary = _store(ingestor, ("copy.txt", _reworded(belta, 13, "allegedly")), ("other.txt", _reworded(belta, 7, "x")))
    assert failed == ["copy.txt"] and summary.documents_added == 2

    assert changes.members(snapshot, keys) is None
    fresh, keys = _snapshot_of(reader, _reworded(belta, 9, "reportedly"), ingestor.settings)
    members, _ = changes.members(fresh, keys)
    assert {key: set(ids) for key, ids in members.items()} == _members_now(engine, keys)


def _corpus(folder: Path, count: int, seed: int) -> list[str]:
    """Stories with site chrome (learned as boilerplate part way, which takes passages out of
    the index), near-copies and rewrites of earlier ones."""
    rng = random.Random(seed)
    vocabulary = made_up_words(rng, 3000)
    chrome = ["No time to read? Get a summary", "Previous Article", "Next Article", "Share this story with friends"]
    texts: list[str] = []
    for number in range(count):
        if texts and number % 4 == 3:
            text = _reworded(rng.choice(texts), rng.choice([7, 11, 17]), rng.choice(vocabulary))
        else:
            text = "\n\n".join(" ".join(rng.choice(vocabulary) for _ in range(20)).capitalize() + "."
                               for _ in range(4))
        texts.append(text)
        page = "\n\n".join([chrome[0], text, *chrome[1:]]) if number % 3 else text
        _write(folder, f"story_{number:03d}.txt", page)
    return [str(folder)]


def _stored(path: Path) -> dict[str, list[tuple]]:
    connection = sqlite3.connect(path)
    try:
        return {
            table: connection.execute(f"SELECT {columns} FROM {table} ORDER BY {columns}").fetchall()
            for table, columns in (
                ("document", "id, path, version, is_latest, content_hash, signature"),
                ("passage", "id, document_id, seq, boilerplate_id, signature"),
                ("passage_band", "band_key, passage_id"),
                ("passage_band_recent", "band_key, passage_id"),
                ("document_pair", "first_id, second_id, similarity, exact"),
                ("derivation", "derived_id, source_id, relation, score, coverage, credited"),
                ("passage_match", "derived_passage_id, source_passage_id, label, similarity"),
                ("boilerplate", "key_hash, status, document_count"),
            )
        }
    finally:
        connection.close()


@pytest.mark.parametrize("bucket_cap", [Settings().bucket_cap, 2])
def test_an_ingest_with_workers_reading_buckets_stores_what_one_process_does(tmp_path, monkeypatch, bucket_cap):
    """Also with buckets crowded (over a cap of 2), which workers do not read again and the
    writer must not be told are crowded once they may not be."""
    monkeypatch.setattr(ingest_module, "UNIT_DOCUMENTS", 8)
    monkeypatch.setattr(ingest_module, "BATCH_DOCUMENTS", 10)
    made: list[prefetch.IndexChanges] = []

    class Recorded(prefetch.IndexChanges):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(prefetch, "IndexChanges", Recorded)
    stored = {}
    for workers in (1, 2):
        db = tmp_path / f"w{workers}.db"
        ingestor = Ingestor(_engine(db), Settings(bucket_cap=bucket_cap))
        # Then new versions of a third of the stories, in a second run.
        for count, seed in ((90, 5), (30, 6)):
            summary = ingestor.ingest_paths(_corpus(tmp_path / "stories", count, seed), workers=workers)
            assert not summary.problems
        stored[workers] = _stored(db)
    assert stored[1] == stored[2]
    assert stored[1]["derivation"] and stored[1]["boilerplate"] and stored[1]["passage_match"]
    assert any(row[2] > 1 for row in stored[1]["document"]), "the second run stored new versions"
    assert len(made) == 2, "one for each run with workers"
    assert bool(ingestor.crowded_buckets) == (bucket_cap == 2)
    assert sum(changes.used for changes in made) >= 60, [(c.used, c.read_instead) for c in made]


def test_what_the_workers_read_is_not_read_ahead_again(tmp_path, monkeypatch):
    """Once the writer has waited on the disk it has the buckets of the documents coming read
    ahead (see Ingestor._read_ahead_once_waited), but not of those whose buckets a worker
    has just read: with workers, only of the first unit, which the writer prepares itself
    while they start (see prepared_stream)."""
    monkeypatch.setattr(ingest_module, "UNIT_DOCUMENTS", 8)
    monkeypatch.setattr(ingest_module, "BATCH_DOCUMENTS", 10)
    monkeypatch.setattr(ingest_module, "waited_on_disk", lambda since: True)
    asked, _ = record_read_ahead(monkeypatch, ingest_module)
    corpus = _corpus(tmp_path / "stories", 40, 7)
    files = sorted(Path(corpus[0]).iterdir())
    settings = Settings()

    def keys_of(paths: list[Path]) -> set[int]:
        prepared = [prepare(_raw(str(path), path.read_text(encoding="utf-8")), settings) for path in paths]
        return {key for document in prepared for passage in document.passages for key in passage.band_keys}

    first_unit = keys_of(files[: ingest_module.UNIT_DOCUMENTS])
    read_ahead = {}
    for workers in (1, 2):
        asked.clear()
        summary = Ingestor(_engine(tmp_path / f"w{workers}.db"), settings).ingest_paths(corpus, workers=workers)
        assert not summary.problems and summary.documents_added == len(files)
        read_ahead[workers] = {key for _, values in asked for key in values}
    assert read_ahead[1] == keys_of(files[1:]), "one process reads ahead every document after the first"
    assert read_ahead[2] and read_ahead[2] <= first_unit
