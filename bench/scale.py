"""How a database grows: size per 1,000 documents and ingest rate as the corpus grows.

    python bench/scale.py                                  # 4 batches of 250 documents, SQLite and PostgreSQL
    python bench/scale.py --batches 5 --batch-docs 1000    # a bigger run (5,000 documents)
    PROVENANCE_BENCH_PG_URL=postgresql+psycopg://user@host/postgres python bench/scale.py --no-sqlite
    python bench/scale.py --no-postgres --batches 10 --batch-docs 1000 --keep big.db
    python bench/scale.py --grow big.db --batches 10 --batch-docs 1000   # then 10,000 more into it
    python bench/scale.py --grow big.db --batches 0 --read-commands      # time the reads only

One seeded synthetic corpus (the one bench/workers.py writes: news-length pseudo-word
articles, 10% near-copies, 5% exact copies, 10% excerpts of earlier documents) is ingested
into one fresh database in consecutive batches, one ``provenance ingest`` per batch. After
each batch the script prints the documents stored, the batch's ingest rate (documents per
wall second of the command), and the database's size: ``pg_database_size`` on PostgreSQL
(after a plain VACUUM, so dead row versions are reusable but the files are not shrunk), the
file plus its WAL on SQLite. "tables MB" is the project's tables with their indexes (and
TOAST), without PostgreSQL's fixed catalog overhead of a few MB per database; "per 1,000
docs" divides it by the documents stored. At the end it prints the biggest tables.
With ``--read-commands`` it also times, after each batch, what a user runs on the database:
``report`` (the terminal report, first 20 of each list), ``report --format json`` (all of it,
written to /dev/null; also its peak resident MB), ``inspect --format json``, ``inspect
documents --format json`` (every document), ``inspect sources`` and ``match`` of one document
not stored, each as a CLI command (wall seconds, interpreter start included;
the start alone is printed below the table), and the median of five calls of the library's
``match_text`` for the same text in a warm process ("match_text ms"; "documents only ms" asks
only which stored documents it duplicates, as ``match --documents-only``). ``--read-repeats N`` runs
each command N times, in turn, and prints the median (a shared machine's noise is large beside
a two-second command). ``--cold`` drops the page cache before each run of a command (Linux,
as root), so that each reads the database from disk, as the first command after a reboot or
after other work has pushed the database out of memory does. ``--grow DB --batches 0
--read-commands`` times the read commands on DB as it stands, ingesting nothing. Where the
environment forbids writing bytecode (PYTHONDONTWRITEBYTECODE), provenance's is written once
first, as a user's first command writes it.

Nothing is extrapolated: the figures are for the sizes measured. PostgreSQL is the server in
PROVENANCE_BENCH_PG_URL, else a throwaway local one (see bench/workers.py).
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Iterator, Optional

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import CLI, ROOT, PostgresBackend, SQLiteBackend, _given, local_postgres, write_corpus  # noqa: E402


def ingest(url: str, files: list[Path], workers: int, extra: tuple[str, ...] = ()) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [*CLI, "--db", url, "ingest", *map(str, files), "--workers", str(workers), "--quiet", "--format", "json", *extra],
        capture_output=True, text=True, cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"ingest failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - started


#: Set by --cold: drop the page cache before each read command.
COLD = False
_DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> None:
    """Empty the kernel's page cache (Linux, root), so that the next command reads from disk."""
    os.sync()
    try:
        _DROP_CACHES.write_text("1\n")
    except OSError as error:
        raise SystemExit(f"--cold: cannot write {_DROP_CACHES} ({error.strerror}); it needs Linux and root")


#: Run by a fresh interpreter, which starts the command, waits for it and prints its wall
#: seconds, exit code and peak resident KB (dropping the page cache first when its first
#: argument says so). Linux counts in a process's peak the memory of the process it was forked
#: from, so a command started by this script reported this script's peak whenever that was the
#: larger: 631 MB for every command timed after bench/postgres_copy.py had compared two
#: 160 MB JSON reports in memory (a one-off check: /bin/true started by a process holding
#: 600 MB reports 614 MB, started through this 14 MB).
_RUN_AND_MEASURE = """
import os, subprocess, sys, time
if sys.argv[1] == "cold":
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as caches:
        caches.write("1\\n")
started = time.perf_counter()
process = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(time.perf_counter() - started, os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def command_run(url: str, *args: str) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one read-only CLI command, as a user runs it
    (interpreter start included); from a dropped page cache with --cold."""
    with tempfile.TemporaryFile() as errors:
        measured = subprocess.run(
            [sys.executable, "-c", _RUN_AND_MEASURE, "cold" if COLD else "warm", *CLI, "--db", url, *args],
            stdout=subprocess.PIPE, stderr=errors, cwd=ROOT, text=True,
        )
        seconds, code, peak_kb = measured.stdout.split() if measured.returncode == 0 else ("0", "1", "0")
        if int(code) != 0:
            errors.seek(0)
            raise SystemExit(f"{args[0]} failed ({code}): {errors.read()[-2000:].decode(errors='replace')}")
    return float(seconds), int(peak_kb) / 1024


def write_bytecode() -> None:
    """Compile provenance's modules into their bytecode cache where this environment forbids
    writing it (PYTHONDONTWRITEBYTECODE): a user's first command writes it, and without it
    every command timed here compiles the package again (about 0.1 s of each here: `provenance
    --version`, 15 rounds in turn, median 1.10 s without the cache and 1.00 s with it)."""
    if sys.flags.dont_write_bytecode:
        compileall.compile_dir(str(ROOT / "provenance"), quiet=1)
        print("PYTHONDONTWRITEBYTECODE is set: provenance's bytecode cache written once (compileall), "
              "as a user's first command writes it", file=sys.stderr)


def read_seconds(url: str, probe: Path, repeats: int = 1) -> list[str]:
    """How long `report` (table and JSON), `inspect` (summary, documents, sources) and `match` take on the database as it
    stands, the median of ``repeats`` runs of each (run in turn, so a burst of noise on a
    shared machine lands on one run of each, not on all runs of one), and the JSON report's
    peak resident MB (the most of its runs); ``probe`` is a document not stored (the lookup
    a user makes before publishing)."""
    commands = (
        ("report", "-o", os.devnull), ("report", "--format", "json", "-o", os.devnull), ("inspect", "--format", "json"),
        ("inspect", "documents", "--format", "json"), ("inspect", "sources"), ("match", str(probe), "--format", "json"),
    )
    runs = [[command_run(url, *args) for args in commands] for _ in range(repeats)]
    seconds = [f"{median(run[0] for run in times):.2f}" for times in zip(*runs)]
    json_peak = max(run[1][1] for run in runs)
    lookups = [lookup_ms(url, probe), lookup_ms(url, probe, passages=False)]
    return [*seconds[:2], f"{json_peak:.0f}", *seconds[2:], *lookups]


def lookup_ms(url: str, probe: Path, repeats: int = 5, passages: bool = True) -> str:
    """Median milliseconds of the library's ``match_text`` (the lookup behind `match`;
    ``passages=False``: behind `match --documents-only`) for one text not stored, in a warm
    process: the answer a service built on the library gives."""
    from provenance.db.session import make_engine, session_scope
    from provenance.lookup import match_text

    text = probe.read_text(encoding="utf-8")
    engine = make_engine(url, read_only=True)
    try:
        with session_scope(engine) as session:
            match_text(session, text, passages=passages)  # warm: imports, settings, page cache
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                match_text(session, text, passages=passages)
                times.append(time.perf_counter() - started)
    finally:
        engine.dispose()
    return f"{1000 * sorted(times)[len(times) // 2]:.0f}"


def database_size(url: str) -> tuple[int, int, list[tuple[str, int]]]:
    """(documents, bytes, [(table, bytes with its indexes), ...] biggest first)."""
    from sqlalchemy import create_engine, text

    from provenance.db.session import make_engine, sqlite_path

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            documents = connection.execute(text("SELECT count(*) FROM document")).scalar_one()
            if engine.dialect.name == "postgresql":
                tables = connection.execute(text(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY 2 DESC"
                )).all()
            else:
                tables = connection.execute(text(
                    "SELECT m.tbl_name, sum(s.pgsize) FROM dbstat s JOIN sqlite_master m ON m.name = s.name "
                    "GROUP BY m.tbl_name ORDER BY 2 DESC"
                )).all() if _has_dbstat(connection) else []
    finally:
        engine.dispose()
    if engine.dialect.name == "postgresql":
        vacuum = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with vacuum.connect() as connection:
                connection.exec_driver_sql("VACUUM")
                size = connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        finally:
            vacuum.dispose()
    else:
        path = sqlite_path(url)
        size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    return documents, size, [(name, int(total)) for name, total in tables]


def _has_dbstat(connection) -> bool:
    from sqlalchemy import text

    try:
        connection.execute(text("SELECT 1 FROM dbstat LIMIT 1"))
        return True
    except Exception:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        connection.rollback()
        return False


class KeptSQLite(SQLiteBackend):
    """A SQLite database in a file of the user's choosing, left in place afterwards."""

    def __init__(self, path: Path):
        self.path = path.resolve()

    @contextmanager
    def database(self) -> Iterator[str]:
        yield f"sqlite:///{self.path}"


def grow(
    backend, batches: list[list[Path]], workers: int, extra: tuple[str, ...] = (), probe: Optional[Path] = None,
    first_batch: int = 1, repeats: int = 1,
) -> tuple[list[list], list[tuple[str, int]]]:
    rows = []
    tables: list[tuple[str, int]] = []
    with backend.database() as url:
        if not batches and probe:  # the reads alone, on the database as it stands
            documents, size, tables = database_size(url)
            data = sum(total for _, total in tables) or size
            rows.append([backend.name, "-", documents, "-", f"{size / 1e6:.1f}", f"{data / 1e6:.1f}",
                         f"{data / documents * 1000 / 1e6:.1f}", *read_seconds(url, probe, repeats)])
        for number, batch in enumerate(batches, first_batch):
            seconds = ingest(url, batch, workers, extra)
            documents, size, tables = database_size(url)
            data = sum(total for _, total in tables) or size
            rows.append([backend.name, number, documents, f"{len(batch) / seconds:.1f}",
                         f"{size / 1e6:.1f}", f"{data / 1e6:.1f}", f"{data / documents * 1000 / 1e6:.1f}",
                         *(read_seconds(url, probe, repeats) if probe else [])])
            print(f"  {backend.name:10} batch {number}: {documents:6d} documents, {len(batch) / seconds:5.1f} docs/s, "
                  f"{size / 1e6:7.1f} MB", file=sys.stderr, flush=True)
    return rows, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=4, help="consecutive ingests into one database [4]")
    parser.add_argument("--batch-docs", type=int, default=250, help="documents per batch [250]")
    parser.add_argument("--workers", type=int, default=2, help="--workers of each ingest [2]")
    parser.add_argument("--passage-threshold", type=float, default=None,
                        help="passed to `provenance ingest --passage-threshold` [the product's default]")
    parser.add_argument("--read-commands", action="store_true",
                        help="after each batch also time `report`, `inspect` and `match` (CLI wall seconds)")
    parser.add_argument("--read-repeats", type=int, default=1, metavar="N",
                        help="with --read-commands: run each command N times and print the median [1]")
    parser.add_argument("--cold", action="store_true",
                        help="with --read-commands: drop the page cache before each run of a command (Linux, root)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="grow the SQLite database in this file and keep it (for profiling or more timing)")
    parser.add_argument("--grow", type=Path, default=None, metavar="DB",
                        help="SQLite only: ingest the next documents of the same corpus into DB, a database this "
                             "script kept (--keep) or grew before")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    arguments = parser.parse_args()
    if arguments.read_repeats < 1:
        parser.error("--read-repeats needs at least 1")
    if arguments.cold:
        if not arguments.read_commands:
            parser.error("--cold needs --read-commands")
        global COLD
        COLD = True
        drop_page_cache()  # fails now, not after an ingest, where it cannot
    if arguments.read_commands:
        write_bytecode()
    if arguments.batches < 0 or (arguments.batches == 0 and not (arguments.grow and arguments.read_commands)):
        parser.error("--batches 0 needs --grow DB and --read-commands (the reads alone); otherwise at least 1")
    if arguments.keep and arguments.keep.exists():
        parser.error(f"{arguments.keep} exists: --keep needs a new file (remove it or choose another name)")
    stored = 0
    if arguments.grow:
        if arguments.keep or not arguments.grow.is_file():
            parser.error("--grow needs an existing database kept by this script, and no --keep")
        arguments.keep, arguments.no_postgres = arguments.grow, True
        stored, _, _ = database_size(f"sqlite:///{arguments.grow.resolve()}")
    extra = () if arguments.passage_threshold is None else ("--passage-threshold", str(arguments.passage_threshold))
    with tempfile.TemporaryDirectory(prefix="provenance-scale-") as scratch:
        scratch_dir = Path(scratch)
        os.chmod(scratch_dir, 0o755)
        wanted = arguments.batches * arguments.batch_docs
        if stored:
            # The corpus is seeded, so it always starts the same: a database this script kept
            # holds its first `stored` documents; the next one was the text `match` looked up.
            files = write_corpus(scratch_dir / "corpus", stored + 1 + wanted)
            last, files = files[stored], files[stored + 1 :]
        else:
            files = write_corpus(scratch_dir / "corpus", wanted + 1)
            last = files.pop()  # never ingested: the text `match` looks up
        probe = last if arguments.read_commands else None
        batches = [files[k : k + arguments.batch_docs] for k in range(0, len(files), arguments.batch_docs)]
        print(f"corpus: {len(files)} documents, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB of text, "
              f"{len(batches)} batches, --workers {arguments.workers}; {os.cpu_count()} CPU(s), "
              f"Python {platform.python_version()}, {platform.platform()}", file=sys.stderr)
        results: list[tuple[list[list], list[tuple[str, int]]]] = []
        if not arguments.no_sqlite:
            backend = KeptSQLite(arguments.keep) if arguments.keep else SQLiteBackend(scratch_dir)
            results.append(grow(backend, batches, arguments.workers, extra, probe,
                                first_batch=stored // arguments.batch_docs + 1, repeats=arguments.read_repeats))
        if not arguments.no_postgres:
            pg_dir = scratch_dir / "pg"
            pg_dir.mkdir()
            server_url = os.environ.get("PROVENANCE_BENCH_PG_URL")
            with (_given(server_url) if server_url else local_postgres(pg_dir)) as url:
                if url:
                    results.append(grow(PostgresBackend(url, "server"), batches, arguments.workers, extra, probe,
                                        repeats=arguments.read_repeats))
                else:
                    print("PostgreSQL: skipped (no PROVENANCE_BENCH_PG_URL and no initdb found)", file=sys.stderr)
    rows = [row for backend_rows, _ in results for row in backend_rows]
    print(tabulate(rows, headers=["database", "batch", "documents", "batch docs/s", "database MB", "tables MB",
                                  "tables MB per 1,000 docs",
                                  *(["report s", "report json s", "report json MB", "inspect s",
                                     "inspect documents json s", "inspect sources s", "match s", "match_text ms",
                                     "documents only ms"]
                                    if arguments.read_commands else [])],
                   tablefmt="github", disable_numparse=True))
    if arguments.read_commands:
        start = median(command_run("sqlite://", "--version")[0] for _ in range(arguments.read_repeats))
        print(f"\n(`provenance --version`, the interpreter and imports alone: {start:.2f} s)")
    for backend_rows, tables in results:
        if tables and backend_rows:
            total = sum(size for _, size in tables)
            print(f"\n{backend_rows[-1][0]}, {backend_rows[-1][2]} documents: biggest tables (with their indexes)")
            print(tabulate([[name, f"{size / 1e6:.1f}", f"{100 * size / total:.0f}%"] for name, size in tables[:6]],
                           headers=["table", "MB", "share"], tablefmt="github"))


if __name__ == "__main__":
    main()
