"""Ingest speed, accuracy on planted cases, incremental cost and lookup latency: one command.

    python bench/ingest.py                        # 2,000 documents, temporary folder
    python bench/ingest.py --docs 500 --repeats 1 # quick
    python bench/ingest.py --out-dir bench/out --json bench/out/figures.json

A seeded synthetic corpus of news-like documents (~330 words, a Zipf-distributed pseudo-word
vocabulary mixed with English function words) is written as .txt files, with planted cases
whose answers are known: exact copies, near-duplicates at several word-substitution rates,
excerpts (a contiguous 40-60% of another document) and page chrome ("No time to read?",
"Previous Article", ...) added to many documents.

The real CLI ingests it in a subprocess, as a user would run it (wall time, CPU time and peak
RSS of the child). ``report --format json`` is then scored against the planted answers. In
the same run and on the same documents, three peers are timed on one core: datasketch
``update()`` per 5-gram shingle with its default sha1 hash (the naive baseline),
``MinHash.bulk`` with xxh32, and the limit of Python tokenising + shingling + xxh32 with no
permutations at all. Incremental cost (a batch of new documents into a small and into the
full database), ``match`` latency (subprocess and in-process) and ``report``/``inspect``
wall times follow. Nothing is asserted: the script prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator, Optional

import xxhash
from datasketch import MinHash
from tabulate import tabulate

from provenance import lookup
from provenance.db.session import database_url, make_engine, session_scope
from provenance.prepare import document_signature, prepare
from provenance.reader import RawDocument
from provenance.settings import Settings

#: Shares of the corpus that are planted copies of an earlier original (the rest are originals).
EXACT_SHARE = 0.05
NEAR_SHARE = 0.10
EXCERPT_SHARE = 0.05
#: Word substitution rates of the near-duplicates; the near share is split evenly over them.
NEAR_RATES = (0.02, 0.05, 0.10)
EXCERPT_FRACTION = (0.4, 0.6)
#: Page chrome: a header pair and a footer pair, each added to this share of documents.
HEADER = ("No time to read?", "Get a summary")
FOOTER = ("Previous Article", "Next Article")
CHROME_SHARE = 0.4
#: English function words with rough relative frequencies; they are stopwords to the product,
#: so the pseudo-words alone carry content, as nouns and verbs do in real news copy.
FUNCTION_WORDS = {
    "the": 60, "of": 28, "and": 26, "to": 25, "a": 22, "in": 20, "that": 10, "is": 9, "for": 9, "on": 8,
    "with": 7, "as": 7, "was": 7, "by": 6, "at": 6, "from": 6, "it": 6, "said": 6, "has": 5, "he": 5,
    "have": 4, "be": 4, "will": 4, "its": 4, "were": 3, "an": 3, "are": 3, "which": 3, "this": 3,
    "their": 3, "after": 3, "but": 3, "not": 3, "they": 2, "who": 2, "had": 2, "been": 2, "also": 2,
    "over": 2, "into": 2, "than": 1, "more": 1, "about": 1, "under": 1, "against": 1, "between": 1,
}
FUNCTION_SHARE = 0.45
SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["an", "er", "in", "on", "ar", "el", "is"]
SHINGLE = 5
NUM_PERM = 128
_WORD = re.compile(r"\w+")


# -- the synthetic corpus ------------------------------------------------------------------
@dataclass
class Article:
    """A document before rendering: words per sentence, comma positions, chrome flags."""

    title: list[str]
    paragraphs: list[list[tuple[list[str], frozenset]]]
    header: bool
    footer: bool

    def words(self) -> list[str]:
        """Title and body words in order: what the product signs once chrome is tagged."""
        return self.title + [w for p in self.paragraphs for words, _ in p for w in words]


@dataclass
class Planted:
    """One file of the corpus and what it is: an original, or a copy of ``source``."""

    name: str
    text: str
    family: str
    role: str  # original | exact | near | excerpt
    article: Article = field(repr=False)
    source: Optional[str] = None
    rate: Optional[float] = None



class CorpusMaker:
    """Seeded generator of news-like articles and their planted copies."""

    def __init__(self, seed: int, words: int, vocabulary: int):
        self.rng = random.Random(seed)
        self.words = words
        self.vocabulary = self._pseudo_words(vocabulary)
        ranks = range(1, len(self.vocabulary) + 1)
        # Zipf-Mandelbrot: a flattened head, as content words have once stopwords are gone.
        self.content_weights = _cumulative([1.0 / (r + 10) ** 1.05 for r in ranks])
        self.function_words = list(FUNCTION_WORDS)
        self.function_weights = _cumulative(list(FUNCTION_WORDS.values()))

    def _pseudo_words(self, size: int) -> list[str]:
        seen: set[str] = set()
        out: list[str] = []
        while len(out) < size:
            word = "".join(self.rng.choice(SYLLABLES) for _ in range(self.rng.choice((2, 2, 3, 3, 3, 4))))
            if len(word) >= 4 and word not in seen and word not in FUNCTION_WORDS:
                seen.add(word)
                out.append(word)
        return out

    def content_word(self) -> str:
        return self.rng.choices(self.vocabulary, cum_weights=self.content_weights)[0]

    def word(self) -> str:
        if self.rng.random() < FUNCTION_SHARE:
            return self.rng.choices(self.function_words, cum_weights=self.function_weights)[0]
        return self.content_word()

    def sentence(self) -> tuple[list[str], frozenset]:
        length = self.rng.randint(12, 26)
        commas = frozenset({self.rng.randint(3, length - 4)}) if self.rng.random() < 0.5 else frozenset()
        return [self.word() for _ in range(length)], commas

    def title(self) -> list[str]:
        return [self.content_word() if i % 2 == 0 else self.word() for i in range(self.rng.randint(6, 10))]

    def chrome(self) -> tuple[bool, bool]:
        return self.rng.random() < CHROME_SHARE, self.rng.random() < CHROME_SHARE

    def article(self) -> Article:
        target = max(60, int(self.rng.gauss(self.words, self.words * 0.12)))
        title = self.title()
        count, paragraphs = len(title), []
        while count < target:
            paragraph = [self.sentence() for _ in range(self.rng.randint(2, 4))]
            count += sum(len(words) for words, _ in paragraph)
            paragraphs.append(paragraph)
        return Article(title, paragraphs, *self.chrome())

    def near_copy(self, original: Article, rate: float) -> Article:
        """The article with ``rate`` of its words replaced by other words, its own chrome."""
        slots = [(None, None, i) for i in range(len(original.title))] + [
            (p, s, i) for p, paragraph in enumerate(original.paragraphs)
            for s, (words, _) in enumerate(paragraph) for i in range(len(words))
        ]
        title = list(original.title)
        paragraphs = [[(list(words), commas) for words, commas in paragraph] for paragraph in original.paragraphs]
        for p, s, i in self.rng.sample(slots, max(1, round(rate * len(slots)))):
            words = title if p is None else paragraphs[p][s][0]
            replacement = words[i]
            while replacement == words[i]:
                replacement = self.word()
            words[i] = replacement
        return Article(title, paragraphs, *self.chrome())

    def excerpt(self, original: Article) -> Article:
        """A contiguous run of sentences holding 40-60% of the body, under a new title."""
        flat = [(p, sentence) for p, paragraph in enumerate(original.paragraphs) for sentence in paragraph]
        total = sum(len(words) for _, (words, _) in flat)
        wanted = self.rng.uniform(*EXCERPT_FRACTION) * total
        remaining, starts = total, []
        for index, (_, (words, _)) in enumerate(flat):
            if remaining >= wanted:
                starts.append(index)
            remaining -= len(words)
        taken, count = [], 0
        for p, sentence in flat[self.rng.choice(starts or [0]):]:
            if count >= wanted:
                break
            taken.append((p, sentence))
            count += len(sentence[0])
        paragraphs: list[list] = []
        last = None
        for p, sentence in taken:
            if p != last:
                paragraphs.append([])
                last = p
            paragraphs[-1].append(sentence)
        return Article(self.title(), paragraphs, *self.chrome())


def _cumulative(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def render(article: Article) -> str:
    """Plain text: title, optional header chrome, paragraphs, optional footer chrome."""
    lines = [_capital(" ".join(article.title)), ""]
    if article.header:
        lines += [*HEADER, ""]
    for paragraph in article.paragraphs:
        sentences = [
            _capital(" ".join(w + ("," if i in commas else "") for i, w in enumerate(words))) + "."
            for words, commas in paragraph
        ]
        lines += [" ".join(sentences), ""]
    if article.footer:
        lines += list(FOOTER)
    return "\n".join(lines).rstrip() + "\n"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def respaced(text: str) -> str:
    """Same normalised text, different bytes: CRLF line ends and double spaces after full stops."""
    return text.replace(". ", ".  ").replace("\n", "\r\n")


def make_corpus(maker: CorpusMaker, count: int, prefix: str, sources: Optional[list[Planted]] = None) -> list[Planted]:
    """``count`` documents in ingest order: originals plus planted copies of originals.

    Copies take their source from ``sources`` when given (documents already stored), else
    from this corpus's own originals; the order is shuffled so copies come before or after.
    """
    plants = {"exact": round(count * EXACT_SHARE), "near": round(count * NEAR_SHARE), "excerpt": round(count * EXCERPT_SHARE)}
    originals = [maker.article() for _ in range(count - sum(plants.values()))]
    docs = [Planted("", render(a), "", "original", a) for a in originals]
    pool = sources or docs
    copies: list[tuple[Planted, Planted]] = []
    for role, how_many in plants.items():
        for index in range(how_many):
            source = maker.rng.choice(pool)
            if role == "exact":
                text = source.text if index % 2 == 0 else respaced(source.text)
                copies.append((source, Planted("", text, "", "exact", source.article)))
            elif role == "near":
                rate = NEAR_RATES[index % len(NEAR_RATES)]
                near = maker.near_copy(source.article, rate)
                copies.append((source, Planted("", render(near), "", "near", near, rate=rate)))
            else:
                part = maker.excerpt(source.article)
                copies.append((source, Planted("", render(part), "", "excerpt", part)))
    ordered = docs + [copy for _, copy in copies]
    maker.rng.shuffle(ordered)
    for position, doc in enumerate(ordered):
        doc.name = f"{prefix}{position:05d}.txt"
    for doc in docs:
        doc.family = doc.name
    for source, copy in copies:
        copy.source, copy.family = source.name, source.family
    return ordered


def write_corpus(docs: list[Planted], folder: Path) -> int:
    """Write each document as a .txt file (bytes exactly as generated); returns total bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for doc in docs:
        data = doc.text.encode("utf-8")
        (folder / doc.name).write_bytes(data)
        total += len(data)
    return total


# -- running the CLI -----------------------------------------------------------------------
@dataclass
class CliRun:
    wall: float
    cpu: float
    peak_mb: float
    stdout: str


class BenchError(RuntimeError):
    pass


def provenance_command() -> str:
    """The ``provenance`` console script next to this interpreter, else the one on PATH."""
    local = Path(sys.executable).with_name("provenance")
    found = str(local) if local.exists() else shutil.which("provenance")
    if not found:
        raise BenchError("no `provenance` command; run `make install` (or pip install -e .) first")
    return found


#: Runs the command and writes its wall time, CPU time and peak RSS to argv[1]. A small
#: process must spawn it: on Linux ``exec`` carries the spawning process's RSS high-water
#: mark into the child's ``ru_maxrss``, so children of this (large) process would all
#: report at least its own peak.
_LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(sys.argv[1], "w") as out:
    out.write(f"{wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_cli(db: Path, *args: str) -> CliRun:
    """Run ``provenance --db DB ARGS`` and measure that process alone (see ``_LAUNCHER``).

    Output goes through files so that a large report cannot fill a pipe.
    """
    command = [provenance_command(), "--db", str(db), *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".usage") as usage:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCHER, usage.name, *command], stdout=out, stderr=err)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8"), err.read().decode("utf-8", "replace")
        measured = usage.read().split()
    if done.returncode != 0 or len(measured) != 3:
        raise BenchError(f"{' '.join(command[:6])} ... exited with {done.returncode}:\n{stderr.strip()}")
    wall, cpu, peak = float(measured[0]), float(measured[1]), int(measured[2])
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return CliRun(wall, cpu, peak * scale / 1e6, stdout)


def ingest_cli(db: Path, folder: Path, workers: int) -> tuple[CliRun, dict, float]:
    """Ingest a folder; returns the run, its JSON summary and the run's own time from the
    database's ingest-run record (no interpreter start, imports or migrations)."""
    run = run_cli(db, "ingest", str(folder), "--quiet", "--format", "json", "--workers", str(workers))
    summary = json.loads(run.stdout)
    runs = json.loads(run_cli(db, "inspect", "runs", "--format", "json").stdout)
    record = next(r for r in runs if r["id"] == summary["run_id"])
    inside = (datetime.fromisoformat(record["finished_at"]) - datetime.fromisoformat(record["started_at"])).total_seconds()
    return run, summary, inside


# -- peers ---------------------------------------------------------------------------------
def shingles(text: str) -> list[str]:
    """Word 5-grams over ``re`` \\w+ tokens of the lower-cased text, as the peers are fed."""
    tokens = _WORD.findall(text.lower())
    return [" ".join(tokens[i : i + SHINGLE]) for i in range(len(tokens) - SHINGLE + 1)]


def peer_naive(texts: list[str]) -> None:
    """datasketch MinHash(num_perm=128), default sha1 hash, ``update()`` once per shingle."""
    for text in texts:
        minhash = MinHash(num_perm=NUM_PERM)
        for shingle in shingles(text):
            minhash.update(shingle.encode("utf-8"))


def peer_bulk_xxh32(texts: list[str]) -> None:
    """datasketch ``MinHash.bulk`` with xxh32 over each document's shingles."""
    MinHash.bulk(
        ([s.encode("utf-8") for s in shingles(text)] for text in texts),
        num_perm=NUM_PERM, hashfunc=xxhash.xxh32_intdigest,
    )


def peer_limit(texts: list[str]) -> None:
    """Tokenise + shingle + xxh32 per shingle in Python, no permutations: the xxhash limit."""
    for text in texts:
        [xxhash.xxh32_intdigest(s.encode("utf-8")) for s in shingles(text)]


def provenance_prepare(texts: list[str]) -> None:
    """The product's CPU half in-process: normalise, segment, passage and document signatures."""
    settings = Settings()
    for index, text in enumerate(texts):
        raw = RawDocument(path=f"doc{index}", text=text, format="text", encoding="utf-8", size_bytes=len(text))
        prepared = prepare(raw, settings)
        document_signature([p.words for p in prepared.passages], settings)


def timed(function: Callable[[list[str]], None], texts: list[str], repeats: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        function(texts)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


# -- scoring the report --------------------------------------------------------------------
def shingle_set(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def true_similarity(doc: Planted, by_name: dict[str, Planted]) -> tuple[float, float]:
    """Exact word 5-gram Jaccard of title + body (chrome left out) and containment of the copy."""
    mine, theirs = shingle_set(doc.article.words()), shingle_set(by_name[doc.source].article.words())
    shared = len(mine & theirs)
    return shared / len(mine | theirs), shared / len(mine)


def reported_links(report: dict) -> tuple[set[frozenset], dict[frozenset, str]]:
    """Pairs of file names in one duplicate cluster, and derivations by pair with their relation."""
    name = lambda path: Path(path).name  # noqa: E731
    clustered: set[frozenset] = set()
    for cluster in report["clusters"]:
        members = [name(cluster["canonical"]["path"])] + [name(m["path"]) for m in cluster["members"]]
        clustered |= {frozenset((a, b)) for i, a in enumerate(members) for b in members[:i]}
    derived = {frozenset((name(d["derived"]["path"]), name(d["source"]["path"]))): d["relation"] for d in report["derivations"]}
    return clustered, derived


def score_report(report: dict, docs: list[Planted]) -> dict:
    """Recall per planted case, precision per task and the boilerplate learned.

    Duplicates: a planted exact copy or near-duplicate is found when it shares a cluster
    with its source or a duplicate/near-duplicate derivation joins them; a reported pair is
    right when both documents are the original, exact copies or near-duplicates of one
    family. Excerpts: found when any derivation joins excerpt and source; a syndicated or
    rewritten derivation is right when it stays inside one family. A link to an exact copy
    of the source counts as a link to the source (same text; whichever came first is the
    source). Copies whose true Jaccard reaches the report's threshold are counted apart.
    """
    threshold = report["threshold"]
    by_name = {d.name: d for d in docs}
    clustered, derived = reported_links(report)
    duplicate_links = clustered | {pair for pair, relation in derived.items() if relation in ("duplicate", "near-duplicate")}
    reuse_links = {pair for pair, relation in derived.items() if relation not in ("duplicate", "near-duplicate")}
    same_text: dict[str, list[str]] = {}
    for d in docs:
        if d.role in ("original", "exact"):
            same_text.setdefault(d.family, []).append(d.name)

    def linked(doc: Planted, links) -> Optional[frozenset]:
        """The first pair joining ``doc`` to its source or a copy of it that is in ``links``."""
        pairs = [frozenset((doc.name, other)) for other in [doc.source] + same_text.get(doc.family, []) if other != doc.name]
        return next((pair for pair in pairs if pair in links), None)

    cases = {}
    kinds = [("exact copies", "exact", None)] + [(f"near-duplicates {r:.0%}", "near", r) for r in NEAR_RATES]
    for label, role, rate in kinds + [("excerpts 40-60%", "excerpt", None)]:
        planted = [d for d in docs if d.role == role and d.rate == rate and d.source in by_name]
        expected = duplicate_links if role != "excerpt" else set(derived)
        any_link = clustered | set(derived)
        hits = [linked(d, expected) is not None for d in planted]
        similarity = [true_similarity(d, by_name) for d in planted]
        high = [hit for hit, (j, _) in zip(hits, similarity) if j >= threshold]
        relations: dict[str, int] = {}
        for d in planted:
            pair = linked(d, expected) or linked(d, any_link)
            relation = "not found" if pair is None else derived.get(pair, "same cluster")
            relations[relation] = relations.get(relation, 0) + 1
        found = sum(hits)
        cases[label] = {
            "planted": len(planted), "found": found, "recall": _ratio(found, len(planted)),
            "found_any_link": sum(linked(d, any_link) is not None for d in planted),
            "true_j_at_threshold": None if role == "excerpt" else len(high),
            "found_of_those": None if role == "excerpt" else sum(high),
            "mean_true_jaccard": _mean([j for j, _ in similarity]),
            "mean_true_containment": _mean([c for _, c in similarity]),
            "reported_as": dict(sorted(relations.items(), key=lambda kv: -kv[1])),
        }

    def same_family(pair: frozenset, roles: tuple[str, ...]) -> bool:
        a, b = (by_name.get(n) for n in pair)
        return a is not None and b is not None and a.family == b.family and a.role in roles and b.role in roles

    duplicate_roles, every_role = ("original", "exact", "near"), ("original", "exact", "near", "excerpt")
    precision = {}
    for task, links, roles in (("duplicate pairs", duplicate_links, duplicate_roles), ("reuse derivations", reuse_links, every_role)):
        right = sum(same_family(p, roles) for p in links)
        precision[task] = {"reported": len(links), "right": right, "precision": _ratio(right, len(links)),
                           "unrelated": sum(not same_family(p, every_role) for p in links)}
    learned = {b["text"]: b["documents"] for b in report.get("boilerplate", [])}
    boilerplate = {
        line: {"planted_in": sum(line in d.text.splitlines() for d in docs), "learned_on": learned.get(line)}
        for line in HEADER + FOOTER
    }
    return {"threshold": threshold, "cases": cases, "precision": precision, "boilerplate": boilerplate}


def _ratio(part: float, whole: float) -> Optional[float]:
    return round(part / whole, 3) if whole else None


def _mean(values: list[float]) -> Optional[float]:
    return round(statistics.fmean(values), 3) if values else None


# -- lookups -------------------------------------------------------------------------------
def match_in_process(db: Path, texts: dict[str, str], repeats: int) -> dict[str, tuple[float, float]]:
    """Per query: seconds of the first call and median seconds of ``repeats`` later calls.

    Calls ``provenance.lookup.match_text`` on one engine opened once, as a service would.
    """
    engine = make_engine(database_url(str(db)))
    out = {}
    try:
        for label, text in texts.items():
            times = []
            for _ in range(1 + max(1, repeats)):
                started = time.perf_counter()
                with session_scope(engine) as session:
                    lookup.match_text(session, text)
                    session.rollback()
                times.append(time.perf_counter() - started)
            out[label] = (times[0], statistics.median(times[1:]))
    finally:
        engine.dispose()
    return out


def pick_queries(docs: list[Planted], novel: Planted) -> dict[str, str]:
    """One stored document of each kind, plus one text the database has never seen."""
    queries = {}
    for label, test in (
        ("original with copies", lambda d: d.role == "original" and any(c.source == d.name for c in docs)),
        ("exact copy", lambda d: d.role == "exact"),
        ("near-duplicate 10%", lambda d: d.role == "near" and d.rate == NEAR_RATES[-1]),
        ("excerpt", lambda d: d.role == "excerpt"),
    ):
        found = next((d for d in docs if test(d)), None)
        if found is not None:
            queries[label] = found.text
    queries["unseen document"] = novel.text
    return queries


# -- output --------------------------------------------------------------------------------
def busy_cpu_seconds() -> Optional[float]:
    """CPU seconds the whole machine has spent busy since boot (Linux ``/proc/stat``)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def code_fingerprint() -> dict:
    """What is being measured: git HEAD, whether the product's files differ from it, and a
    hash of the product's sources (``provenance/``, ``migrations/``) as they are on disk."""
    root = Path(__file__).resolve().parent.parent
    digest = xxhash.xxh3_64()
    for path in sorted(p for folder in ("provenance", "migrations") for p in (root / folder).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    dirty = bool(git("status", "--porcelain", "--", "provenance", "migrations", "setup.cfg"))
    head = git("rev-parse", "--short", "HEAD") or "no git"
    return {"git": head + ("+uncommitted" if dirty else ""), "source_hash": digest.hexdigest()}


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    versions = {name: metadata.version(name) for name in ("provenance", "datasketch", "xxhash", "numpy", "SQLAlchemy")}
    return {"cpus": os.cpu_count(), "cpu": model or platform.processor(), "python": platform.python_version(), **versions}


@contextmanager
def workspace(out_dir: Optional[str]) -> Iterator[Path]:
    """A temporary folder, or ``--out-dir`` (kept; earlier databases and corpus replaced)."""
    if out_dir:
        path = Path(out_dir).resolve()
        for name in ("corpus", "small", "batch"):
            shutil.rmtree(path / name, ignore_errors=True)
        for db in path.glob("*.db*"):
            db.unlink()
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="provenance-bench-") as folder:
            yield Path(folder)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000, help="documents in the main corpus [2000]")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed [1]")
    parser.add_argument("--words", type=int, default=330, help="mean words per document [330]")
    parser.add_argument("--vocabulary", type=int, default=20000, help="pseudo-words in the vocabulary [20000]")
    parser.add_argument("--small", type=int, default=200, help="documents in the small database for incremental cost [200]")
    parser.add_argument("--batch", type=int, default=200, help="new documents ingested into both databases [200]")
    parser.add_argument("--repeats", type=int, default=3, help="runs per in-process timing; the median is shown [3]")
    parser.add_argument("--naive-limit", type=int, default=1000, help="documents the slow naive peer is timed on [1000]")
    parser.add_argument("--workers", type=int, default=1, help="passed to `provenance ingest --workers` [1]")
    parser.add_argument("--out-dir", help="keep corpus and databases here instead of a temporary folder")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON ('-': JSON on stdout, no tables)")
    args = parser.parse_args(argv)
    if args.docs < 20 or args.small < 1 or args.batch < 1 or args.small > args.docs:
        parser.error("need --docs >= 20, --batch >= 1 and 1 <= --small <= --docs")
    return args


@dataclass
class Corpus:
    docs: list[Planted]
    batch: list[Planted]
    size: int

    @property
    def texts(self) -> list[str]:
        return [d.text for d in self.docs]


def build_corpus(args: argparse.Namespace, work: Path) -> tuple[Corpus, dict]:
    """Main corpus in ``corpus/``, its first ``--small`` files in ``small/``, and a batch of
    new documents (copies only of originals in the small set) in ``batch/``."""
    started = time.perf_counter()
    maker = CorpusMaker(args.seed, args.words, args.vocabulary)
    docs = make_corpus(maker, args.docs, "")
    size = write_corpus(docs, work / "corpus")
    write_corpus(docs[: args.small], work / "small")
    batch = make_corpus(maker, args.batch, "b", sources=[d for d in docs[: args.small] if d.role == "original"])
    write_corpus(batch, work / "batch")
    words = [len(_WORD.findall(d.text)) for d in docs]
    return Corpus(docs, batch, size), {
        "documents": len(docs), "bytes": size, "mean_words": round(statistics.fmean(words), 1),
        "mean_chars": round(statistics.fmean(len(d.text) for d in docs), 1),
        "planted": {role: sum(d.role == role for d in docs) for role in ("original", "exact", "near", "excerpt")},
        "generation_s": round(time.perf_counter() - started, 2),
    }


def measure_speed(corpus: Corpus, ingest: dict, args: argparse.Namespace) -> list[dict]:
    """Provenance ingest beside the in-process peers, on the same documents."""
    texts = corpus.texts
    naive = texts[: args.naive_limit]
    methods = [
        ("provenance ingest (CLI, incl. start-up)", texts, (ingest["wall_s"], ingest["cpu_s"])),
        ("provenance ingest (run only, from its run record)", texts, (ingest["run_s"], None)),
        ("provenance prepare + document signature (in-process, no database)", texts,
         timed(provenance_prepare, texts, args.repeats)),
        ("datasketch update() per shingle, sha1 [naive]", naive, timed(peer_naive, naive, max(1, args.repeats - 2))),
        ("datasketch MinHash.bulk, xxh32", texts, timed(peer_bulk_xxh32, texts, args.repeats)),
        ("limit: tokenise + 5-gram shingles + xxh32, no permutations", texts, timed(peer_limit, texts, args.repeats)),
    ]
    ingest_rate = len(texts) / ingest["wall_s"]
    out = []
    for name, timed_texts, (seconds, cpu) in methods:
        size = sum(len(t.encode("utf-8")) for t in timed_texts)
        rate = len(timed_texts) / seconds
        out.append({"method": name, "documents": len(timed_texts), "seconds": round(seconds, 3),
                    "cpu_seconds": None if cpu is None else round(cpu, 3), "docs_per_s": round(rate, 1),
                    "docs_per_cpu_s": None if cpu is None else round(len(timed_texts) / cpu, 1),
                    "mb_per_s": round(size / 1e6 / seconds, 3), "ingest_over_method": round(ingest_rate / rate, 4)})
    return out


def measure_lookups(db: Path, corpus: Corpus, report_run: CliRun, repeats: int) -> dict:
    """match (CLI and in-process), report, inspect and the CLI start-up floor."""
    out: dict = {}
    startup = min(run_cli(db, "--version").wall for _ in range(3))
    out["provenance --version (start-up floor)"] = {"cli_wall_s": round(startup, 3), "cli_peak_rss_mb": None}
    queries = pick_queries(corpus.docs, corpus.batch[0])
    in_process = match_in_process(db, queries, repeats)
    for label, text in queries.items():
        run = run_cli(db, "match", "--text", text, "--format", "json")
        data = json.loads(run.stdout)
        first, warm = in_process[label]
        out[f"match: {label}"] = {
            "cli_wall_s": round(run.wall, 3), "cli_peak_rss_mb": round(run.peak_mb, 1),
            "in_process_first_ms": round(first * 1000, 2), "in_process_warm_ms": round(warm * 1000, 2),
            "found": f"{len(data['documents'])} doc(s), {len(data['passages'])} passage(s)",
        }
    document_id = str(json.loads(run_cli(db, "inspect", "documents", "--format", "json").stdout)[0]["id"])
    for label, run in (
        ("report --format json --no-timestamps", report_run),
        ("inspect", run_cli(db, "inspect")),
        ("inspect document ID --format json", run_cli(db, "inspect", "document", document_id, "--format", "json")),
    ):
        out[label] = {"cli_wall_s": round(run.wall, 3), "cli_peak_rss_mb": round(run.peak_mb, 1)}
    out["startup_s"] = round(startup, 3)
    return out


def measure_incremental(work: Path, db: Path, corpus: Corpus, args: argparse.Namespace) -> dict:
    """Cost per new document of one batch into a small database and into the full one."""
    small_db = work / "small.db"
    ingest_cli(small_db, work / "small", args.workers)
    out: dict = {}
    for label, target, stored in (("small", small_db, args.small), ("full", db, len(corpus.docs))):
        run, _, inside = ingest_cli(target, work / "batch", args.workers)
        k = len(corpus.batch)
        out[label] = {"stored": stored, "batch": k, "cli_ms_per_doc": round(run.wall * 1000 / k, 2),
                      "run_ms_per_doc": round(inside * 1000 / k, 2), "peak_rss_mb": round(run.peak_mb, 1)}
    out["ratio"] = {key: round(out["full"][key] / out["small"][key], 3) for key in ("cli_ms_per_doc", "run_ms_per_doc")}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    quiet = args.json == "-"

    def step(message: str) -> None:
        if not quiet:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    figures: dict = {"machine": machine(), "code": code_fingerprint(), "arguments": vars(args)}
    started, busy_before, own_before = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    load_before = os.getloadavg()[0]
    with workspace(args.out_dir) as work:
        step(f"generating {args.docs} documents (seed {args.seed}) in {work}")
        corpus, figures["corpus"] = build_corpus(args, work)
        db = work / "bench.db"
        step(f"provenance ingest: {len(corpus.docs)} documents")
        run, summary, inside = ingest_cli(db, work / "corpus", args.workers)
        figures["ingest"] = {
            "wall_s": round(run.wall, 2), "run_s": round(inside, 2), "cpu_s": round(run.cpu, 2),
            "peak_rss_mb": round(run.peak_mb, 1), "docs_per_s": round(len(corpus.docs) / run.wall, 1),
            "mb_per_s": round(corpus.size / 1e6 / run.wall, 3),
            "summary": {k: v for k, v in summary.items() if k != "problems"},
        }
        step("provenance report --format json; scoring the planted cases")
        report_run = run_cli(db, "report", "--format", "json", "--no-timestamps")
        figures["accuracy"] = score_report(json.loads(report_run.stdout), corpus.docs)
        step("peers in-process")
        figures["speed"] = measure_speed(corpus, figures["ingest"], args)
        step("match, report and inspect latency")
        figures["latency"] = measure_lookups(db, corpus, report_run, args.repeats)
        step(f"incremental: {len(corpus.batch)} new documents into {args.small:,} and into {len(corpus.docs):,}")
        figures["incremental"] = measure_incremental(work, db, corpus, args)
    figures["total_s"] = round(time.perf_counter() - started, 1)
    figures["code"]["changed_during_run"] = code_fingerprint() != {k: figures["code"][k] for k in ("git", "source_hash")}
    busy_after = busy_cpu_seconds()
    if busy_before is not None and busy_after is not None:
        others = max(0.0, (busy_after - busy_before) - (own_cpu_seconds() - own_before))
        figures["contention"] = {"load_average_at_start": round(load_before, 2), "other_processes_cpu_s": round(others, 1),
                                 "other_processes_cores": round(others / figures["total_s"], 2)}
    if args.json and args.json != "-":
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    print(json.dumps(figures, indent=2) if quiet else format_report(figures))
    return 0


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def _table(headers: list[str], rows: list[list], align: Optional[tuple] = None) -> str:
    return tabulate([[_cell(v) for v in row] for row in rows], headers=headers, disable_numparse=True,
                    colalign=align or ("left",) + ("right",) * (len(headers) - 1))


def format_report(figures: dict) -> str:
    """All figures as one block of text and tables."""
    m, c, i, a = figures["machine"], figures["corpus"], figures["ingest"], figures["accuracy"]
    s, lat, inc = i["summary"], figures["latency"], figures["incremental"]
    contention = figures.get("contention")
    parts = [
        f"machine: {m['cpus']} CPU(s), {m['cpu']}; Python {m['python']}; provenance {m['provenance']}, "
        f"datasketch {m['datasketch']}, xxhash {m['xxhash']}, numpy {m['numpy']}, SQLAlchemy {m['SQLAlchemy']}",
        f"code: {figures['code']['git']}, sources {figures['code']['source_hash']}"
        + ("  WARNING: the product's sources changed during the run" if figures["code"]["changed_during_run"] else ""),
        f"corpus: {c['documents']:,} documents (seed {figures['arguments']['seed']}), {c['bytes'] / 1e6:.2f} MB, "
        f"mean {c['mean_words']} words / {c['mean_chars']} chars; "
        + ", ".join(f"{k} {v}" for k, v in c["planted"].items()),
        "",
        f"INGEST  provenance ingest DIR --quiet --workers {figures['arguments']['workers']}: wall {i['wall_s']} s "
        f"(run record {i['run_s']} s; CLI start-up alone {lat['startup_s']} s), CPU {i['cpu_s']} s, "
        f"peak RSS {i['peak_rss_mb']} MB; {i['docs_per_s']} docs/s, {i['mb_per_s']} MB/s",
        f"        added {s['documents_added']}, failed {s['failed']}, exact pairs {s['exact_duplicates']}, near pairs "
        f"{s['near_duplicates']}, derivations {s['derivations']}, boilerplate learned {s['boilerplate_learned']}",
        "",
        "SPEED: peers in this process on one core, same documents, median of --repeats; docs/s and MB/s on wall time;",
        "       last column = provenance ingest docs/s (CLI wall) / method docs/s",
        _table(["method", "docs", "wall s", "CPU s", "docs/s", "docs/CPU-s", "MB/s", "ingest / method"],
               [[r["method"], r["documents"], r["seconds"], r["cpu_seconds"], r["docs_per_s"], r["docs_per_cpu_s"],
                 r["mb_per_s"], f"{r['ingest_over_method']:.3f}x"] for r in figures["speed"]]),
        "",
        "ACCURACY on the planted cases. found: duplicates in one cluster or joined by a duplicate/near-duplicate",
        "         derivation; excerpts joined by any derivation. any link: a cluster or a derivation of any relation.",
        f"         true J, containment: exact word 5-gram sets of title + body (chrome left out); J>={a['threshold']}: "
        "found among the copies at or above the report threshold",
        _table(["planted case", "planted", "found", "recall", "any link", f"J>={a['threshold']}", "true J",
                "true contain.", "reported as"],
               [[label, f["planted"], f["found"], f["recall"], f["found_any_link"],
                 None if f["true_j_at_threshold"] is None else f"{f['found_of_those']}/{f['true_j_at_threshold']}",
                 f["mean_true_jaccard"], f["mean_true_containment"], ", ".join(f"{k} {v}" for k, v in f["reported_as"].items())]
                for label, f in a["cases"].items()],
               ("left",) + ("right",) * 7 + ("left",)),
        "",
        _table(["precision of", "reported", "right", "unrelated docs", "precision"],
               [[task, f["reported"], f["right"], f["unrelated"], f["precision"]] for task, f in a["precision"].items()]),
        "",
        "boilerplate: " + "; ".join(f"{line!r} planted in {b['planted_in']}, learned on "
                                    f"{'NOT LEARNED' if b['learned_on'] is None else b['learned_on']}"
                                    for line, b in a["boilerplate"].items()),
        "",
        f"INCREMENTAL: {inc['small']['batch']} new documents into a database already holding N "
        "(CLI: wall per document incl. start-up; run: from the ingest-run record)",
        _table(["N", "CLI ms/doc", "run ms/doc", "peak RSS MB"],
               [[f"{inc[k]['stored']:,} stored", inc[k]["cli_ms_per_doc"], inc[k]["run_ms_per_doc"], inc[k]["peak_rss_mb"]]
                for k in ("small", "full")]
               + [["ratio full / small (target <= 1.2x)", f"{inc['ratio']['cli_ms_per_doc']:.2f}x",
                   f"{inc['ratio']['run_ms_per_doc']:.2f}x", None]]),
        "",
        "LATENCY (CLI: subprocess wall incl. interpreter start; in-process: provenance.lookup.match_text on one engine,",
        "         first call and median of --repeats later calls)",
        _table(["command", "CLI wall s", "peak RSS MB", "in-proc first ms", "in-proc warm ms", "found"],
               [[label, f["cli_wall_s"], f["cli_peak_rss_mb"], f.get("in_process_first_ms"), f.get("in_process_warm_ms"),
                 f.get("found")] for label, f in lat.items() if isinstance(f, dict)],
               ("left",) + ("right",) * 4 + ("left",)),
        "",
        f"total {figures['total_s']} s" + (
            f"; other processes used {contention['other_processes_cpu_s']} CPU-s meanwhile "
            f"({contention['other_processes_cores']} cores on average; load average at start "
            f"{contention['load_average_at_start']})" if contention else ""),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        sys.exit(1)
