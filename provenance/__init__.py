"""provenance: document deduplication and provenance tracking.

Near-duplicate documents (MinHash/LSH), syndicated and rewritten passages, learned
boilerplate and the lineage between documents, recorded in SQLite through SQLAlchemy.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
