"""How ingest copes with text a whole feed repeats (a story type, a wire story): one command.

    python bench/templated.py                      # 250, 500 and 1,000 reports
    python bench/templated.py --sizes 200,400 --seed 3
    python bench/templated.py --newest-first       # each report published before those ahead of it
    python bench/templated.py --wire --newest-first --sizes 150   # one wire story excerpted by 150 sites

Automated journalism (earnings, market and weather reports) writes thousands of stories from
one template: every sentence is shared but for the company, the city and the figures, so
every passage of a new report matches the same passage of every earlier one. A seeded feed
of such reports (one JSONL file) is ingested by the real CLI into a new database for each
size, in a subprocess as a user would run it. ``--newest-first`` dates the reports an hour
apart, each published before the one written ahead of it, as a crawler paging back through an
archive delivers them. ``--wire`` writes another feed of text a whole feed repeats: one wire
story (seed 000), published first, and sites that each excerpt three of its lines verbatim
below paragraphs of their own, an hour apart (last in the feed, or first with
``--newest-first``). For each size it prints the wall time, documents a second, the
derivations stored and how many a document, the documents without a source (the first
published has none), and the peak resident set of the child; then the cost per document of
the largest size over the smallest. Nothing is asserted: the script prints figures.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import SYLLABLES  # noqa: E402

WIRE_STORY = Path(__file__).resolve().parent.parent / "seeds" / "000_21d20b42f286ae20.txt"

COMPANIES = [f"{first} {second}" for first in ("Northern", "Global", "United", "Pacific", "Atlantic", "Central",
                                                 "Eastern", "Western", "Royal", "National", "First", "Summit")
             for second in ("Energy", "Holdings", "Bank", "Motors", "Foods", "Mining", "Telecom", "Airlines",
                            "Steel", "Pharma")]
CITIES = ["Minsk", "Moscow", "Berlin", "Paris", "Madrid", "Rome", "Vienna", "Warsaw", "Prague", "Riga", "Vilnius",
          "Tallinn", "Kyiv", "Oslo"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
TEMPLATE = [
    "{company} reported quarterly revenue of {n} million dollars, {way} {n} percent from a year earlier.",
    "Net income came in at {n} million dollars, or {n} cents per share, the company said in a statement on {day}.",
    "Analysts polled by the agency had expected earnings of {n} cents per share on revenue of {n} million dollars.",
    "Shares of {company} {moved} {n} percent to {n} dollars in early trading in {city}.",
    "The company said it expects full-year sales between {n} and {n} million dollars.",
    "Chief executive officer said demand in {city} remained {mood} through the quarter.",
    "The board approved a dividend of {n} cents per share payable next month.",
    "{company} employs about {n} people and operates in {n} countries.",
    "The stock has {gained} {n} percent since the start of the year.",
    "Weather in {city} on {day} will be {sky} with temperatures around {n} degrees.",
]


def report_text(rng: random.Random) -> str:
    """One automated earnings report: ten template sentences, two to a paragraph."""
    company, city = rng.choice(COMPANIES), rng.choice(CITIES)

    def fill(sentence: str) -> str:
        while "{n}" in sentence:
            sentence = sentence.replace("{n}", str(rng.randint(1, 999)), 1)
        return sentence.format(
            company=company, city=city, day=rng.choice(DAYS), way=rng.choice(["up", "down"]),
            moved=rng.choice(["rose", "fell", "climbed", "slipped"]), mood=rng.choice(["strong", "weak", "steady"]),
            gained=rng.choice(["gained", "lost"]), sky=rng.choice(["sunny", "cloudy", "rainy", "windy"]),
        )

    sentences = [fill(sentence) for sentence in TEMPLATE]
    return "\n\n".join("\n".join(sentences[k : k + 2]) for k in range(0, len(sentences), 2))


def write_feed(path: Path, count: int, seed: int, newest_first: bool = False) -> None:
    rng = random.Random(seed)
    latest = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with path.open("w", encoding="utf-8") as feed:
        for number in range(count):
            record = {"id": f"report-{number}", "text": report_text(rng)}
            if newest_first:
                record["published_at"] = (latest - timedelta(hours=number)).isoformat()
            feed.write(json.dumps(record) + "\n")


def write_wire_feed(path: Path, count: int, seed: int, newest_first: bool = False) -> None:
    """The wire story and ``count`` sites that excerpt it (see the module's docstring)."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice(SYLLABLES) for _ in range(3)) for _ in range(5000)]
    wire = WIRE_STORY.read_text(encoding="utf-8")
    excerpt = "\n".join([line for line in wire.split("\n") if len(line.split()) > 20][:3])
    first = datetime(2026, 1, 1, tzinfo=timezone.utc)
    records = [{"id": "wire", "text": wire, "published_at": first.isoformat()}]
    for number in range(1, count + 1):
        own = "\n".join(" ".join(rng.choice(vocabulary) for _ in range(40)).capitalize() + "." for _ in range(6))
        records.append({"id": f"site-{number}", "text": own + "\n" + excerpt,
                        "published_at": (first + timedelta(hours=number)).isoformat()})
    with path.open("w", encoding="utf-8") as feed:
        for record in reversed(records) if newest_first else records:
            feed.write(json.dumps(record) + "\n")


def ingest(folder: Path, count: int, seed: int, newest_first: bool = False, wire: bool = False) -> dict:
    feed, db = folder / f"reports-{count}.jsonl", folder / f"reports-{count}.db"
    (write_wire_feed if wire else write_feed)(feed, count, seed, newest_first)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "provenance", "--db", str(db), "ingest", str(feed), "--quiet"], check=True)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with sqlite3.connect(db) as connection:
        derivations = connection.execute("SELECT count(*) FROM derivation").fetchone()[0]
        documents, without_source = connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE id NOT IN (SELECT derived_id FROM derivation)) FROM document"
        ).fetchone()
    return {"documents": documents, "wall": wall, "derivations": derivations, "without_source": without_source,
            "peak_mb": peak / 1024 if peak > before else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="250,500,1000", help="reports in each feed, comma-separated [250,500,1000]")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the feed [7]")
    parser.add_argument("--newest-first", action="store_true",
                        help="date the reports, each published an hour before the one ahead of it in the feed")
    parser.add_argument("--wire", action="store_true",
                        help="a wire story and sites that excerpt it verbatim, instead of templated reports")
    arguments = parser.parse_args()
    sizes = sorted(int(size) for size in arguments.sizes.split(","))
    rows = []
    with tempfile.TemporaryDirectory(prefix="provenance-templated-") as folder:
        for size in sizes:
            figures = ingest(Path(folder), size, arguments.seed, arguments.newest_first, arguments.wire)
            rows.append(figures)
            print(f"{figures['documents']:,} documents: {figures['wall']:.1f} s", file=sys.stderr)
    print(tabulate(
        [[f"{r['documents']:,}", f"{r['wall']:.1f}", f"{r['documents'] / r['wall']:.1f}", f"{r['derivations']:,}",
          f"{r['derivations'] / r['documents']:.1f}", f"{r['documents'] * (r['documents'] - 1) // 2:,}",
          f"{r['without_source']:,}", "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"] for r in rows],
        headers=["documents", "ingest s", "docs/s", "derivations", "a document", "pairs", "without a source",
                 "peak RSS MB"],
        tablefmt="github",
    ))
    first, last = rows[0], rows[-1]
    ratio = (last["wall"] / last["documents"]) / (first["wall"] / first["documents"])
    print(f"cost a document at {last['documents']:,} over at {first['documents']:,}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
