"""Lineage you can query: lineage tree, PROV export, SQL views and read-only SQL, forget.

Every test runs on SQLite and, when PROVENANCE_TEST_DB_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import prov.model as pm
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from provenance import inspect as inspection
from provenance.cli import cli
from provenance.db.models import (
    Boilerplate, BoilerplateDocument, Citation, Derivation, Document, DocumentBand, DocumentPair, Passage, PassageBand, PassageMatch, RecentPassageBand,
)
from provenance.db.session import database_url, make_engine, session_scope

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
SEED_000 = SEEDS / "000_21d20b42f286ae20.txt"
OTHER = (
    "Farmers in the Gomel region reported a record potato harvest this autumn, crediting favourable weather and "
    "new irrigation systems that were installed across the region last year."
)


def _engine(db):
    return make_engine(database_url(str(db)))


def run(db: Path | str, *args: str, ok: bool = True):
    result = CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def corpus(tmp_path: Path, db_url: str) -> tuple[str, dict[str, Path]]:
    """Seeds plus planted derivatives: a credited near-copy, an uncredited excerpt, a version."""
    db = db_url
    planted = tmp_path / "planted"
    planted.mkdir()
    text = SEED_000.read_text(encoding="utf-8")
    lines = text.split("\n")
    files = {
        "copy": planted / "copy.txt",
        "excerpt": planted / "excerpt.txt",
    }
    files["copy"].write_text("World Desk\n" + text.replace("significant", "major"), encoding="utf-8")
    files["excerpt"].write_text(OTHER + "\n" + "\n".join(lines[10:14]) + "\n", encoding="utf-8")
    run(db, "ingest", str(SEEDS))
    run(db, "ingest", str(planted))
    return db, files


def test_lineage_shows_derived_documents_under_their_source(corpus):
    db, files = corpus
    data = json.loads(run(db, "lineage", str(SEED_000), "--format", "json").stdout)
    assert data["document"]["path"] == str(SEED_000.resolve()) and data["sources"] == []
    derived = {node["path"]: node for node in data["derived"]}
    assert derived[str(files["copy"].resolve())]["relation"] == "near-duplicate"
    assert derived[str(files["copy"].resolve())]["credited"] is True
    assert derived[str(files["excerpt"].resolve())]["relation"] == "syndicated"
    assert derived[str(files["excerpt"].resolve())]["credited"] is False
    upward = json.loads(run(db, "lineage", str(files["excerpt"]), "--format", "json").stdout)
    assert [node["path"] for node in upward["sources"]] == [str(SEED_000.resolve())]
    table = run(db, "lineage", str(SEED_000)).stdout
    assert "used by:" in table and "syndicated" in table
    dot = run(db, "lineage", str(files["excerpt"]), "--format", "dot").stdout
    assert dot.startswith("digraph lineage {") and "syndicated" in dot


def test_revision_is_part_of_lineage(corpus, tmp_path):
    db, files = corpus
    files["excerpt"].write_text(files["excerpt"].read_text(encoding="utf-8") + "An added closing line about the weather in Minsk today.\n", encoding="utf-8")
    run(db, "ingest", str(files["excerpt"]))
    data = json.loads(run(db, "lineage", str(files["excerpt"]), "--format", "json").stdout)
    relations = {node["relation"] for node in data["sources"]}
    assert "revision" in relations and "syndicated" in relations
    # And from the replaced version down: the new version of the same path was derived from it.
    previous = next(node for node in data["sources"] if node["relation"] == "revision")
    older = json.loads(run(db, "lineage", str(previous["id"]), "--format", "json").stdout)
    assert [(node["id"], node["relation"]) for node in older["derived"] if node["relation"] == "revision"] == [
        (data["document"]["id"], "revision")]


def test_prov_json_export_round_trips(corpus, tmp_path):
    db, files = corpus
    out = tmp_path / "lineage.json"
    run(db, "export", "--format", "prov-json", "-o", str(out))
    document = pm.ProvDocument.deserialize(content=out.read_text(encoding="utf-8"), format="json")
    derivations = list(document.get_records(pm.ProvDerivation))
    by_pair = {}
    for record in derivations:
        attributes = dict(record.attributes)
        generated = str(attributes[pm.PROV_ATTR_GENERATED_ENTITY])
        used = str(attributes[pm.PROV_ATTR_USED_ENTITY])
        by_pair[(generated, used)] = record
    with session_scope(_engine(db)) as session:
        ids = dict(session.execute(select(Document.path, Document.id)).all())
        stored = session.execute(select(Derivation.derived_id, Derivation.source_id, Derivation.relation)).all()
    seed_id, excerpt_id = ids[str(SEED_000.resolve())], ids[str(files["excerpt"].resolve())]
    record = by_pair[(f"prv:document/{excerpt_id}", f"prv:document/{seed_id}")]
    types = {str(v) for k, v in record.attributes if k == pm.PROV_TYPE}
    assert "prov:Quotation" in types
    assert len([r for r in derivations if str(dict(r.attributes)[pm.PROV_ATTR_GENERATED_ENTITY]).startswith("prv:document/")]) == len(stored)
    agents = {str(a.identifier) for a in document.get_records(pm.ProvAgent)}
    assert "prv:agency/BelTA" in agents and "prv:agency/TASS" in agents
    provn = run(db, "export", "--format", "prov-n", "--document", str(files["excerpt"])).stdout
    assert provn.startswith("document") and "wasDerivedFrom" in provn


@pytest.mark.parametrize("fmt", ["prov-json", "prov-n"])
def test_export_written_a_few_records_at_a_time_is_the_whole_document(corpus, tmp_path, monkeypatch, fmt):
    """The export is built and written a chunk of records at a time, its rows read a few at a
    time: the same text as the prov package writes for the whole document at once, blank
    identifiers numbered on across chunks, for the database and for one neighbourhood."""
    from provenance import export

    db, files = corpus
    run(db, "ingest", str(files["excerpt"]))  # unchanged: no new version
    files["copy"].write_text(files["copy"].read_text(encoding="utf-8") + "A closing line about the weather.\n",
                             encoding="utf-8")
    run(db, "ingest", str(files["copy"]))  # a new version: a revision edge, superseded rows exported too
    with session_scope(_engine(db)) as session:
        whole = export.serialize(export.build(session), fmt)
        around = export.serialize(export.build(session, str(files["excerpt"])), fmt)
    assert "Revision" in whole and "Quotation" in whole and "prv:passage/" in whole and len(around) < len(whole)
    monkeypatch.setattr(export, "CHUNK_RECORDS", 3)
    monkeypatch.setattr(export, "_ROWS_AT_A_TIME", 2)
    for options, expected in (((), whole), (("--document", str(files["excerpt"])), around)):
        out = tmp_path / f"export.{fmt}"
        run(db, "export", "--format", fmt, "-o", str(out), *options)
        assert out.read_text(encoding="utf-8") == expected
        assert run(db, "export", "--format", fmt, *options).stdout == expected
    if fmt == "prov-json":
        data = json.loads(whole)
        with session_scope(_engine(db)) as session:
            documents = session.scalar(select(func.count()).select_from(Document))
        assert len(data["wasGeneratedBy"]) == documents
        # Records without an identifier are told apart by blank ones, one each, whatever their kind.
        blank = [key for kind in data.values() for key in kind if key.startswith("_:")]
        assert sorted(blank) == sorted(f"_:id{n}" for n in range(1, len(blank) + 1)) and len(blank) > 3 * documents
    unknown = run(db, "export", "--format", fmt, "--document", "no/such/file.txt", ok=False)
    assert unknown.exit_code != 0 and unknown.stdout == ""


def test_one_sql_query_answers_who_reused_seed_000_and_credited(corpus):
    db, files = corpus
    query = (
        "SELECT derived_path, relation, credited FROM derivations_with_paths "
        "WHERE source_path LIKE '%000_21d20b42f286ae20.txt' ORDER BY derived_path"
    )
    rows = json.loads(run(db, "inspect", "sql", query, "--format", "json").stdout)
    # SQLite has no boolean type (1/0); PostgreSQL answers true/false.
    assert [{**row, "credited": bool(row["credited"])} for row in rows] == [
        {"derived_path": str(files["copy"].resolve()), "relation": "near-duplicate", "credited": True},
        {"derived_path": str(files["excerpt"].resolve()), "relation": "syndicated", "credited": False},
    ]
    tags = json.loads(run(db, "inspect", "sql", "SELECT tag, COUNT(*) AS n FROM passages_with_tags GROUP BY tag ORDER BY tag", "--format", "json").stdout)
    assert {row["tag"] for row in tags} == {"boilerplate", "content"}


@pytest.mark.parametrize("statement", [
    "DELETE FROM document", "DROP VIEW source_reuse", "UPDATE derivation SET score = 0", "CREATE TABLE x (a INTEGER)",
])
def test_inspect_sql_refuses_writes(corpus, statement):
    db, _ = corpus
    with session_scope(_engine(db)) as session:
        before = session.scalar(select(func.count()).select_from(Document))
    result = run(db, "inspect", "sql", statement, ok=False)
    assert result.exit_code != 0
    assert "read-only" in result.output
    with session_scope(_engine(db)) as session:
        assert session.scalar(select(func.count()).select_from(Document)) == before


def test_inspect_sources_boilerplate_clusters(corpus):
    db, files = corpus
    sources = json.loads(run(db, "inspect", "sources", "--format", "json").stdout)
    by_name = {s["source"]: s for s in sources}
    assert by_name["seeds"]["reused_by_others"] == 2 and by_name["planted"]["derived_from_others"] == 2
    library = json.loads(run(db, "inspect", "boilerplate", "--format", "json").stdout)
    assert {"No time to read?", "Get a summary"} <= {b["text"] for b in library}
    clusters = json.loads(run(db, "inspect", "clusters", "--format", "json").stdout)
    assert {(c["path"], c["role"]) for c in clusters} == {(str(SEED_000.resolve()), "canonical"), (str(files["copy"].resolve()), "member")}


def test_inspect_sources_counts_every_document_under_its_publisher(corpus):
    """Every version's derivations and citations count for its publisher; only the latest
    versions count as its documents. Checked against the rows, counted one by one."""
    db, files = corpus
    files["excerpt"].write_text(files["excerpt"].read_text(encoding="utf-8") + "A line added later.\n", encoding="utf-8")
    run(db, "ingest", str(files["excerpt"].parent))  # a second version of the excerpt
    with session_scope(_engine(db)) as session:
        documents = session.scalars(select(Document)).all()
        publisher = {document.id: document.source for document in documents}
        expected: dict = {}
        for document in documents:
            if document.is_latest:
                entry = expected.setdefault(document.source, {"documents": 0, "reused_by_others": 0,
                                                              "derived_from_others": 0, "credited_derivations": 0,
                                                              "agencies": set()})
                entry["documents"] += 1
        for derivation in session.scalars(select(Derivation)):
            expected[publisher[derivation.source_id]]["reused_by_others"] += 1
            expected[publisher[derivation.derived_id]]["derived_from_others"] += 1
            expected[publisher[derivation.derived_id]]["credited_derivations"] += int(derivation.credited)
        for citation in session.scalars(select(Citation)):
            expected[publisher[citation.document_id]]["agencies"].add(citation.agency)
        superseded = [document.id for document in documents if not document.is_latest]
        assert session.scalar(select(func.count()).select_from(Derivation).where(Derivation.derived_id.in_(superseded)))
        if session.connection().dialect.name == "sqlite":
            # The document statistics of the database grown to 100,000 on 29 November: the
            # listing index's sampled row count above the table's. Left to its planner, SQLite
            # then scans the rows (texts and all); the publishers are read from the index.
            session.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'document'"))
            session.execute(text(
                "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES "
                "('document', 'ix_document_listing', '13200 1 1 1 1 1 1 1 1 1 1 1 1'), "
                "('document', 'ix_document_run_id', '15742 401'), ('document', 'ix_document_is_latest_path', "
                "'10602 401 1'), ('document', 'ix_document_content_hash', '7474 1'), "
                "('document', 'sqlite_autoindex_document_1', '10602 1 1')"
            ))
            session.execute(text("ANALYZE sqlite_schema"))  # the planner reads them again
            statements: list[str] = []  # as the driver runs them (some go straight to it)
            driver = session.connection().connection.driver_connection
            driver.set_trace_callback(statements.append)
            try:
                inspection.sources(session)
            finally:
                driver.set_trace_callback(None)
            publishers = [sql for sql in statements if re.search(r"is_latest,\s+(document\.)?source\s+FROM document", sql)]
            plans = [" | ".join(row[-1] for row in session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
                     for sql in (publishers[0].split(" INDEXED BY")[0], *publishers)]
            assert plans == ["SCAN document", "SCAN document USING COVERING INDEX ix_document_listing"], plans
    listed = json.loads(run(db, "inspect", "sources", "--format", "json").stdout)
    assert [entry["source"] for entry in listed] == sorted(expected)
    for entry in listed:
        counted = expected[entry["source"]]
        assert entry == {"source": entry["source"], **{k: v for k, v in counted.items() if k != "agencies"},
                         "agencies_credited": ", ".join(sorted(counted["agencies"]))}
    assert len(listed) >= 2 and any(e["credited_derivations"] for e in listed) and any(e["agencies_credited"] for e in listed)


def test_inspect_sql_runs_one_statement_only(corpus):
    """A script cannot end the read-only transaction and write in a new one."""
    db, _ = corpus
    before = _counts(db)
    for script in ("COMMIT; DELETE FROM citation", "SELECT 1; DELETE FROM citation"):
        result = run(db, "inspect", "sql", script, ok=False)
        assert result.exit_code != 0
        assert "one statement" in result.output or "read-only" in result.output, result.output
    assert _counts(db) == before


def _counts(db: Path) -> dict[str, int]:
    with session_scope(_engine(db)) as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Document, Passage, PassageBand, RecentPassageBand, DocumentBand, DocumentPair, Derivation,
                          PassageMatch, Citation)
        }


def test_forget_removes_a_document_and_what_depended_on_it(corpus):
    db, files = corpus
    before = _counts(db)
    with session_scope(_engine(db)) as session:
        excerpt = session.scalar(select(Document).where(Document.path == str(files["excerpt"].resolve())))
        own_passages = session.scalar(select(func.count()).select_from(Passage).where(Passage.document_id == excerpt.id))
        own_matches = session.scalar(
            select(func.count()).select_from(PassageMatch).join(Derivation, Derivation.id == PassageMatch.derivation_id)
            .where(Derivation.derived_id == excerpt.id)
        )
    run(db, "forget", str(files["excerpt"]), "--yes")
    after = _counts(db)
    assert after["document"] == before["document"] - 1
    assert after["passage"] == before["passage"] - own_passages
    assert after["derivation"] == before["derivation"] - 1
    assert after["passage_match"] == before["passage_match"] - own_matches
    # The rest is untouched and consistent: the copy still derives from the seed.
    data = json.loads(run(db, "report", "--format", "json").stdout)
    assert [(d["derived"]["path"], d["relation"]) for d in data["derivations"]] == [(str(files["copy"].resolve()), "near-duplicate")]
    with session_scope(_engine(db)) as session:
        for bands in (PassageBand, RecentPassageBand):
            orphans = session.scalar(
                select(func.count()).select_from(bands).outerjoin(Passage, Passage.id == bands.passage_id).where(Passage.id.is_(None))
            )
            assert orphans == 0, bands.__tablename__


def test_forget_recounts_the_boilerplate_its_documents_were_counted_in(corpus):
    """Forgetting a document recounts the boilerplate entries it was seen in from what remains,
    and drops a learned entry seen nowhere any more."""
    db, files = corpus

    def library() -> tuple[dict, dict]:
        """Each entry's stored counts, and the counts of the documents it is linked to."""
        with session_scope(_engine(db)) as session:
            stored = {e.text: (e.document_count, e.occurrence_count) for e in session.scalars(select(Boilerplate))}
            linked = dict(
                (text, (documents, occurrences)) for text, documents, occurrences in session.execute(
                    select(Boilerplate.text, func.count(BoilerplateDocument.document_id),
                           func.coalesce(func.sum(BoilerplateDocument.occurrences), 0))
                    .outerjoin(BoilerplateDocument, BoilerplateDocument.boilerplate_id == Boilerplate.id)
                    .group_by(Boilerplate.id, Boilerplate.text)
                )
            )
        return stored, linked

    before, linked = library()
    assert before == linked and {"No time to read?", "Get a summary"} <= set(before)  # seen in the TASS seed
    run(db, "forget", str(files["excerpt"]), "--yes")
    assert library() == (before, before)
    run(db, "forget", str(SEEDS / "001_5e92cb80f85b5761.txt"), "--yes")
    after, linked = library()
    assert after == linked and not {"No time to read?", "Get a summary"} & set(after)


def test_forget_a_run(corpus):
    db, files = corpus
    runs = json.loads(run(db, "inspect", "runs", "--format", "json").stdout)
    run(db, "forget", "--run", str(runs[-1]["id"]), "--yes")
    after = _counts(db)
    assert after["document"] == 2 and after["derivation"] == 0 and after["passage_match"] == 0
    assert len(json.loads(run(db, "inspect", "runs", "--format", "json").stdout)) == len(runs) - 1
    missing = run(db, "forget", "--run", "999", "--yes", ok=False)
    assert missing.exit_code != 0 and "no run 999" in missing.output
