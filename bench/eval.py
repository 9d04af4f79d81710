"""Accuracy on the externally labelled development data: one command, three corpora.

    python bench/eval.py                          # everything, temporary databases
    python bench/eval.py --only pan --keep out/   # keep the database and predictions
    python bench/eval.py --set syndicated_min_containment=0.4 --set passage.lsh_threshold=0.25
    python bench/eval.py --json figures.json

The data lives outside the repository (research-use corpora must not be copied into it):
``../shared/eval`` next to the checkout, or ``--data DIR`` / ``$PROVENANCE_EVAL_DATA``. Each
corpus is ingested into a fresh database exactly as a user would ingest it (sources first,
so that direction comes out right), the stored results are turned into the prediction
format of the corpus, and the reference ``score.py`` of the data folder scores them. Scoring
with the reference scorer, not a re-implementation, keeps our figures comparable with the
published ones. A cheap baseline is scored the same way next to each result so that a
change can be judged against something that does not use the library at all.

Only the standard library and the provenance package are used.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional

from sqlalchemy import select

from provenance.db.migrate import upgrade_to_head
from provenance.db.models import Derivation, Document, Passage, PassageMatch
from provenance.db.session import make_engine, session_scope
from provenance.ingest import Ingestor
from provenance.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("PROVENANCE_EVAL_DATA", REPO.parent / "shared" / "eval"))
CORPORA = ("pan", "clough", "boilerplate")

#: PAN scores fragmented detections down (granularity), so matched passages closer than
#: this many characters on both sides are reported as one detection.
PAN_MERGE_GAP = 200
#: Baseline settings, fixed so that the baseline is a stable yardstick, not a tuned rival.
BASELINE_CONTAINMENT = 0.2  # Clough: share of the answer's word 3-grams found in the source
BASELINE_SEED_MAX_FREQ = 3  # PAN: a 3-gram seeds only when it occurs at most this often in either text
BASELINE_MIN_SEEDS = 5  # PAN: a seed cluster needs this many shared 3-grams ...
BASELINE_MIN_CHARS = 150  # ... and this many characters in the suspicious text
BASELINE_MIN_PAGES = 3  # boilerplate: a line whose digit-normalised text is on this many pages

_WORD = re.compile(r"\w+", re.UNICODE)


# -- settings ------------------------------------------------------------------------------
def apply_overrides(settings: Settings, assignments: Iterable[str]) -> Settings:
    """``Settings`` with ``name=value`` (or ``document.x=`` / ``passage.x=``) applied.

    Values are converted to the type of the current value. Changing a sketch's threshold
    resets its bands and rows so that they are recomputed for the new threshold, unless
    bands or rows are given explicitly too.
    """
    top: dict[str, object] = {}
    nested: dict[str, dict[str, object]] = defaultdict(dict)
    for assignment in assignments:
        name, equals, raw = assignment.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"--set expects NAME=VALUE, got {assignment!r}")
        owner_name, _, field_name = name.rpartition(".")
        owner = getattr(settings, owner_name, None) if owner_name else settings
        if (
            not dataclasses.is_dataclass(owner)
            or field_name not in {f.name for f in dataclasses.fields(owner)}
            or dataclasses.is_dataclass(getattr(owner, field_name))
        ):
            raise ValueError(f"unknown setting {name!r}; known: {', '.join(setting_names(settings))}")
        value = _coerce(raw.strip(), getattr(owner, field_name), name)
        (nested[owner_name] if owner_name else top)[field_name] = value
    for owner_name, changes in nested.items():
        sketch = getattr(settings, owner_name)
        if not {"bands", "rows"} & set(changes):
            changes = {"bands": 0, "rows": 0, **changes}
        top[owner_name] = dataclasses.replace(sketch, **changes)
    return dataclasses.replace(settings, **top) if top else settings


def setting_names(settings: Settings) -> list[str]:
    names = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            names.extend(f"{f.name}.{g.name}" for g in dataclasses.fields(value))
        else:
            names.append(f.name)
    return names


def _coerce(raw: str, current: object, name: str) -> object:
    try:
        if isinstance(current, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a {type(current).__name__}, got {raw!r}") from None
    return raw


# -- shared plumbing -----------------------------------------------------------------------
@contextmanager
def workspace(keep: Optional[str]) -> Iterator[Path]:
    """Where databases and predictions go: a temporary folder, or ``--keep DIR``."""
    if keep:
        path = Path(keep).resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="provenance-eval-") as folder:
            yield Path(folder)


def fresh_ingestor(db_path: Path, settings: Settings) -> Ingestor:
    """An ingestor on a new database: results must never mix with an earlier run's."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    engine = make_engine("sqlite:///" + str(db_path))
    upgrade_to_head(engine)
    return Ingestor(engine, settings)


def ingest(ingestor: Ingestor, paths: list[str], source: str, problems: list[str]) -> None:
    """Ingest and keep the problem lines: a document that failed silently lowers recall."""
    summary = ingestor.ingest_paths(paths, source=source)
    problems.extend(summary.problems)


def document_ids(ingestor: Ingestor) -> dict[str, int]:
    """Latest document id by absolute path."""
    with session_scope(ingestor.engine) as session:
        return dict(session.execute(select(Document.path, Document.id).where(Document.is_latest.is_(True))).all())


def derivation_pairs(ingestor: Ingestor) -> set[frozenset]:
    """Every pair of documents joined by a derivation, whatever its relation or direction."""
    with session_scope(ingestor.engine) as session:
        return {frozenset(row) for row in session.execute(select(Derivation.derived_id, Derivation.source_id))}


def run_scorer(data: Path, arguments: list[str]) -> str:
    """Output of the reference scorer, run from the data folder as its README says."""
    done = subprocess.run(
        [sys.executable, "score.py", *arguments], cwd=data, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"score.py {' '.join(arguments)} failed:\n{done.stderr}")
    return done.stdout


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def read_text(path: Path) -> str:
    """File text exactly as the library stores it (no newline translation), so offsets agree."""
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def word_spans(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(text)]


def trigram_set(text: str) -> set[tuple[str, ...]]:
    words = [w for w, _, _ in word_spans(text)]
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


# -- PAN 2013 text alignment ---------------------------------------------------------------
def _gap(a_start: int, a_end: int, b_start: int, b_end: int) -> int:
    """Characters between two intervals (0 or less when they touch or overlap)."""
    return max(a_start, b_start) - min(a_end, b_end)


def merge_segments(segments: list[tuple[int, int, int, int]], gap: int) -> list[tuple[int, int, int, int]]:
    """Merge aligned (susp_start, susp_end, src_start, src_end) segments into detections.

    Two segments join when they are within ``gap`` characters of each other in the
    suspicious text *and* in the source: neighbouring sentences copied from neighbouring
    sentences are one reuse case, while the same sentence order with a distant source
    position is another case. Repeated until nothing joins, since a grown detection can
    reach one that was out of range before.
    """
    clusters = [list(s) for s in sorted(segments)]
    changed = True
    while changed:
        changed = False
        merged: list[list[int]] = []
        for seg in clusters:
            for cluster in reversed(merged):
                if _gap(cluster[0], cluster[1], seg[0], seg[1]) <= gap and _gap(cluster[2], cluster[3], seg[2], seg[3]) <= gap:
                    cluster[0], cluster[1] = min(cluster[0], seg[0]), max(cluster[1], seg[1])
                    cluster[2], cluster[3] = min(cluster[2], seg[2]), max(cluster[3], seg[3])
                    changed = True
                    break
            else:
                merged.append(seg)
        clusters = sorted(merged)
    return [tuple(c) for c in clusters]


def detection(susp: str, src: str, segment: tuple[int, int, int, int]) -> dict:
    s0, s1, r0, r1 = segment
    return {"susp": susp, "src": src, "this_offset": s0, "this_length": s1 - s0,
            "source_offset": r0, "source_length": r1 - r0}


def pan_matches(ingestor: Ingestor) -> dict[tuple[int, int], list[tuple[int, int, int, int]]]:
    """Aligned evidence spans by (derived id, source id): the text behind each derivation."""
    found: dict[tuple[int, int], list] = defaultdict(list)
    with session_scope(ingestor.engine) as session:
        for row in session.execute(
            select(Derivation.derived_id, Derivation.source_id, PassageMatch.derived_start, PassageMatch.derived_end,
                   PassageMatch.source_start, PassageMatch.source_end)
            .join(PassageMatch, PassageMatch.derivation_id == Derivation.id)
        ):
            found[(row[0], row[1])].append(tuple(row[2:]))
    return found


def pan_baseline(susp_text: str, src_text: str, gap: int) -> list[tuple[int, int, int, int]]:
    """Seed-and-merge on shared word 3-grams, the textbook text-alignment baseline.

    Frequent 3-grams ("one of the") are not seeds; clusters of fewer than
    ``BASELINE_MIN_SEEDS`` seeds or shorter than ``BASELINE_MIN_CHARS`` are dropped.
    """
    def grams(text: str) -> dict[tuple, list[tuple[int, int]]]:
        words = word_spans(text)
        out: dict[tuple, list] = defaultdict(list)
        for i in range(len(words) - 2):
            out[tuple(w for w, _, _ in words[i : i + 3])].append((words[i][1], words[i + 2][2]))
        return out

    mine, theirs = grams(susp_text), grams(src_text)
    seeds = [
        (s0, s1, r0, r1)
        for gram, places in mine.items()
        if gram in theirs and len(places) <= BASELINE_SEED_MAX_FREQ and len(theirs[gram]) <= BASELINE_SEED_MAX_FREQ
        for s0, s1 in places
        for r0, r1 in theirs[gram]
    ]
    kept = []
    for cluster in merge_segments(seeds, gap):
        members = sum(1 for s in seeds if cluster[0] <= s[0] and s[1] <= cluster[1] and cluster[2] <= s[2] and s[3] <= cluster[3])
        if members >= BASELINE_MIN_SEEDS and cluster[1] - cluster[0] >= BASELINE_MIN_CHARS:
            kept.append(cluster)
    return kept


def evaluate_pan(data: Path, work: Path, settings: Settings, gap: int) -> dict:
    """PAN 2013: sources, then suspicious documents, into one database; detections per pair."""
    corpus = data / "pan13"
    pairs = read_csv(corpus / "pairs.csv")
    sources = sorted({p["src"] for p in pairs})
    suspects = sorted({p["susp"] for p in pairs})
    src_path = {name: str((corpus / "src" / name).resolve()) for name in sources}
    susp_path = {name: str((corpus / "susp" / name).resolve()) for name in suspects}

    started = time.perf_counter()
    ingestor = fresh_ingestor(work / "pan13.db", settings)
    problems: list[str] = []
    ingest(ingestor, [src_path[n] for n in sources], "pan13-src", problems)
    ingest(ingestor, [susp_path[n] for n in suspects], "pan13-susp", problems)
    ingest_seconds = time.perf_counter() - started

    ids = document_ids(ingestor)
    matches = pan_matches(ingestor)
    predictions, reversed_pairs = [], 0
    for pair in pairs:
        susp_id, src_id = ids.get(susp_path[pair["susp"]]), ids.get(src_path[pair["src"]])
        segments = list(matches.get((susp_id, src_id), []))
        backwards = matches.get((src_id, susp_id), [])
        reversed_pairs += bool(backwards)
        segments += [(s0, s1, r0, r1) for r0, r1, s0, s1 in backwards]
        predictions += [detection(pair["susp"], pair["src"], seg) for seg in merge_segments(segments, gap)]
    pred_file = work / "pan13-pred.jsonl"
    write_jsonl(pred_file, predictions)
    output = run_scorer(data, ["pan", "pan13", str(pred_file)])

    started = time.perf_counter()
    baseline = []
    for pair in pairs:
        susp_text = read_text(corpus / "susp" / pair["susp"])
        src_text = read_text(corpus / "src" / pair["src"])
        baseline += [detection(pair["susp"], pair["src"], seg) for seg in pan_baseline(susp_text, src_text, gap)]
    baseline_file = work / "pan13-baseline.jsonl"
    write_jsonl(baseline_file, baseline)
    baseline_output = run_scorer(data, ["pan", "pan13", str(baseline_file)])
    return {
        "documents": len(sources) + len(suspects),
        "ingest_seconds": round(ingest_seconds, 1),
        "baseline_seconds": round(time.perf_counter() - started, 1),
        "problems": problems,
        "reversed_pairs": reversed_pairs,
        "scorer_output": output,
        "scores": parse_pan(output),
        "baseline": f"word 3-gram seeds (freq<={BASELINE_SEED_MAX_FREQ}) merged within {gap} chars, "
                    f">={BASELINE_MIN_SEEDS} seeds and >={BASELINE_MIN_CHARS} chars",
        "baseline_output": baseline_output,
        "baseline_scores": parse_pan(baseline_output),
    }


_PAN_LINE = re.compile(
    r"^(\S+)\s+cases=\s*(\d+)\s+detections=\s*(\d+)"
    r"(?:\s+precision=([\d.]+) recall=([\d.]+) granularity=([\d.]+) plagdet=([\d.]+))?"
)


def parse_pan(output: str) -> dict:
    scores = {}
    for line in output.splitlines():
        m = _PAN_LINE.match(line)
        if not m:
            continue
        entry = {"cases": int(m[2]), "detections": int(m[3])}
        if m[4] is not None:
            entry.update(precision=float(m[4]), recall=float(m[5]), granularity=float(m[6]), plagdet=float(m[7]))
        scores[m[1]] = entry
    return scores


# -- Clough & Stevenson short answers -----------------------------------------------------
def evaluate_clough(data: Path, work: Path, settings: Settings) -> dict:
    """Pair level: an answer is derived from its task's source when any derivation joins them."""
    corpus = data / "clough_stevenson"
    pairs = read_csv(corpus / "pairs.csv")
    docs = corpus / "docs"
    path = lambda name: str((docs / name).resolve())  # noqa: E731
    sources = sorted({p["source_file"] for p in pairs})
    answers = sorted({p["answer_file"] for p in pairs})

    started = time.perf_counter()
    ingestor = fresh_ingestor(work / "clough.db", settings)
    problems: list[str] = []
    ingest(ingestor, [path(n) for n in sources], "clough-source", problems)
    ingest(ingestor, [path(n) for n in answers], "clough-answer", problems)
    ingest_seconds = time.perf_counter() - started

    ids = document_ids(ingestor)
    joined = derivation_pairs(ingestor)
    fields = ["answer_file", "source_file", "pred"]
    rows = [
        {"answer_file": p["answer_file"], "source_file": p["source_file"],
         "pred": int(frozenset((ids.get(path(p["answer_file"])), ids.get(path(p["source_file"])))) in joined)}
        for p in pairs
    ]
    baseline_rows = []
    for p in pairs:
        answer = trigram_set(read_text(docs / p["answer_file"]))
        source = trigram_set(read_text(docs / p["source_file"]))
        containment = len(answer & source) / len(answer) if answer else 0.0
        baseline_rows.append({"answer_file": p["answer_file"], "source_file": p["source_file"],
                              "pred": int(containment >= BASELINE_CONTAINMENT)})
    outputs = {}
    for name, content in (("clough-pred.csv", rows), ("clough-baseline.csv", baseline_rows)):
        with open(work / name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(content)
        outputs[name] = run_scorer(data, ["pairs", "clough_stevenson/pairs.csv", str(work / name),
                                          "--key", "answer_file,source_file", "--gold", "derived"])
    return {
        "documents": len(sources) + len(answers),
        "ingest_seconds": round(ingest_seconds, 1),
        "problems": problems,
        "scorer_output": outputs["clough-pred.csv"],
        "scores": parse_pairs(outputs["clough-pred.csv"]),
        "baseline": f"answer word 3-gram containment in source >= {BASELINE_CONTAINMENT}",
        "baseline_output": outputs["clough-baseline.csv"],
        "baseline_scores": parse_pairs(outputs["clough-baseline.csv"]),
    }


def parse_pairs(output: str) -> dict:
    scores: dict = {"levels": {}}
    m = re.search(r"precision=([\d.]+) recall=([\d.]+) f1=([\d.]+)", output)
    if m:
        scores.update(precision=float(m[1]), recall=float(m[2]), f1=float(m[3]))
    for m in re.finditer(r"(\w+)=(\S+): predicted-positive rate (\d+)/(\d+)", output):
        scores["levels"][m[2]] = {"flagged": int(m[3]), "pairs": int(m[4])}
    return scores


# -- CleanPortalEval boilerplate -----------------------------------------------------------
def line_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line as the scorer counts lines (``text.split("\\n")``)."""
    spans, position = [], 0
    for line in text.split("\n"):
        spans.append((position, position + len(line)))
        position += len(line) + 1
    return spans


def boilerplate_lines(text: str, passages: list[tuple[int, int, bool]]) -> list[int]:
    """Lines whose every covering passage is tagged boilerplate.

    A line touched by no passage (blank, or text the segmenter dropped) is content: only
    what the library decided counts.
    """
    passages = sorted(passages)
    starts = [p[0] for p in passages]
    flagged = []
    for number, (start, end) in enumerate(line_spans(text)):
        if not text[start:end].strip():
            continue
        covering = []
        for p_start, p_end, tagged in passages[max(0, bisect.bisect_right(starts, start) - 1) :]:
            if p_start >= end:
                break
            if p_end > start:
                covering.append(tagged)
        if covering and all(covering):
            flagged.append(number)
    return flagged


def naive_boilerplate(texts: dict[str, str]) -> dict[str, list[int]]:
    """The README's baseline: a line whose digit-normalised text is on 3 or more pages."""
    key = lambda line: re.sub(r"\d+", "0", line.strip())  # noqa: E731
    pages = Counter()
    for text in texts.values():
        pages.update({key(line) for line in text.split("\n") if line.strip()})
    return {
        doc: [i for i, line in enumerate(text.split("\n")) if line.strip() and pages[key(line)] >= BASELINE_MIN_PAGES]
        for doc, text in texts.items()
    }


def evaluate_boilerplate(data: Path, work: Path, settings: Settings) -> dict:
    """Pages ingested site by site with the site as source, as a crawl of those sites would be."""
    corpus = data / "cleanportaleval"
    documents = read_csv(corpus / "documents.csv")
    by_site: dict[str, list[str]] = defaultdict(list)
    path = {}
    for row in documents:
        path[row["doc"]] = str((corpus / "text" / f"{row['doc']}.txt").resolve())
        by_site[row["site"]].append(row["doc"])

    started = time.perf_counter()
    ingestor = fresh_ingestor(work / "cleanportaleval.db", settings)
    problems: list[str] = []
    for site, docs in by_site.items():
        ingest(ingestor, [path[d] for d in docs], site, problems)
    ingest_seconds = time.perf_counter() - started

    ids = document_ids(ingestor)
    texts = {doc: read_text(Path(p)) for doc, p in path.items()}
    passages: dict[int, list] = defaultdict(list)
    with session_scope(ingestor.engine) as session:
        for document_id, start, end, tagged in session.execute(
            select(Passage.document_id, Passage.start_offset, Passage.end_offset, Passage.boilerplate_id.is_not(None))
        ):
            passages[document_id].append((start, end, bool(tagged)))
    predictions = [
        {"doc": doc, "boilerplate_lines": boilerplate_lines(texts[doc], passages.get(ids.get(path[doc]), []))}
        for doc in path
    ]
    pred_file = work / "cleanportaleval-pred.jsonl"
    write_jsonl(pred_file, predictions)
    baseline_file = work / "cleanportaleval-baseline.jsonl"
    write_jsonl(baseline_file, ({"doc": d, "boilerplate_lines": lines} for d, lines in naive_boilerplate(texts).items()))
    output = run_scorer(data, ["boilerplate", "cleanportaleval", str(pred_file)])
    baseline_output = run_scorer(data, ["boilerplate", "cleanportaleval", str(baseline_file)])
    return {
        "documents": len(path),
        "sites": len(by_site),
        "ingest_seconds": round(ingest_seconds, 1),
        "problems": problems,
        "scorer_output": output,
        "scores": parse_boilerplate(output),
        "baseline": f"line's digit-normalised text on >= {BASELINE_MIN_PAGES} pages (README)",
        "baseline_output": baseline_output,
        "baseline_scores": parse_boilerplate(baseline_output),
    }


def parse_boilerplate(output: str) -> dict:
    scores = {}
    m = re.search(r"line-level boilerplate: precision=([\d.]+) recall=([\d.]+) f1=([\d.]+)", output)
    if m:
        scores["lines"] = {"precision": float(m[1]), "recall": float(m[2]), "f1": float(m[3])}
    m = re.search(r"bag of words, micro\): precision=([\d.]+) recall=([\d.]+) f1=([\d.]+)", output)
    if m:
        scores["kept_text_bow"] = {"precision": float(m[1]), "recall": float(m[2]), "f1": float(m[3])}
    return scores


# -- report ----------------------------------------------------------------------------------
def summary_rows(results: dict) -> list[tuple]:
    """(set, level, system, precision, recall, granularity/-, plagdet or F1, note) rows."""
    rows = []
    for system, key in (("provenance", "scores"), ("baseline", "baseline_scores")):
        if "pan" in results:
            for subset, s in results["pan"][key].items():
                if "precision" in s:
                    rows.append(("pan13", subset, system, s["precision"], s["recall"], s["granularity"], s["plagdet"],
                                 f"{s['detections']} det / {s['cases']} cases"))
                else:
                    rows.append(("pan13", subset, system, None, None, None, None, f"{s['detections']} false detections"))
        if "clough" in results:
            s = results["clough"][key]
            rates = " ".join(f"{lvl}={v['flagged']}/{v['pairs']}" for lvl, v in sorted(s["levels"].items()))
            rows.append(("clough", "pairs", system, s.get("precision"), s.get("recall"), None, s.get("f1"), rates))
        if "boilerplate" in results:
            s = results["boilerplate"][key]
            for level in ("lines", "kept_text_bow"):
                if level in s:
                    rows.append(("cleanportal", level, system, s[level]["precision"], s[level]["recall"], None,
                                 s[level]["f1"], ""))
    order = {"provenance": 0, "baseline": 1}
    return sorted(rows, key=lambda r: (r[0], r[1], order[r[2]]))


def format_report(results: dict, settings_changes: list[str], total_seconds: float) -> str:
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    lines = []
    for name, result in results.items():
        lines.append(f"== {name}: score.py output (provenance) ==")
        lines.append(result["scorer_output"].rstrip())
        lines.append(f"-- baseline: {result['baseline']}")
        lines.append(result["baseline_output"].rstrip())
        lines.append("")
    lines.append("settings: " + ("defaults" if not settings_changes else "; ".join(settings_changes)))
    header = f"{'set':12s} {'level':28s} {'system':10s} {'prec':>6s} {'recall':>6s} {'gran':>6s} {'plagdet/F1':>10s}  note"
    lines += [header, "-" * len(header)]
    for corpus, level, system, p, r, g, f, note in summary_rows(results):
        lines.append(f"{corpus:12s} {level:28s} {system:10s} {fmt(p):>6s} {fmt(r):>6s} {fmt(g):>6s} {fmt(f):>10s}  {note}")
    lines.append("")
    for name, result in results.items():
        timing = f"ingest {result['ingest_seconds']:.1f}s for {result['documents']} documents"
        if "baseline_seconds" in result:
            timing += f", baseline {result['baseline_seconds']:.1f}s"
        lines.append(f"time {name:12s} {timing}")
        if result["problems"]:
            lines.append(f"  {len(result['problems'])} ingest problems, first: {result['problems'][0]}")
        if result.get("reversed_pairs"):
            lines.append(f"  {result['reversed_pairs']} pairs had a derivation in the wrong direction (source derived from suspicious)")
    lines.append(f"time total {total_seconds:.1f}s")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=CORPORA, action="append",
                        help="evaluate only this corpus (repeatable); default: all")
    parser.add_argument("--keep", metavar="DIR", help="keep databases and predictions in DIR")
    parser.add_argument("--set", dest="overrides", metavar="NAME=VALUE", action="append", default=[],
                        help="override a Settings field, e.g. syndicated_min_containment=0.4 or passage.lsh_threshold=0.25")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"evaluation data folder (default {DEFAULT_DATA})")
    parser.add_argument("--pan-gap", type=int, default=PAN_MERGE_GAP,
                        help="merge PAN detections closer than this many characters on both sides")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    data = Path(args.data).resolve()
    if not (data / "score.py").exists():
        print(f"no evaluation data at {data} (score.py missing); give --data DIR", file=sys.stderr)
        return 2
    try:
        settings = apply_overrides(Settings(), args.overrides)
    except ValueError as error:
        print(f"bad --set: {error}", file=sys.stderr)
        return 2
    chosen = [c for c in CORPORA if not args.only or c in args.only]
    started = time.perf_counter()
    results: dict[str, dict] = {}
    with workspace(args.keep) as work:
        for corpus in chosen:
            if corpus == "pan":
                results[corpus] = evaluate_pan(data, work, settings, args.pan_gap)
            elif corpus == "clough":
                results[corpus] = evaluate_clough(data, work, settings)
            else:
                results[corpus] = evaluate_boilerplate(data, work, settings)
    total = time.perf_counter() - started
    print(format_report(results, settings.differences(Settings()), total))
    if args.json:
        figures = {
            "settings_overrides": args.overrides,
            "settings_fingerprint": settings.fingerprint(),
            "total_seconds": round(total, 1),
            "corpora": {
                name: {k: v for k, v in result.items() if not k.endswith("_output")} for name, result in results.items()
            },
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
