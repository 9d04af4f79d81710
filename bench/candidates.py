"""Which passage candidates are worth scoring: the estimated word overlap of those that earn
a label, and the share each overlap floor would skip.

    python bench/scale.py --no-postgres --batches 10 --batch-docs 1000 --workers 1 --keep big.db
    python bench/candidates.py big.db --stored 10000 --new 200 --write-new new200/

The new documents are the ones bench/workers.py's seeded corpus would write after the
``--stored`` documents of a bench/scale.py database (that script keeps the next one back as
its lookup probe, so these start one later). Each is looked up as `match` would
(candidates from the passage index, estimated Jaccard at least the estimate floor) and every
candidate is scored exactly; the script prints how many candidates each overlap floor keeps
and how many labelled pairs it would lose. Then it sorts every LSH candidate pair by the
smallest bucket the two passages share (how many stored passages hold that band key), and
counts in each size class the pairs, those past the estimate floor, and the labelled ones:
what a lower bucket cap would save, and what it would lose on this corpus; and the same split
by whether the pair shares one band or more, which is what ``lone_band_bucket_max`` decides on
(run it on a database signed with 0 to see every lone band). ``--write-new``
keeps the documents, e.g. to ingest them into a copy of the database under a profiler. Read
only; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import write_corpus  # noqa: E402

from provenance import derive, index, manifest  # noqa: E402
from provenance.db.session import database_url, make_engine, session_scope, sqlite_path  # noqa: E402
from provenance.match import score  # noqa: E402
from provenance.prepare import passage_words, prepare  # noqa: E402
from provenance.reader import RawDocument  # noqa: E402
from provenance.sketch import to_blob  # noqa: E402
from provenance.text.normalize import content_words  # noqa: E402

FLOORS = (0.3, 0.35, 0.4, 0.45, 0.5)


def new_documents(stored: int, count: int, folder: Path) -> list[Path]:
    """The ``count`` documents that follow a bench/scale.py corpus of ``stored`` (and its probe)."""
    files = write_corpus(folder, stored + 1 + count)
    for path in files[: stored + 1]:
        path.unlink()
    return files[stored + 1 :]


#: Lower bounds of the bucket size classes printed.
BUCKET_SIZES = (1, 2, 5, 10, 20, 50, 100, 300)


def scored_candidates(session, files: list[Path]) -> tuple[list[tuple[float, str]], Counter]:
    """(estimated overlap, label or "") for every candidate above the estimate floor; and per
    (smallest shared bucket's size class, "candidates" / "past the estimate floor" /
    "labelled"), how many candidate pairs."""
    settings = manifest.load(session)
    policy = settings.match_policy()
    out = []
    by_bucket: Counter = Counter()
    for path in files:
        text = path.read_text(encoding="utf-8")
        raw = RawDocument(path=str(path), text=text, format="text", encoding="utf-8", size_bytes=len(text))
        passages = {p.seq: p for p in prepare(raw, settings).passages if p.signature is not None}
        candidates = index.passage_candidates(session, [(s, to_blob(p.signature)) for s, p in passages.items()], -1, settings)
        smallest, shared = smallest_shared_buckets(session, passages, candidates, settings.bucket_cap)
        texts: dict[int, str] = {}
        likely = derive.likely_sources(session, candidates, {s: p.signature for s, p in passages.items()},
                                       {s: p.words for s, p in passages.items()}, texts, overlap_floor=0.0)
        for pair, size in smallest.items():
            by_bucket[(size_class(size), "candidates")] += 1
            by_bucket[(size_class(size), shared[pair] > 1, "pairs")] += 1
        for mine, row, estimate in likely:
            theirs = passage_words(texts[row.document_id][row.start_offset : row.end_offset], settings)
            overlap = derive.estimated_overlap(estimate, len(set(content_words(passages[mine].words))),
                                               row.content_word_count)
            label = score(passages[mine].words, theirs, policy).label or ""
            out.append((float(overlap), label))
            size = size_class(smallest[(mine, row.id)])
            by_bucket[(size, "past the estimate floor")] += 1
            by_bucket[(size, "labelled")] += bool(label)
            by_bucket[(size, shared[(mine, row.id)] > 1, "labelled")] += bool(label)
    return out, by_bucket


def smallest_shared_buckets(
    session, passages: dict, candidates: dict[int, set[int]], cap: int,
) -> tuple[dict[tuple[int, int], int], Counter]:
    """For each (new passage, candidate) pair, the size of the smallest bucket they share
    (of those under the ``cap``, the only ones the lookup reads), and how many buckets they share."""
    keys = sorted({key for passage in passages.values() for key in passage.band_keys})
    members, _, _ = index._bucket_members(session, keys, limit=cap + 1, count_first=False)
    smallest: dict[tuple[int, int], int] = {}
    shared: Counter = Counter()
    for seq, passage in passages.items():
        mine = candidates.get(seq, set())
        for key in set(passage.band_keys):
            size = len(members.get(key, ()))
            if size > cap:
                continue
            for candidate in members.get(key, ()):
                if candidate in mine:
                    smallest[(seq, candidate)] = min(smallest.get((seq, candidate), size), size)
                    shared[(seq, candidate)] += 1
    return smallest, shared


def size_class(size: int) -> int:
    return max(low for low in BUCKET_SIZES if low <= size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("database", help="a database grown by bench/scale.py --keep")
    parser.add_argument("--stored", type=int, required=True, help="documents bench/scale.py stored in it")
    parser.add_argument("--new", type=int, default=200, help="new documents looked up [200]")
    parser.add_argument("--write-new", type=Path, default=None, help="keep the new documents in this folder")
    arguments = parser.parse_args()
    url = database_url(arguments.database)
    path = sqlite_path(url)
    if path and not os.path.exists(path):
        raise SystemExit(f"{arguments.database}: no such database (grow one with bench/scale.py --keep FILE)")
    with tempfile.TemporaryDirectory(prefix="provenance-candidates-") as scratch:
        folder = arguments.write_new or Path(scratch)
        files = new_documents(arguments.stored, arguments.new, folder)
        engine = make_engine(url, read_only=True)
        try:
            with session_scope(engine) as session:
                settings_cap = manifest.load(session).bucket_cap
                pairs, by_bucket = scored_candidates(session, files)
        finally:
            engine.dispose()
    labelled = [(overlap, label) for overlap, label in pairs if label]
    print(f"{len(files)} new documents: {len(pairs)} candidates above the estimate floor "
          f"({derive.ESTIMATE_FLOOR}), {len(labelled)} labelled {dict(Counter(l for _, l in labelled))}; "
          f"lowest estimated overlap of a labelled pair: {min((o for o, _ in labelled), default=float('nan')):.2f}")
    rows = []
    for floor in FLOORS:
        kept = sum(1 for overlap, _ in pairs if overlap >= floor)
        lost = sum(1 for overlap, _ in labelled if overlap < floor)
        rows.append([floor, kept, f"{100 * kept / max(len(pairs), 1):.1f}%", lost])
    print(tabulate(rows, headers=["overlap floor", "candidates scored", "share", "labelled pairs lost"],
                   tablefmt="github"))
    total = max(sum(by_bucket[(size, "candidates")] for size in BUCKET_SIZES), 1)
    columns = ("candidates", "past the estimate floor", "labelled")
    print(f"\nLSH candidate pairs by the smallest bucket they share (stored passages with that band key; "
          f"buckets over the cap of {settings_cap} are never read):")
    print(tabulate(
        [[f"{size}+", *(by_bucket[(size, column)] for column in columns),
          f"{100 * by_bucket[(size, 'candidates')] / total:.1f}%"] for size in BUCKET_SIZES],
        headers=["smallest bucket", *columns, "share of candidates"], tablefmt="github"))
    print("\nThe same pairs by whether they share one band or more (pairs / labelled):")
    print(tabulate(
        [[f"{size}+", *(f"{by_bucket[(size, more, 'pairs')]} / {by_bucket[(size, more, 'labelled')]}"
                        for more in (False, True))] for size in BUCKET_SIZES],
        headers=["smallest bucket", "one band", "two or more"], tablefmt="github"))


if __name__ == "__main__":
    main()
