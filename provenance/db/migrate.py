"""Alembic driven from code: the database is created and upgraded only by migrations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect

from ..errors import ProvenanceError
from .session import lock_for_write, writer_connection

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest migration's revision (tests/test_migrations.py checks it against the scripts).
#: A database already at head is opened without importing Alembic, which is a fifth of
#: the command line's start-up; Alembic is loaded only to check or run migrations.
HEAD_REVISION = "0014"


def migrations_dir() -> Path:
    override = os.environ.get("PROVENANCE_MIGRATIONS")
    if override:
        return Path(override)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "migrations"
        if (candidate / "env.py").is_file():
            return candidate
    raise ProvenanceError(
        "cannot find the migrations folder; install provenance from its source tree "
        "(pip install -e .) or set PROVENANCE_MIGRATIONS"
    )


def alembic_config(engine: Engine | None = None) -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if engine is not None:
        config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def head_revision() -> str:
    return HEAD_REVISION


def _stored_revision(connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return _stored_revision(connection)


def check_database(engine: Engine) -> str | None:
    """The database's revision, refusing what provenance cannot safely open."""
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        revision = _stored_revision(connection)
    if tables and "alembic_version" not in tables:
        raise ProvenanceError(
            f"{engine.url.database or engine.url} is a database but not a provenance database "
            f"(it has tables {', '.join(sorted(tables)[:5])}); pass another --db"
        )
    if revision is not None and revision != HEAD_REVISION:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(alembic_config())
        known = {rev.revision for rev in script.walk_revisions()}
        if revision not in known:
            raise ProvenanceError(
                f"the database's schema revision {revision} is newer than this provenance knows; "
                "upgrade provenance"
            )
    return revision


def upgrade_to_head(engine: Engine) -> str:
    """Create or upgrade the schema; returns the head revision.

    Nothing is written when the schema is already at head. Otherwise the migrations run in
    one transaction that holds the writer lock, so that processes starting at once on a new
    database create it once: the others wait, then find it at head.
    """
    head = head_revision()
    if check_database(engine) == head:
        return head
    from alembic import command

    config = alembic_config(engine)
    with writer_connection(engine) as connection, connection.begin():
        lock_for_write(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return head


def is_at_head(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
