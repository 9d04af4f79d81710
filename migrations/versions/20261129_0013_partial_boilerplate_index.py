"""On SQLite, ix_passage_boilerplate_id holds only the passages tagged as boilerplate.

Indexed whole, its statistics said that a boilerplate id, NULL included, holds some 13
passages (1,830,619 passages, 6,841 of them tagged, at 100,000 documents), so SQLite read
the content passages of a few documents (``document_id IN (...) AND boilerplate_id IS
NULL``, as an ingest verifying near-duplicate candidates does) by walking the index's 1.8
million NULL entries: 660-740 ms a statement, where the (document_id, seq) index takes
under a millisecond. A partial index cannot be used for ``IS NULL``, and serves every
``boilerplate_id = ?`` as before. Built in 1.5 s at 100,000 documents. PostgreSQL keeps the
whole index: its statistics count the NULLs (``null_frac``), so it does not walk them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 08:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TAGGED = sa.text("boilerplate_id IS NOT NULL")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_passage_boilerplate_id", table_name="passage")
    op.create_index("ix_passage_boilerplate_id", "passage", ["boilerplate_id"], unique=False, sqlite_where=_TAGGED)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_passage_boilerplate_id", table_name="passage")
    op.create_index("ix_passage_boilerplate_id", "passage", ["boilerplate_id"], unique=False)
