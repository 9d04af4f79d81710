"""Peak memory of `provenance ingest` against the size of its input.

    python bench/memory.py                          # feeds of 10 MB and 1,000 MB, 1 and 2 workers: ~15 min
    python bench/memory.py --sizes 10,200 --seconds 60
    python bench/memory.py --long-document 4950000  # one document just under the length limit

The issue's target: peak memory independent of the corpus size, under 500 MB for a 1 GB
input. Ingesting 1 GB (about 400,000 news-length documents) takes hours on this machine, so
each run is sampled for ``--seconds`` of wall time and then stopped with Ctrl-C (SIGINT),
as a user would: what is measured is whether memory grows with the *input*, i.e. whether
the ingest reads or prepares ahead of what it stores. Each feed is one JSONL file of
distinct pseudo-word articles (about 2.6 KB each; the corpus of bench/workers.py, without
planted copies) ingested into a fresh SQLite database with ``--max-file-size`` raised above
the feed's size (so the file is read whatever the reader does with large files).

For each feed size and worker count the script prints the peak resident set (VmHWM of
the ingest process plus, with workers, the peak of each worker process summed), the
resident set at the end, the documents stored when it was stopped, and the documents per
second over the sampled time. Nothing is asserted: the script prints figures. Linux only
(it reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import CLI, FUNCTION_WORDS, SYLLABLES  # noqa: E402


def _articles(seed: int = 5):
    """Distinct pseudo-word articles, endlessly (the corpus of bench/workers.py)."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(30000)]
    words = vocabulary + FUNCTION_WORDS * 400  # function words about as common as in prose
    while True:
        paragraphs = []
        for _ in range(rng.randint(4, 9)):
            sentences = [" ".join(rng.choices(words, k=rng.randint(12, 22))).capitalize() + "."
                         for _ in range(rng.randint(2, 4))]
            paragraphs.append(" ".join(sentences))
        yield "\n\n".join(paragraphs)


def write_feed(path: Path, megabytes: int, seed: int = 5) -> int:
    """A JSONL feed of about ``megabytes`` MB of distinct articles; returns the line count."""
    target, written, count = megabytes * 1_000_000, 0, 0
    with open(path, "w", encoding="utf-8") as feed:
        for text in _articles(seed):
            if written >= target:
                break
            line = json.dumps({"id": f"a{count}", "text": text}) + "\n"
            feed.write(line)
            written += len(line)
            count += 1
    return count


def write_long_document(path: Path, characters: int, seed: int = 5) -> None:
    """One text file of ``characters`` characters: articles one after another."""
    texts, length = [], 0
    for text in _articles(seed):
        if length >= characters:
            break
        texts.append(text)
        length += len(text) + 2
    path.write_text("\n\n".join(texts)[:characters], encoding="utf-8")


def _status(pid: int, field: str) -> int:
    """A VmRSS/VmHWM-style field of /proc/PID/status, in kB (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(p) for p in children.read().split()]
    except OSError:
        return []


def _documents(db: Path) -> int:
    import sqlite3

    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return connection.execute("SELECT count(*) FROM document").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:
        return 0


def measure(feed: Path, megabytes: int, workers: int, seconds: float, scratch: Path) -> dict:
    db = scratch / f"memory-{megabytes}-{workers}.db"
    command = [*CLI, "--db", str(db), "ingest", str(feed), "--quiet", "--workers", str(workers),
               "--max-file-size", str(max(70, megabytes * 2))]
    # SIGINT restored to its default in the child: a shell that starts this script in the
    # background (`nohup ... &`) ignores it, and the child would inherit that.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started = time.monotonic()
    worker_peaks: dict[int, int] = {}
    main_peak = 0
    while time.monotonic() - started < seconds and process.poll() is None:
        main_peak = max(main_peak, _status(process.pid, "VmHWM"))
        for child in _children(process.pid):
            worker_peaks[child] = max(worker_peaks.get(child, 0), _status(child, "VmHWM"))
        time.sleep(0.5)
    main_peak = max(main_peak, _status(process.pid, "VmHWM"))
    last_rss = _status(process.pid, "VmRSS")
    elapsed = time.monotonic() - started
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=600)
    stored = _documents(db)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return {
        "feed MB": megabytes, "workers": workers,
        "peak RSS MB (ingest)": round(main_peak / 1024),
        "peak RSS MB (workers)": round(sum(worker_peaks.values()) / 1024) if worker_peaks else 0,
        "RSS MB at stop": round(last_rss / 1024),
        "docs stored": stored, "docs/s": round(stored / elapsed, 1), "seconds": round(elapsed),
        "exit": process.returncode, "stderr": stderr.strip().splitlines()[-1:] if stderr.strip() else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,1000", help="feed sizes in MB, comma-separated [10,1000]")
    parser.add_argument("--workers", default="1,2", help="--workers values, comma-separated [1,2]")
    parser.add_argument("--seconds", type=float, default=120, help="wall seconds each ingest is sampled [120]")
    parser.add_argument("--long-document", type=int, metavar="CHARS",
                        help="instead, ingest one text file of CHARS characters to the end, one worker "
                             "(the longest accepted is 5,000,000)")
    arguments = parser.parse_args()
    if arguments.long_document:
        with tempfile.TemporaryDirectory(prefix="provenance-memory-") as scratch:
            document = Path(scratch) / "long.txt"
            write_long_document(document, arguments.long_document)
            row = measure(document, arguments.long_document // 1_000_000 + 1, 1, float("inf"), Path(scratch))
        print(f"one document of {arguments.long_document:,} characters: peak RSS {row['peak RSS MB (ingest)']} MB, "
              f"{row['seconds']} s, exit {row['exit']} {' '.join(row['stderr'])}")
        return
    sizes = [int(s) for s in arguments.sizes.split(",")]
    counts = [int(w) for w in arguments.workers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="provenance-memory-") as scratch:
        scratch_dir = Path(scratch)
        for megabytes in sizes:
            feed = scratch_dir / f"feed-{megabytes}.jsonl"
            lines = write_feed(feed, megabytes)
            print(f"feed: {feed.stat().st_size / 1e6:.0f} MB, {lines} documents; {os.cpu_count()} CPU(s), "
                  f"Python {platform.python_version()}", file=sys.stderr, flush=True)
            for workers in counts:
                row = measure(feed, megabytes, workers, arguments.seconds, scratch_dir)
                print(f"  {row}", file=sys.stderr, flush=True)
                rows.append(row)
            feed.unlink()
    headers = ["feed MB", "workers", "peak RSS MB (ingest)", "peak RSS MB (workers)", "RSS MB at stop",
               "docs stored", "docs/s", "seconds", "exit"]
    print(tabulate([[row[h] for h in headers] for row in rows], headers=headers, tablefmt="github"))


if __name__ == "__main__":
    main()
