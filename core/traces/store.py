"""Trace sets on disk: `<workspace>/traces/<set_id>/` holds `candidates.parquet` (every logged
candidate, grouped by request in request-id order, fixed-size row groups with statistics),
`requests.parquet` and `manifest.json` (counts, source files and their sha256, sha256 of every file).

The database row of each request (core/store/models.LoggedRequest) says where its candidates lie
(row offset, count), so opening one request reads only the row group(s) holding it. A set is
written in a staging folder (candidates partitioned by request range into Arrow IPC buckets, each
sorted in memory, so memory stays bounded by one bucket) and renamed into place; the set id is
the content's sha256, so identical content lands on the same folder.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.common.errors import ArtifactError
from core.traces.validate import CANDIDATE_SCHEMA

MANIFEST = "manifest.json"
CANDIDATES_FILE = "candidates.parquet"
REQUESTS_FILE = "requests.parquet"
ROW_GROUP = 4_096
"""Candidate rows per Parquet row group: small enough that one request's read decodes little,
large enough for a compact footer (see the layout measurements in data/README.md)."""
BUCKET_ROWS = 1_000_000  # candidate rows per staging bucket (the sort's working set)
COMPRESSION = "zstd"


class Buckets:
    """Candidates partitioned by request position into IPC files, to be sorted bucket by bucket."""

    def __init__(self, folder: Path, n_requests: int, expected_rows: int):
        self.folder = folder
        self.n_requests = max(1, n_requests)
        self.n = max(1, min(self.n_requests, -(-expected_rows // BUCKET_ROWS)))
        self._writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        self._sinks: dict[int, object] = {}

    def _path(self, b: int) -> Path:
        return self.folder / f"bucket-{b:05d}.arrow"

    def add(self, table: pa.Table) -> None:
        """Rows with a known request (`pos` not null) go to their bucket."""
        table = table.filter(table.column("pos").is_valid())
        if not table.num_rows:
            return
        bucket = table.column("pos").to_numpy().astype(np.int64) * self.n // self.n_requests
        order = np.argsort(bucket, kind="stable")
        table, bucket = table.take(pa.array(order)), bucket[order]
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        ends = np.r_[starts[1:], len(bucket)]
        for s, e in zip(starts, ends):
            b = int(bucket[s])
            if b not in self._writers:
                self._sinks[b] = pa.OSFile(str(self._path(b)), "wb")
                self._writers[b] = pa.ipc.new_file(self._sinks[b], table.schema,
                                                   options=pa.ipc.IpcWriteOptions(compression="lz4"))
            self._writers[b].write_table(table.slice(int(s), int(e - s)))

    def close(self) -> None:
        for b, w in self._writers.items():
            w.close()
            self._sinks[b].close()

    def sorted_tables(self) -> Iterator[pa.Table]:
        """Each bucket's rows sorted by (request position, file row), buckets in order; each
        bucket file is removed once read."""
        for b in range(self.n):
            path = self._path(b)
            if not path.exists():
                continue
            with pa.memory_map(str(path)) as src:
                table = pa.ipc.open_file(src).read_all()
            path.unlink()
            idx = pc.sort_indices(table, sort_keys=[("pos", "ascending"), ("row", "ascending")])
            sorted_table = table.take(idx)
            del table, idx
            yield sorted_table
            del sorted_table
            pa.default_memory_pool().release_unused()  # keep the peak at one bucket, not the sum


class CandidateWriter:
    """The candidates file, written in ROW_GROUP-row groups whatever the input's chunking (so the
    same content gives the same bytes, whichever format or chunk size it came from)."""

    def __init__(self, path: Path):
        self._writer = pq.ParquetWriter(str(path), CANDIDATE_SCHEMA, compression=COMPRESSION,
                                        write_statistics=True)
        self._pending: pa.Table | None = None

    def write(self, table: pa.Table) -> None:
        table = table.select(CANDIDATE_SCHEMA.names)
        if self._pending is not None:
            table = pa.concat_tables([self._pending, table])
        full = table.num_rows // ROW_GROUP * ROW_GROUP
        if full:
            self._writer.write_table(table.slice(0, full), row_group_size=ROW_GROUP)
        self._pending = table.slice(full)

    def close(self) -> None:
        if self._pending is not None and self._pending.num_rows:
            self._writer.write_table(self._pending, row_group_size=ROW_GROUP)
        self._writer.close()


def write_requests(path: Path, frame: pd.DataFrame, extra: list[str]) -> None:
    cols = {
        "request_id": pa.array(frame["request_id"].tolist(), pa.string()),
        "user_id": pa.array(frame["user_id"].tolist(), pa.string()),
        "ts": pa.array(frame["ts"].to_numpy().astype("datetime64[us]"), pa.timestamp("us")),
        **{c: pa.array(frame[c].tolist(), pa.string()) for c in ("community_id", "placement", "device", "country")},
        "row_offset": pa.array(frame["row_offset"].to_numpy(np.int64)),
        "n_candidates": pa.array(frame["n_candidates"].to_numpy(np.int32)),
        **{f"extra.{c}": pa.array(frame[c].tolist(), pa.string()) for c in extra},
    }
    pq.write_table(pa.table(cols), str(path), compression=COMPRESSION)


# ---- reading ----------------------------------------------------------------------------------
@dataclass
class _OpenFile:
    path: str
    file: pq.ParquetFile
    starts: np.ndarray  # first row of each row group, plus the total
    lock: threading.Lock


@lru_cache(maxsize=32)
def _open(path: str, size: int, mtime_ns: int) -> _OpenFile:
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ArtifactError(f"{path}: not a readable Parquet file ({exc}); re-import the traces "
                            "(adlens import-traces DIR --replace)") from exc
    rows = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    return _OpenFile(path, pf, np.concatenate([[0], np.cumsum(rows)]).astype(np.int64), threading.Lock())


def open_candidates(path: Path, expected_bytes: int | None = None) -> _OpenFile:
    """The candidates file, opened once per process (its footer parsed once), checked against the
    size its manifest recorded (sha256 of the whole file: `verify_set`)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing; the trace set was removed or the workspace is incomplete. "
                            "Re-import the traces (adlens import-traces DIR --replace)") from exc
    if expected_bytes is not None and st.st_size != expected_bytes:
        raise ArtifactError(f"{path}: {st.st_size:,} bytes but its manifest records {expected_bytes:,}: the file "
                            "was modified or truncated; re-import the traces (adlens import-traces DIR --replace)")
    return _open(str(path), st.st_size, st.st_mtime_ns)


def read_rows(f: _OpenFile, offset: int, count: int, columns: list[str] | None = None) -> pa.Table:
    """Rows offset .. offset+count-1, reading only the row groups that hold them."""
    if count <= 0:
        return CANDIDATE_SCHEMA.empty_table() if columns is None else CANDIDATE_SCHEMA.empty_table().select(columns)
    if offset < 0 or offset + count > f.starts[-1]:
        raise ArtifactError(f"rows {offset}..{offset + count - 1} lie outside the candidates file "
                            f"({int(f.starts[-1]):,} rows): the database and the trace set disagree; re-import")
    first = int(np.searchsorted(f.starts, offset, "right") - 1)
    last = int(np.searchsorted(f.starts, offset + count - 1, "right") - 1)
    try:
        with f.lock:
            table = f.file.read_row_groups(list(range(first, last + 1)), columns=columns)
    except Exception as exc:
        raise ArtifactError(f"{f.path}: a row group cannot be read ({exc}); the file is corrupted, "
                            "re-import the traces") from exc
    return table.slice(offset - int(f.starts[first]), count)


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder / MANIFEST}: missing or not valid JSON ({exc}); re-import the traces") from exc
