"""Passage matches found by exact alignment carry no MinHash estimate: allow NULL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 06:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("passage_match") as batch:
        batch.alter_column("estimated_jaccard", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE passage_match SET estimated_jaccard = 0.0 WHERE estimated_jaccard IS NULL")
    with op.batch_alter_table("passage_match") as batch:
        batch.alter_column("estimated_jaccard", existing_type=sa.Float(), nullable=False)
