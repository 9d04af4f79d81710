"""passage_prefilter: the low byte of each signature value of every signed passage (and its
content-word count), read to test a candidate before its full signature
(provenance.derive.likely_sources); filled here for the passages already stored.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 03:00:00
"""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: Passages filled per statement.
_BATCH = 10_000


def upgrade() -> None:
    op.create_table(
        "passage_prefilter",
        sa.Column("passage_id", sa.Integer(), nullable=False),
        sa.Column("content_word_count", sa.Integer(), nullable=False),
        sa.Column("low_bytes", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["passage_id"], ["passage.id"], name=op.f("fk_passage_prefilter_passage_id_passage"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("passage_id", name=op.f("pk_passage_prefilter")),
    )
    connection = op.get_bind()
    passage = sa.table("passage", sa.column("id"), sa.column("content_word_count"), sa.column("signature"))
    prefilter = sa.table("passage_prefilter", sa.column("passage_id"), sa.column("content_word_count"),
                         sa.column("low_bytes"))
    last = 0
    while True:
        rows = connection.execute(
            sa.select(passage.c.id, passage.c.content_word_count, passage.c.signature)
            .where(passage.c.id > last, passage.c.signature.is_not(None))
            .order_by(passage.c.id).limit(_BATCH)
        ).all()
        if not rows:
            break
        connection.execute(prefilter.insert(), [
            {"passage_id": row.id, "content_word_count": row.content_word_count,
             # The low byte of each little-endian uint32 value (provenance.sketch.low_bytes).
             "low_bytes": np.frombuffer(row.signature, dtype="<u4").astype(np.uint8).tobytes()}
            for row in rows
        ])
        last = rows[-1].id


def downgrade() -> None:
    op.drop_table("passage_prefilter")
