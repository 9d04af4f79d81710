"""Persistence: typed SQLAlchemy models, engine/session helpers and Alembic migrations."""
