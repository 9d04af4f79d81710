"""Ingest throughput against the number of workers, on SQLite and on PostgreSQL.

    python bench/workers.py                      # 200 documents, SQLite and (if possible) PostgreSQL: ~5 min
    python bench/workers.py --docs 2000          # a bigger run (about ten times longer)
    python bench/workers.py --no-postgres --counts 1,2
    python bench/workers.py --no-postgres --counts 1,2 --docs 1000 --rounds 5   # medians of 5, in turn
    PROVENANCE_BENCH_PG_URL=postgresql+psycopg://user@host/postgres python bench/workers.py

Two ways to use N cores, each timed for N = 1, 2, 4 on a fresh database:

- ``--workers N``: one ``provenance ingest`` whose N processes read, normalise and sign the
  files while one writer stores them in input order;
- ``N processes``: N ``provenance ingest`` commands started at once on disjoint shares of the
  corpus, each storing its own documents (they take turns on the database's writer lock).

Docs/s is documents stored divided by the wall time of the whole command(s), process start
and schema creation included; the ratio is against N = 1 in the same run (one process with
one worker: the same command in both modes, so it is timed once). ``--rounds K`` times every
command K times, in turn (N = 1, then each of the others, then again), and gives the median
wall time, its rate and the ratio of the medians, and the least and greatest of each round's
ratio against that round's N = 1: this shared machine moves a ten-second ingest by 15% or
more from one run to the next, more than two workers change it (bench/README.md). The
corpus is a seeded synthetic one written as .txt files (one document per file, so it can be spread
over workers): news-length pseudo-word articles, 10% near-copies, 5% exact copies and 10%
excerpts of earlier ones, so matching and derivation work is part of what is timed.

PostgreSQL: the server in PROVENANCE_BENCH_PG_URL (a database is created and dropped per
measurement), else a throwaway local server started from ``initdb`` when one is installed
(``synchronous_commit=off``, like SQLite's WAL with ``synchronous=NORMAL``: no flush per
commit), else skipped. Nothing is asserted: the script prints figures.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Iterator, Optional

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "provenance"]
SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
FUNCTION_WORDS = ["the", "of", "and", "to", "a", "in", "that", "is", "for", "on", "with", "as", "was", "by", "said"]


# -- corpus ------------------------------------------------------------------------------
def write_corpus(folder: Path, count: int, seed: int = 11) -> list[Path]:
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(30000)]
    weights = [1.0 / (rank + 10) for rank in range(len(vocabulary))]  # Zipf-like
    cumulative = list(itertools.accumulate(weights))  # what choices() would compute on every call

    def article() -> str:
        paragraphs = []
        for _ in range(rng.randint(4, 9)):
            sentences = []
            for _ in range(rng.randint(2, 4)):
                words = [rng.choice(FUNCTION_WORDS) if rng.random() < 0.4 else w
                         for w in rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(12, 22))]
                sentences.append(" ".join(words).capitalize() + ".")
            paragraphs.append(" ".join(sentences))
        return "\n\n".join(paragraphs)

    texts: list[str] = []
    for number in range(count):
        roll = rng.random()
        if texts and roll < 0.10:
            words = rng.choice(texts).split(" ")
            for _ in range(max(1, len(words) // 40)):
                words[rng.randrange(len(words))] = rng.choice(vocabulary)
            texts.append(" ".join(words))
        elif texts and roll < 0.15:
            texts.append(rng.choice(texts))
        elif texts and roll < 0.25:
            paragraphs = rng.choice(texts).split("\n\n")
            start = rng.randrange(len(paragraphs))
            texts.append("\n\n".join([article().split("\n\n")[0], *paragraphs[start : start + 3]]))
        else:
            texts.append(article())
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for number, text in enumerate(texts):
        path = folder / f"doc{number:05d}.txt"
        path.write_text(text + "\n", encoding="utf-8")
        files.append(path)
    return files


# -- databases ---------------------------------------------------------------------------
class Backend:
    name = ""

    @contextmanager
    def database(self) -> Iterator[str]:
        raise NotImplementedError


class SQLiteBackend(Backend):
    name = "SQLite"

    def __init__(self, folder: Path):
        self.folder = folder

    @contextmanager
    def database(self) -> Iterator[str]:
        path = self.folder / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for leftover in glob.glob(f"{path}*"):
                os.unlink(leftover)


class PostgresBackend(Backend):
    name = "PostgreSQL"

    def __init__(self, server_url: str, label: str):
        from sqlalchemy.engine import make_url

        self.server = make_url(server_url)
        self.label = label

    @contextmanager
    def database(self, template: str = "") -> Iterator[str]:
        """A new database on the server (a copy of the database ``template`` when given),
        dropped afterwards."""
        from sqlalchemy import create_engine

        name = f"provenance_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.server, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                copied = f' TEMPLATE "{template}"' if template else ""
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"{copied}')
            try:
                yield self.server.set(database=name).render_as_string(hide_password=False)
            finally:
                with admin.connect() as connection:
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.dispose()


def _postgres_bin() -> Optional[Path]:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    def version(path: str) -> list[int]:
        return [int(part) for part in path.split("/")[4].split(".") if part.isdigit()]

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    return Path(candidates[-1]).parent if candidates else None


@contextmanager
def local_postgres(folder: Path) -> Iterator[Optional[str]]:
    """A throwaway server in ``folder`` (run as ``postgres`` when we are root), or None."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        yield None
        return
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = "postgres"
        try:
            import pwd

            pwd.getpwnam(user)
        except KeyError:
            print("bench: running as root and there is no 'postgres' user to run the server as", file=sys.stderr)
            yield None
            return
        shutil.chown(folder, user=user)
        prefix = ["runuser", "-u", user, "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--locale=C", "--no-sync"], check=True, capture_output=True)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c synchronous_commit=off -c max_connections=100"
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "start",
                    "-o", options], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)


# -- measurements ------------------------------------------------------------------------
def run_ingests(url: str, shares: list[list[Path]], workers: int) -> float:
    """Wall seconds for one `ingest` per share, all started at once; checks they stored all."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [*CLI, "--db", url, "ingest", *map(str, share), "--workers", str(workers), "--quiet", "--format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for share in shares
    ]
    outputs = [process.communicate() for process in processes]
    elapsed = time.perf_counter() - started
    for process, (stdout, stderr) in zip(processes, outputs):
        if process.returncode != 0:
            raise SystemExit(f"ingest failed ({process.returncode}): {stderr[-2000:]}")
    return elapsed


def count_documents(url: str) -> int:
    from sqlalchemy import func, select

    from provenance.db.models import Document
    from provenance.db.session import make_engine, session_scope

    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return session.scalar(select(func.count()).select_from(Document))
    finally:
        engine.dispose()


MODES = ("--workers N", "N processes")


def measure(backend: Backend, files: list[Path], counts: list[int], rounds: int = 1) -> list[list]:
    """A table row for each mode and N: the median wall seconds over ``rounds``, its rate,
    the ratio of medians against N = 1 and, over several rounds, the range of each round's."""
    # N = 1 is the same command in both modes: timed once a round.
    commands = ([(MODES[0], 1)] if 1 in counts else []) + [(mode, n) for mode in MODES for n in counts if n != 1]
    seconds: dict[tuple[str, int], list[float]] = {command: [] for command in commands}
    for round_number in range(1, rounds + 1):
        for mode, n in commands:
            with backend.database() as url:
                if mode == "--workers N":
                    elapsed = run_ingests(url, [files], workers=n)
                else:
                    elapsed = run_ingests(url, [files[k::n] for k in range(n)], workers=1)
                stored = count_documents(url)
            if stored != len(files):
                raise SystemExit(f"{backend.name} {mode} N={n}: {stored} documents stored, expected {len(files)}")
            seconds[(mode, n)].append(elapsed)
            print(f"  {backend.name:10} {mode:12} N={n}: {elapsed:6.1f} s, {stored / elapsed:6.1f} docs/s"
                  + (f" (round {round_number})" if rounds > 1 else ""), file=sys.stderr, flush=True)
    single = seconds.get((MODES[0], 1))
    rows = []
    for mode in MODES:
        for n in counts:
            times = single if n == 1 else seconds[(mode, n)]
            wall = median(times)
            row = [backend.name, mode, n, f"{wall:.1f}", f"{len(files) / wall:.1f}"]
            if single is None:
                row.append("")
            else:
                row.append(f"{median(single) / wall:.2f}x")
                if rounds > 1:
                    each = [first / other for first, other in zip(single, times)]
                    row.append(f"{min(each):.2f}-{max(each):.2f}x")
            rows.append(row)
    return rows


@contextmanager
def _given(url: Optional[str]) -> Iterator[Optional[str]]:
    yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200, help="documents in the corpus [200]")
    parser.add_argument("--counts", default="1,2,4", help="worker counts to time [1,2,4]")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time every command this many times, in turn, and give medians [1]")
    arguments = parser.parse_args()
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    counts = [int(n) for n in arguments.counts.split(",")]
    with tempfile.TemporaryDirectory(prefix="provenance-bench-") as scratch:
        scratch_dir = Path(scratch)
        os.chmod(scratch_dir, 0o755)
        files = write_corpus(scratch_dir / "corpus", arguments.docs)
        print(f"corpus: {len(files)} documents, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB; "
              f"{os.cpu_count()} CPU(s), Python {platform.python_version()}, {platform.platform()}", file=sys.stderr)
        rows = measure(SQLiteBackend(scratch_dir), files, counts, arguments.rounds)
        pg_dir = scratch_dir / "pg"
        pg_dir.mkdir()
        server_url = os.environ.get("PROVENANCE_BENCH_PG_URL")
        given = server_url or arguments.no_postgres
        with (_given(server_url) if given else local_postgres(pg_dir)) as url:
            if url and not arguments.no_postgres:
                label = "PROVENANCE_BENCH_PG_URL" if server_url else "local throwaway server"
                print(f"PostgreSQL: {label}", file=sys.stderr)
                rows += measure(PostgresBackend(url, label), files, counts, arguments.rounds)
            elif not arguments.no_postgres:
                print("PostgreSQL: skipped (no PROVENANCE_BENCH_PG_URL and no initdb found)", file=sys.stderr)
    headers = ["database", "mode", "N", "wall s", "docs/s", "vs N=1"]
    if arguments.rounds > 1:
        headers = ["database", "mode", "N", "median wall s", "docs/s", "vs N=1", "each round vs its N=1"]
    print(tabulate(rows, headers=headers, tablefmt="github"))


if __name__ == "__main__":
    main()
