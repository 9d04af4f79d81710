"""Bulk reads and inserts for the big tables (the LSH band indexes), and statements run past
SQLAlchemy's execution for every derivation (:class:`DriverStatement`), on either backend.

A document adds several hundred band rows (one per passage and band). Sent as an
executemany, psycopg 3 runs one INSERT per row (pipelined, but parsed, bound and
executed row by row on the server); on PostgreSQL they are therefore sent as one
statement per batch whose rows arrive as one array per column::

    INSERT INTO passage_band (passage_id, band_key)
    SELECT * FROM unnest(CAST(%(passage_id)s AS INTEGER[]), CAST(%(band_key)s AS BIGINT[]))
    ON CONFLICT DO NOTHING

The statement text never changes, so it is parsed and planned once per connection, and
``ON CONFLICT`` still works (COPY would need a staging table for that). SQLite gets a
plain executemany handed straight to its in-process driver.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Optional, Sequence

from sqlalchemy import Executable, Table, bindparam, insert, text
from sqlalchemy.orm import Session

#: Values per IN list: SQLite allows 32k bound parameters (PostgreSQL 65k); stay well below.
IN_CHUNK = 900

#: Rows per statement on PostgreSQL: large enough that a document's bands are one
#: statement, small enough to keep each array parameter a few hundred kB.
BATCH_ROWS = 20000


def chunks(values: list, size: int = IN_CHUNK):
    """``values`` in slices short enough for one IN list of bound parameters."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def insert_rows(
    session: Session, table: Table, names: Sequence[str], rows: list[tuple], *, ignore_duplicates: bool = False
) -> None:
    """Insert ``rows`` (tuples of values for the columns ``names``) into ``table``.

    ``ignore_duplicates``: rows whose primary or unique key is already stored are skipped
    (``ON CONFLICT DO NOTHING`` / ``INSERT OR IGNORE``).
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite":
        # Straight to the driver's executemany: SQLAlchemy's per-row parameter processing
        # cost more than SQLite's insert itself (5.6 vs 2.2 ms for 700 band rows).
        columns = ", ".join(dialect.identifier_preparer.quote(name) for name in names)
        sql = (f"INSERT {'OR IGNORE ' if ignore_duplicates else ''}INTO "
               f"{dialect.identifier_preparer.format_table(table)} ({columns}) VALUES ({', '.join('?' for _ in names)})")
        session.connection().exec_driver_sql(sql, rows)
        return
    if dialect.name != "postgresql":
        if ignore_duplicates:
            raise NotImplementedError(f"insert_rows(ignore_duplicates=True) on {dialect.name}")
        session.execute(insert(table), [dict(zip(names, row)) for row in rows])
        return
    quoted = ", ".join(dialect.identifier_preparer.quote(name) for name in names)
    sql = f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({quoted}) SELECT * FROM {_unnest(table, names, dialect)}"
    if ignore_duplicates:
        sql += " ON CONFLICT DO NOTHING"
    _execute_as_arrays(session, text(sql), names, rows)


def delete_rows(session: Session, table: Table, names: Sequence[str], rows: list[tuple]) -> None:
    """Delete the rows of ``table`` whose columns ``names`` hold one of ``rows`` (tuples of
    values), each found by its key: an executemany on SQLite, one statement per batch
    joined to the rows as arrays on PostgreSQL (see :func:`insert_rows`)."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    table_name = dialect.identifier_preparer.format_table(table)
    if dialect.name == "sqlite":
        where = " AND ".join(f"{quote(name)} = ?" for name in names)
        session.connection().exec_driver_sql(f"DELETE FROM {table_name} WHERE {where}", rows)
        return
    if dialect.name != "postgresql":
        where = " AND ".join(f"{quote(name)} = :{name}" for name in names)
        session.execute(text(f"DELETE FROM {table_name} WHERE {where}"), [dict(zip(names, row)) for row in rows])
        return
    where = " AND ".join(f"{table_name}.{quote(name)} = gone.{quote(name)}" for name in names)
    gone = f"{_unnest(table, names, dialect)} AS gone({', '.join(quote(name) for name in names)})"
    _execute_as_arrays(session, text(f"DELETE FROM {table_name} USING {gone} WHERE {where}"), names, rows)


def _unnest(table: Table, names: Sequence[str], dialect) -> str:
    """PostgreSQL rows from one array parameter per column, each cast to its column's type."""
    arrays = ", ".join(f"CAST(:{name} AS {table.c[name].type.compile(dialect=dialect)}[])" for name in names)
    return f"unnest({arrays})"


def _execute_as_arrays(session: Session, statement, names: Sequence[str], rows: list[tuple]) -> None:
    """Run ``statement`` (built on :func:`_unnest`) once per :data:`BATCH_ROWS` rows."""
    for start in range(0, len(rows), BATCH_ROWS):
        batch = rows[start : start + BATCH_ROWS]
        session.execute(statement, {name: list(column) for name, column in zip(names, zip(*batch))})


def select_in(session: Session, sql: str, values: Sequence, postgresql: Optional[str] = None) -> list[tuple]:
    """The rows (plain tuples) of ``sql``, a SELECT holding ``{in}`` markers where a test
    of membership in ``values`` goes (``WHERE band_key {in}``; each marker of a UNION gets
    the same values), or ``{values}`` markers where a one-column table of them goes
    (``WITH k(band_key) AS ({values}) SELECT ... FROM k``).

    Sent straight to the driver, in slices of :data:`IN_CHUNK` values: the reads an ingest
    makes for every document (bucket members, candidate passages, their texts) return
    thousands of rows, and an expanding IN compiled by SQLAlchemy with its result rows
    took about twice as long. Text of the statement is fixed by the caller; values are
    always bound.

    ``postgresql``: the statement to run instead on PostgreSQL, with ``{array}`` where the
    array of values goes. It is never prepared: a plan the server kept from when a table
    was small would still be used after it grew (a new database's first merge made such a
    plan read the whole big table for every lookup, see refresh_moved_tables); planned
    afresh, it fits the tables' sizes now.
    """
    out: list[tuple] = []
    if not values:
        return out
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        if "{values}" in sql:
            raise NotImplementedError(f"select_in with {{values}} on {dialect}")
        statement = text(sql.replace("{in}", "IN :values")).bindparams(bindparam("values", expanding=True))
        for start in range(0, len(values), IN_CHUNK):
            out.extend(tuple(row) for row in connection.execute(statement, {"values": list(values[start : start + IN_CHUNK])}))
        return out
    cursor = connection.connection.driver_connection.cursor()
    try:
        if dialect == "sqlite":
            return sqlite_rows_in(cursor, sql, values)
        prepare = None  # the driver's default: prepared once it has run a few times
        if postgresql:
            sql, prepare = postgresql.replace("{array}", "%s"), False
        else:
            sql = sql.replace("{in}", "= ANY(%s)").replace("{values}", "SELECT unnest(%s)")
        markers = sql.count("%s")
        for start in range(0, len(values), IN_CHUNK):
            cursor.execute(sql, (list(values[start : start + IN_CHUNK]),) * markers, prepare=prepare)
            out.extend(cursor.fetchall())
    finally:
        cursor.close()
    return out


def sqlite_rows_in(cursor, sql: str, values: Sequence) -> list[tuple]:
    """:func:`select_in` on a sqlite3 cursor (or connection) of one's own, as a worker
    process that reads the database without SQLAlchemy has (see provenance.prefetch)."""
    markers = sql.count("{in}") + sql.count("{values}")
    out: list[tuple] = []
    for start in range(0, len(values), IN_CHUNK):
        batch = list(values[start : start + IN_CHUNK])
        out.extend(cursor.execute(sql.replace("{in}", f"IN ({', '.join('?' * len(batch))})")
                                  .replace("{values}", f"VALUES {', '.join(['(?)'] * len(batch))}"), batch * markers)
                   .fetchall())
    return out


def plain_rows(session: Session, statement: Executable) -> list[tuple]:
    """The rows of ``statement`` as the driver returns them: compiled for the session's
    database and run on its cursor, past SQLAlchemy's result rows. Only for columns that need
    no result processing (numbers, text, and timestamps read as SQLite stores them): the
    100,000 rows of `inspect documents` took 0.25-0.38 s this way against 0.44-0.60 s (one-off)."""
    connection = session.connection()
    compiled = statement.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    parameters = compiled.params
    if compiled.positional:
        parameters = [parameters[name] for name in compiled.positiontup]
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(str(compiled), parameters)
        return cursor.fetchall()
    finally:
        cursor.close()


class DriverStatement:
    """A Core statement compiled once for each database and run on the driver's cursor, past
    SQLAlchemy's execution context and result rows.

    The statements run for every document and every derivation (its insert and signing, its
    evidence, its summary) are small indexed reads and writes that SQLite answers in
    microseconds; through the connection, each cost several times that in Python. 250
    templated reports crawled newest first ran 382,000 of them, and a profile put 34% of the
    ingest in SQLAlchemy's handling and 10% in SQLite's.

    Parameters are converted as SQLAlchemy would (a timestamp to SQLite's text); result
    columns are not, so select only those that need no conversion (integers, floats, text,
    bytes; booleans, which SQLite returns as 0 and 1), never timestamps. No expanding IN
    (see :func:`select_in`). Execution events do not see these statements, and their errors
    are the driver's own, not wrapped by SQLAlchemy (``is_transient`` reads both).
    """

    def __init__(self, statement: Executable, column_keys: Optional[Sequence[str]] = None):
        """``column_keys``: the columns an INSERT of a whole table sets, each bound by its name.
        Columns' Python-side defaults are not applied (SQLAlchemy's execution does that), so
        an INSERT names, and is given, every column it sets."""
        self.statement = statement
        self.column_keys = None if column_keys is None else list(column_keys)
        self._compiled: dict[str, tuple[str, Optional[tuple[str, ...]], dict, dict]] = {}
        selected = getattr(statement, "selected_columns", None)
        self._row = namedtuple("Row", [column.key for column in selected]) if selected is not None else None

    def _prepared(self, connection, parameters: dict) -> tuple[str, object]:
        dialect = connection.dialect
        if dialect.name not in self._compiled:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.column_keys)
            if any(bind.expanding for bind in compiled.binds.values()):
                raise ValueError("DriverStatement cannot run an expanding IN; use select_in")
            order = tuple(compiled.positiontup) if compiled.positional else None
            defaults = {name: value for name, value in compiled.params.items() if not compiled.binds[name].required}
            processors = {name: process for name, bind in compiled.binds.items()
                          if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None}
            self._compiled[dialect.name] = (str(compiled), order, defaults, processors)
        sql, order, defaults, processors = self._compiled[dialect.name]
        values = {**defaults, **parameters}
        for name, process in processors.items():
            if values[name] is not None:
                values[name] = process(values[name])
        return sql, ([values[name] for name in order] if order is not None else values)

    def _cursor(self, connection, parameters: dict):
        sql, values = self._prepared(connection, parameters)
        cursor = connection.connection.driver_connection.cursor()
        cursor.execute(sql, values)
        return cursor

    def rows(self, connection, **parameters) -> list:
        """The rows, as named tuples of the selected columns."""
        cursor = self._cursor(connection, parameters)
        try:
            return [self._row._make(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def first(self, connection, **parameters):
        """The first row (a named tuple), or None."""
        found = self.rows(connection, **parameters)
        return found[0] if found else None

    def scalar(self, connection, **parameters):
        """The first column of the first row returned (a SELECT's or a RETURNING's), or None."""
        cursor = self._cursor(connection, parameters)
        try:
            row = cursor.fetchone()
            return None if row is None else row[0]
        finally:
            cursor.close()

    def run(self, connection, **parameters) -> None:
        """Run a statement that returns nothing (an UPDATE, a DELETE)."""
        self._cursor(connection, parameters).close()
