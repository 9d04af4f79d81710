"""Named SQL views for the common questions, so datasette or the sqlite3 shell shows them plainly.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 19:40:00
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Plain SQL that SQLite and PostgreSQL both accept (substr, CASE, joins).
VIEWS = {
    "duplicate_pairs": """
        SELECT p.first_id, a.path AS first_path, p.second_id, b.path AS second_path,
               p.similarity, p.exact
        FROM document_pair p
        JOIN document a ON a.id = p.first_id
        JOIN document b ON b.id = p.second_id
        WHERE a.is_latest AND b.is_latest
    """,
    "derivations_with_paths": """
        SELECT d.id AS derivation_id,
               d.derived_id, dd.path AS derived_path, dd.source AS derived_publisher,
               dd.published_at AS derived_published_at,
               d.source_id, sd.path AS source_path, sd.source AS source_publisher,
               sd.published_at AS source_published_at,
               d.relation, d.score, d.coverage, d.credited, d.reason, d.run_id
        FROM derivation d
        JOIN document dd ON dd.id = d.derived_id
        JOIN document sd ON sd.id = d.source_id
    """,
    "passages_with_tags": """
        SELECT p.id AS passage_id, p.document_id, doc.path, p.seq, p.start_offset, p.end_offset,
               CASE WHEN p.boilerplate_id IS NULL THEN 'content' ELSE 'boilerplate' END AS tag,
               b.origin AS boilerplate_origin,
               substr(doc.text, p.start_offset + 1, p.end_offset - p.start_offset) AS text
        FROM passage p
        JOIN document doc ON doc.id = p.document_id
        LEFT JOIN boilerplate b ON b.id = p.boilerplate_id
    """,
    "boilerplate_library": """
        SELECT id, text, status, origin, document_count, occurrence_count, created_at
        FROM boilerplate
    """,
    "source_reuse": """
        SELECT sd.source AS source_publisher, dd.source AS derived_publisher, d.relation,
               COUNT(*) AS derivations,
               SUM(CASE WHEN d.credited THEN 1 ELSE 0 END) AS credited
        FROM derivation d
        JOIN document dd ON dd.id = d.derived_id
        JOIN document sd ON sd.id = d.source_id
        GROUP BY sd.source, dd.source, d.relation
    """,
}


def upgrade() -> None:
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body.strip()}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
