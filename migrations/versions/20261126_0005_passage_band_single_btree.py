"""passage_band as one B-tree keyed (band_key, passage_id): WITHOUT ROWID on SQLite, no
second index, no foreign key. The table holds one row per band of every passage; the old
layout kept each row three times on SQLite (table, primary key, band_key index) and checked
a foreign key on every insert. Rows are copied (orphans dropped) in key order.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 12:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COPY = "passage_band_copy"


def _stash() -> None:
    """Move the rows aside (only those whose passage exists) and drop the table."""
    op.execute(
        f"CREATE TABLE {_COPY} AS SELECT band_key, passage_id FROM passage_band "
        "WHERE passage_id IN (SELECT id FROM passage)"
    )
    op.drop_table("passage_band")


def _restore() -> None:
    op.execute(
        f"INSERT INTO passage_band (band_key, passage_id) "
        f"SELECT band_key, passage_id FROM {_COPY} ORDER BY band_key, passage_id"
    )
    op.execute(f"DROP TABLE {_COPY}")


def upgrade() -> None:
    _stash()
    op.create_table(
        "passage_band",
        sa.Column("band_key", sa.BigInteger(), nullable=False),
        sa.Column("passage_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("band_key", "passage_id", name=op.f("pk_passage_band")),
        sqlite_with_rowid=False,
    )
    _restore()


def downgrade() -> None:
    _stash()
    op.create_table(
        "passage_band",
        sa.Column("passage_id", sa.Integer(), nullable=False),
        sa.Column("band_key", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["passage_id"], ["passage.id"], name=op.f("fk_passage_band_passage_id_passage"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("passage_id", "band_key", name=op.f("pk_passage_band")),
    )
    with op.batch_alter_table("passage_band", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_passage_band_band_key"), ["band_key"], unique=False)
    _restore()
