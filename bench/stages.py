"""Where an ingest's time goes, stage by stage, without a profiler's overhead; and how long a
lookup takes, with and without the passage search.

    python bench/stages.py                                   # 1,000 new documents into 1,000
    python bench/stages.py --stored 2000 --new 500 --rounds 2
    python bench/stages.py --stored 0 --new 4000             # a new database's first ingest
    python bench/stages.py --db big.db --stored 101200 --new 59 --lookups   # a bench/scale.py database
    python bench/stages.py --db big.db --stored 20000 --sketch-cache 50000  # a smaller sketch cache
    python bench/stages.py --db big.db --stored 100000 --lone-band-bucket-max 0   # every lone band counts

The documents are bench/workers.py's seeded corpus (the one bench/scale.py ingests). Without
``--db``, its first ``--stored`` documents are ingested into a new SQLite database first (not
timed; ``--stored 0``: the new documents are that database's first ingest, before it has planner
statistics). With ``--db`` (a database grown by bench/scale.py), the new documents are those that
follow its corpus and its lookup probe, as in bench/candidates.py. Each round copies the
database and ingests the ``--new`` documents into the copy through the library, as
``provenance ingest --workers 1`` does, timing the named functions on the way (wall
seconds, summed over calls; a stage run within another is printed as ``derive > summarise``).
It also prints how many stored passages' sketches the ingest asked its cache for and the
share already held (``--sketch-cache N`` sets the cache's size; ``--recent-bands N`` the recent
passage band rows that make a merge; ``--lone-band-bucket-max N`` first copies the database with
that value written into its settings manifest, to compare a database with and without it).
``--workers N`` ingests with N worker processes, which also read each document's passage
buckets (provenance.prefetch): the stages are then the writer's, and below them how many
documents it matched from a worker's snapshot and how many it read itself.
``--cold`` drops the kernel's page cache after each copy (Linux, as root), so that the ingest
reads the database from disk, as the first ingest after a reboot, or into an archive left
alone for a while, does; ``--read-ahead N`` sets how many connections read ahead of the
writer once it waits on the disk (0: none; see provenance.db.readahead), and the statements
they were given are counted below the stages.
``--lookups`` then looks
each new text up in the stored database, read only, with ``match_text`` in full, documents
only, and in full with one sketch cache shared across the texts, in turn, and prints the
medians; and it times the command a user runs, ``provenance match`` (interpreter start
included): the first new text alone, and all of them in one run, in full and documents only.
Below the stages: the ingest's user and system CPU seconds and its read and write
system calls (Linux), its worker processes' CPU seconds, the passage band rows it wrote,
and the bucket keys its passages looked up and the members handed over. Last it prints
the process's peak resident set.
Run it on two checkouts (``PYTHONPATH=OTHER python bench/stages.py``) to compare them.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple
from statistics import median

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidates import new_documents  # noqa: E402
from scale import drop_page_cache  # noqa: E402
from workers import CLI, ROOT, write_corpus  # noqa: E402

from provenance import derive, index, ingest, lookup, manifest, prefetch  # noqa: E402
from provenance.db import readahead  # noqa: E402
from provenance.db.bulk import chunks  # noqa: E402
from provenance.db.migrate import upgrade_to_head  # noqa: E402
from provenance.db.models import ManifestEntry, RecentPassageBand  # noqa: E402
from provenance.db.session import database_url, make_engine, session_scope  # noqa: E402

#: (module or class, function name, the stage it runs within): the stages timed, in the order
#: printed. A batch's commit is what ``_store_batch`` spends outside ``_store``.
STAGES = (
    (ingest, "prepare", None),
    (derive, "derive", None),
    (index, "passage_candidates", "derive"),
    (derive, "likely_sources", "derive"),
    (derive, "_evidence", "derive"),
    (derive, "_extend", "derive"),
    (derive, "summarise", "derive"),
    (index, "index_document", None),
    (index, "add_passages", None),
    (ingest.Ingestor, "_store_batch", None),
    (ingest.Ingestor, "_store", "_store_batch"),
    (ingest.Ingestor, "_insert_passages", "_store"),
    (ingest.Ingestor, "_tag_boilerplate", "_store"),
    (ingest.Ingestor, "_refresh", "_store"),
    (ingest.Ingestor, "_merge_recent_bands", None),
)


def timed_stages() -> dict[str, float]:
    """Wrap every stage so that its calls add their wall seconds to the returned dict."""
    seconds: dict[str, float] = defaultdict(float)
    for module, name, _ in STAGES:
        original = getattr(module, name)

        def wrapper(*args, _original=original, _name=name, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds[_name] += time.perf_counter() - started

        setattr(module, name, wrapper)
    return seconds


def with_lone_band_limit(stored: Path, limit: int, scratch: Path) -> Path:
    """A copy of ``stored`` whose settings manifest holds ``lone_band_bucket_max = limit``."""
    copy = scratch / "stored-lone-band.db"
    shutil.copyfile(stored, copy)
    engine = make_engine(database_url(str(copy)))
    try:
        with session_scope(engine) as session:
            settings = dataclasses.replace(manifest.load(session), lone_band_bucket_max=limit)
            for key, value in (("settings", settings.to_json()), ("fingerprint", settings.fingerprint())):
                session.get(ManifestEntry, key).value = value
    finally:
        engine.dispose()
    return copy


#: What the process spent in Python and SQLite and in the kernel, and its system calls that
#: read and write (Linux's /proc/self/io; absent elsewhere): at 100,000 documents most page
#: reads come from outside SQLite's cache, one system call each. Then what ``--workers``
#: processes spent (0 with one worker, which is the writer itself).
COUNTERS = ("user CPU s", "system CPU s", "read system calls", "write system calls", "workers' user CPU s",
            "workers' system CPU s")


#: What the ingest did to the passage index (:func:`counted_index`): the band rows it wrote,
#: the keys its bucket reads looked up, and the members of the buckets found, by the bucket's
#: size against the database's settings (quiet: up to ``lone_band_bucket_max``; busy: up to
#: ``bucket_cap``; crowded: more), and the busy buckets it wanted and had in memory (see
#: index.BusyBuckets: their members are then not read). At 100,000 documents the rows and
#: keys are as many as at 1,000 and the members read thirteen times as many without that memory.
BUCKET_COUNTERS = ("passage band rows written", "bucket keys looked up", "members of quiet buckets",
                   "members of busy buckets", "members of crowded buckets", "busy buckets wanted",
                   "busy buckets at hand")


class IndexCalls(NamedTuple):
    """What :func:`counted_index` recorded."""

    rows_written: list[int]  # passage band rows, per insert
    reads: list[tuple[int, list[int]]]  # (keys looked up, the sizes of the buckets found), per read


@contextmanager
def counted_index() -> Iterator[IndexCalls]:
    """While entered, record the ingest's writes of passage band rows (``index.insert_rows``
    into the recent table) and its bucket reads on SQLite (``index._joined_members``)."""
    calls = IndexCalls([], [])
    read, write = index._joined_members, index.insert_rows

    def counted_read(session, keys):
        members = read(session, keys)
        calls.reads.append((len(keys), [len(ids) for ids in members.values()]))
        return members

    def counted_write(session, table, columns, rows, **options):
        if table is RecentPassageBand.__table__:
            calls.rows_written.append(len(rows))
        return write(session, table, columns, rows, **options)

    index._joined_members, index.insert_rows = counted_read, counted_write
    try:
        yield calls
    finally:
        index._joined_members, index.insert_rows = read, write


def bucket_counters(calls: IndexCalls, settings) -> dict[str, float]:
    """:data:`BUCKET_COUNTERS` over ``calls`` (see :func:`counted_index`)."""
    sizes = [size for _, found in calls.reads for size in found]
    quiet, cap = settings.lone_band_bucket_max, settings.bucket_cap
    return dict(zip(BUCKET_COUNTERS, (
        sum(calls.rows_written),
        sum(keys for keys, _ in calls.reads),
        sum(size for size in sizes if size <= quiet),
        sum(size for size in sizes if quiet < size <= cap),
        sum(size for size in sizes if size > cap),
    )))


def process_counters() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counters = {"user CPU s": usage.ru_utime, "system CPU s": usage.ru_stime}
    # The ingest's worker processes are waited for as it ends (the stored database's build
    # before it is a child too, hence the difference).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    counters.update({"workers' user CPU s": children.ru_utime, "workers' system CPU s": children.ru_stime})
    try:
        io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
        counters.update({"read system calls": int(io["syscr"]), "write system calls": int(io["syscw"])})
    except (OSError, KeyError, ValueError):
        pass
    return counters


@contextmanager
def counted_read_ahead() -> Iterator[list[int]]:
    """Counts the statements given to read ahead (``[n]``) while the block runs."""
    given = [0]
    original = readahead.ReadAhead.read

    def counted(self, sql, values):
        if self.active:  # reading ahead, not a no-op
            given[0] += len(list(chunks(list(values))))
        return original(self, sql, values)

    readahead.ReadAhead.read = counted
    try:
        yield given
    finally:
        readahead.ReadAhead.read = original


@contextmanager
def counted_snapshots() -> Iterator[list[prefetch.IndexChanges]]:
    """The IndexChanges an ingest with workers made, to read their counts afterwards."""
    made: list[prefetch.IndexChanges] = []
    original = prefetch.IndexChanges

    class Counted(original):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    prefetch.IndexChanges = Counted
    try:
        yield made
    finally:
        prefetch.IndexChanges = original


def ingest_round(
    stored: Path, files: list[Path], scratch: Path, seconds: dict[str, float], cold: bool = False, workers: int = 1,
) -> tuple[float, int, int, dict[str, float]]:
    """Seconds to ingest ``files`` into a copy of ``stored``, the stored passages' sketches
    its cache was asked for and had at hand, and :data:`COUNTERS` over the ingest alone (the
    copy not counted) and :data:`BUCKET_COUNTERS`; stage times land in ``seconds``. ``cold``:
    the page cache is dropped after the copy; ``workers``: as ``ingest --workers``."""
    copy = scratch / "round.db"
    shutil.copyfile(stored, copy)
    if cold:
        drop_page_cache()
    engine = make_engine(database_url(str(copy)))
    try:
        with session_scope(engine) as session:
            settings = manifest.load(session)
        ingestor = ingest.Ingestor(engine, settings)
        counted = process_counters()
        with counted_index() as calls, counted_read_ahead() as read_ahead, counted_snapshots() as snapshots:
            started = time.perf_counter()
            ingestor.ingest_paths([str(path) for path in files], workers=workers)
            elapsed = time.perf_counter() - started
        spent = {name: value - counted[name] for name, value in process_counters().items() if name in counted}
        spent.update(bucket_counters(calls, settings))
        spent["statements read ahead"] = read_ahead[0]
        if workers > 1:
            spent["documents matched from a worker's snapshot"] = sum(made.used for made in snapshots)
            spent["documents whose buckets the writer read"] = sum(made.read_instead for made in snapshots)
        if ingestor.busy_buckets is not None:
            spent.update({"busy buckets wanted": ingestor.busy_buckets.asked,
                          "busy buckets at hand": ingestor.busy_buckets.at_hand})
        return elapsed, ingestor.sketches.asked, ingestor.sketches.at_hand, spent
    finally:
        engine.dispose()
        copy.unlink()


def lookup_medians(stored: Path, files: list[Path]) -> tuple[float, float, float]:
    """Median milliseconds of ``match_text`` over ``files``: in full, documents only, and in
    full with one sketch cache shared by the texts' lookups (as a process that looks up many
    texts would keep it), the three asked in turn for each text after one warm-up pass."""
    engine = make_engine(database_url(str(stored)), read_only=True)
    texts = [path.read_text(encoding="utf-8") for path in files]
    times: dict[str, list[float]] = {"full": [], "documents": [], "shared": []}
    shared = derive.SketchCache()
    try:
        with session_scope(engine) as session:
            for text in texts:
                lookup.match_text(session, text)
            for text in texts:
                for kind, options in (("full", {}), ("documents", {"passages": False}), ("shared", {"sketches": shared})):
                    started = time.perf_counter()
                    lookup.match_text(session, text, **options)
                    times[kind].append(time.perf_counter() - started)
    finally:
        engine.dispose()
    return tuple(1000 * median(times[kind]) for kind in ("full", "documents", "shared"))


def match_command_seconds(stored: Path, files: list[Path]) -> tuple[float, float, float]:
    """Wall seconds of ``provenance match`` (interpreter start included): the first of
    ``files`` alone, then all of them in one run, in full and with ``--documents-only``."""

    def run(*args: str) -> float:
        started = time.perf_counter()
        done = subprocess.run([*CLI, "--db", str(stored), "match", *args], capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"provenance match failed: {done.stderr[-2000:]}")
        return time.perf_counter() - started

    paths = [str(path) for path in files]
    return (run(paths[0], "--format", "json"), run(*paths, "--format", "jsonl"),
            run(*paths, "--format", "jsonl", "--documents-only"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, help="a SQLite database grown by bench/scale.py (else one is built)")
    parser.add_argument("--stored", type=int, default=1000, help="documents stored before the new ones [1000]")
    parser.add_argument("--new", type=int, default=1000, help="new documents ingested in each round [1000]")
    parser.add_argument("--rounds", type=int, default=1,
                        help="ingests of the new documents, each into a new copy (0: lookups only) [1]")
    parser.add_argument("--lookups", action="store_true", help="also time match_text for each new text")
    parser.add_argument("--sketch-cache", type=int, metavar="N",
                        help="stored passages' sketches the ingest keeps in memory [derive.SKETCH_CACHE_SIZE]")
    parser.add_argument("--recent-bands", type=int, metavar="N",
                        help="recent passage band rows that make a merge [index.RECENT_BANDS_MAX]")
    parser.add_argument("--busy-members", type=int, metavar="N",
                        help="busy buckets' members the ingest keeps in memory, 0 for none [index.BUSY_MEMBERS_MAX]")
    parser.add_argument("--lone-band-bucket-max", type=int, metavar="N",
                        help="with --db: measure a copy whose settings hold this lone_band_bucket_max")
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache after each copy, before the ingest (Linux, as root)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes, as ingest --workers; the stages timed are the writer's [1]")
    parser.add_argument("--worker-niceness", type=int, metavar="N",
                        help="how much nicer than the writer the workers are [ingest.WORKER_NICENESS]")
    parser.add_argument("--read-ahead", type=int, metavar="N",
                        help="connections that read ahead of a writer waiting on the disk, 0 for none "
                             "[readahead.READ_AHEAD_CONNECTIONS]")
    arguments = parser.parse_args()
    if arguments.lone_band_bucket_max is not None and not arguments.db:
        parser.error("--lone-band-bucket-max needs --db (a new database gets it from the product's default)")
    if arguments.sketch_cache is not None:
        derive.SKETCH_CACHE_SIZE = arguments.sketch_cache
    if arguments.recent_bands is not None:
        index.RECENT_BANDS_MAX = arguments.recent_bands
    if arguments.busy_members is not None:
        index.BUSY_MEMBERS_MAX = arguments.busy_members
    if arguments.read_ahead is not None:
        readahead.READ_AHEAD_CONNECTIONS = arguments.read_ahead
    if arguments.worker_niceness is not None:
        ingest.WORKER_NICENESS = arguments.worker_niceness
    with tempfile.TemporaryDirectory(prefix="provenance-stages-") as folder:
        scratch = Path(folder)
        if arguments.db:
            if not arguments.db.is_file():
                raise SystemExit(f"{arguments.db}: no such database (grow one with bench/scale.py --keep FILE)")
            stored = arguments.db
            if arguments.lone_band_bucket_max is not None:
                stored = with_lone_band_limit(stored, arguments.lone_band_bucket_max, scratch)
            files = new_documents(arguments.stored, arguments.new, scratch / "new")
        else:
            corpus = write_corpus(scratch / "corpus", arguments.stored + arguments.new)
            stored = scratch / "stored.db"
            if arguments.stored:
                done = subprocess.run([*CLI, "--db", str(stored), "ingest", *map(str, corpus[: arguments.stored]),
                                       "--quiet", "--workers", "1"], capture_output=True, text=True, cwd=ROOT)
                if done.returncode != 0:
                    raise SystemExit(f"ingest of the stored documents failed: {done.stderr[-2000:]}")
            else:  # a database's first ingest: an empty schema, without planner statistics
                engine = make_engine(database_url(str(stored)))
                upgrade_to_head(engine)
                engine.dispose()
            files = corpus[arguments.stored :]
        lookups = lookup_medians(stored, files) if arguments.lookups else None
        commands = match_command_seconds(stored, files) if arguments.lookups else None
        seconds = timed_stages()
        sketches = [0, 0]  # asked for, at hand: over the rounds
        rounds = []
        for _ in range(arguments.rounds):
            before = dict(seconds)
            total, asked, at_hand, spent = ingest_round(stored, files, scratch, seconds, cold=arguments.cold,
                                                        workers=arguments.workers)
            sketches = [sketches[0] + asked, sketches[1] + at_hand]
            rounds.append((total, {name: seconds[name] - before.get(name, 0.0) for name, _ in seconds.items()}, spent))
    print(f"{len(files)} new documents, {arguments.stored:,} stored; provenance from {Path(derive.__file__).parent}")
    if rounds:
        headers = ["stage"] + [f"round {n} s" for n in range(1, len(rounds) + 1)]
        rows = [["ingest (whole)", *(f"{total:.2f}" for total, _, _ in rounds)]]
        rows += [[f"{within} > {name}" if within else name, *(f"{stage.get(name, 0.0):.2f}" for _, stage, _ in rounds)]
                 for _, name, within in STAGES]
        rows += [[name, *(f"{spent[name]:.2f}" if name.endswith(" s") else f"{spent[name]:,.0f}"
                          for _, _, spent in rounds)]
                 for name in (*COUNTERS, *BUCKET_COUNTERS, "statements read ahead",
                              "documents matched from a worker's snapshot", "documents whose buckets the writer read")
                 if all(name in spent for _, _, spent in rounds)]
        print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
        print(f"sketch cache of {derive.SKETCH_CACHE_SIZE:,}: {sketches[0]:,} sketches asked for, "
              f"{100 * sketches[1] / max(sketches[0], 1):.1f}% of them at hand")
    # Linux reports kilobytes. The whole script: the stored database's build (a subprocess,
    # not counted), the lookups and the ingest rounds, each into its own copy.
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if lookups:
        print(f"match_text over the {len(files)} new texts, median: {lookups[0]:.1f} ms in full, "
              f"{lookups[1]:.1f} ms documents only, {lookups[2]:.1f} ms in full with a shared sketch cache")
        alone, together, documents_only = commands
        print(f"provenance match (interpreter start included): one text alone {alone:.2f} s; the {len(files)} texts "
              f"in one run {together:.2f} s ({1000 * together / len(files):.0f} ms a text), documents only "
              f"{documents_only:.2f} s ({1000 * documents_only / len(files):.0f} ms a text)")


if __name__ == "__main__":
    main()
