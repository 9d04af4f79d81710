"""passage_band_recent: new passage band rows wait here, in a table small enough for the
page cache, and are moved into passage_band in key order when there are enough of them
(provenance.index.merge_recent_bands). Lookups read both tables.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 01:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "passage_band_recent",
        sa.Column("band_key", sa.BigInteger(), nullable=False),
        sa.Column("passage_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("band_key", "passage_id", name=op.f("pk_passage_band_recent")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.execute(
        "INSERT INTO passage_band (band_key, passage_id) "
        "SELECT band_key, passage_id FROM passage_band_recent ORDER BY band_key, passage_id"
    )
    op.drop_table("passage_band_recent")
