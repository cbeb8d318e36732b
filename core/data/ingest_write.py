"""Database side of ingest: compare validated frames with stored rows, then bulk insert and
update in the caller's transaction (no per-row ORM objects; COPY on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import pandas as pd
from sqlalchemy import Connection, bindparam, insert, inspect, select, update
from sqlalchemy import Table as SATable
from sqlalchemy.exc import DBAPIError

from core.data.ingest_columns import canonical
from core.data.schema import Table
from core.store.models import Base

CHUNK = 5_000  # rows per executemany / progress tick
BULK_MIN_ROWS = 20_000  # a load this large, and at least the table's size, runs in bulk_load_mode


def db_frame(conn: Connection, table: Table, key_only: bool = False) -> pd.DataFrame:
    """One SELECT of the table, values as the driver returns them (SQLite: datetimes and JSON
    as text): only compared through `canonical`, which parses them in bulk. Decoding each value
    with SQLAlchemy takes most of the time of a re-import."""
    tbl = Base.metadata.tables[table.name]
    cols = [tbl.c[table.key]] if key_only else [tbl.c[c.name] for c in table.columns]
    cursor = conn.connection.cursor()  # the DBAPI cursor, inside this connection's transaction
    try:
        cursor.execute(str(select(*cols).compile(dialect=conn.dialect)))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return pd.DataFrame(rows, columns=[c.name for c in cols], dtype=object)


def diff(table: Table, new: pd.DataFrame, old: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(rows to insert, rows to update, number unchanged)."""
    key = table.key
    in_db = new[key].isin(old[key])
    inserts, both = new[~in_db], new[in_db]
    if not len(both):
        return inserts, both, 0
    before = old.set_index(key).loc[both[key]]
    changed = np.zeros(len(both), dtype=bool)
    for c in table.columns:
        if c.name != key:
            changed |= ~same_values(canonical(both[c.name], c.type), canonical(before[c.name], c.type))
    return inserts, both[changed], int((~changed).sum())


def same_values(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    eq = np.asarray(a == b, dtype=bool)
    if a.dtype.kind == "f":
        eq |= np.isnan(a) & np.isnan(b)
    return eq


def _columns(table: Table, df: pd.DataFrame) -> dict[str, list]:
    """Plain Python values per column for the DB driver (None for nulls, datetime, date, list)."""
    out = {}
    for c in table.columns:
        s = df[c.name]
        if c.type == "float":
            vals = [None if v != v else v for v in s.astype(float).tolist()]
        elif c.type == "int":
            vals = [None if v is pd.NA else int(v) for v in s.astype("Int64").tolist()]
        elif c.type == "bool":
            vals = [bool(v) for v in s.tolist()]
        elif c.type == "datetime":
            vals = s.to_numpy().astype("datetime64[us]").tolist()
        else:
            vals = s.tolist()
        out[c.name] = vals
    return out


def _bulk_insert(conn: Connection, table: Table, df: pd.DataFrame, tick: Callable[[int], None]) -> None:
    """executemany of the table's INSERT straight on the driver, with values converted by the
    columns' own SQLAlchemy bind processors (so stored values equal an ORM insert's), which
    skips SQLAlchemy's per-row parameter handling (most of the time on 300k rows)."""
    values = _columns(table, df)
    ready = set()
    if conn.dialect.name == "sqlite":  # vectorised: SQLAlchemy's processor formats one datetime at a time
        ready = {c.name for c in table.columns if c.type == "datetime"}
        values.update({name: sqlite_datetimes(df[name]) for name in ready})
    insert_columns(conn, Base.metadata.tables[table.name], values, tick, processed=ready)


def insert_columns(conn: Connection, tbl: SATable, values: dict[str, list], tick: Callable[[int], None],
                   processed: set[str] = frozenset()) -> None:
    """Insert rows given as one list per column (plain Python values; the columns in `processed`
    already in the driver's form) through the driver's executemany, or COPY on psycopg, in the
    caller's transaction. Each value goes through its column's bind processor once."""
    compiled = insert(tbl).compile(dialect=conn.dialect)
    names = list(compiled.positiontup) if compiled.positional else list(values)
    columns = []
    for name in names:
        proc = None if name in processed else tbl.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        columns.append([proc(v) for v in values[name]] if proc else values[name])
    if conn.dialect.driver == "psycopg":
        _copy_rows(conn, tbl.name, names, list(zip(*columns)), tick)
        return
    rows = list(zip(*columns)) if compiled.positional else [dict(zip(names, r)) for r in zip(*columns)]
    for i in range(0, len(rows), CHUNK):
        conn.exec_driver_sql(compiled.string, rows[i:i + CHUNK])
        tick(len(rows[i:i + CHUNK]))


def _copy_rows(conn: Connection, table: str, names: list[str], rows: list[tuple],
               tick: Callable[[int], None]) -> None:
    """PostgreSQL (psycopg 3): COPY FROM STDIN on the same connection and transaction; an order
    of magnitude faster than executemany for hundreds of thousands of rows."""
    from psycopg import sql

    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names)))
    with conn.connection.driver_connection.cursor() as cur, cur.copy(stmt) as copy:
        for i in range(0, len(rows), CHUNK):
            for row in rows[i:i + CHUNK]:
                copy.write_row(row)
            tick(len(rows[i:i + CHUNK]))


def sqlite_datetimes(values: pd.Series) -> list[str | None]:
    """SQLAlchemy's SQLite DATETIME text ('2026-10-14 18:03:00.000000'), vectorised."""
    arr = values.to_numpy().astype("datetime64[us]")
    if not len(arr):
        return []
    text = np.char.replace(np.datetime_as_string(arr, unit="us"), "T", " ").astype(object)
    text[np.isnat(arr)] = None
    return text.tolist()


def write_table(conn: Connection, table: Table, inserts: pd.DataFrame, updates: pd.DataFrame,
                existing: int, tick: Callable[[int], None]) -> None:
    """Insert then update, in the caller's transaction; a large load into a small table runs in
    `bulk_load_mode`."""
    tbl = Base.metadata.tables[table.name]
    inserts = inserts.sort_values(table.key, kind="stable")
    with bulk_load_mode(conn, tbl) if len(inserts) >= max(BULK_MIN_ROWS, existing) else nullcontext():
        _bulk_insert(conn, table, inserts, tick)
    if len(updates):
        stmt = update(tbl).where(tbl.c[table.key] == bindparam("b_key"))
        values = _columns(table, updates)
        values["b_key"] = values.pop(table.key)
        rows = [dict(zip(values, r)) for r in zip(*values.values())]
        for i in range(0, len(rows), CHUNK):
            conn.execute(stmt, rows[i:i + CHUNK])
            tick(len(rows[i:i + CHUNK]))


@contextmanager
def bulk_load_mode(conn: Connection, tbl: SATable) -> Iterator[None]:
    """Drop the table's secondary indexes (and on PostgreSQL its foreign keys) for a bulk load
    and recreate them afterwards, in the same transaction: the loading advice of the PostgreSQL
    manual ("Populating a Database"). Building an index once (a sort) is several times faster
    than maintaining it row by row, and re-adding a foreign key checks every row in one join
    instead of one trigger per row; a violation still aborts the whole import. Where the
    database user may not alter the table, the load runs with them in place."""
    pg = conn.dialect.name == "postgresql"
    fks: list[dict] = []
    try:
        with conn.begin_nested() if pg else nullcontext():  # SAVEPOINT: an ALTER refused stays harmless
            for idx in tbl.indexes:
                idx.drop(conn, checkfirst=True)
            if pg:
                fks = inspect(conn).get_foreign_keys(tbl.name)
                for fk in fks:
                    conn.exec_driver_sql(f"ALTER TABLE {_q(conn, tbl.name)} DROP CONSTRAINT {_q(conn, fk['name'])}")
        dropped = True
    except DBAPIError:
        if not pg:
            raise
        dropped, fks = False, []
    yield
    if not dropped:
        return
    for idx in tbl.indexes:
        idx.create(conn, checkfirst=True)
    for fk in fks:
        cols = ", ".join(_q(conn, c) for c in fk["constrained_columns"])
        ref = ", ".join(_q(conn, c) for c in fk["referred_columns"])
        conn.exec_driver_sql(f"ALTER TABLE {_q(conn, tbl.name)} ADD CONSTRAINT {_q(conn, fk['name'])} "
                             f"FOREIGN KEY ({cols}) REFERENCES {_q(conn, fk['referred_table'])} ({ref})")


def _q(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)
