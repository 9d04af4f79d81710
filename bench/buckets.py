"""How many passage-index entries a new document reads as the corpus grows, and what capping
the buckets would change.

    python bench/scale.py --no-postgres --batches 10 --batch-docs 1000 --workers 1 --keep big.db
    python bench/buckets.py big.db

A new document's passages are looked up in the passage LSH index (each passage's band keys);
every entry found in those buckets is a candidate to read. For documents that arrived when
the database held about N documents (N = --at), the script counts the entries each one found
then (members from earlier documents only, rebuilt from the stored signatures), and what it
would have found had every bucket kept only its first K entries. It also prints the share
of the stored passage matches that share a band whose bucket is at most K entries now (a
pessimistic proxy for what a cap would lose). Read only; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import bisect
import os

from sqlalchemy import select
from tabulate import tabulate

from provenance import manifest
from provenance.db.models import Passage, PassageMatch
from provenance.db.session import database_url, make_engine, session_scope, sqlite_path
from provenance.index import passage_band_keys

CAPS = (10, 25, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("database", help="a provenance database (path or SQLAlchemy URL)")
    parser.add_argument("--at", default="1000,2000,5000,9900",
                        help="database sizes (document ids) to look at, comma-separated [1000,2000,5000,9900]")
    parser.add_argument("--sample", type=int, default=100, help="documents looked at from each size [100]")
    arguments = parser.parse_args()
    url = database_url(arguments.database)
    path = sqlite_path(url)
    if path and not os.path.exists(path):
        raise SystemExit(f"{arguments.database}: no such database (grow one with bench/scale.py --keep FILE)")
    engine = make_engine(url, read_only=True)
    with session_scope(engine) as session:
        settings = manifest.load(session)
        if settings is None:
            raise SystemExit(f"{arguments.database}: no documents")
        keys: dict[int, tuple[int, set[int]]] = {}
        for passage_id, document_id, signature in session.execute(
            select(Passage.id, Passage.document_id, Passage.signature).where(Passage.signature.is_not(None))
        ):
            keys[passage_id] = (document_id, set(passage_band_keys(signature, settings.passage)))
        matches = session.execute(select(PassageMatch.derived_passage_id, PassageMatch.source_passage_id)).all()
    engine.dispose()
    members: dict[int, list[int]] = {}  # band key -> document ids of its entries, sorted
    for document_id, band_keys in keys.values():
        for key in band_keys:
            members.setdefault(key, []).append(document_id)
    for documents in members.values():
        documents.sort()

    rows = []
    for at in (int(value) for value in arguments.at.split(",")):
        sample = [(doc, band_keys) for doc, band_keys in keys.values() if at <= doc < at + arguments.sample]
        documents = len({doc for doc, _ in sample})
        if not documents:
            continue
        found = [bisect.bisect_left(members[key], doc) for doc, band_keys in sample for key in band_keys]
        rows.append([at, documents, f"{sum(found) / documents:,.0f}",
                     *(f"{sum(min(n, cap) for n in found) / documents:,.0f}" for cap in CAPS)])
    print(tabulate(rows, headers=["stored when it arrived", "documents", "entries read", *(f"first {c} kept" for c in CAPS)],
                   tablefmt="github"))

    sizes = {key: len(documents) for key, documents in members.items()}
    both = [(a, b) for a, b in matches if a in keys and b in keys]
    print(f"\n{len(both)} stored passage matches with signatures on both sides; sharing a band of at most K entries now:")
    for cap in CAPS:
        kept = sum(1 for a, b in both if any(sizes[k] <= cap for k in keys[a][1] & keys[b][1]))
        print(f"  K={cap}: {kept} ({100 * kept / max(len(both), 1):.1f}%)")


if __name__ == "__main__":
    main()
