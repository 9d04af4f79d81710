"""Migrations and models agree; the migration chain is linear and reversible.

The schema tests run on SQLite and, when PROVENANCE_TEST_DB_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import func, select

from conftest import MIGRATIONS, BELTA_SEED, TASS_SEED, db_session, near_copy
from provenance.db import models  # noqa: F401  (registers every table)
from provenance.db.base import Base
from provenance.db.migrate import alembic_config, current_revision, head_revision, migrations_dir
from provenance.db.models import Document, Passage, PassagePrefilter, RowCount
from provenance.db.session import database_url, make_engine


def _engine(db):
    return make_engine(database_url(str(db)))


def _run(engine, action: str, target: str) -> None:
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, target)


def _differences(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "render_as_batch": True})
        return compare_metadata(context, Base.metadata) + _partial_index_differences(connection)


def _partial_index_differences(connection) -> list:
    """Alembic does not compare the WHERE clauses of partial indexes: compared here, on
    SQLite, as (index, in the models, in the database) wherever they differ."""
    if connection.dialect.name != "sqlite":
        return []
    modelled = {index.name: str(index.dialect_options["sqlite"]["where"]) for table in Base.metadata.tables.values()
                for index in table.indexes if index.dialect_options["sqlite"]["where"] is not None}
    built = {name: sql.split(" WHERE ", 1)[1].strip()
             for name, sql in connection.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
             if sql and " WHERE " in sql}
    return [(name, modelled.get(name), built.get(name)) for name in sorted(modelled.keys() | built.keys())
            if modelled.get(name) != built.get(name)]


def _tables(engine) -> set[str]:
    with engine.connect() as connection:
        return set(sa_inspect(connection).get_table_names())


def _migrate_again(db_url, before: str, table: str) -> None:
    """Downgrade to ``before`` (asserting that ``table`` went with it) and upgrade to head."""
    engine = _engine(db_url)
    try:
        _run(engine, "downgrade", before)
        assert table not in _tables(engine)
        _run(engine, "upgrade", "head")
    finally:
        engine.dispose()


def test_library_uses_the_repository_migrations():
    assert migrations_dir().resolve() == MIGRATIONS.resolve()


def test_exactly_one_head_and_linear_history(head_revision_independent):
    script = ScriptDirectory.from_config(alembic_config())
    heads = script.get_heads()
    assert len(heads) == 1, f"multiple Alembic heads: {heads}"
    assert heads[0] == head_revision() == head_revision_independent, "set migrate.HEAD_REVISION to the new head"
    revisions = list(script.walk_revisions())
    assert revisions, "no migrations"
    bases = [r for r in revisions if r.down_revision is None]
    assert len(bases) == 1, [r.revision for r in bases]
    for revision in revisions:
        assert not revision.is_merge_point or revision.revision == heads[0]


def test_upgrade_head_matches_models(db_url, head_revision_independent):
    engine = _engine(db_url)
    try:
        _run(engine, "upgrade", "head")
        assert current_revision(engine) == head_revision_independent
        assert _tables(engine) == set(Base.metadata.tables) | {"alembic_version"}
        differences = _differences(engine)
        assert differences == [], f"models and migrations disagree: {differences}"
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(db_url, head_revision_independent):
    engine = _engine(db_url)
    try:
        _run(engine, "upgrade", "head")
        _run(engine, "downgrade", "base")
        assert current_revision(engine) is None
        assert _tables(engine) <= {"alembic_version"}
        _run(engine, "upgrade", "head")
        assert current_revision(engine) == head_revision_independent
        assert _differences(engine) == []
    finally:
        engine.dispose()


def test_database_usable_after_downgrade_cycle(db_url, runner, ingest):
    from provenance.cli import cli

    db = db_url
    assert runner.invoke(cli, ["--db", str(db), "db", "upgrade"]).exit_code == 0
    engine = _engine(db)
    try:
        _run(engine, "downgrade", "base")
    finally:
        engine.dispose()
    summary = ingest(BELTA_SEED, db_path=db)
    assert summary["documents_added"] == 1
    with db_session(db) as session:
        assert session.scalar(select(Document.path)) == str(BELTA_SEED)


def test_upgrade_fills_the_passage_prefilter_of_passages_stored_before_it(db_url, ingest):
    """Migration 0007 writes the compact sketch of every signed passage already stored, the
    same rows an ingest writes: the low byte of each signature value and the content-word
    count."""
    ingest(BELTA_SEED, db_path=db_url)
    ingest(TASS_SEED, db_path=db_url)

    def prefilters() -> list[tuple]:
        with db_session(db_url) as session:
            return [tuple(row) for row in session.execute(
                select(PassagePrefilter.passage_id, PassagePrefilter.content_word_count, PassagePrefilter.low_bytes)
                .order_by(PassagePrefilter.passage_id)
            )]

    written = prefilters()
    with db_session(db_url) as session:
        signed = session.execute(
            select(Passage.id, Passage.content_word_count, Passage.signature)
            .where(Passage.signature.is_not(None)).order_by(Passage.id)
        ).all()
    assert len(signed) >= 10
    assert written == [
        (row.id, row.content_word_count, np.frombuffer(row.signature, dtype="<u4").astype(np.uint8).tobytes())
        for row in signed
    ]
    _migrate_again(db_url, "0006", "passage_prefilter")
    assert prefilters() == written


def _stored(db_url) -> dict[str, tuple[int, int | None]]:
    """Per counted table: its rows, counted, and as the row_count table holds them (None: no row)."""
    with db_session(db_url) as session:
        return {
            model.__tablename__: (
                session.scalar(select(func.count()).select_from(model)),
                session.scalar(select(RowCount.rows).where(RowCount.table_name == model.__tablename__)),
            )
            for model in (Document, Passage)
        }


def _tallies_agree(stored: dict, backend: str) -> bool:
    return all(tallied == (rows if backend == "sqlite" else None) for rows, tallied in stored.values())


def test_inspect_counts_follow_ingests_new_versions_and_forget(db_url, backend, ingest, invoke, tmp_path):
    """On SQLite triggers count documents and passages as they are written and deleted
    (row_count), and `inspect` shows those counts; on PostgreSQL the table holds no count and
    `inspect` counts."""
    folder = tmp_path / "docs"
    folder.mkdir()
    belta, tass = folder / "belta.txt", folder / "tass.txt"
    shutil.copyfile(BELTA_SEED, belta)
    shutil.copyfile(TASS_SEED, tass)

    def shown() -> tuple[int, int, int]:
        result = invoke("inspect", "--format", "json", db_path=db_url)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        return summary["documents"], summary["versions"], summary["passages"]

    ingest(folder, db_path=db_url)
    stored = _stored(db_url)
    first = stored["passage"][0]
    assert first >= 10 and shown() == (2, 2, first) and _tallies_agree(stored, backend)

    belta.write_text(near_copy(BELTA_SEED.read_text(encoding="utf-8")), encoding="utf-8")
    ingest(folder, db_path=db_url)  # a second version of belta.txt; the first keeps its passages
    stored = _stored(db_url)
    versions = stored["passage"][0]
    assert versions > first and shown() == (2, 3, versions) and _tallies_agree(stored, backend)

    assert invoke("forget", tass, "--yes", db_path=db_url).exit_code == 0  # its passages go by cascade
    stored = _stored(db_url)
    left = stored["passage"][0]
    assert 0 < left < versions and shown() == (1, 2, left) and _tallies_agree(stored, backend)


def test_upgrade_counts_the_rows_stored_before_it(db_url, backend, ingest):
    """Migration 0012 counts what is there and leaves triggers that go on counting."""
    ingest(BELTA_SEED, db_path=db_url)
    _migrate_again(db_url, "0011", "row_count")
    stored = _stored(db_url)
    assert stored["document"][0] == 1 and stored["passage"][0] >= 5 and _tallies_agree(stored, backend)
    ingest(TASS_SEED, db_path=db_url)
    more = _stored(db_url)
    assert more["document"][0] == 2 and more["passage"][0] > stored["passage"][0] and _tallies_agree(more, backend)


def test_a_few_documents_content_passages_are_not_read_through_the_boilerplate_index(tmp_path):
    """With the passage statistics of the 100,000-document database (a boilerplate id, NULL
    included, said to hold 13 passages), SQLite read the content passages of a few
    documents (``index.stored_shingles``, as an ingest verifying near-duplicate candidates
    does) by walking the boilerplate index's 1.8 million NULL entries, 0.7 s a statement.
    Since 0013 that index holds only tagged passages and cannot serve ``IS NULL``; it still
    serves a lookup by boilerplate id."""
    from sqlalchemy import text

    from provenance import index
    from provenance.db.migrate import upgrade_to_head
    from provenance.db.session import session_scope
    from provenance.settings import Settings

    engine = make_engine(database_url(str(tmp_path / "planned.db")))
    upgrade_to_head(engine)
    try:
        with session_scope(engine) as session:
            session.execute(text("ANALYZE"))  # creates sqlite_stat1
            session.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'passage'"))
            session.execute(text(
                "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('passage', 'ix_passage_boilerplate_id', '367548 13'),"
                " ('passage', 'ix_passage_key_hash', '417100 2'), ('passage', 'sqlite_autoindex_passage_1', '447336 18 1')"
            ))
            session.execute(text("ANALYZE sqlite_schema"))  # the planner reads them again
            statements: list[str] = []  # as the driver runs them, values in place
            driver = session.connection().connection.driver_connection
            driver.set_trace_callback(statements.append)
            try:
                index.stored_shingles(session, [1698, 2077, 5168, 13996, 29741, 63159, 94187], Settings())
            finally:
                driver.set_trace_callback(None)

            def plan(sql: str) -> str:
                return " | ".join(row[-1] for row in session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))

            content = [sql for sql in statements if "FROM passage" in sql and "boilerplate_id IS NULL" in sql]
            assert len(content) == 1
            assert "ix_passage_boilerplate_id" not in plan(content[0])
            assert "USING INDEX sqlite_autoindex_passage_1" in plan(content[0])
            assert "ix_passage_boilerplate_id" in plan("SELECT id FROM passage WHERE boilerplate_id = 5")
    finally:
        engine.dispose()


@pytest.mark.parametrize("table", ["document", "passage", "derivation", "boilerplate", "ingest_run"])
def test_deleting_a_row_scans_no_table_for_what_refers_to_it(tmp_path, table):
    """SQLite checks, or cascades to, every row that refers to a deleted one by searching
    the referring table: each referring column needs an index, or every deletion reads the
    whole table. Before 0014 deleting a document read every document for a newer version
    of it (``previous_version_id``): forgetting 1,000 documents at 100,000 took 184 s."""
    from provenance.db.migrate import upgrade_to_head

    engine = make_engine(database_url(str(tmp_path / "keys.db")))
    upgrade_to_head(engine)
    try:
        with engine.connect() as connection:
            plan = [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN DELETE FROM {table} WHERE id = 5")]
    finally:
        engine.dispose()
    assert plan and not [step for step in plan if step.startswith("SCAN")], plan

