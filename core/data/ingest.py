"""Import a dataset directory into the database: read, validate everything, then write it all
in ONE transaction (a bad file changes nothing).

Re-importing the same files is idempotent (rows are compared with what the database holds:
0 inserted, 0 updated); changed rows are updated in place, so ads keep their ids. Rows absent
from a re-import are kept (impressions reference them). The format: data/README.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, delete, select

from core.common.errors import ValidationError
from core.common.progress import Progress
from core.data.ingest_extra import extra_frames, write_extras
from core.data.ingest_validate import Problems, Source, validate_frames
from core.data.ingest_write import db_frame, diff, write_table
from core.data.schema import TABLES, TABLES_BY_NAME
from core.store.catalog import bump_revision
from core.store.db import write_transaction
from core.store.models import Base


@dataclass
class TableCounts:
    """What an import did to one table. `created_bare`: rows holding only an id and defaults,
    made for ids that other files reference when this table's file is absent."""

    file: str | None = None
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    created_bare: int = 0


@dataclass
class IngestReport:
    directory: str
    tables: dict[str, TableCounts]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # read, validate, write

    @property
    def changed(self) -> int:
        """Rows inserted, updated or created bare, over all tables."""
        return sum(c.inserted + c.updated + c.created_bare for c in self.tables.values())


@dataclass
class _Files:
    frames: dict[str, pd.DataFrame]
    sources: dict[str, Source]
    missing_required: list[str]
    problems: list[str]
    warnings: list[str]


def read_table_file(path: Path) -> pd.DataFrame:
    """One table file as ingest reads it (CSV: every cell text, empty cells ""; Parquet as typed)."""
    if path.suffix == ".csv":
        # Everything as text: "12" stays "12", "NA" stays "NA"; empty cells are "" (missing).
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    return pd.read_parquet(path)


def _read_files(directory: Path) -> _Files:
    out = _Files({}, {}, [], [], [])
    if not directory.is_dir():
        out.problems.append(f"{directory}: not a directory. Fix: pass the folder that holds ads.csv, "
                            "impressions.csv, ... (see data/README.md)")
        return out
    found, both, ignored = locate_table_files(directory, [t.name for t in TABLES], out.problems)
    for t in TABLES:
        if t.name not in found:
            if t.required and t.name not in both:
                out.missing_required.append(t.name)
            continue
        path = found[t.name]
        try:
            out.frames[t.name] = read_table_file(path)
            out.sources[t.name] = Source(t.name, path)
        except pd.errors.EmptyDataError:
            out.problems.append(f"{path.name}: the file is empty. Fix: write a header line with the column "
                                "names (see data/README.md), or remove the file.")
        except (UnicodeDecodeError, ValueError, OSError) as exc:
            out.problems.append(f"{path.name}: cannot be read ({type(exc).__name__}: {str(exc)[:200]}). "
                                "Fix: CSV must be UTF-8 with a header line; Parquet must be a valid Parquet file.")
    if ignored:
        out.warnings.append(f"ignored file(s) that are not tables of the format: {', '.join(ignored)}")
    return out


def locate_table_files(directory: Path, names: list[str],
                       problems: list[str]) -> tuple[dict[str, Path], set[str], list[str]]:
    """Each named table's file in `directory` (`NAME.parquet` or `NAME.csv`), the tables present in
    both formats (each added to `problems`, and left out of the first), and the names of the other
    files there, which are not tables of the format."""
    found: dict[str, Path] = {}
    both: set[str] = set()
    expected = set()
    for name in names:
        paths = [directory / f"{name}.{ext}" for ext in ("parquet", "csv")]
        expected.update(p.name for p in paths)
        present = [p for p in paths if p.is_file()]
        if len(present) == 2:
            problems.append(f"{directory}: both {name}.parquet and {name}.csv are present. "
                            "Fix: keep only one file per table.")
            both.add(name)
        elif present:
            found[name] = present[0]
    ignored = sorted(p.name for p in directory.iterdir() if p.name not in expected and not p.name.startswith("."))
    return found, both, ignored


def _missing_file_problem(directory: Path, table: str) -> str:
    return (f"{directory}: required file {table}.csv (or {table}.parquet) is missing. Fix: add it; "
            "see data/README.md for its columns.")


def read_dataset(directory: Path) -> dict[str, pd.DataFrame]:
    """Raw frames, one per table file found (`<table>.parquet` or `<table>.csv`).

    Raises ValidationError for a missing required file or a table given in both formats.
    Files that are not tables of the format are ignored (`ingest_directory` reports them)."""
    directory = Path(directory)
    files = _read_files(directory)
    problems = files.problems + [_missing_file_problem(directory, t) for t in files.missing_required]
    if problems:
        raise ValidationError(problems)
    return files.frames


def _sources(raw: dict[str, pd.DataFrame], directory: Path | None) -> dict[str, Source]:
    out = {}
    for name in raw:
        path = None
        if directory is not None:
            path = next((p for p in (Path(directory) / f"{name}.csv", Path(directory) / f"{name}.parquet")
                         if p.is_file()), None)
        out[name] = Source(name, path)
    return out


def validate_dataset(raw: dict[str, pd.DataFrame], directory: Path | None = None,
                     known_ids: dict[str, set[str]] | None = None) -> dict[str, pd.DataFrame]:
    """Normalised frames (schema columns in order, defaults filled, bare rows added), or raise
    ValidationError listing every problem. `directory` names the files and CSV lines in messages;
    `known_ids` (table -> ids already in the database) count as known references."""
    unknown = sorted(set(raw) - set(TABLES_BY_NAME))
    if unknown:
        raise ValidationError([f"unknown table(s) {', '.join(unknown)}; the tables are "
                               f"{', '.join(TABLES_BY_NAME)}"])
    result = validate_frames(raw, _sources(raw, directory), known_ids)
    if result.problems:
        raise ValidationError(list(result.problems))
    return result.frames


def _plan(conn, result, files: _Files, known: dict[str, set[str]]) -> tuple[dict[str, TableCounts], list[tuple]]:
    """Compare each validated table with the database: counts, and (table, inserts, updates,
    rows already stored) to write. Stored rows are loaded only when some keys overlap, so
    appending new impressions to a large log reads only its keys."""
    tables: dict[str, TableCounts] = {}
    plans = []
    for t in TABLES:
        if t.name not in result.frames:
            continue
        new = result.frames[t.name]
        keys = known[t.name] if t.name in known else set(db_frame(conn, t, key_only=True)[t.key])
        if new[t.key].isin(keys).any():
            old = db_frame(conn, t)
        else:
            old = pd.DataFrame({t.key: pd.Series(list(keys), dtype=object)})
        inserts, updates, unchanged = diff(t, new, old)
        n_bare = result.bare.get(t.name, 0)  # bare ids are new by construction: all inserted
        src = files.sources.get(t.name)
        tables[t.name] = TableCounts(
            file=src.name if src else None, rows=result.rows.get(t.name, 0),
            inserted=len(inserts) - n_bare, updated=len(updates), unchanged=unchanged, created_bare=n_bare,
        )
        plans.append((t, inserts, updates, len(old)))
    return tables, plans


def ingest_directory(engine: Engine, directory: Path, progress: Progress | None = None, *,
                     replace: bool = False) -> IngestReport:
    """Validate every file of `directory`, then write all tables in one transaction.

    `replace=True` first deletes every data row (same transaction). `progress(fraction, step)`
    (core.common.progress) gets the fraction of the whole import done and the step ("read",
    "validate", "compare", "write <table>", "done"). Raises ValidationError (nothing written) on any problem."""
    directory = Path(directory)
    report_progress = progress or (lambda frac, step: None)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    report_progress(0.0, "read")
    files = _read_files(directory)
    timings["read"] = time.perf_counter() - t0
    report_progress(0.1, "validate")
    with write_transaction(engine, f"import {directory}") as conn:
        if replace:
            if conn.dialect.name == "postgresql":  # transactional there, and far faster than DELETE
                conn.exec_driver_sql("TRUNCATE " + ", ".join(t.name for t in TABLES))
            else:
                for t in reversed(TABLES):
                    conn.execute(delete(Base.metadata.tables[t.name]))
        known = {t.name: set(db_frame(conn, t, key_only=True)[t.key]) for t in TABLES if t.name != "impressions"}
        problems = Problems(files.problems)
        for name in files.missing_required:
            has_rows = known[name] if name in known else conn.execute(
                select(Base.metadata.tables[name].c[TABLES_BY_NAME[name].key]).limit(1)).first()
            if not has_rows:  # a later import may omit a required table the database already holds
                problems.append(_missing_file_problem(directory, name))
        result = validate_frames(files.frames, files.sources, known)
        problems.extend(result.problems)
        if problems:
            raise ValidationError(list(problems))
        t1 = time.perf_counter()
        timings["validate"] = t1 - t0 - timings["read"]
        report_progress(0.2, "compare")
        tables, plans = _plan(conn, result, files, known)
        timings["compare"] = time.perf_counter() - t1
        total = max(1, sum(len(i) + len(u) for _, i, u, _ in plans))
        done = 0

        def tick(n: int, step: str) -> None:
            nonlocal done
            done += n
            report_progress(0.3 + 0.7 * done / total, step)

        t2 = time.perf_counter()
        for t, inserts, updates, existing in plans:
            report_progress(0.3 + 0.7 * done / total, f"write {t.name}")
            write_table(conn, t, inserts, updates, existing, lambda n, s=f"write {t.name}": tick(n, s))
        n_extra = write_extras(conn, extra_frames(files.frames), replace)
        if replace or n_extra or any(len(i) or len(u) for _, i, u, _ in plans):
            bump_revision(conn)
        timings["write"] = time.perf_counter() - t2
    report_progress(1.0, "done")
    return IngestReport(str(directory), tables, files.warnings + result.warnings,
                        time.perf_counter() - t0, timings)
