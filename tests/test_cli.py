"""The walking skeleton end to end through the ``provenance`` CLI on a temporary database."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from conftest import (
    BELTA_SEED,
    TASS_SEED,
    cluster_ids,
    cluster_with,
    db_session,
    document_count,
    error_lines,
    latest_document,
    near_copy,
    one_line,
    record_read_ahead,
    run_count,
)
from provenance.db.models import Document, IngestRun, ManifestEntry, PassageMatch
from provenance.errors import ProvenanceError
from provenance.settings import Settings

DOCUMENT_KEYS = {"id", "path", "source", "content_hash", "published_at", "ingested_at"}


def ids_by_path(report: dict) -> dict[str, int]:
    return {d["path"]: d["id"] for d in report["documents"]}


# -- report contract ------------------------------------------------------------------
def test_report_json_contract(ingest, report_json, db, seeds_dir, seed_copies):
    ingest(seeds_dir)
    ingest(seed_copies["exact"], seed_copies["near"])
    report = report_json(db)

    assert report["schema"] == "provenance.report/1"
    with db_session(db) as session:
        latest = {d.id: d for d in session.scalars(select(Document).where(Document.is_latest.is_(True)))}
    assert {d["id"] for d in report["documents"]} == set(latest)
    for entry in report["documents"]:
        assert set(entry) >= DOCUMENT_KEYS, entry
        stored = latest[entry["id"]]
        assert entry["path"] == stored.path
        assert entry["source"] == stored.source
        assert entry["content_hash"] == stored.content_hash
        assert entry["published_at"] is None  # plain text files carry no date
        assert entry["ingested_at"] == stored.ingested_at.isoformat()
    # sources default to the parent folder's name
    by_path = {d["path"]: d for d in report["documents"]}
    assert by_path[str(BELTA_SEED)]["source"] == BELTA_SEED.parent.name
    assert by_path[str(seed_copies["near"])]["source"] == seed_copies["near"].parent.name

    assert report["clusters"], "the copies of the BelTA seed should form a cluster"
    for cluster in report["clusters"]:
        canonical = cluster["canonical"]
        assert set(canonical) >= {"id", "path", "reason"}
        assert cluster["id"] == canonical["id"]
        assert latest[canonical["id"]].path == canonical["path"]
        assert isinstance(canonical["reason"], str) and canonical["reason"]
        assert cluster["members"]
        for member in cluster["members"]:
            assert set(member) >= {"id", "path", "relation", "similarity"}
            assert member["id"] != canonical["id"]
            assert latest[member["id"]].path == member["path"]
            assert member["relation"] in ("exact", "near-duplicate")
            assert isinstance(member["similarity"], (int, float))
            assert 0.0 <= member["similarity"] <= 1.0
    # the summary agrees with the lists it summarises
    summary = report["summary"]
    assert summary["documents"] == len(report["documents"])
    assert summary["clusters"] == len(report["clusters"])
    assert summary["exact_duplicates"] == sum(
        m["relation"] == "exact" for c in report["clusters"] for m in c["members"]
    )


def test_citations_reported_for_seeds(ingest, report_json, db, seeds_dir):
    ingest(seeds_dir)
    report = report_json(db)
    ids = ids_by_path(report)
    agencies = {(c["document"]["id"], c["agency"]) for c in report["citations"]}
    assert (ids[str(BELTA_SEED)], "BelTA") in agencies
    assert (ids[str(TASS_SEED)], "TASS") in agencies


# -- idempotence and versions ---------------------------------------------------------
def test_reingest_is_idempotent(ingest, invoke, report_json, db, seeds_dir):
    first = ingest(seeds_dir)
    assert first["documents_added"] == 2 and first["failed"] == 0
    count = document_count(db)
    before = report_json(db)

    second = ingest(seeds_dir)
    assert second["documents_added"] == 0
    assert second["versions_added"] == 0
    assert second["unchanged"] == first["documents_added"]
    assert second["run_id"] != first["run_id"]
    assert document_count(db) == count
    after = report_json(db)
    assert [d["content_hash"] for d in after["documents"]] == [d["content_hash"] for d in before["documents"]]
    assert [d["ingested_at"] for d in after["documents"]] == [d["ingested_at"] for d in before["documents"]]

    text = invoke("ingest", seeds_dir)
    assert text.exit_code == 0, text.output
    assert "0 document(s) added" in text.stdout
    assert f"{first['documents_added']} unchanged" in text.stdout
    assert document_count(db) == count


def test_changed_file_becomes_new_version(ingest, report_json, db, tmp_path, belta_text):
    article = tmp_path / "news" / "article.txt"
    article.parent.mkdir()
    article.write_text(belta_text, encoding="utf-8")
    first = ingest(article)
    assert first["documents_added"] == 1

    article.write_text(belta_text + "\nAn editor's note was appended to this story on Tuesday afternoon.\n",
                       encoding="utf-8")
    second = ingest(article)
    assert second["versions_added"] == 1
    assert second["documents_added"] == 0

    with db_session(db) as session:
        versions = session.scalars(select(Document).where(Document.path == str(article)).order_by(Document.version)).all()
        assert [v.version for v in versions] == [1, 2]
        old, new = versions
        assert new.previous_version_id == old.id
        assert old.previous_version_id is None
        assert old.is_latest is False and new.is_latest is True
        assert old.content_hash != new.content_hash
        assert "editor's note" in new.text and "editor's note" not in old.text
        new_id = new.id
    report = report_json(db)
    assert [d["id"] for d in report["documents"] if d["path"] == str(article)] == [new_id]


# -- duplicates -----------------------------------------------------------------------
def test_near_copy_and_exact_copy_join_seed_cluster(ingest, report_json, db, seeds_dir, seed_copies):
    ingest(seeds_dir, seed_copies["exact"], seed_copies["near"])
    report = report_json(db)
    ids = ids_by_path(report)
    seed_id, exact_id, near_id = ids[str(BELTA_SEED)], ids[str(seed_copies["exact"])], ids[str(seed_copies["near"])]

    cluster = cluster_with(report, seed_id)
    assert cluster is not None, report["clusters"]
    assert {seed_id, exact_id, near_id} <= cluster_ids(cluster)
    relation_to_canonical = {m["id"]: m for m in cluster["members"]}
    canonical_id = cluster["canonical"]["id"]
    assert canonical_id == seed_id  # first ingested, no dates
    assert relation_to_canonical[exact_id]["relation"] == "exact"
    assert relation_to_canonical[exact_id]["similarity"] == pytest.approx(1.0)
    assert relation_to_canonical[near_id]["relation"] == "near-duplicate"
    assert 0.8 <= relation_to_canonical[near_id]["similarity"] < 1.0


def test_seeds_are_not_near_duplicates(ingest, report_json, db, seeds_dir):
    summary = ingest(seeds_dir)
    assert summary["exact_duplicates"] == 0 and summary["near_duplicates"] == 0
    report = report_json(db)
    ids = ids_by_path(report)
    belta, tass = ids[str(BELTA_SEED)], ids[str(TASS_SEED)]
    for cluster in report["clusters"]:
        assert not {belta, tass} <= cluster_ids(cluster), cluster
    assert cluster_with(report, belta) is None and cluster_with(report, tass) is None


def test_duplicate_found_across_runs(ingest, report_json, db, seeds_dir, seed_copies):
    first = ingest(seeds_dir)
    second = ingest(seed_copies["exact"])
    assert second["documents_added"] == 1
    assert second["exact_duplicates"] >= 1
    third = ingest(seed_copies["near"])
    assert third["near_duplicates"] >= 1

    report = report_json(db)
    ids = ids_by_path(report)
    cluster = cluster_with(report, ids[str(seed_copies["exact"])])
    assert cluster is not None
    assert {ids[str(BELTA_SEED)], ids[str(seed_copies["exact"])], ids[str(seed_copies["near"])]} <= cluster_ids(cluster)
    with db_session(db) as session:
        seed_doc = latest_document(session, BELTA_SEED)
        copy_doc = latest_document(session, seed_copies["exact"])
        assert seed_doc.run_id == first["run_id"]
        assert copy_doc.run_id == second["run_id"]


def test_canonical_is_earliest_published(ingest, report_json, db, tmp_path, belta_text):
    feed = tmp_path / "feed.jsonl"
    records = [
        {"id": "later", "text": belta_text, "published_at": "2024-05-02T09:00:00Z", "source": "Wire A"},
        {"id": "earlier", "text": near_copy(belta_text, changes=2), "published_at": "2024-05-01T09:00:00Z",
         "source": "Wire B"},
        {"id": "undated", "text": belta_text, "source": "Wire C"},
    ]
    feed.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    summary = ingest(feed)
    assert summary["documents_added"] == 3

    with db_session(db) as session:
        by_external = {d.external_id: d for d in session.scalars(select(Document))}
    earlier, later, undated = by_external["earlier"], by_external["later"], by_external["undated"]
    assert earlier.id > later.id, "the earlier-published record must be ingested later for this test"

    report = report_json(db)
    cluster = cluster_with(report, later.id)
    assert cluster is not None
    assert {earlier.id, later.id, undated.id} <= cluster_ids(cluster)
    assert cluster["canonical"]["id"] == earlier.id
    assert cluster["canonical"]["path"] == earlier.path
    assert "published_at" in cluster["canonical"]["reason"]
    assert earlier.published_at.isoformat() in cluster["canonical"]["reason"]
    members = {m["id"]: m for m in cluster["members"]}
    assert members[later.id]["relation"] == "near-duplicate"


def test_canonical_falls_back_to_ingestion_order(ingest, report_json, db, tmp_path, belta_text):
    first = tmp_path / "a" / "zz_first.txt"
    second = tmp_path / "b" / "aa_second.txt"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_text(belta_text, encoding="utf-8")
    second.write_text(belta_text, encoding="utf-8")
    ingest(first)
    ingest(second)
    report = report_json(db)
    ids = ids_by_path(report)
    cluster = cluster_with(report, ids[str(first)])
    assert cluster is not None
    assert cluster["canonical"]["id"] == ids[str(first)]
    assert "ingest" in cluster["canonical"]["reason"]
    assert "published_at" in cluster["canonical"]["reason"]  # says why no date decided it
    assert [m["id"] for m in cluster["members"]] == [ids[str(second)]]


# -- report options -------------------------------------------------------------------
def test_report_threshold_filters_clusters(ingest, report_json, invoke, db, seeds_dir, seed_copies):
    ingest(seeds_dir, seed_copies["exact"], seed_copies["near"])
    default = report_json(db)
    ids = ids_by_path(default)
    near_id, exact_id = ids[str(seed_copies["near"])], ids[str(seed_copies["exact"])]
    near_similarity = {m["id"]: m["similarity"] for m in cluster_with(default, near_id)["members"]}[near_id]
    assert near_similarity < 1.0

    above = round(near_similarity + (1.0 - near_similarity) / 2, 4)
    strict = report_json(db, "--threshold", above)
    assert strict["threshold"] == pytest.approx(above)
    assert cluster_with(strict, near_id) is None
    assert cluster_with(strict, exact_id) is not None  # exact copies survive any threshold
    assert len(strict["clusters"]) <= len(default["clusters"])
    for cluster in strict["clusters"]:
        for member in cluster["members"]:
            assert member["similarity"] >= above or member["relation"] == "exact"

    below = round(near_similarity - 0.01, 4)
    loose = report_json(db, "--threshold", below)
    assert near_id in cluster_ids(cluster_with(loose, exact_id))

    bad = invoke("report", "--threshold", "1.5")
    assert bad.exit_code != 0


def test_report_csv_and_table(ingest, report_json, invoke, db, seeds_dir, seed_copies):
    ingest(seeds_dir, seed_copies["exact"], seed_copies["near"])
    report = report_json(db)
    expected = set()
    for cluster in report["clusters"]:
        expected.add((cluster["canonical"]["id"], cluster["canonical"]["path"], "canonical"))
        for member in cluster["members"]:
            expected.add((member["id"], member["path"], member["relation"]))
    assert expected

    result = invoke("report", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows
    assert {"kind", "document_id", "path", "relation", "similarity"} <= set(rows[0])
    cluster_rows = [r for r in rows if r["kind"] == "cluster"]
    assert {(int(r["document_id"]), r["path"], r["relation"]) for r in cluster_rows} == expected
    for row in cluster_rows:
        assert 0.0 <= float(row["similarity"]) <= 1.0

    table = invoke("report", "--format", "table")
    assert table.exit_code == 0, table.output
    for _, path, _ in expected:
        assert path in table.stdout
    assert report["summary"]["message"] in table.stdout


def test_report_limit_lists_the_first_entries_and_counts_all(ingest, report_json, invoke, db, seeds_dir, seed_copies,
                                                             monkeypatch, tmp_path):
    tass_copy = tmp_path / "wire" / "tass_copy.txt"  # a second cluster, after the BelTA seed's
    tass_copy.parent.mkdir()
    shutil.copyfile(TASS_SEED, tass_copy)
    ingest(seeds_dir, seed_copies["exact"], seed_copies["near"], tass_copy)
    full = report_json(db)
    assert len(full["derivations"]) >= 2 and len(full["documents"]) >= 2
    unshown = full["clusters"][1:]
    assert any(m["relation"] == "exact" for c in unshown for m in c["members"]), "counted though not shown"
    assert "shown" not in full["summary"], "the JSON report is whole unless --limit is given"
    limited = report_json(db, "--limit", 1)
    summary = limited["summary"]
    for key in ("documents", "clusters", "exact_duplicates", "near_duplicates", "derivations", "message"):
        assert summary[key] == full["summary"][key], key
    assert summary["limit"] == 1
    for section in ("documents", "clusters", "derivations", "boilerplate", "citations"):
        assert limited[section] == full[section][:1], section
        assert summary["shown"][section] == len(limited[section])
        assert summary["totals"][section] == len(full[section])

    hidden = f"... {len(full['derivations']) - 1} more derivation(s) not shown (--limit 1)"
    assert hidden in invoke("report", "--limit", 1).stdout
    assert hidden in invoke("report", "--format", "html", "--limit", 1).stdout
    assert "not shown" not in invoke("report", "--format", "html").stdout, "HTML is whole by default"
    monkeypatch.setattr("provenance.cli.TERMINAL_REPORT_LIMIT", 1)
    assert hidden in invoke("report").stdout, "the terminal report is limited by default"
    everything = invoke("report", "--limit", 0)
    assert "not shown" not in everything.stdout
    assert all(d["source"]["path"] in everything.stdout for d in full["derivations"])

    refused = invoke("report", "--format", "paths", "--limit", 1)
    assert refused.exit_code != 0 and "--limit does not apply to --format paths" in refused.output


def test_report_before_any_ingest_is_refused(invoke, db):
    result = invoke("report")
    assert result.exit_code != 0
    assert str(db) in result.output
    assert not db.exists()


# -- formats --------------------------------------------------------------------------
def test_jsonl_metadata_and_malformed_line(ingest_result, db, tmp_path, belta_text, tass_text):
    feed = tmp_path / "wire" / "feed.jsonl"
    feed.parent.mkdir()
    lines = [
        json.dumps({"id": "belta-1", "url": "https://example.org/belta", "source": "BelTA",
                    "published_at": "2024-03-05T10:00:00+02:00", "title": "Military cooperation",
                    "text": belta_text}),
        "",
        '{"id": "broken", "text": "unterminated',
        json.dumps({"text": tass_text, "title": "No id here"}),
    ]
    feed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result, summary = ingest_result(feed)
    assert result.exit_code == 1, result.output  # a skipped input is reported in the exit code
    assert summary["documents_added"] == 2
    assert summary["skipped"] == 1 and summary["failed"] == 0
    assert len(summary["problems"]) == 1
    problem = summary["problems"][0]
    assert f"{feed}:3" in problem and "JSON" in problem and "\n" not in problem
    assert len(error_lines(result, f"{feed}:3")) == 1

    with db_session(db) as session:
        docs = {d.external_id: d for d in session.scalars(select(Document))}
        assert set(docs) == {"belta-1", None}
        belta = docs["belta-1"]
        assert belta.path == f"{feed}#belta-1"
        assert belta.url == "https://example.org/belta"
        assert belta.source == "BelTA"
        assert belta.title == "Military cooperation"
        assert belta.format == "jsonl"
        assert belta.text == belta_text
        assert belta.published_at.isoformat() == "2024-03-05T08:00:00"  # stored as naive UTC
        other = docs[None]
        assert other.path == f"{feed}#L4"
        assert other.source == feed.parent.name  # no "source": the folder's name
        assert other.title == "No id here"
        assert other.published_at is None


def test_html_visible_text_with_blocks(ingest, db, tmp_path):
    page = tmp_path / "site" / "page.html"
    page.parent.mkdir()
    page.write_text(
        """<!DOCTYPE html><html><head><title>  Minsk   signs
        accord </title><style>.hidden { color: red }</style>
        <script>var tracking = "SCRIPT_PAYLOAD";</script></head>
        <body><nav>Home</nav><h1>Belarus signs a defence accord</h1>
        <p>The first paragraph explains the accord with <b>bold</b> words inline.</p>
        <p>The second paragraph is short.</p>
        <script>document.write("INLINE_SCRIPT")</script><noscript>NOSCRIPT_TEXT</noscript>
        <ul><li>Item one</li><li>Item two</li></ul></body></html>""",
        encoding="utf-8",
    )
    summary = ingest(page)
    assert summary["documents_added"] == 1
    with db_session(db) as session:
        doc = latest_document(session, page)
        assert doc.format == "html"
        assert doc.title == "Minsk signs accord"
        text = doc.text
    for hidden in ("SCRIPT_PAYLOAD", "INLINE_SCRIPT", "NOSCRIPT_TEXT", "color: red", "<p>", "Minsk signs"):
        assert hidden not in text
    lines = text.splitlines()
    assert "Belarus signs a defence accord" in lines
    assert "The first paragraph explains the accord with bold words inline." in lines
    assert "The second paragraph is short." in lines
    assert lines.index("The first paragraph explains the accord with bold words inline.") < lines.index(
        "The second paragraph is short.")
    assert "Item one" in lines and "Item two" in lines


def test_html_paragraph_wrapped_in_source_is_one_line(ingest, db, tmp_path):
    """A line break inside a <p> is whitespace in HTML: the paragraph is one line of text."""
    page = tmp_path / "site" / "wrapped.html"
    page.parent.mkdir()
    page.write_text(
        "<html><head><title>Wrapped</title></head><body>\n"
        "  <p>Minsk and Moscow agreed to extend\n     their military technical cooperation\n     through 2025.</p>\n"
        "  <p>The second paragraph\n     follows it.</p>\n</body></html>\n",
        encoding="utf-8",
    )
    ingest(page)
    with db_session(db) as session:
        text = latest_document(session, page).text
    assert text.splitlines() == [
        "Minsk and Moscow agreed to extend their military technical cooperation through 2025.",
        "The second paragraph follows it.",
    ]


def test_stdin_ingest(ingest, db, belta_text):
    summary = ingest("-", input=belta_text)
    assert summary["documents_added"] == 1
    with db_session(db) as session:
        doc = latest_document(session, "-")
        assert doc is not None
        assert doc.text == belta_text
        assert doc.source == "stdin"
    again = ingest("-", "--source", "Daily Globe", input=belta_text)
    assert again["unchanged"] == 1 and again["documents_added"] == 0


def test_stdin_source_option(ingest, db, tass_text):
    ingest("-", "--source", "Daily Globe", input=tass_text)
    with db_session(db) as session:
        assert latest_document(session, "-").source == "Daily Globe"


WESTERN = (
    "The café on the corner reopened on Monday, and its owner said the naïve façade of the old building "
    "had been restored.\n“We wanted to keep the character of the place,” she said — adding that the menu "
    "now costs about 12 € per person.\nCritics called the résumé of the renovation a déjà vu of the 1990s, "
    "but regulars were pleased with the crème brûlée.\n"
)


def test_utf16_with_bom_decoded(ingest, db, tmp_path):
    path = tmp_path / "in" / "utf16.txt"
    path.parent.mkdir()
    path.write_bytes(WESTERN.encode("utf-16"))  # with BOM
    ingest(path)
    with db_session(db) as session:
        doc = latest_document(session, path)
        assert doc.text == WESTERN
        assert codecs.lookup(doc.encoding).name.startswith("utf-16")
        assert doc.size_bytes == path.stat().st_size


def test_windows_1252_decoded(ingest, db, tmp_path):
    path = tmp_path / "in" / "windows.txt"
    path.parent.mkdir()
    path.write_bytes(WESTERN.encode("cp1252"))
    ingest(path)
    with db_session(db) as session:
        doc = latest_document(session, path)
        assert doc.text == WESTERN, f"decoded as {doc.encoding}: {doc.text[:100]!r}"
        assert codecs.lookup(doc.encoding).name == codecs.lookup("cp1252").name


# -- settings manifest ----------------------------------------------------------------
@pytest.mark.parametrize("option,value,name", [("--num-perm", "64", "num_perm"), ("--shingle-size", "3", "shingle_size")])
def test_settings_mismatch_refused(ingest, ingest_result, db, seeds_dir, seed_copies, option, value, name):
    ingest(seeds_dir)
    documents, runs = document_count(db), run_count(db)
    with db_session(db) as session:
        manifest_before = {m.key: m.value for m in session.scalars(select(ManifestEntry))}

    result, summary = ingest_result(seed_copies["exact"], option, value)
    assert result.exit_code != 0
    assert summary is None  # refused before any run
    message = one_line(result.stderr)
    assert name in message and "settings" in message
    assert document_count(db) == documents
    assert run_count(db) == runs
    with db_session(db) as session:
        assert {m.key: m.value for m in session.scalars(select(ManifestEntry))} == manifest_before
        assert latest_document(session, seed_copies["exact"]) is None


def test_settings_of_first_ingest_are_kept(ingest, invoke, db, seeds_dir, seed_copies):
    ingest(seeds_dir, "--num-perm", "64", "--shingle-size", "4")
    # the same values again, or none at all, are accepted
    assert ingest(seed_copies["exact"], "--num-perm", "64")["documents_added"] == 1
    assert ingest(seed_copies["near"])["documents_added"] == 1
    result = invoke("inspect", "--format", "json")
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)["settings"]
    assert settings["document"]["num_perm"] == 64
    assert settings["document"]["shingle_size"] == 4


# -- inspect --------------------------------------------------------------------------
@pytest.fixture
def populated(ingest, tmp_path, seeds_dir, seed_copies, belta_text):
    """Seeds in run 1; copies in run 2; a file changed between runs 2 and 3."""
    article = tmp_path / "desk" / "article.txt"
    article.parent.mkdir()
    article.write_text(near_copy(belta_text, changes=6, boilerplate=[]), encoding="utf-8")
    runs = [ingest(seeds_dir), ingest(seed_copies["exact"], seed_copies["near"], article)]
    article.write_text(article.read_text(encoding="utf-8") + "\nA correction was appended later that week.\n",
                       encoding="utf-8")
    runs.append(ingest(article))
    return {"runs": runs, "article": article, **seed_copies}


def test_inspect_summary(invoke, report_json, db, populated, head_revision_independent):
    result = invoke("inspect", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    with db_session(db) as session:
        all_docs = session.scalars(select(Document)).all()
        runs = session.scalars(select(IngestRun)).all()
    assert data["documents"] == sum(d.is_latest for d in all_docs)
    assert data["versions"] == len(all_docs)
    assert data["versions"] == data["documents"] + 1
    assert data["runs"] == len(runs) == len(populated["runs"])
    assert data["clusters"] == len(report_json(db)["clusters"])
    assert data["schema_revision"] == head_revision_independent
    assert data["settings"] == Settings().as_dict()
    assert data["file_size_bytes"] == os.path.getsize(db)
    assert data["file_size_bytes"] > 0

    table = invoke("inspect")
    assert table.exit_code == 0, table.output
    assert head_revision_independent in table.stdout


def test_inspect_documents(invoke, db, populated):
    result = invoke("inspect", "documents", "--format", "json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    with db_session(db) as session:
        latest = {d.id: d for d in session.scalars(select(Document).where(Document.is_latest.is_(True)))}
    assert [d["id"] for d in listed] == sorted(latest)
    for entry in listed:
        assert entry["path"] == latest[entry["id"]].path
        assert entry["version"] == latest[entry["id"]].version
    article = next(d for d in listed if d["path"] == str(populated["article"]))
    assert article["version"] == 2

    as_csv = invoke("inspect", "documents", "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert sorted(int(r["id"]) for r in rows) == sorted(latest)


def test_listings_read_the_listing_index_in_order_of_id(db, populated, monkeypatch):
    """`inspect documents` and the report's documents list the latest versions with every
    column, read on SQLite from the listing index in order of id: neither the document rows
    (each carries its whole text) nor a sort, whatever the planner's statistics say. The
    report's derivations read their documents' paths from the same index."""
    from sqlalchemy import event

    from provenance import inspect as inspection, report as reporting
    from provenance.db.bulk import IN_CHUNK

    statements = []

    def record(connection, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    real_select_in = reporting.select_in

    def recording_select_in(session, sql, values, *args, **kwargs):  # sent to the driver, past the events
        chunk = tuple(values[:IN_CHUNK])
        statements.append((sql.replace("{in}", f"IN ({', '.join(['?'] * len(chunk))})"), chunk))
        return real_select_in(session, sql, values, *args, **kwargs)

    monkeypatch.setattr(reporting, "select_in", recording_select_in)
    real_plain_rows = reporting.plain_rows

    def recording_plain_rows(session, statement):  # sent to the driver too
        compiled = statement.compile(dialect=session.connection().dialect, compile_kwargs={"render_postcompile": True})
        statements.append((str(compiled), tuple(compiled.params[name] for name in compiled.positiontup)))
        return real_plain_rows(session, statement)

    monkeypatch.setattr(reporting, "plain_rows", recording_plain_rows)

    with db_session(db) as session:
        # Timestamps with and without microseconds (isoformat leaves zero ones out), and none.
        first, second = session.scalars(select(Document).where(Document.is_latest.is_(True)).order_by(Document.id)).all()[:2]
        first.published_at, second.published_at = datetime(2024, 5, 1), datetime(2024, 5, 1, 12, 30, 5, 250)
        first.ingested_at = datetime(2026, 11, 27, 9, 0, 0)
        session.flush()
        # Document statistics of bench/scale.py's databases. Analysed at about 10,000, before
        # migration 0010 made the listing index, SQLite looked paths up in the rows (each with
        # its whole text). Read at 32,000, the listing index's row count, sampled by PRAGMA
        # optimize, was above the table's (which SQLite takes from the last index row it
        # loads), so it scanned the rows in order of id. Either way unless told to use the index.
        stale = ("('document', 'ix_document_run_id', '15742 401'), ('document', 'ix_document_is_latest_path', "
                 "'10602 401 1'), ('document', 'ix_document_content_hash', '7474 1'), "
                 "('document', 'sqlite_autoindex_document_1', '10602 1 1')")
        listing = "('document', 'ix_document_listing', '13200 1 1 1 1 1 1 1 1 1 1 1 1')"
        engine = session.get_bind()
        listed, reported = [], []
        for statistics in (stale, f"{listing}, {stale}"):
            session.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'document'"))
            session.execute(text(f"INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES {statistics}"))
            session.execute(text("ANALYZE sqlite_schema"))  # the planner reads them again
            event.listen(engine, "before_cursor_execute", record)
            try:
                listed.append(inspection.documents(session))
                reported.append(reporting.build(session)["documents"])
            finally:
                event.remove(engine, "before_cursor_execute", record)
        latest = session.scalars(select(Document).where(Document.is_latest.is_(True)).order_by(Document.id)).all()
        superseded = session.scalars(select(Document.id).where(Document.is_latest.is_(False))).all()
        plans = [
            " | ".join(row[-1] for row in session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
            for statement, parameters in statements
            if statement.startswith("SELECT id, path,") and "ORDER BY id" in statement
        ]
        path_plans = [  # the derivations' paths, read from the same index rather than the rows
            " | ".join(row[-1] for row in session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
            for statement, parameters in statements if statement.startswith("SELECT id, path FROM document")
        ]
    assert superseded, "the fixture holds a superseded version, which the listings leave out"
    assert any(d.published_at is None for d in latest), "and a document with no published_at"
    iso = lambda value: value.isoformat() if value else None  # noqa: E731
    assert listed[0] == listed[1] == [
        {"id": d.id, "path": d.path, "version": d.version, "source": d.source, "format": d.format,
         "size_bytes": d.size_bytes, "encoding": d.encoding, "content_hash": d.content_hash,
         "published_at": iso(d.published_at), "ingested_at": iso(d.ingested_at), "run_id": d.run_id}
        for d in latest
    ]
    assert reported[0] == reported[1] == [
        {"id": d.id, "path": d.path, "source": d.source, "content_hash": d.content_hash,
         "published_at": iso(d.published_at), "ingested_at": iso(d.ingested_at)}
        for d in latest
    ]
    print("PLANS", plans); assert len(plans) == 4, statements
    for plan in plans:
        assert "SCAN document USING COVERING INDEX ix_document_listing" in plan and "TEMP B-TREE" not in plan, plan
    assert path_plans, "the report's derivations read their documents' paths"
    for plan in path_plans:
        assert "SEARCH document USING COVERING INDEX ix_document_listing (id=?)" in plan, plan


def test_inspect_documents_lists_the_first_few_in_a_terminal_and_says_how_many_more(invoke, db, populated, monkeypatch):
    """A terminal listing of 100,000 documents is no use and took 12 s: the table shows the
    first TERMINAL_REPORT_LIMIT by id and counts the rest; --limit 0 lists all, and JSON
    and CSV list all unless --limit says otherwise."""
    from provenance import cli as cli_module

    with db_session(db) as session:
        ids = sorted(session.scalars(select(Document.id).where(Document.is_latest.is_(True))))
    assert len(ids) >= 4
    monkeypatch.setattr(cli_module, "TERMINAL_REPORT_LIMIT", 2)
    table = invoke("inspect", "documents")
    assert table.exit_code == 0, table.output
    lines = table.stdout.strip().splitlines()
    assert lines[-1] == f"... {len(ids) - 2} more document(s) not shown (--limit 2); --limit 0 lists all"
    assert [int(line.split()[0]) for line in lines[2:-1]] == ids[:2], "header, rule, then the first two by id"
    everything = invoke("inspect", "documents", "--limit", "0")
    assert everything.exit_code == 0, everything.output
    assert "not shown" not in everything.stdout
    assert [int(line.split()[0]) for line in everything.stdout.strip().splitlines()[2:]] == ids
    assert [d["id"] for d in json.loads(invoke("inspect", "documents", "--format", "json").stdout)] == ids
    first = json.loads(invoke("inspect", "documents", "--format", "json", "--limit", "3").stdout)
    assert [d["id"] for d in first] == ids[:3]
    exact = invoke("inspect", "documents", "--limit", str(len(ids)))
    assert "not shown" not in exact.stdout


def test_inspect_clusters_lists_the_first_few_in_a_terminal_and_says_how_many_more(
    invoke, ingest, seeds_dir, tmp_path, monkeypatch,
):
    """At 100,000 documents the 18,000-row table of every cluster took most of 2.7 s: the table
    shows the members of the first TERMINAL_REPORT_LIMIT clusters and counts the rest; --limit
    0 lists all, and JSON and CSV list all unless --limit says otherwise."""
    from provenance import cli as cli_module

    copies = tmp_path / "copies"
    copies.mkdir()
    for seed in (BELTA_SEED, TASS_SEED):
        shutil.copyfile(seed, copies / f"copy_of_{seed.name}")
    ingest(seeds_dir, copies)
    listed = json.loads(invoke("inspect", "clusters", "--format", "json").stdout)
    order = list(dict.fromkeys(row["cluster"] for row in listed))
    assert len(order) == 2, "each seed and its copy"
    first = [row for row in listed if row["cluster"] == order[0]]
    monkeypatch.setattr(cli_module, "TERMINAL_REPORT_LIMIT", 1)
    table = invoke("inspect", "clusters")
    assert table.exit_code == 0, table.output
    lines = table.stdout.strip().splitlines()
    assert lines[-1] == "... 1 more cluster(s) not shown (--limit 1); --limit 0 lists all"
    assert [int(line.split()[1]) for line in lines[2:-1]] == [row["document_id"] for row in first]
    everything = invoke("inspect", "clusters", "--limit", "0")
    assert "not shown" not in everything.stdout
    assert len(everything.stdout.strip().splitlines()[2:]) == len(listed)
    assert json.loads(invoke("inspect", "clusters", "--format", "json", "--limit", "1").stdout) == first
    as_csv = list(csv.DictReader(io.StringIO(invoke("inspect", "clusters", "--format", "csv").stdout)))
    assert [int(row["document_id"]) for row in as_csv] == [row["document_id"] for row in listed]


def test_inspect_document_by_id_and_path(invoke, db, populated, monkeypatch, tmp_path):
    article = populated["article"]
    with db_session(db) as session:
        versions = session.scalars(select(Document).where(Document.path == str(article)).order_by(Document.version)).all()
        seed = latest_document(session, BELTA_SEED)
        exact = latest_document(session, populated["exact"])
    current = versions[-1]

    by_id = invoke("inspect", "document", current.id, "--format", "json")
    assert by_id.exit_code == 0, by_id.output
    data = json.loads(by_id.stdout)
    assert data["id"] == current.id and data["path"] == str(article)
    assert data["content_hash"] == current.content_hash
    assert data["source"] == article.parent.name
    assert [v["id"] for v in data["versions"]] == [v.id for v in versions]
    assert [v["version"] for v in data["versions"]] == [1, 2]

    by_path = invoke("inspect", "document", str(article), "--format", "json")
    assert by_path.exit_code == 0, by_path.output
    assert json.loads(by_path.stdout)["id"] == current.id

    monkeypatch.chdir(article.parent)
    relative = invoke("inspect", "document", article.name, "--format", "json")
    assert relative.exit_code == 0, relative.output
    assert json.loads(relative.stdout)["id"] == current.id

    seed_data = json.loads(invoke("inspect", "document", seed.id, "--format", "json").stdout)
    duplicates = {d["id"]: d for d in seed_data["duplicates"]}
    assert exact.id in duplicates
    assert duplicates[exact.id]["relation"] == "exact"
    assert duplicates[exact.id]["path"] == str(populated["exact"])
    assert {c["agency"] for c in seed_data["citations"]} == {"BelTA"}

    table = invoke("inspect", "document", seed.id)
    assert table.exit_code == 0, table.output
    assert str(populated["exact"]) in table.stdout

    missing = invoke("inspect", "document", str(tmp_path / "never-ingested.txt"))
    assert missing.exit_code != 0
    assert "never-ingested.txt" in one_line(missing.stderr)


def test_inspect_runs(invoke, db, populated):
    result = invoke("inspect", "runs", "--format", "json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    summaries = populated["runs"]
    assert [r["id"] for r in runs] == [s["run_id"] for s in summaries]
    for run, summary in zip(runs, summaries):
        assert run["status"] == "completed"
        assert run["finished_at"] is not None
        for key in ("files_seen", "documents_added", "versions_added", "unchanged", "skipped", "failed"):
            assert run[key] == summary[key], key
    assert runs[-1]["versions_added"] == 1
    assert len({r["settings_fingerprint"] for r in runs}) == 1


# -- database handling ----------------------------------------------------------------
def test_db_upgrade_then_current(invoke, db, head_revision_independent):
    missing = invoke("db", "current")
    assert missing.exit_code != 0
    assert not db.exists()

    upgraded = invoke("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert head_revision_independent in upgraded.stdout
    current = invoke("db", "current")
    assert current.exit_code == 0, current.output
    assert current.stdout.split()[0] == head_revision_independent
    assert "(head)" in current.stdout
    # upgrading again is harmless
    assert invoke("db", "upgrade").exit_code == 0


def _free_pages(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        connection.close()


def test_db_vacuum_gives_back_free_pages_and_keeps_every_row(invoke, db, seed_copies, tmp_path):
    """`db vacuum` rebuilds the file: the pages a forgotten document freed are given back,
    and everything the database answers is as before."""
    assert invoke("ingest", BELTA_SEED, TASS_SEED, seed_copies["exact"], seed_copies["near"]).exit_code == 0
    forgotten = invoke("forget", seed_copies["near"], "--yes")
    assert forgotten.exit_code == 0, forgotten.output
    assert _free_pages(db) > 0  # what the rebuild gives back
    reads = (("report", "--format", "json"), ("inspect", "documents", "--format", "json"))
    before = {args: invoke(*args).stdout for args in reads}
    size_before = db.stat().st_size + (Path(f"{db}-wal").stat().st_size if Path(f"{db}-wal").exists() else 0)

    result = invoke("db", "vacuum", "--format", "json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["backend"] == "sqlite" and done["database"] == str(db)
    assert done["bytes_before"] == size_before
    assert done["bytes_after"] < done["bytes_before"]
    assert done["bytes_after"] == db.stat().st_size  # the log was emptied back into the file
    assert _free_pages(db) == 0
    for args, output in before.items():
        assert invoke(*args).stdout == output, args
    assert invoke("db", "vacuum").stdout.startswith(f"{db}: rebuilt in ")


def test_db_vacuum_beside_a_reader_says_what_stays_in_the_log(invoke, db, seed_copies):
    """A reader holding the old pages (another program with the database open) keeps the
    rewritten pages in the log; the command finishes and says so instead of waiting."""
    assert invoke("ingest", BELTA_SEED, seed_copies["near"]).exit_code == 0
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM document").fetchone()
    try:
        done = invoke("db", "vacuum", "--format", "json")
        said = invoke("db", "vacuum")
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert done.exit_code == 0, done.output
    left = json.loads(done.stdout)["log_bytes_left"]
    assert left > 0
    assert said.exit_code == 0 and "in the log" in said.stdout


def test_db_vacuum_refuses_without_room_and_changes_nothing(invoke, db, seed_copies, monkeypatch):
    from provenance.db import maintenance

    assert invoke("ingest", BELTA_SEED, seed_copies["near"]).exit_code == 0
    assert invoke("forget", seed_copies["near"], "--yes").exit_code == 0
    free_before = _free_pages(db)
    report = invoke("report", "--format", "json").stdout
    monkeypatch.setattr(maintenance.shutil, "disk_usage", lambda where: shutil._ntuple_diskusage(10**9, 10**9, 0))
    result = invoke("db", "vacuum")
    assert result.exit_code != 0
    message = one_line(result.stderr)
    assert str(db) in message and "free" in message and "MB" in message
    assert _free_pages(db) == free_before
    assert invoke("report", "--format", "json").stdout == report


def test_a_write_lock_held_past_the_wait_ends_in_one_line_and_loses_nothing(invoke, db, monkeypatch):
    """Another process holding SQLite's write lock longer than the busy timeout (a long `db
    vacuum`, a sqlite3 shell in a transaction) stops a writing command with one line, not a
    traceback; what was stored stays, and the same command works once the lock is let go."""
    from provenance.db import session as session_module

    assert invoke("ingest", BELTA_SEED).exit_code == 0
    monkeypatch.setattr(session_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for command in (("ingest", TASS_SEED), ("forget", BELTA_SEED, "--yes")):
            result = invoke(*command)
            assert result.exit_code != 0, command
            message = one_line(result.stderr)
            assert str(db) in message and "write lock" in message and "run the command again" in message
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert document_count(db) == 1
    assert invoke("ingest", TASS_SEED).exit_code == 0
    assert document_count(db) == 2


def test_a_busy_database_met_by_a_read_sent_to_the_driver_ends_in_one_line(invoke, db, monkeypatch):
    """The reads made for every listed row go straight to the driver (db.bulk.select_in and
    plain_rows), so its "database is locked" arrives unwrapped by SQLAlchemy: it too ends the command with
    one line that says what happened, not a traceback."""
    from provenance import report as reporting

    assert invoke("ingest", BELTA_SEED, TASS_SEED).exit_code == 0

    def busy(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(reporting, "select_in", busy)
    monkeypatch.setattr(reporting, "plain_rows", busy)
    result = invoke("report", "--format", "json")
    assert result.exit_code != 0
    message = one_line(result.stderr)
    assert str(db) in message and "database is locked" in message and "run the command again" in message
    monkeypatch.undo()
    assert invoke("report", "--format", "json").exit_code == 0


def test_db_vacuum_names_a_busy_database_and_a_full_disk():
    """The driver's errors during VACUUM become one line that says what to do."""
    from provenance.db.maintenance import _vacuum_error

    locked = str(_vacuum_error("big.db", sqlite3.OperationalError("database is locked")))
    assert "big.db" in locked and "another process is writing" in locked and "again" in locked
    full = str(_vacuum_error("big.db", sqlite3.OperationalError("database or disk is full")))
    assert "big.db" in full and "nothing was changed" in full and "SQLITE_TMPDIR" in full


@pytest.mark.parametrize("command", [["inspect"], ["report"], ["db", "current"], ["db", "upgrade"], ["db", "vacuum"],
                                     ["ingest", "SEED"]])
def test_file_that_is_not_a_database_is_refused(invoke, tmp_path, command):
    notes = tmp_path / "notes.txt"
    original = b"These are my notes, not a database.\n"
    notes.write_bytes(original)
    args = [str(BELTA_SEED) if a == "SEED" else a for a in command]
    result = invoke(*args, db_path=notes)
    assert result.exit_code != 0
    message = one_line(result.stderr)
    assert str(notes) in message or notes.name in message
    assert "database" in message
    assert notes.read_bytes() == original


@pytest.mark.parametrize("command", [["inspect"], ["report"], ["db", "current"], ["db", "upgrade"], ["db", "vacuum"],
                                     ["ingest", "SEED"]])
def test_unknown_schema_revision_is_refused(invoke, db, command):
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('f00dfacef00d')")
    connection.close()
    args = [str(BELTA_SEED) if a == "SEED" else a for a in command]
    result = invoke(*args)
    assert result.exit_code != 0
    message = one_line(result.stderr)
    assert "upgrade provenance" in message
    assert "f00dfacef00d" in message
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    connection.close()
    assert tables == {"alembic_version"}
    assert revision == [("f00dfacef00d",)]


def test_a_database_in_a_folder_that_does_not_exist_is_named_with_the_fix(runner, tmp_path):
    """SQLite cannot create a file in a missing folder; the error names the folder and the fix."""
    from provenance.cli import cli

    db = tmp_path / "not-made" / "news.db"
    result = runner.invoke(cli, ["--db", str(db), "ingest", str(BELTA_SEED)])
    assert result.exit_code != 0
    message = one_line(result.stderr)
    assert f"the folder {db.parent} does not exist" in message
    assert "create it or pass another --db" in message
    assert not db.parent.exists()


def test_foreign_sqlite_database_is_refused(invoke, db):
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    connection.close()
    result = invoke("ingest", BELTA_SEED)
    assert result.exit_code != 0
    assert "not a provenance database" in one_line(result.stderr)
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    connection.close()
    assert tables == {"customers"}


# -- bad input ------------------------------------------------------------------------
def _write_bad(tmp_path: Path, kind: str, belta_text: str) -> tuple[Path, tuple[str, ...]]:
    """A bad input file of ``kind`` and words one of which its error line must contain."""
    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)
    if kind == "binary":
        path = folder / "picture.txt"
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)) * 4)
        return path, ("binary",)
    if kind == "undecodable":
        path = folder / "garbled.txt"
        rng = random.Random(20261123)
        path.write_bytes(bytes(rng.randrange(128, 256) for _ in range(4096)))
        return path, ("encoding", "decode")
    if kind == "empty":
        path = folder / "empty.txt"
        path.write_bytes(b"")
        return path, ("empty", "no text")
    if kind == "whitespace":
        path = folder / "blank.txt"
        path.write_text("   \n\t\n  \r\n   ", encoding="utf-8")
        return path, ("whitespace", "no text")
    if kind == "jsonl":
        path = folder / "feed.jsonl"
        path.write_text(json.dumps({"id": "ok", "text": belta_text[:600] + " jsonl line"}) + "\n{not json}\n",
                        encoding="utf-8")
        return path, ("JSON",)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["binary", "undecodable", "empty", "whitespace", "jsonl"])
def test_bad_input_is_skipped_and_reported(ingest_result, db, tmp_path, tass_text, belta_text, kind):
    good = tmp_path / "good" / "article.txt"
    good.parent.mkdir()
    good.write_text(tass_text, encoding="utf-8")
    bad, reasons = _write_bad(tmp_path, kind, belta_text)

    result, summary = ingest_result(good, bad)
    assert result.exit_code == 1, result.output  # a skipped input is reported in the exit code
    assert summary["failed"] == 0
    assert summary["skipped"] == 1
    assert summary["documents_added"] == (2 if kind == "jsonl" else 1)
    assert len(summary["problems"]) == 1
    problem = summary["problems"][0]
    assert str(bad) in problem and "\n" not in problem
    assert any(word.lower() in problem.lower() for word in reasons), problem
    assert len(error_lines(result, str(bad))) == 1
    if kind == "jsonl":
        assert f"{bad}:2" in problem
    with db_session(db) as session:
        assert latest_document(session, good) is not None
        stored_paths = {d.path for d in session.scalars(select(Document))}
        run = session.get(IngestRun, summary["run_id"])
        assert run.skipped == 1 and run.failed == 0
    assert str(bad) not in stored_paths
    if kind == "jsonl":
        assert f"{bad}#ok" in stored_paths


@pytest.mark.parametrize("kind", ["binary", "undecodable", "empty", "whitespace"])
def test_only_bad_input_exits_non_zero(ingest_result, db, tmp_path, belta_text, kind):
    bad, _ = _write_bad(tmp_path, kind, belta_text)
    result, summary = ingest_result(bad)
    assert result.exit_code != 0
    assert summary["documents_added"] == 0 and summary["skipped"] == 1
    assert document_count(db) == 0


def test_missing_path_is_skipped_and_the_rest_is_ingested(ingest_result, db, tmp_path, tass_text):
    good = tmp_path / "good" / "article.txt"
    good.parent.mkdir()
    good.write_text(tass_text, encoding="utf-8")
    missing = tmp_path / "nowhere" / "missing.txt"
    result, summary = ingest_result(good, missing)
    assert result.exit_code == 1, result.output  # a skipped input is reported in the exit code
    assert summary["skipped"] == 1 and summary["failed"] == 0 and summary["documents_added"] == 1
    assert len(summary["problems"]) == 1
    assert str(missing) in summary["problems"][0] and "no such file" in summary["problems"][0]
    assert len(error_lines(result, str(missing))) == 1
    with db_session(db) as session:
        assert latest_document(session, good) is not None
        assert session.get(IngestRun, summary["run_id"]).skipped == 1

    alone, alone_summary = ingest_result(missing)
    assert alone.exit_code != 0
    assert alone_summary["documents_added"] == 0 and alone_summary["skipped"] == 1


def test_unreadable_file_is_skipped(ingest_result, db, tmp_path, tass_text, belta_text):
    good = tmp_path / "good" / "article.txt"
    good.parent.mkdir()
    good.write_text(tass_text, encoding="utf-8")
    locked = tmp_path / "locked.txt"
    locked.write_text(belta_text, encoding="utf-8")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running with privileges that read a mode-000 file (root)")
        result, summary = ingest_result(good, locked)
    finally:
        locked.chmod(0o644)
    assert result.exit_code == 0, result.output
    assert summary["skipped"] == 1 and summary["failed"] == 0 and summary["documents_added"] == 1
    assert str(locked) in summary["problems"][0] and "permission" in summary["problems"][0].lower()
    assert len(error_lines(result, str(locked))) == 1
    with db_session(db) as session:
        assert latest_document(session, locked) is None


def test_folder_ingest_mixes_good_and_bad(ingest_result, db, tmp_path, seeds_dir, belta_text):
    folder = tmp_path / "mixed"
    shutil.copytree(seeds_dir, folder)
    bad = [_write_bad(tmp_path, kind, belta_text)[0] for kind in ("binary", "empty", "whitespace")]
    for path in bad:
        shutil.move(path, folder / path.name)
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4 not a supported suffix")
    result, summary = ingest_result(folder)
    assert result.exit_code == 1, result.output  # a skipped input is reported in the exit code
    assert summary["documents_added"] == 2
    assert summary["skipped"] == len(bad)
    assert summary["files_seen"] == 2 + len(bad)  # the .pdf is not taken from a folder
    for path in bad:
        assert sum(str(folder / path.name) in p for p in summary["problems"]) == 1


@pytest.mark.parametrize("name", ["a?b.db", "c#d.db", "e%20f.db", "g h.db"])
def test_database_file_names_with_url_characters(invoke, tmp_path, seeds_dir, name):
    """'?', '#' and '%' are ordinary characters in a file name, not URL syntax."""
    db = tmp_path / name
    result = invoke("ingest", seeds_dir, "--quiet", db_path=db)
    assert result.exit_code == 0, result.output
    assert db.exists() and sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == [name]
    summary = json.loads(invoke("inspect", "--format", "json", db_path=db).stdout)
    assert summary["database"] == str(db) and summary["documents"] == 2


def test_passage_threshold_sets_the_passage_band_layout_once(invoke, db, seeds_dir):
    from provenance import manifest

    assert invoke("ingest", seeds_dir, "--quiet", "--passage-threshold", "0.4").exit_code == 0
    with db_session(db) as session:
        stored = manifest.load(session)
    assert (stored.passage.lsh_threshold, stored.passage.bands, stored.passage.rows) == (0.4, 32, 4)
    assert stored.document == Settings().document  # only the passage layout changed
    again = invoke("ingest", seeds_dir, "--passage-threshold", "0.5")
    assert again.exit_code != 0 and "passage.lsh_threshold: 0.4 != 0.5" in again.output
    assert invoke("ingest", seeds_dir, "--quiet").exit_code == 0  # omitting it uses the stored one


def test_lone_band_bucket_max_is_set_by_the_first_ingest(invoke, db, seeds_dir):
    from provenance import manifest

    assert invoke("ingest", seeds_dir, "--quiet", "--lone-band-bucket-max", "0").exit_code == 0
    with db_session(db) as session:
        assert manifest.load(session).lone_band_bucket_max == 0
    again = invoke("ingest", seeds_dir, "--lone-band-bucket-max", "20")
    assert again.exit_code != 0 and "lone_band_bucket_max: 0 != 20" in again.output
    assert invoke("ingest", seeds_dir, "--quiet", "--lone-band-bucket-max", "0").exit_code == 0


def test_a_database_signed_before_the_lone_band_limit_keeps_every_lone_band(invoke, db, seeds_dir, seed_copies):
    """A new database records the lone-band bucket limit; one whose manifest predates the
    setting reads as 0 (every shared band makes a candidate, as when it was signed), and
    further ingests into it are neither refused nor change it."""
    from provenance import manifest
    from provenance.settings import LONE_BAND_BUCKET_MAX

    assert invoke("ingest", seeds_dir, "--quiet").exit_code == 0
    with db_session(db) as session:
        assert manifest.load(session).lone_band_bucket_max == LONE_BAND_BUCKET_MAX > 0
        entry = session.get(ManifestEntry, "settings")
        older = json.loads(entry.value)
        del older["lone_band_bucket_max"]
        entry.value = json.dumps(older)
        session.commit()
    assert invoke("ingest", seed_copies["near"], "--quiet", "--num-perm", "128").exit_code == 0
    with db_session(db) as session:
        assert manifest.load(session).lone_band_bucket_max == 0
        assert "lone_band_bucket_max" not in json.loads(session.get(ManifestEntry, "settings").value)


def test_ingest_leaves_planner_statistics(invoke, db, seeds_dir):
    """Without statistics SQLite plans the report's derivation query as documents x
    documents; an ingest that stored documents leaves them for the next reader."""
    assert invoke("ingest", seeds_dir, "--quiet").exit_code == 0
    with sqlite3.connect(db) as connection:
        analysed = {row[0] for row in connection.execute("SELECT DISTINCT tbl FROM sqlite_stat1")}
    assert {"document", "passage"} <= analysed


def test_a_long_ingest_after_a_small_one_refreshes_planner_statistics_as_it_grows(invoke, db, tmp_path, monkeypatch):
    """Statistics left by a first ingest of one file describe one document. A long run
    after it analyses again each time its stored documents double, not only at its end:
    planned for one document, reading the candidates scanned every stored passage for each
    new document (1,500 documents took 623 s after one, 18 s into a new database)."""
    from provenance import ingest as ingest_module

    words = "grain harbour council tram orchid snow chess bakery museum river budget potato".split()
    folder = tmp_path / "many"
    folder.mkdir()
    for number in range(40):
        chosen = random.Random(number).sample(words * 3, 30)
        (folder / f"{number:02}.txt").write_text(f"Story {number}. " + " ".join(chosen) + ".\n", encoding="utf-8")
    first, *rest = sorted(folder.iterdir())
    assert invoke("ingest", first, "--quiet").exit_code == 0
    monkeypatch.setattr(ingest_module, "BATCH_DOCUMENTS", 2)
    analysed = []  # (documents stored, documents the statistics count) after each refresh
    real_refresh = ingest_module.refresh_statistics

    def recording_refresh(engine):
        real_refresh(engine)
        with sqlite3.connect(db) as connection:
            stored = connection.execute("SELECT count(*) FROM document").fetchone()[0]
            counted = connection.execute(
                "SELECT stat FROM sqlite_stat1 WHERE tbl = 'document' AND idx = 'ix_document_is_latest_path'"
            ).fetchone()[0]
        analysed.append((stored, int(counted.split()[0])))

    monkeypatch.setattr(ingest_module, "refresh_statistics", recording_refresh)
    assert invoke("ingest", *rest, "--quiet", "--workers", "1").exit_code == 0
    during, at_end = analysed[:-1], analysed[-1]
    assert [stored for stored, _ in during] == [3, 5, 9, 17, 33], "after 2, 4, 8, 16 and 32 of the run's documents"
    assert (33, 33) in during, "analysed again before the run's end"
    assert at_end[0] == 40


def test_an_ingest_that_waits_on_the_disk_reads_buckets_ahead_and_stores_the_same(
    runner, tmp_path, belta_text, tass_text, monkeypatch,
):
    """Once storing a document has waited on the disk, other connections read ahead the
    passage buckets of the documents after it, in this batch and every later one, and the
    sketches of the candidates there; what the ingest stores is what it stores without."""
    from provenance import index, ingest as ingest_module
    from provenance.cli import cli

    folder = tmp_path / "desk"
    folder.mkdir()
    texts = [belta_text, tass_text, *(near_copy(text, changes=changes) for changes in (2, 6, 12)
                                      for text in (belta_text, tass_text))]
    for number, body in enumerate(texts):
        (folder / f"{number:02}.txt").write_text(body, encoding="utf-8")
    monkeypatch.setattr(ingest_module, "BATCH_DOCUMENTS", 3)
    monkeypatch.setattr(index, "RECENT_BANDS_MAX", 1)  # merged into the big table, read ahead, after each batch
    asked, answers = record_read_ahead(monkeypatch, ingest_module)

    def ingested(name: str, waited: bool) -> tuple[Path, dict]:
        monkeypatch.setattr(ingest_module, "waited_on_disk", lambda since: waited)
        target = tmp_path / name
        result = runner.invoke(cli, ["--db", str(target), "ingest", str(folder), "--quiet", "--workers", "1"])
        assert result.exit_code == 0, result.output
        shown = runner.invoke(cli, ["--db", str(target), "report", "--format", "json", "--no-timestamps"])
        assert shown.exit_code == 0, shown.output
        return target, json.loads(shown.stdout)

    _, without = ingested("without.db", waited=False)
    assert asked == [] and without["derivations"]
    target, read_ahead = ingested("with.db", waited=True)
    assert read_ahead == without
    # Read ahead from the first document's store on: every later document, in order, with
    # the keys of the bands it stored (and of any passage later found to be boilerplate).
    with db_session(target) as session:
        ids = session.scalars(select(Document.id).order_by(Document.path)).all()
        stored_keys = [set(session.scalars(text(
            "SELECT band_key FROM passage_band JOIN passage ON passage.id = passage_id WHERE document_id = :d"
            " UNION SELECT band_key FROM passage_band_recent JOIN passage ON passage.id = passage_id"
            " WHERE document_id = :d"), {"d": document_id})) for document_id in ids]
    assert len(asked) == len(texts) - 1
    assert all(keys and keys <= set(values) for keys, (_, values) in zip(stored_keys[1:], asked))
    # Every statement ran on the other connections; the near copies' buckets in the big
    # table held the passages of the originals committed before them, whose sketches were read.
    assert None not in answers and any(count for ((count,),) in answers)


def test_a_skipped_input_makes_the_exit_code_non_zero(invoke, db, tmp_path, belta_text):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text(belta_text, encoding="utf-8")
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")
    result = invoke("ingest", folder, "--format", "json")
    assert result.exit_code != 0
    summary = json.loads(result.stdout)
    assert summary["documents_added"] == 1 and summary["skipped"] == 1
    assert document_count(db) == 1  # the good file is stored all the same


def test_a_document_over_the_length_limit_is_refused_with_the_limit_stated(invoke, db, tmp_path, belta_text, monkeypatch):
    """A 'document' of one enormous line is refused before it is segmented, with the limit
    named; the rest of the ingest goes on."""
    from provenance import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "MAX_DOCUMENT_CHARS", 50_000)  # the real limit is 5 million
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "article.txt").write_text(belta_text, encoding="utf-8")
    (folder / "dump.txt").write_text(("word " * 20_000).strip(), encoding="utf-8")  # one 100,000-character line
    result = invoke("ingest", folder, "--format", "json")
    summary = json.loads(result.stdout)
    assert result.exit_code == 1 and summary["documents_added"] == 1 and summary["skipped"] == 1
    [problem] = summary["problems"]
    assert "dump.txt" in problem and "99,999 characters, over the 50,000-character limit" in problem


def test_a_one_document_report_shows_what_the_whole_report_says_about_it(report_json, db, populated):
    """`report --document` reads only that document's group of duplicates; what it shows
    must be exactly the whole report's clusters and derivations that involve the document,
    including for a document superseded by a newer version (no clusters, not listed)."""
    whole = report_json(db)
    with db_session(db) as session:
        documents = session.scalars(select(Document)).all()
    assert any(not d.is_latest for d in documents) and any(c["size"] >= 3 for c in whole["clusters"])
    for document in documents:
        focused = report_json(db, "--document", document.id)
        involved = [c for c in whole["clusters"]
                    if c["canonical"]["id"] == document.id or any(m["id"] == document.id for m in c["members"])]
        assert focused["clusters"] == involved
        assert [d["id"] for d in focused["documents"]] == ([document.id] if document.is_latest else [])
        assert focused["derivations"] == [d for d in whole["derivations"]
                                          if document.id in (d["derived"]["id"], d["source"]["id"])]


def test_clusters_are_the_same_however_their_documents_are_read(db, populated, monkeypatch):
    """Clustered documents are read by id from the index that holds their columns (on SQLite),
    or handed in as the report read them: the clusters are the same either way, dates included."""
    from datetime import datetime

    from sqlalchemy import update

    from provenance import report as reporting

    sent: list[str] = []
    real_select_in = reporting.select_in

    def recording_select_in(session, sql, values, *args, **kwargs):
        sent.append(sql)
        return real_select_in(session, sql, values, *args, **kwargs)

    monkeypatch.setattr(reporting, "select_in", recording_select_in)
    with db_session(db) as session:
        biggest = max(reporting.clusters(session, 0.8), key=lambda c: c["size"])
        dated = max(m["id"] for m in biggest["members"])  # dated earliest: it becomes the canonical
        session.execute(update(Document).where(Document.id == dated).values(published_at=datetime(2001, 2, 3, 4, 5)))
        sent.clear()
        read_here = reporting.clusters(session, 0.8)
        members_read = [sql for sql in sent if "published_at" in sql]
        handed_in = reporting.clusters(session, 0.8, {
            row[0]: row for row in session.execute(select(*reporting._REPORT_COLUMNS)).all()
        })
        assert len(members_read) == 1, sent
        plan = session.connection().exec_driver_sql(
            f"EXPLAIN QUERY PLAN {members_read[0].replace('{in}', 'IN (1, 2)')}").all()
    assert any(c["size"] >= 3 for c in read_here)
    assert read_here == handed_in
    assert [c["canonical"] for c in read_here if c["canonical"]["id"] == dated][0]["reason"] == (
        "earliest published_at (2001-02-03T04:05:00)")
    # Told, not left to the planner: with statistics of a big database it looked each row up.
    assert "INDEXED BY ix_document_listing" in members_read[0]
    assert any("COVERING INDEX ix_document_listing" in row[-1] for row in plan), plan


def test_a_member_never_verified_against_its_canonical_gets_the_estimate(report_json, db, populated):
    """A near copy linked to its cluster through another member, whose pair with the
    canonical was never a candidate (its row removed here), is scored to the canonical by
    the MinHash estimate of the two stored signatures, read for that cluster."""
    from sqlalchemy import delete

    from provenance.db.models import DocumentPair
    from provenance.sketch import estimate_jaccard, from_blob

    before = report_json(db)
    cluster = next(c for c in before["clusters"]
                   if any(m["relation"] == "exact" for m in c["members"])
                   and any(m["relation"] == "near-duplicate" for m in c["members"]))
    canonical = cluster["canonical"]["id"]
    near = next(m["id"] for m in cluster["members"] if m["relation"] == "near-duplicate")
    with db_session(db) as session:
        removed = session.execute(delete(DocumentPair).where(
            DocumentPair.first_id == min(canonical, near), DocumentPair.second_id == max(canonical, near)))
        assert removed.rowcount == 1
        signatures = {d.id: from_blob(d.signature) for d in session.scalars(select(Document).where(
            Document.id.in_([canonical, near])))}
    after = cluster_with(report_json(db), near)
    assert after["canonical"]["id"] == canonical, "still linked through the exact copy"
    member = next(m for m in after["members"] if m["id"] == near)
    assert member["similarity"] == round(estimate_jaccard(signatures[canonical], signatures[near]), 4)


def test_the_reports_signature_comparison_is_the_minhash_estimate():
    """report.stored_agreement reads stored bytes without numpy; it must give exactly what
    sketch.estimate_jaccard gives, and refuse signatures of different lengths."""
    import numpy as np

    from provenance.report import stored_agreement
    from provenance.sketch import estimate_jaccard, from_blob

    rng = np.random.default_rng(7)
    for agreeing in (0, 1, 37, 128):
        a = rng.integers(0, 2**32, 128, dtype=np.uint32)
        b = a.copy()
        b[agreeing:] ^= np.uint32(1 << 31)  # differ only in the top bit
        blob_a, blob_b = a.astype("<u4").tobytes(), b.astype("<u4").tobytes()
        assert stored_agreement(blob_a, blob_b) == estimate_jaccard(from_blob(blob_a), from_blob(blob_b)) == agreeing / 128
    with pytest.raises(ValueError):
        stored_agreement(bytes(512), bytes(256))


def test_report_and_inspect_do_not_import_numpy_or_lxml(db, populated):
    """Each command pays for what it imports: reading stored results (clusters of verified
    pairs) needs neither numpy nor the HTML parser, which took a tenth of a second of every
    `report` and `inspect` whatever the corpus size."""
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from provenance.cli import cli
        for args in (["report", "--format", "json"], ["inspect", "--format", "json"]):
            result = CliRunner().invoke(cli, ["--db", {str(db)!r}, *args])
            assert result.exit_code == 0, result.output
            assert "clusters" in result.output
        print(sorted(name for name in ("numpy", "lxml") if name in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_run_summary_says_how_long_it_took(invoke, seeds_dir, tmp_path, tass_text):
    """A user ingesting a big corpus wants the pace: JSON has the run's wall seconds, the
    text summary the seconds and documents per second."""
    result = invoke("ingest", seeds_dir, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert 0 < summary["seconds"] < 600
    unchanged = invoke("ingest", seeds_dir)
    assert unchanged.exit_code == 0, unchanged.output
    assert re.search(r"; [\d,]+\.\d s$", unchanged.stdout.strip()), "nothing stored: the time, no pace"
    edited = tmp_path / "edited.txt"
    edited.write_text(tass_text + "\nA paragraph added by the desk.\n", encoding="utf-8")
    stored = invoke("ingest", edited)
    assert stored.exit_code == 0, stored.output
    assert re.search(r"; [\d,]+\.\d s, [\d,]+\.\d document\(s\)/s$", stored.stdout.strip())


def test_the_json_report_is_written_as_it_is_built_and_is_the_whole_report(invoke, db, populated, monkeypatch):
    """`report --format json` builds its documents and derivations a batch at a time while
    it writes them, so a report of 100,000 documents is never whole in memory; what it
    writes is exactly the whole report encoded at once, whatever the batch sizes."""
    from provenance import render, report as reporting
    from provenance.render import to_json

    with db_session(db) as session:
        whole = reporting.build(session, timestamps=False)
    assert len(whole["derivations"]) >= 2 and any(d["passages"] for d in whole["derivations"])
    expected = to_json(whole) + "\n"
    for batch, encoded_together in ((1, 1), (2, 3), (10**6, 1000)):
        monkeypatch.setattr(reporting, "DERIVATION_BATCH", batch)
        monkeypatch.setattr(render, "JSON_BATCH", encoded_together)
        result = invoke("report", "--format", "json", "--no-timestamps")
        assert result.exit_code == 0, result.output
        assert result.stdout == expected

    batches = []
    original = reporting._derivation_batch
    monkeypatch.setattr(reporting, "_derivation_batch", lambda *a: batches.append(1) or original(*a))
    monkeypatch.setattr(reporting, "DERIVATION_BATCH", 1)
    with db_session(db) as session:
        streamed = reporting.build(session, timestamps=False, stream=True)
        assert batches == [] and len(streamed["derivations"]) == len(whole["derivations"])
        entries = iter(streamed["derivations"])
        assert next(entries) == whole["derivations"][0] and len(batches) == 1, "one batch read, not all"
        assert [next(entries), *entries] == whole["derivations"][1:]


def test_a_report_whose_reads_wait_on_the_disk_reads_the_rest_ahead_and_writes_the_same(
    invoke, db, populated, monkeypatch,
):
    """Once a batch's evidence reads have waited on the disk, the JSON report reads the
    passage matches and texts of the batches after it ahead on connections of its own (to
    warm a cold page cache); it writes what it writes without, and reads nothing ahead when
    its reads did not wait."""
    from provenance import report as reporting

    asked, answers = record_read_ahead(monkeypatch, reporting)
    monkeypatch.setattr(reporting, "DERIVATION_BATCH", 1)
    monkeypatch.setattr(reporting, "waited_on_disk", lambda since: False)
    warm = invoke("report", "--format", "json", "--no-timestamps")
    assert warm.exit_code == 0, warm.output
    derivations = json.loads(warm.stdout)["derivations"]
    assert len(derivations) >= 3 and asked == []

    monkeypatch.setattr(reporting, "waited_on_disk", lambda since: True)
    result = invoke("report", "--format", "json", "--no-timestamps")
    assert result.exit_code == 0, result.output
    assert result.stdout == warm.stdout
    # A batch of one derivation at a time: after the first, each one's matches, then its two
    # documents' texts.
    later = derivations[1:]
    assert [sql for sql, _ in asked] == [reporting._MATCHES_AHEAD, reporting._TEXTS_AHEAD] * len(later)
    pairs = [sorted({entry["derived"]["id"], entry["source"]["id"]}) for entry in later]
    assert [values for sql, values in asked if sql == reporting._TEXTS_AHEAD] == pairs
    with db_session(db) as session:
        lengths = dict(session.execute(select(Document.id, func.length(Document.text))).all())
        ends = [session.scalar(select(func.max(PassageMatch.derived_end)).where(PassageMatch.derivation_id.in_(values)))
                for sql, values in asked if sql == reporting._MATCHES_AHEAD]
    # What the other connections read is the rows themselves, every statement answered.
    assert answers[1::2] == [[(sum(lengths[i] for i in pair),)] for pair in pairs]
    assert answers[0::2] == [[(end,)] for end in ends] and any(ends)


def test_waiting_on_the_disk_is_told_from_computing_and_from_other_waits():
    """A thread whose reads fetched enough from storage and that waited longer than a fifth
    of the time has waited on the disk. One that only computed, or nearly, has not; nor has
    one that waited while fetching nothing or a few pages (for the CPU on a busy machine, or
    for its writes), unless the system does not say what was fetched."""
    from provenance.db.readahead import DISK_FETCH_MIN_BYTES as enough, DISK_WAIT_MIN_SECONDS as least, Clocks, \
        waited_on_disk

    def wait(waited: float, computed: float, fetched=enough, before=0) -> bool:
        return waited_on_disk(Clocks(100.0, 7.0, before), Clocks(100.0 + waited + computed, 7.0 + computed, fetched))

    assert wait(4 * least, 0) and wait(4 * least, 4 * least)
    assert wait(4 * least, 15 * least)  # waited over a fifth of the time
    assert not wait(4 * least, 17 * least) and not wait(2 * least, 80 * least)
    assert not wait(0, 40 * least) and not wait(least, 0)
    assert not wait(4 * least, 0, fetched=0) and not wait(4 * least, 0, fetched=enough, before=enough)
    assert not wait(4 * least, 0, fetched=enough - 1) and wait(4 * least, 0, fetched=2 * enough, before=enough)
    assert wait(4 * least, 0, fetched=None) and wait(4 * least, 0, before=None)


def _on_tmpfs(path) -> bool:
    """Whether ``path`` lies on a file system held in memory (no storage to fetch from)."""
    mounts = []
    with open("/proc/self/mounts") as table:
        for line in table:
            fields = line.split()
            mounts.append((fields[1], fields[2]))
    resolved = str(Path(path).resolve())
    _, kind = max(((m, k) for m, k in mounts if resolved == m or resolved.startswith(m.rstrip("/") + "/")),
                      key=lambda mount: len(mount[0]))
    return kind in ("tmpfs", "ramfs")


def test_a_thread_is_told_what_its_reads_fetched_from_storage(tmp_path):
    """Sleeping fetches nothing; reading a file the page cache no longer holds does, and
    reading it again from the page cache does not."""
    import time

    from provenance.db.readahead import DISK_WAIT_MIN_SECONDS, clocks, fetched_from_storage, waited_on_disk

    if fetched_from_storage() is None:
        pytest.skip("this system does not account a thread's reads (Linux's /proc/thread-self/io)")
    if _on_tmpfs(tmp_path):
        pytest.skip("the temporary directory is held in memory: nothing to fetch from storage")
    path = tmp_path / "pages"
    path.write_bytes(os.urandom(1 << 22))
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # only clean pages leave the page cache when told to
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        since = clocks()
        time.sleep(4 * DISK_WAIT_MIN_SECONDS)
        assert fetched_from_storage() == since.fetched and not waited_on_disk(since)
        before = fetched_from_storage()
        assert len(os.pread(descriptor, 1 << 22, 0)) == 1 << 22
        fetched = fetched_from_storage()
        assert fetched - before >= 1 << 20
        assert len(os.pread(descriptor, 1 << 22, 0)) == 1 << 22
        assert fetched_from_storage() == fetched
    finally:
        os.close(descriptor)


@pytest.mark.parametrize("encoded_together", [1, 2, 3, 1000])
def test_json_written_a_batch_of_entries_at_a_time_is_the_json_of_the_whole(monkeypatch, encoded_together):
    """render.write_json encodes a list's entries several at a time; the text is what
    to_json gives for the whole, at any batch size, for lists of any length, for
    iterables other than lists, and for a batch the standard library has to encode,
    written as text or as bytes."""
    from provenance import render

    monkeypatch.setattr(render, "JSON_BATCH", encoded_together)
    entries = [{"id": i, "path": f"doc{i}.txt" if i != 3 else "d\u00e9j\u00e0 vu.txt", "spans": [[i, i + 1]],
                "note": "line\nbreak" if i % 2 else None}
               for i in range(7)]
    refused = [{"id": 1, "path": "caf\udce9.txt"}, {"id": 2, "nested": {"empty": [], "x": {}}}]
    data = {"schema": "test/1", "threshold": 0.8, "none": None, "summary": {"documents": 7},
            "empty": [], "one": entries[:1], "many": entries, "refused": refused, "streamed": iter(entries)}
    whole = {**data, "streamed": entries}
    written = io.StringIO()
    render.write_json(data, written)
    assert written.getvalue() == render.to_json(whole)
    assert json.loads(written.getvalue())["streamed"] == entries
    # A text stream over bytes (stdout, a file) is given orjson's bytes straight, in order
    # with what is written as text before and after, and encoded as the stream would; one
    # in another encoding is written as text.
    for encoding in ("utf-8", "latin-1"):
        data["streamed"] = iter(entries)
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape")
        stream.write("before ")
        render.write_json(data, stream)
        stream.write(" after")
        stream.flush()
        assert raw.getvalue() == f"before {render.to_json(whole)} after".encode(encoding, "surrogateescape"), encoding


def test_a_whole_report_collects_garbage_less_often_and_puts_the_setting_back(invoke, populated, monkeypatch):
    """Writing a report builds hundreds of thousands of short-lived entries: the young-
    generation threshold is raised while it does (see provenance.collect), then restored."""
    import gc

    from provenance import render
    from provenance.collect import GC_THRESHOLD

    before = gc.get_threshold()
    during = []
    original = render.write_json
    monkeypatch.setattr(render, "write_json", lambda *a: during.append(gc.get_threshold()[0]) or original(*a))
    result = invoke("report", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["derivations"]
    assert during == [max(before[0], GC_THRESHOLD)]
    assert gc.get_threshold() == before


def test_a_json_report_that_fails_half_way_leaves_the_previous_file(invoke, db, populated, tmp_path, monkeypatch):
    from provenance import report as reporting

    target = tmp_path / "report.json"
    assert invoke("report", "--format", "json", "-o", target).exit_code == 0
    previous = target.read_text(encoding="utf-8")
    assert json.loads(previous)["derivations"]

    def fail_in_the_evidence(*args):
        raise ProvenanceError("the database went away")

    monkeypatch.setattr(reporting, "_derivation_batch", fail_in_the_evidence)
    result = invoke("report", "--format", "json", "-o", target)
    assert result.exit_code == 1 and "the database went away" in result.output
    assert target.read_text(encoding="utf-8") == previous
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_json_is_the_standard_librarys_json_however_it_is_encoded():
    """render.to_json encodes with orjson and falls back to the standard library for what
    orjson refuses; either way it is ``json.dumps(indent=2, ensure_ascii=False)``'s JSON."""
    from provenance.render import to_json

    plain = {"text": "Минск\n\"quoted\"\t\x01\u2028", "spans": [[0, 5], []], "empty": {}, "none": None,
             "flags": [True, False], "score": 0.8125, "count": 40641}
    assert to_json(plain) == json.dumps(plain, indent=2, ensure_ascii=False)
    refused = {"path": "caf\udce9.txt", "big": 2**70}
    assert to_json(refused) == json.dumps(refused, indent=2, ensure_ascii=False)
    floats = {"tiny": 1e-05, "huge": 1e16, "third": 1 / 3}
    assert json.loads(to_json(floats)) == floats


def test_a_dataset_plan_reads_no_passage_evidence(invoke, db, populated, monkeypatch):
    """`--format paths` and `jsonl` list documents and clusters only: the derivations'
    evidence and texts (most of a big report's reading) are not read for them."""
    from provenance import report as reporting

    def unexpected(*args):
        raise AssertionError("passage evidence read for a dataset plan")

    monkeypatch.setattr(reporting, "_derivation_batch", unexpected)
    for fmt in ("paths", "jsonl"):
        result = invoke("report", "--format", fmt)
        assert result.exit_code == 0, result.output
    assert [json.loads(line)["role"] for line in result.stdout.splitlines()].count("member") >= 2
    assert invoke("report", "--format", "csv").exit_code != 0, "csv lists derivations, so it reads them"


def test_a_dataset_plan_from_the_brief_listing_is_the_plan_of_the_whole_report(invoke, db, populated):
    """`--format jsonl`, `paths` and `csv` list each document's id and path only (read from an
    index), its clusters reading their members themselves: the plan is the whole report's, for
    every --keep, and the CSV the whole report's rows."""
    from provenance import render, report as reporting

    with db_session(db) as session:
        whole = reporting.build(session)
        rows = list(csv.reader(io.StringIO(render.report_csv(whole))))
        brief = reporting.build(session, brief=True)
        assert all(set(entry) == {"id", "path"} for entry in brief["documents"])
        plans = {keep: reporting.dataset_plan(whole, keep) for keep in ("canonical", "earliest", "none")}
    assert any(record["role"] == "member" for record in plans["canonical"])
    for keep, plan in plans.items():
        result = invoke("report", "--format", "jsonl", "--keep", keep)
        assert result.exit_code == 0, result.output
        assert [json.loads(line) for line in result.stdout.splitlines()] == plan
        paths = invoke("report", "--format", "paths", "--keep", keep)
        assert paths.stdout.splitlines() == [record["path"] for record in plan if not record["keep"]]
    table = invoke("report", "--format", "csv")
    assert table.exit_code == 0, table.output
    assert list(csv.reader(io.StringIO(table.stdout))) == rows and len(rows) > 3


def test_a_csv_report_lists_derivations_without_reading_their_evidence(invoke, db, populated, monkeypatch):
    """The CSV lists each derivation on one row, no passages: its passage matches and the
    texts they quote (most of a whole report's reading) are not read for it."""
    from provenance import report as reporting

    with db_session(db) as session:
        whole = reporting.build(session, timestamps=False)
    assert any(d["passages"] for d in whole["derivations"])
    statements = []
    original = reporting.select_in
    monkeypatch.setattr(reporting, "select_in", lambda session, sql, *a: statements.append(sql) or original(session, sql, *a))
    result = invoke("report", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert reporting._MATCHES not in statements and reporting._TEXTS not in statements
    listed = [row for row in csv.DictReader(io.StringIO(result.stdout)) if row["kind"] == "derivation"]
    assert [(int(row["document_id"]), int(row["other_id"]), row["relation"]) for row in listed] == [
        (d["derived"]["id"], d["source"]["id"], d["relation"]) for d in whole["derivations"]]
    assert invoke("report", "--format", "json").exit_code == 0
    assert reporting._MATCHES in statements, "the JSON report reads the evidence"


def test_a_json_report_written_to_a_link_a_pipe_or_a_private_file_keeps_what_it_was_written_to(
        invoke, db, populated, tmp_path):
    """The whole report replaces a regular file (through a symbolic link, keeping the file's
    permissions); what is not a regular file, such as /dev/null or a named pipe, is written
    to, never replaced by a file."""
    import stat
    import threading

    real = tmp_path / "real" / "report.json"
    real.parent.mkdir()
    real.write_text("old", encoding="utf-8")
    real.chmod(0o600)
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    assert invoke("report", "--format", "json", "-o", link).exit_code == 0
    assert link.is_symlink() and json.loads(real.read_text(encoding="utf-8"))["schema"] == "provenance.report/1"
    assert stat.S_IMODE(real.stat().st_mode) == 0o600

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()), daemon=True)
    reader.start()
    result = invoke("report", "--format", "json", "-o", pipe)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(pipe.stat().st_mode), "the pipe must not be replaced by a file"
    assert json.loads(received[0])["schema"] == "provenance.report/1"
