"""The read commands and an incremental ingest at scale on PostgreSQL, without growing a
PostgreSQL database document by document: a SQLite database grown by bench/scale.py is copied
into PostgreSQL, and the same commands are timed on both, in turn.

    python bench/scale.py --no-postgres --batches 50 --batch-docs 2000 --workers 2 --keep big.db
    python bench/postgres_copy.py big.db                     # read commands, medians of 3, two rounds
    python bench/postgres_copy.py big.db --rounds 1 --new 1000   # and 1,000 new documents ingested

`provenance ingest` grows a PostgreSQL database at 11-16 documents a second here (bench/README.md),
so 100,000 documents would take hours; the copy takes minutes. The copy's schema is made by
provenance's migrations; every table's rows are then copied as stored (COPY, with the foreign
key triggers off while loading), the id sequences moved past the copied ids, and the database
vacuumed and analysed, as autovacuum would have left it. SQLite's row tallies (the row_count
table) are not copied: on PostgreSQL the table stays empty and the tables are counted.

Before timing, it checks that both databases give byte-identical `report --format json`,
`inspect documents --format json` and `inspect sources --format json` (not `inspect`, which
names the database), and stops if not. Then, each round: bench/scale.py's read commands on
each database (CLI wall seconds, medians of ``--read-repeats``; `match` and ``match_text``
look up the document that follows the corpus, as there). ``--new N``: also N new documents (the
ones that follow the corpus and its probe) ingested with ``provenance ingest --workers 1`` into
a copy of the PostgreSQL copy (``CREATE DATABASE ... TEMPLATE``), and, for the baseline, N
into a new PostgreSQL database holding the corpus's first N documents (stored first, not
timed): the incremental cost of bench/stages.py, on PostgreSQL and at the command line.

PostgreSQL is the server in PROVENANCE_BENCH_PG_URL, else a throwaway local one (see
bench/workers.py); the script's databases are dropped at the end. Asserts nothing but the
identical outputs.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import Boolean
from sqlalchemy.engine import make_url
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import database_size, read_seconds, write_bytecode  # noqa: E402
from workers import CLI, ROOT, PostgresBackend, _given, local_postgres, write_corpus  # noqa: E402

from provenance.db.migrate import check_database, head_revision, upgrade_to_head  # noqa: E402
from provenance.db.models import Base, RowCount  # noqa: E402
from provenance.db.session import make_engine  # noqa: E402

#: Kept by SQLite's triggers only (see RowCount): empty on PostgreSQL.
NOT_COPIED = {RowCount.__tablename__}
#: The outputs that must be the same on both databases.
SAME_OUTPUT = (
    ("report", "--format", "json"),
    ("inspect", "documents", "--format", "json"),
    ("inspect", "sources", "--format", "json"),
)
READ_COLUMNS = ["report s", "report json s", "report json MB", "inspect s", "inspect documents json s",
                "inspect sources s", "match s", "match_text ms", "documents only ms"]


def copy_rows(sqlite_file: Path, url: str) -> list[tuple[str, int, float]]:
    """Copy every table of ``sqlite_file`` into the new database at ``url``, its schema made
    by the migrations; (table, rows, seconds) for each."""
    import psycopg

    engine = make_engine(url)
    try:
        upgrade_to_head(engine)
    finally:
        engine.dispose()
    copied = []
    source = sqlite3.connect(f"file:{sqlite_file}?mode=ro", uri=True)
    target = psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        with target.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")  # no foreign key triggers while loading
            for table in Base.metadata.sorted_tables:
                if table.name in NOT_COPIED:
                    continue
                started = time.perf_counter()
                columns = ", ".join(f'"{column.name}"' for column in table.columns)
                # SQLite stores booleans as 0 and 1, which PostgreSQL's COPY does not take for one.
                flags = [i for i, column in enumerate(table.columns) if isinstance(column.type, Boolean)]
                rows = source.execute(f"SELECT {columns} FROM {table.name}")
                count = 0
                with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                    while batch := rows.fetchmany(100_000):
                        for row in batch:
                            if flags:
                                row = [bool(v) if i in flags and v is not None else v for i, v in enumerate(row)]
                            copy.write_row(row)
                        count += len(batch)
                if "id" in table.c and table.c.id.primary_key and table.c.id.autoincrement:
                    cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                   f"coalesce(max(id), 1)) FROM {table.name}")
                copied.append((table.name, count, time.perf_counter() - started))
            cursor.execute("SET session_replication_role = DEFAULT")
        target.commit()
        target.autocommit = True
        target.execute("VACUUM (ANALYZE)")
    finally:
        target.close()
        source.close()
    return copied


def output(url: str, *args: str) -> bytes:
    return subprocess.run([*CLI, "--db", url, *args], capture_output=True, check=True, cwd=ROOT).stdout


def ingest_seconds(url: str, folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run([*CLI, "--db", url, "ingest", str(folder), "--workers", "1", "--quiet"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db", type=Path, help="a SQLite database grown by bench/scale.py (--keep or --grow)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of timing, each on both databases in turn [2]")
    parser.add_argument("--read-repeats", type=int, default=3, metavar="N", help="runs of each read command [3]")
    parser.add_argument("--new", type=int, default=0, metavar="N",
                        help="also ingest N new documents into each database size each round [0: none]")
    arguments = parser.parse_args()
    if not arguments.db.is_file():
        parser.error(f"{arguments.db}: no such file (grow one with bench/scale.py --keep)")
    sqlite_url = f"sqlite:///{arguments.db.resolve()}"
    engine = make_engine(sqlite_url, read_only=True)
    try:
        revision = check_database(engine)
    finally:
        engine.dispose()
    if revision != head_revision():  # the copy's schema is made at head: the columns must match
        parser.error(f"{arguments.db} is at schema revision {revision}, not {head_revision()}: "
                     f"run `provenance --db {arguments.db} db upgrade` first")
    write_bytecode()
    stored, _, _ = database_size(sqlite_url)
    if 2 * arguments.new > stored:
        parser.error(f"--new {arguments.new}: the baseline takes the corpus's first {2 * arguments.new} documents, "
                     f"which must come before the {stored} stored; give a bigger database or a smaller --new")
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="provenance-pgcopy-")))
        os.chmod(scratch, 0o755)
        (scratch / "pg").mkdir()
        server_url = os.environ.get("PROVENANCE_BENCH_PG_URL")
        server = stack.enter_context(_given(server_url) if server_url else local_postgres(scratch / "pg"))
        if not server:
            raise SystemExit("bench: no PROVENANCE_BENCH_PG_URL and no initdb found")
        backend = PostgresBackend(server, "server")
        copy_url = stack.enter_context(backend.database())
        copied = copy_rows(arguments.db, copy_url)
        print(tabulate(copied, headers=["table", "rows copied", "seconds"], tablefmt="github", floatfmt=".1f"))
        for args in SAME_OUTPUT:
            if output(copy_url, *args) != output(sqlite_url, *args):
                raise SystemExit(f"bench: `{' '.join(args)}` differs between the copy and {arguments.db}")
        print(f"same output on both: {'; '.join(' '.join(args) for args in SAME_OUTPUT)}", file=sys.stderr)
        files = write_corpus(scratch / "corpus", stored + 1 + arguments.new)
        probe = files[stored]
        folders = {name: scratch / name for name in ("first", "small", "big")}
        for folder in folders.values():
            folder.mkdir()
        if arguments.new:
            for path in files[: arguments.new]:
                path.rename(folders["first"] / path.name)
            for path in files[arguments.new : 2 * arguments.new]:
                path.rename(folders["small"] / path.name)
            for path in files[stored + 1 :]:
                path.rename(folders["big"] / path.name)
        reads, ingests = [], []
        for round_number in range(1, arguments.rounds + 1):
            for name, url in (("PostgreSQL (copy)", copy_url), ("SQLite", sqlite_url)):
                reads.append([name, round_number, *read_seconds(url, probe, arguments.read_repeats)])
            if arguments.new:
                with backend.database() as small:
                    ingest_seconds(small, folders["first"])
                    into_small = ingest_seconds(small, folders["small"])
                with backend.database(template=make_url(copy_url).database) as big:
                    into_big = ingest_seconds(big, folders["big"])
                ingests.append([round_number, f"{into_small:.1f}", f"{into_big:.1f}", f"{into_big / into_small:.2f}"])
        print(f"\nread commands at {stored:,} documents (medians of {arguments.read_repeats})")
        print(tabulate(reads, headers=["database", "round", *READ_COLUMNS], tablefmt="github", disable_numparse=True))
        if ingests:
            print(f"\n{arguments.new:,} new documents, `provenance ingest --workers 1` on PostgreSQL (wall s)")
            print(tabulate(ingests, headers=["round", f"into {arguments.new:,}", f"into {stored:,}", "ratio"],
                           tablefmt="github", disable_numparse=True))


if __name__ == "__main__":
    main()
