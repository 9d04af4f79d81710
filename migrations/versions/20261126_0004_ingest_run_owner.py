"""Record which process runs an ingest (host and pid), so that a run whose process died
without finishing it (kill -9, power loss) can be marked interrupted by the next ingest.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 09:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_run") as batch:
        batch.add_column(sa.Column("host", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ingest_run") as batch:
        batch.drop_column("pid")
        batch.drop_column("host")
