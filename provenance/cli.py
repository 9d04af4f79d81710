"""The ``provenance`` command: a thin click layer over the library.

Commands open the database, call one or two library functions and render the result;
library errors become one-line messages with a non-zero exit code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, TextIO

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import __version__, inspect as inspection, render, report as reporting
from .collect import fewer_collections
from .db.migrate import check_database, head_revision, upgrade_to_head
from .db.session import (
    DEFAULT_DB, SQLITE_BUSY_TIMEOUT_MS, database_url, is_transient, make_engine, session_scope, snapshot_scope,
    sqlite_path,
)
from .errors import ProvenanceError
from .reader import DEFAULT_MAX_BYTES
from .settings import LONE_BAND_BUCKET_MAX, Settings, SketchSettings

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
FORMATS = ["table", "json", "csv"]


class Context:
    def __init__(self, db: Optional[str], quiet: bool):
        self.target = db or DEFAULT_DB
        self.url = database_url(db)
        self.quiet = quiet
        self._engine: Optional[Engine] = None

    def engine(self, *, create: bool = False) -> Engine:
        """The database, migrated to head; refuses to create one unless ``create``."""
        if self._engine is None:
            path = sqlite_path(self.url)
            if path and not os.path.exists(path) and not create:
                raise ProvenanceError(
                    f"{self.target}: no such database; run `provenance ingest PATH` first or pass --db"
                )
            if path:
                _check_sqlite_file(path, self.target)
                if os.path.exists(path) and os.path.getsize(path) > 0:
                    _check_read_only(self.url, self.target)  # before anything could write to it
            engine = make_engine(self.url)
            try:
                upgrade_to_head(engine)
            except ProvenanceError:
                engine.dispose()
                raise
            except Exception as error:
                engine.dispose()
                raise ProvenanceError(f"{self.target}: cannot open the database ({type(error).__name__}: {_reason(error)})") from error
            self._engine = engine
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _check_sqlite_file(path: str, shown: str) -> None:
    if os.path.isdir(path):
        raise ProvenanceError(f"{shown}: is a folder; pass a database file to --db")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ProvenanceError(f"{shown}: the folder {folder} does not exist; create it or pass another --db")
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path, "rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                raise ProvenanceError(f"{shown}: is not a provenance database (not SQLite); pass another --db")


def _check_read_only(url: str, shown: str) -> str | None:
    """The database's revision, read through a read-only connection.

    A read-write SQLite connection switches the file to WAL as it opens, so a file that is
    then refused (another program's database, a newer schema, a damaged file) would already
    have been changed; read-only, it is left byte for byte as it was.
    """
    engine = make_engine(url, read_only=True)
    try:
        for delay in (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, None):
            try:
                return check_database(engine)
            except SQLAlchemyError as error:
                # "database is locked": another process is creating the file or switching it to WAL.
                if delay is None or not is_transient(error):
                    raise
                time.sleep(delay)
    except SQLAlchemyError as error:
        raise ProvenanceError(
            f"{shown}: cannot read the database ({type(error).__name__}: {_reason(error)}); "
            "check that --db names a provenance database, or restore it from a backup"
        ) from error
    finally:
        engine.dispose()


def _reason(error: BaseException) -> str:
    """The driver's own message on one line, without SQLAlchemy's SQL and help link."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fail(error: Exception) -> None:
    raise click.ClickException(render.safe(error))


def _out(text: str, nl: bool = True) -> None:
    """Write command output exactly as rendered.

    Plain click.echo strips ANSI sequences when stdout is not a terminal, which would
    silently change paths and text in JSON, CSV and HTML sent to a pipe or a file.
    Terminal formats need no stripping: render.safe has already neutralised them.
    """
    click.echo(text, nl=nl, color=True)


class _Commands(click.Group):
    """The command group: a database that stays busy past the wait (another process holding
    SQLite's write lock for longer than the busy timeout, a deadlock, a lost connection)
    ends any command with one line that says so, not a traceback. Whether the error came
    through SQLAlchemy or straight from the driver: the reads and writes made for every
    document and every listed row go to the driver's cursor (provenance.db.bulk)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as error:
            if not is_transient(error):
                raise
            target = ctx.obj.target if isinstance(ctx.obj, Context) else "the database"
            reason = _reason(error)
            why = (f"another process held its write lock for over {SQLITE_BUSY_TIMEOUT_MS // 1000} s"
                   if "locked" in reason.lower() else "it was busy or the connection was lost")
            raise click.ClickException(render.safe(
                f"{target}: {why} ({reason}); what was already stored is kept; run the command again"
            )) from error


@click.group(cls=_Commands, context_settings=CONTEXT_SETTINGS)
@click.option("--db", envvar="PROVENANCE_DB", metavar="PATH|URL",
              help=f"Database file or SQLAlchemy URL [default: {DEFAULT_DB}; env PROVENANCE_DB].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary on stderr.")
@click.version_option(__version__, prog_name="provenance")
@click.pass_context
def cli(ctx: click.Context, db: Optional[str], quiet: bool) -> None:
    """Find duplicate, syndicated and rewritten documents and record where text came from.

    \b
    Quick start:
      provenance ingest seeds/          # read files, detect, store
      provenance report                 # duplicates and derivations
      provenance inspect                # what the database holds
    """
    state = Context(db, quiet)
    ctx.obj = state
    ctx.call_on_close(state.close)


# -- ingest ---------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--source", help="Source/publisher name for these files [default: the parent folder's name].")
@click.option("--threshold", type=click.FloatRange(0.05, 0.99), default=None,
              help="Near-duplicate threshold the LSH bands are designed for (first ingest only) [default: 0.8].")
@click.option("--num-perm", type=click.IntRange(16, 1024), default=None,
              help="MinHash permutations for document signatures (first ingest only) [default: 128].")
@click.option("--shingle-size", type=click.IntRange(1, 8), default=None,
              help="Words per document shingle (first ingest only) [default: 5].")
@click.option("--seed", type=int, default=None, help="MinHash seed (first ingest only) [default: 1].")
@click.option("--passage-threshold", type=click.FloatRange(0.1, 0.9), default=None,
              help="Content-word similarity the passage LSH bands are designed for (first ingest "
                   "only) [default: 0.3]. Higher finds fewer reworded passages but gives far fewer "
                   "chance candidates, so ingest slows less as the database grows (0.4: ten times "
                   "fewer; see bench/README.md).")
@click.option("--lone-band-bucket-max", type=click.IntRange(0, 1_000_000), default=None, metavar="N",
              help="Two passages sharing a single passage band, in a bucket of more than N other passages "
                   f"(common words), are not compared (first ingest only) [default: {LONE_BAND_BUCKET_MAX}]. "
                   "0 compares them all: a little more recall on reworded passages, for 1.6x the ingest "
                   "time and twice the match time at 100,000 documents (README, Speed).")
@click.option("--boilerplate-min-documents", type=click.IntRange(2, 1000), default=None,
              help="A passage recurring in this many unrelated documents is boilerplate [default: 3].")
@click.option("--max-file-size", type=click.IntRange(1, 4096), default=DEFAULT_MAX_BYTES // 1_000_000 + 3,
              show_default=True, metavar="MB",
              help="Refuse files larger than this. A UTF-8 JSONL file is read a line at a time and may be "
                   "of any size: the limit applies to each of its lines.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Run summary format on stdout.")
@click.option("-w", "--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes that read, normalise and sign files and, on SQLite, read each document's "
                   "passage buckets; one writer matches and stores them in input order, so the result is "
                   "the same for any number. The writer is most of the work: 2 gave 1.09-1.26x on two "
                   "cores (README, Speed).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line (errors still print).")
@click.pass_obj
def ingest(state: Context, paths, source, threshold, num_perm, shingle_size, seed, passage_threshold,
           lone_band_bucket_max, boilerplate_min_documents, max_file_size, workers, fmt, quiet) -> None:
    """Ingest files and folders (recursively); '-' reads one document from stdin.

    Formats: .txt, .md, .html/.htm (visible text), .jsonl (one document a line: "text"
    required; "id", "url", "source", "published_at", "title" optional). Unchanged files
    are left as they are; a changed file becomes a new version. Bad files are reported and skipped;
    the exit code is non-zero when any input was skipped or failed, or nothing could be
    ingested; the good files are stored all the same.

    \b
    Example:
      provenance ingest seeds/ wire.jsonl
      cat article.txt | provenance ingest - --source "Daily Globe"
    """
    from .ingest import Ingestor, run_arguments

    state.quiet = state.quiet or quiet
    try:
        engine = state.engine(create=True)
        requested = _requested_settings(
            engine, threshold, num_perm, shingle_size, seed, boilerplate_min_documents, passage_threshold,
            lone_band_bucket_max,
        )
        ingestor = Ingestor(engine, requested)
    except (ProvenanceError, ValueError) as error:
        fail(error)
    progress = _Progress(enabled=not state.quiet and sys.stderr.isatty())
    summary = ingestor.ingest_paths(
        list(paths),
        source=source,
        max_bytes=max_file_size * 1_000_000,
        on_event=progress,
        arguments=run_arguments(list(paths), source=source),
        workers=workers,
    )
    progress.close()
    if fmt == "json":
        _out(render.to_json(summary.as_dict()))
    elif not state.quiet:
        click.echo(
            f"run {summary.run_id}: {summary.files_seen} file(s) read, {summary.documents_added} document(s) added, "
            f"{summary.versions_added} new version(s), {summary.unchanged} unchanged, {summary.skipped} skipped, "
            f"{summary.failed} failed; {summary.exact_duplicates} exact and {summary.near_duplicates} near-duplicate "
            f"pair(s), {summary.derivations} derivation(s)"
            + (f" ({summary.derivations_retired} since superseded by an earlier source)"
               if summary.derivations_retired else "")
            + f", {summary.boilerplate_learned} boilerplate passage(s) learned"
            f"; {_rate(summary)}"
        )
    if summary.interrupted:
        click.echo(f"interrupted: stored {summary.documents_added + summary.versions_added} document(s) before stopping; "
                   "run the same command again to finish", err=True)
        sys.exit(130)
    stored = summary.documents_added + summary.versions_added + summary.unchanged
    if summary.failed or summary.skipped or stored == 0:
        raise click.ClickException(
            f"{summary.failed} input(s) failed and {summary.skipped} skipped; {stored} document(s) stored or unchanged"
        )


def _requested_settings(
    engine, threshold, num_perm, shingle_size, seed, boilerplate_min_documents, passage_threshold=None,
    lone_band_bucket_max=None,
) -> Optional[Settings]:
    """Settings asked for on the command line, merged over what the database already has."""
    from . import manifest

    if all(v is None for v in (threshold, num_perm, shingle_size, seed, boilerplate_min_documents, passage_threshold,
                               lone_band_bucket_max)):
        return None
    with session_scope(engine) as session:
        base = manifest.load(session) or Settings()
    document = base.document
    if any(v is not None for v in (threshold, num_perm, shingle_size, seed)):
        document = SketchSettings(
            shingle_size=shingle_size if shingle_size is not None else document.shingle_size,
            num_perm=num_perm if num_perm is not None else document.num_perm,
            seed=seed if seed is not None else document.seed,
            lsh_threshold=threshold if threshold is not None else document.lsh_threshold,
            recall_weight=document.recall_weight,
        )
    import dataclasses

    passage = base.passage
    if passage_threshold is not None and passage_threshold != passage.lsh_threshold:
        # bands x rows left at 0: chosen for the new threshold (see SketchSettings)
        passage = dataclasses.replace(passage, lsh_threshold=passage_threshold, bands=0, rows=0)
    return dataclasses.replace(
        base,
        document=document,
        passage=passage,
        near_duplicate_threshold=threshold if threshold is not None else base.near_duplicate_threshold,
        boilerplate_min_documents=boilerplate_min_documents or base.boilerplate_min_documents,
        lone_band_bucket_max=base.lone_band_bucket_max if lone_band_bucket_max is None else lone_band_bucket_max,
    )


def _rate(summary) -> str:
    """How long the run took, and its pace when it stored anything."""
    stored = summary.documents_added + summary.versions_added
    pace = f", {stored / summary.seconds:,.1f} document(s)/s" if stored and summary.seconds > 0 else ""
    return f"{summary.seconds:,.1f} s{pace}"


class _Progress:
    """A progress bar on stderr (terminals only) plus one line per problem, always."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.ingest_label = ""

    def __call__(self, event: str, *args) -> None:
        if event == "start" and self.enabled:
            files, size = args
            # Measured in bytes read, so that one big JSONL feed moves the bar line by line.
            self.bar = click.progressbar(length=max(size, 1), label=f"ingesting {files} file(s), {size / 1e6:,.1f} MB",
                                         file=sys.stderr, show_percent=True, show_eta=True)
            self.bar.__enter__()
        elif event == "read" and self.bar is not None:
            self.bar.update(args[0])
        elif event in ("merge", "merged") and self.bar is not None:
            # A merge stops the bar for as long as it takes (13-18 s at 100,000 documents):
            # the label says why meanwhile.
            if event == "merge":
                self.ingest_label = self.bar.label
                self.bar.label = f"merging the passage index ({args[0]:,} recent rows)"
            else:
                self.bar.label = self.ingest_label
            self.bar.render_progress()
        elif event == "problem":
            if self.bar is not None:
                sys.stderr.write("\n")
            click.echo(f"error: {render.safe(args[0])}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


# -- report ---------------------------------------------------------------------------
#: What the terminal report lists of each section by default: a corpus of 10,000 documents
#: has thousands of derivations, more than anyone reads in a terminal (--limit 0 lists all).
TERMINAL_REPORT_LIMIT = 20

@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "html", "paths", "jsonl"]), default="table",
              show_default=True, help="paths: files to drop to deduplicate (see --keep); jsonl: one record per document.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Near-duplicate threshold for clusters [default: the database's, 0.8].")
@click.option("--document", metavar="ID|PATH", help="Only what concerns this document.")
@click.option("--keep", type=click.Choice(["canonical", "earliest", "none"]), default="canonical", show_default=True,
              help="For paths/jsonl: which member of each cluster a deduplicated dataset keeps.")
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help=f"List at most N clusters, derivations, boilerplate lines and credits; the summary still counts "
                   f"all. 0: no limit [default: {TERMINAL_REPORT_LIMIT} for table, none for the other formats].")
@click.option("--no-timestamps", is_flag=True, help="Leave ingestion times out (byte-identical reruns).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout.")
@click.pass_obj
def report(state: Context, fmt, threshold, document, keep, limit, no_timestamps, output) -> None:
    """Duplicate clusters, derivations with their passages, boilerplate and credits.

    \b
    Examples:
      provenance report
      provenance report --format json | jq '.clusters'
      provenance report --format html -o report.html
      provenance report --document seeds/000_21d20b42f286ae20.txt
      provenance report --format paths --keep canonical > drop.txt   # dry run: deletes nothing
      provenance report --limit 0        # every cluster and derivation in the terminal
    """
    if fmt in ("paths", "jsonl") and limit:
        fail(ProvenanceError(f"--limit does not apply to --format {fmt}: the dataset plan covers every document"))
    if limit is None:
        limit = TERMINAL_REPORT_LIMIT if fmt == "table" else 0
    try:
        with snapshot_scope(state.engine()) as session, fewer_collections():
            # Every format but the terminal's reads the derivations once, so they are built a
            # batch at a time as they are read (none at all for paths and jsonl, and without
            # their passage evidence for CSV, which lists none); JSON and HTML are also written
            # as they are built: a whole report of 100,000 documents is never held at once.
            data = reporting.build(session, threshold=threshold, document=document, timestamps=not no_timestamps,
                                   limit=limit or None, stream=fmt != "table", evidence=fmt != "csv",
                                   brief=fmt in ("paths", "jsonl", "csv"))
            if fmt in ("json", "html"):
                def write(handle: TextIO) -> None:
                    if fmt == "json":
                        render.write_json(data, handle)
                        handle.write("\n")
                    else:
                        handle.writelines(render.report_html_parts(data))

                _emit_streamed(write, output)
                return
            if fmt in ("paths", "jsonl"):
                plan = reporting.dataset_plan(data, keep)
                if fmt == "paths":
                    text = "".join(f"{render.safe(r['path'])}\n" for r in plan if not r["keep"])
                else:
                    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in plan)
            elif fmt == "csv":
                text = render.report_csv(data)
            else:
                colour = output is None and sys.stdout.isatty()
                text = render.report_text(
                    data, style=(lambda w: click.style(w, bold=True, fg="yellow")) if colour else (lambda w: w))
    except ProvenanceError as error:
        fail(error)
    _emit(text, output)


def _emit_streamed(write: Callable[[TextIO], object], output: Optional[str]) -> None:
    """Run ``write`` on stdout, or on a file that replaces ``output`` (through a symbolic
    link, keeping its permissions) only once it is whole, for every command's ``-o``: output
    that fails half-way leaves the previous file in place. What is not a regular file
    (/dev/null, a named pipe) is written to as it is."""
    if not output:
        write(sys.stdout)
        return
    target = Path(os.path.realpath(output))
    if target.exists() and not target.is_file():
        with open(target, "w", encoding="utf-8") as handle:
            write(handle)
    else:
        partial = target.with_name(f".{target.name}.partial")
        try:
            with open(partial, "w", encoding="utf-8") as handle:
                write(handle)
            if target.exists():
                shutil.copymode(target, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    click.echo(f"wrote {output}", err=True)


def _emit(text: str, output: Optional[str]) -> None:
    if output:
        _emit_streamed(lambda handle: handle.write(text), output)
    else:
        _out(text, nl=False)


# -- inspect --------------------------------------------------------------------------
def _format_option(f):
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)(f)


@cli.group(invoke_without_command=True)
@_format_option
@click.pass_context
def inspect(ctx: click.Context, fmt) -> None:
    """What the database holds: summary (default), documents, one document, runs.

    \b
    Examples:
      provenance inspect
      provenance inspect documents --format csv
      provenance inspect document 3
    """
    if ctx.invoked_subcommand is None:
        state: Context = ctx.obj
        try:
            engine = state.engine()
            with session_scope(engine) as session:
                data = inspection.summarise(engine, session)
        except ProvenanceError as error:
            fail(error)
        _out(render.mapping(data, fmt))


@inspect.command("documents")
@_format_option
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help=f"List the first N documents (by id). 0: all [default: {TERMINAL_REPORT_LIMIT} for table, "
                   "all for json and csv].")
@click.pass_obj
def inspect_documents(state: Context, fmt, limit) -> None:
    """The documents (latest versions) with their metadata, in order of id.

    \b
    Examples:
      provenance inspect documents                  # the first 20, and how many more there are
      provenance inspect documents --format csv     # every one
      provenance inspect documents --limit 0        # every one, as a table
    """
    def first(session, count: Optional[int]) -> tuple[list[dict], int]:
        listed = inspection.documents(session, limit=count)
        full = count is not None and len(listed) == count
        return listed, (inspection.count_documents(session) - len(listed)) if full else 0

    _limited_records(state, fmt, limit, first, "document(s)")


@inspect.command("document")
@click.argument("reference", metavar="ID|PATH")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def inspect_document(state: Context, reference, fmt) -> None:
    """One document: metadata, versions, duplicates, citations, passages with tags and matches."""
    try:
        with session_scope(state.engine()) as session:
            data = inspection.document(session, reference)
    except ProvenanceError as error:
        fail(error)
    if fmt == "json":
        _out(render.to_json(data))
        return
    head = {k: v for k, v in data.items() if k not in ("versions", "duplicates", "citations", "passages")}
    _out(render.mapping(head, "table"))
    for name in ("versions", "duplicates", "citations"):
        if data[name]:
            click.echo(f"\n{name}")
            _out(render.records(data[name], "table"))
    click.echo("\npassages")
    _out(render.table(
        ["seq", "span", "tag", "matches", "text"],
        [[p["seq"], f"{p['span'][0]}-{p['span'][1]}", p["tag"],
          ", ".join(f"{m['label']} {m['similarity']:.2f} ({m['role']} of #{m['other_document']})" for m in p["matches"]),
          p["text"][:60]] for p in data["passages"]],
    ))


@inspect.command("runs")
@_format_option
@click.pass_obj
def inspect_runs(state: Context, fmt) -> None:
    """Ingest runs with their counts and settings fingerprint."""
    try:
        with session_scope(state.engine()) as session:
            _out(render.records(inspection.runs(session), fmt))
    except ProvenanceError as error:
        fail(error)


@inspect.command("sources")
@_format_option
@click.pass_obj
def inspect_sources(state: Context, fmt) -> None:
    """Publishers with their documents, reuse counts and the agencies they credit."""
    _records(state, inspection.sources, fmt)


@inspect.command("boilerplate")
@_format_option
@click.pass_obj
def inspect_boilerplate(state: Context, fmt) -> None:
    """The boilerplate library (same as `provenance boilerplate list`)."""
    _records(state, inspection.boilerplate_library, fmt)


@inspect.command("clusters")
@_format_option
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Near-duplicate threshold for clusters [default: the database's, 0.8].")
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help=f"List the members of the first N clusters. 0: all [default: {TERMINAL_REPORT_LIMIT} for table, "
                   "all for json and csv].")
@click.pass_obj
def inspect_clusters(state: Context, fmt, threshold, limit) -> None:
    """Duplicate clusters, one row per member, canonical first.

    \b
    Examples:
      provenance inspect clusters                   # the first 20, and how many more there are
      provenance inspect clusters --format csv      # every one
      provenance inspect clusters --threshold 0.9   # only the closer copies
    """
    def first(session, count: Optional[int]) -> tuple[list[dict], int]:
        rows, clusters = inspection.cluster_rows(session, threshold, limit=count)
        return rows, (clusters - count) if count else 0

    _limited_records(state, fmt, limit, first, "cluster(s)")


@inspect.command("sql")
@click.argument("statement")
@_format_option
@click.pass_obj
def inspect_sql(state: Context, statement, fmt) -> None:
    """Run one read-only SQL statement; writes are refused.

    \b
    Views: duplicate_pairs, derivations_with_paths, passages_with_tags,
    boilerplate_library, source_reuse (and every table).
    Example:
      provenance inspect sql "SELECT derived_path, relation, credited
        FROM derivations_with_paths WHERE source_path LIKE '%000_21d20b42f286ae20.txt'"
    """
    try:
        state.engine()
        columns, rows = inspection.run_sql(state.url, statement)
    except (ProvenanceError, ValueError, inspection.ReadOnlyViolation) as error:
        fail(error)
    if fmt == "json":
        _out(render.to_json([dict(zip(columns, row)) for row in rows]))
    elif fmt == "csv":
        _out(render.to_csv(columns, rows), nl=False)
    else:
        _out(render.table(columns, rows))


def _limited_records(state: Context, fmt: str, limit: Optional[int], first, noun: str) -> None:
    """A listing cut at ``--limit``: by default the first TERMINAL_REPORT_LIMIT entries in a
    terminal, followed by how many more there are, and every entry in JSON and CSV.
    ``first(session, count)``: the rows of the first ``count`` entries (all when None) and
    how many entries that leaves out."""
    if limit is None:
        limit = TERMINAL_REPORT_LIMIT if fmt == "table" else 0
    try:
        with session_scope(state.engine()) as session:
            rows, hidden = first(session, limit or None)
    except ProvenanceError as error:
        fail(error)
    _out(render.records(rows, fmt))
    if fmt == "table":
        for line in render.more_not_shown(hidden, noun, limit):
            _out(line)


def _records(state: Context, query, fmt: str) -> None:
    try:
        with session_scope(state.engine()) as session:
            _out(render.records(query(session), fmt))
    except ProvenanceError as error:
        fail(error)


# -- match, explain -------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...", type=click.Path(allow_dash=True))
@click.option("--text", "inline", help="The text to look up, instead of PATH.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Similarity a stored document needs to count as a near-duplicate [default: the database's, 0.8].")
@click.option("--documents-only", is_flag=True,
              help="Only look for stored documents that duplicate the text (exact or near), not for reused "
                   "passages: much faster on a big database. In JSON, \"passages\" is then null.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "jsonl"]), default="table", show_default=True,
              help="json: one object for one text, a list of them for several; jsonl: one object a line.")
@click.pass_obj
def match(state: Context, paths, inline, threshold, documents_only, fmt) -> None:
    """Does this text duplicate or reuse anything stored? Nothing is stored.

    PATH is a file, '-' for stdin, or a folder (its .txt, .md, .html and .jsonl files,
    as ingest reads them; a .jsonl file holds one text a line). Several texts are looked up
    in one run, one after another, which is much faster than a run for each: the process
    starts once, and what the texts have in common is read once. A file that cannot be read
    is reported on stderr and the others are still looked up (exit status 1).

    \b
    Examples:
      provenance match draft.txt
      provenance match --text "Lukashenko approved a draft amendment ..."
      cat draft.txt | provenance match - --format json
      provenance match incoming.txt --documents-only   # a quick dedup check before storing
      provenance match inbox/ --documents-only --format jsonl   # every text in a folder
    """
    from . import lookup
    from .reader import InputFile, discover, read

    if bool(paths) == (inline is not None):
        fail(ProvenanceError("give PATH (a file, a folder or '-') or --text"))
    inputs = [] if inline is not None else list(discover(list(paths)))
    # One text (--text, or one file that is not a folder or JSONL) gets one answer;
    # anything that can name several gets a list, however many it turns out to hold.
    several = len(paths) > 1 or any(os.path.isdir(given) or given.lower().endswith(".jsonl") for given in paths)
    problems = []
    if inline is not None:
        texts: list = [("<text>", inline)]
    elif not several:
        if not isinstance(inputs[0], InputFile):
            fail(inputs[0])
        documents = list(read(inputs[0]))
        if not documents or not hasattr(documents[0], "text"):
            fail(documents[0] if documents else ProvenanceError(f"{render.safe(paths[0])}: no text in it; pass a text file"))
        texts = [(paths[0], documents[0].text)]
    else:
        texts = _texts_to_match(inputs, problems, progress=not state.quiet and sys.stderr.isatty())
    answers, duplicating, reusing = 0, 0, 0
    started = time.perf_counter()
    try:
        with session_scope(state.engine()) as session:
            for data in lookup.match_texts(session, texts, threshold=threshold, passages=not documents_only):
                _out(_match_output(data, fmt, several, first=answers == 0), nl=not (several and fmt == "json"))
                answers += 1
                duplicating += bool(data["documents"])
                reusing += bool(data["passages"])
            session.rollback()
    except ProvenanceError as error:
        fail(error)
    if several and not answers and not problems:
        fail(ProvenanceError(f"no text to look up: no .txt, .md, .html or .jsonl file in {render.safe(' '.join(paths))}"))
    if several and fmt == "json":
        _out("[]" if not answers else "\n]")
    if several and not state.quiet:
        reused = "passages not searched" if documents_only else f"{reusing} reuse stored passages"
        click.echo(f"{answers} text(s) looked up in {time.perf_counter() - started:,.1f} s: {duplicating} duplicate "
                   f"a stored document, {reused}", err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} input(s) could not be read; {answers} text(s) looked up")


def _texts_to_match(inputs: list, problems: list, progress: bool) -> Iterator[tuple[str, str]]:
    """(name, text) of each document of ``inputs``, read as it is asked for; every input that
    cannot be read is reported on stderr and added to ``problems``."""
    from .reader import InputFile, read

    bar = click.progressbar(length=len(inputs), label=f"matching {len(inputs)} file(s)", file=sys.stderr) if progress else None
    try:
        for item in inputs:
            found = read(item) if isinstance(item, InputFile) else [item]
            for document in found:
                if hasattr(document, "text"):
                    yield document.path, document.text
                else:
                    problems.append(document)
                    if bar is not None:
                        sys.stderr.write("\n")
                    click.echo(f"error: {render.safe(document)}", err=True)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.render_finish()


def _match_output(data: dict, fmt: str, several: bool, first: bool) -> str:
    """One lookup's answer as ``match`` prints it; with ``several``, as one of many."""
    if fmt == "jsonl":
        return json.dumps(data, ensure_ascii=False)
    if fmt == "json":
        if not several:
            return render.to_json(data)
        return ("[\n  " if first else ",\n  ") + render.to_json(data).replace("\n", "\n  ")
    heading = f"{'' if first else chr(10)}== {render.safe(data['text']['name'])} ==\n" if several else ""
    if not data["documents"] and not data["passages"]:
        return heading + (f"no stored document duplicates this text at threshold {data['threshold']}"
                          + (" (passages not searched)" if data["passages"] is None else ", and no passage was reused"))
    sections = []
    if data["documents"]:
        sections.append(f"Stored documents this text duplicates (threshold {data['threshold']})\n" + render.records(
            [{"id": d["id"], "path": d["path"], "relation": d["relation"], "similarity": d["similarity"]}
             for d in data["documents"]], "table"))
    if data["passages"]:
        sections.append("Passages of this text found in stored documents\n" + render.table(
            ["span", "label", "similarity", "document", "document span", "text"],
            [[f"{p['span'][0]}-{p['span'][1]}", p["label"], f"{p['similarity']:.2f}", f"#{p['document']['id']} {p['document']['path']}",
              f"{p['document_span'][0]}-{p['document_span'][1]}", render.clip(p["text"], 60)] for p in data["passages"]],
        ))
    return heading + "\n\n".join(sections)


@cli.command()
@click.argument("first", metavar="A")
@click.argument("second", metavar="B")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout.")
@click.pass_obj
def explain(state: Context, first, second, fmt, output) -> None:
    """Why documents A and B (ids or paths) match, or do not.

    Shows estimated and exact Jaccard, containment both ways, matched passages side by
    side with offsets, shared shingles, the boilerplate excluded, and the settings.

    \b
    Example:
      provenance explain seeds/000_21d20b42f286ae20.txt copy.txt
    """
    from . import lookup

    try:
        with session_scope(state.engine()) as session:
            data = lookup.explain(session, first, second)
    except ProvenanceError as error:
        fail(error)
    if fmt == "json":
        text = render.to_json(data) + "\n"
    elif fmt == "html":
        text = render.explain_html(data)
    else:
        colour = output is None and sys.stdout.isatty()
        text = render.explain_text(data, style=(lambda w: click.style(w, bold=True, fg="yellow")) if colour else (lambda w: w))
    _emit(text, output)


# -- lineage, export, forget ----------------------------------------------------------
@cli.command()
@click.argument("reference", metavar="DOC")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "dot"]), default="table", show_default=True)
@click.pass_obj
def lineage(state: Context, reference, fmt) -> None:
    """What DOC (id or path) came from and what came from it, transitively.

    \b
    Examples:
      provenance lineage seeds/000_21d20b42f286ae20.txt
      provenance lineage 3 --format dot | dot -Tsvg > lineage.svg
    """
    from . import lineage as lineage_graph

    try:
        with session_scope(state.engine()) as session:
            data = lineage_graph.lineage(session, reference)
    except ProvenanceError as error:
        fail(error)
    if fmt == "json":
        _out(render.to_json(data))
    elif fmt == "dot":
        _out(lineage_graph.tree_dot(data), nl=False)
    else:
        _out(render.safe(lineage_graph.tree_text(data)), nl=False)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["prov-json", "prov-n"]), default="prov-json", show_default=True)
@click.option("--document", metavar="DOC", help="Only this document's lineage neighbourhood.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout.")
@click.pass_obj
def export(state: Context, fmt, document, output) -> None:
    """Export the lineage as a W3C PROV document (PROV-JSON or PROV-N).

    \b
    Example:
      provenance export --format prov-json -o lineage.json
    """
    from . import export as prov_export

    try:
        with snapshot_scope(state.engine()) as session, fewer_collections():
            # Written as it is built, a few thousand records at a time (see export.chunks).
            _emit_streamed(lambda handle: render.write_pieces(prov_export.pieces(session, fmt, document), handle), output)
    except ProvenanceError as error:
        fail(error)


@cli.command()
@click.argument("reference", metavar="DOC", required=False)
@click.option("--run", "run_id", type=int, help="Forget every document this ingest run added, and the run.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def forget(state: Context, reference, run_id, yes) -> None:
    """Remove DOC (all its versions) or a whole run, and what depended only on it.

    Input files are never touched; only the database changes. Lineage names the earliest
    and closest sources of each passage, not every copy; a document that named a forgotten
    one finds its sources again among those left.

    \b
    Examples:
      provenance forget seeds/000_21d20b42f286ae20.txt --yes
      provenance forget --run 3 --yes
    """
    from . import forget as forgetting, manifest

    if (reference is None) == (run_id is None):
        fail(ProvenanceError("give either DOC or --run N"))
    try:
        with session_scope(state.engine()) as session:
            ids = forgetting.run_document_ids(session, run_id) if run_id is not None else forgetting.document_ids_for(session, reference)
            what = f"run {run_id} ({len(ids)} document(s))" if run_id is not None else f"{reference} ({len(ids)} version(s))"
            if not yes and not click.confirm(f"Forget {what}?", err=True):
                raise click.Abort()
            result = forgetting.forget(session, ids, manifest.load(session), run_id=run_id)
    except ProvenanceError as error:
        fail(error)
    click.echo(
        f"forgot {result.documents} document(s), {result.derivations} derivation(s), {result.passages} passage(s); "
        f"{result.restored_versions} earlier version(s) restored; "
        f"sources found again for {result.rederived} document(s) that named a forgotten one"
    )


# -- boilerplate ----------------------------------------------------------------------
@cli.group()
def boilerplate() -> None:
    """The boilerplate library: learned page chrome, and your own corrections."""


@boilerplate.command("list")
@_format_option
@click.pass_obj
def boilerplate_list(state: Context, fmt) -> None:
    """Learned and hand-marked entries with their counts."""
    from sqlalchemy import select

    from .db.models import Boilerplate

    try:
        with session_scope(state.engine()) as session:
            rows = [
                {"text": b.text, "status": b.status, "origin": b.origin, "documents": b.document_count,
                 "occurrences": b.occurrence_count}
                for b in session.scalars(select(Boilerplate).order_by(Boilerplate.document_count.desc(), Boilerplate.id))
            ]
    except ProvenanceError as error:
        fail(error)
    _out(render.records(rows, fmt))


@boilerplate.command("add")
@click.argument("text")
@click.option("--content", is_flag=True, help="Mark TEXT as content: never learn it as boilerplate.")
@click.pass_obj
def boilerplate_add(state: Context, text, content) -> None:
    """Mark TEXT (one line or passage) as boilerplate, or with --content as content.

    Documents already stored are corrected at once, from the database.

    \b
    Example:
      provenance boilerplate add "Subscribe to our newsletter"
    """
    from .ingest import Ingestor

    try:
        result = Ingestor(state.engine()).mark(text, "content" if content else "boilerplate")
    except ProvenanceError as error:
        fail(error)
    click.echo(f"{result['status']}: {render.safe(result['text'])} ({result['documents_changed']} document(s) corrected)")


@boilerplate.command("remove")
@click.argument("text")
@click.pass_obj
def boilerplate_remove(state: Context, text) -> None:
    """Remove TEXT from the library; its passages become content again."""
    from .ingest import Ingestor

    try:
        result = Ingestor(state.engine()).unmark(text)
    except ProvenanceError as error:
        fail(error)
    click.echo(f"removed: {render.safe(result['text'])} ({result['documents_changed']} document(s) corrected)")


# -- db -------------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Schema management (Alembic migrations) and storage upkeep (vacuum)."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(state: Context) -> None:
    """Create the database or upgrade its schema to the newest revision."""
    try:
        state.engine(create=True)
    except ProvenanceError as error:
        fail(error)
    click.echo(f"{state.target}: at revision {head_revision()} (head)")


@db.command("current")
@click.pass_obj
def db_current(state: Context) -> None:
    """Print the database's schema revision and whether it is current."""
    path = sqlite_path(state.url)
    if path and not os.path.exists(path):
        fail(ProvenanceError(f"{state.target}: no such database; run `provenance db upgrade` to create it"))
    try:
        if path:
            _check_sqlite_file(path, state.target)
        revision = _check_read_only(state.url, state.target)
        if path and revision is not None:
            # Ours: a read-write open and close removes the -wal/-shm files that the
            # read-only look at a WAL database leaves behind.
            engine = make_engine(state.url)
            try:
                engine.connect().close()
            except SQLAlchemyError:
                pass  # only tidying: the revision is already known
            finally:
                engine.dispose()
    except ProvenanceError as error:
        fail(error)
    head = head_revision()
    status = "head" if revision == head else ("empty" if revision is None else f"behind head {head}")
    click.echo(f"{revision or '-'} ({status})")


@db.command("vacuum")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def db_vacuum(state: Context, fmt: str) -> None:
    """Rebuild the database's storage, for faster reads after many ingests.

    \b
    SQLite: rewrites the whole file (VACUUM) so that each table and index is stored in
    one run of pages and free pages are given back. Reads from a cold cache (the first
    commands after a reboot) get faster: at 100,000 documents the cold `report` took
    0.85-0.97 s after it, 1.42-1.50 s before (bench/scale.py --cold). It needs free
    space about the size of the database, twice over (a copy in the temporary folder,
    SQLITE_TMPDIR, and the log beside the database), and takes about 45 s for 3 GB.
    A command that writes waits for it up to a minute, then stops with nothing lost;
    run it again afterwards.
    PostgreSQL: VACUUM (ANALYZE), what autovacuum does, now.

    \b
      provenance db vacuum
      provenance db vacuum --format json
    """
    from .db.maintenance import vacuum

    try:
        note = None if state.quiet else (lambda size: click.echo(f"vacuuming {state.target} ({size / 1e6:,.1f} MB) …",
                                                                  err=True))
        result = vacuum(state.engine(), starting=note)
    except ProvenanceError as error:
        fail(error)
    if fmt == "json":
        _out(json.dumps({"database": state.target, **dataclasses.asdict(result)}))
        return
    done = "rebuilt" if result.backend == "sqlite" else "vacuumed and analysed"
    click.echo(f"{state.target}: {done} in {result.seconds:.1f} s, "
               f"{result.bytes_before / 1e6:,.1f} MB before, {result.bytes_after / 1e6:,.1f} MB after")
    if result.log_bytes_left:
        click.echo(f"(of which {result.log_bytes_left / 1e6:,.1f} MB in the log: another process is using the "
                   "database; the log is emptied into the file when the last one closes it)")


def main() -> None:  # pragma: no cover
    cli(prog_name="provenance")
