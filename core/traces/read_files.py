"""Finding and reading the two trace files the way ingest reads its tables (core/data/ingest.py):
`<table>.csv` (every cell text, empty cells missing) or `<table>.parquet`, one per table.
`trace_candidates` is streamed in chunks so millions of rows never sit in memory as one frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.data.ingest import locate_table_files
from core.data.ingest_validate import Problems, Source
from core.traces.schema import TRACE_TABLES

CHUNK_ROWS = 200_000


@dataclass
class TraceFiles:
    requests: Path | None = None
    candidates: Path | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_files(directory: Path) -> TraceFiles:
    """The requests and trace_candidates files of `directory` (both required, one format each)."""
    out = TraceFiles()
    if not directory.is_dir():
        out.problems.append(f"{directory}: not a directory. Fix: pass the folder that holds requests.csv and "
                            "trace_candidates.csv (or .parquet); see data/README.md")
        return out
    found, both, ignored = locate_table_files(directory, [t.name for t in TRACE_TABLES], out.problems)
    for t in TRACE_TABLES:
        if t.name not in found:
            if t.name not in both:
                out.problems.append(f"{directory}: required file {t.name}.csv (or {t.name}.parquet) is missing. "
                                    "Fix: add it; see data/README.md for its columns.")
        elif t.name == "requests":
            out.requests = found[t.name]
        else:
            out.candidates = found[t.name]
    if ignored:
        out.warnings.append(f"ignored file(s) that are not tables of the trace format: {', '.join(ignored)}")
    return out


def count_rows(path: Path) -> int:
    """Data rows of a Parquet file (its footer), or an estimate for CSV (from its size)."""
    if path.suffix == ".parquet":
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:
            return 0
    return max(1, path.stat().st_size // 80)


def candidate_chunks(path: Path, src: Source, problems: Problems) -> Iterator[tuple[int, pa.Table]]:
    """(first data row, chunk) over the file; an unreadable file adds one problem and stops."""
    offset = 0
    try:
        if path.suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS):
                yield offset, pa.Table.from_batches([batch])
                offset += batch.num_rows
            return
        reader = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", chunksize=CHUNK_ROWS)
        for frame in reader:
            yield offset, pa.Table.from_pandas(frame, preserve_index=False)
            offset += len(frame)
    except pd.errors.EmptyDataError:
        problems.append(f"{src.name}: the file is empty. Fix: write a header line with the column names "
                        "(see data/README.md).")
    except (UnicodeDecodeError, ValueError, OSError, pa.ArrowException) as exc:
        problems.append(f"{src.name}: cannot be read after row {offset} ({type(exc).__name__}: {str(exc)[:200]}). "
                        "Fix: CSV must be UTF-8 with a header line; Parquet must be a valid Parquet file.")
