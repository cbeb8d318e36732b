"""Validate logged traces with ingest's rules and messages (core/data/ingest_validate.py).

`requests` (one row per request: thousands to a few hundred thousand) goes through ingest's own
`normalise_table`. `trace_candidates` (millions of rows) is validated chunk by chunk in Arrow:
each column takes a vectorised path when every cell of the chunk converts, and otherwise ingest's
coercer for that column type (core/data/ingest_columns.py) decides which cells are bad, so the
rules and the messages are ingest's either way. Offending cells are collected over all chunks
and reported once per column and problem, naming file, row (and CSV line), value and fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.data.ingest_columns import COERCERS, TYPE_FIX, display, to_text
from core.data.ingest_validate import MAX_SHOWN, Problems, Source, normalise_table
from core.data.schema import LIST_SEPARATOR, Column
from core.traces.schema import NON_NEGATIVE, NUMBER_LISTS, POSITIVE, REQUESTS, TRACE_CANDIDATES

JSON_LIST_FIX = (f"write the items separated by '{LIST_SEPARATOR}', e.g. two_tower{LIST_SEPARATOR}targeting "
                 "(a cell starting with '[' looks like a JSON array or a Python list, which CSV cells are not)")
CANDIDATE_COLUMNS = tuple(c.name for c in TRACE_CANDIDATES.columns)


class CellLog:
    """Offending cells found chunk by chunk; `emit` adds one message per (column, problem) in
    ingest's wording, with the first MAX_SHOWN rows and the total count."""

    def __init__(self, src: Source):
        self.src = src
        self._items: dict[tuple[str, str, str], list] = {}

    def add(self, column: str, mask, raw, offset: int, what: str, fix: str) -> None:
        pos = np.flatnonzero(np.asarray(mask, dtype=bool))
        if not len(pos):
            return
        entry = self._items.setdefault((column, what, fix), [0, []])
        entry[0] += len(pos)
        for p in pos[: max(0, MAX_SHOWN - len(entry[1]))]:
            v = raw[int(p)].as_py() if isinstance(raw, (pa.Array, pa.ChunkedArray)) else raw.iat[int(p)]
            entry[1].append((offset + int(p), display(v)))

    def __bool__(self) -> bool:
        return bool(self._items)

    def emit(self, problems: Problems) -> None:
        for (column, what, fix), (count, shown) in self._items.items():
            problems.at(self.src, column, sorted(shown)[:MAX_SHOWN], count, what, fix)


# ---- requests ---------------------------------------------------------------------------------
@dataclass
class ValidRequests:
    frame: pd.DataFrame  # schema columns, normalised, sorted by request_id
    extra_columns: list[str]  # kept verbatim as text (None where empty)


def validate_requests(raw: pd.DataFrame, src: Source, problems: Problems, warnings: list[str]) -> ValidRequests | None:
    """The requests file through ingest's `normalise_table`; extra columns kept as text."""
    raw = raw.reset_index(drop=True)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    names = {c.name for c in REQUESTS.columns}
    extra = [c for c in raw.columns if c not in names]
    norm = normalise_table(REQUESTS, raw[[c for c in raw.columns if c in names]], src, problems, warnings)
    if norm is None:
        return None
    for c in extra:
        text, _numeric, nonscalar = to_text(raw[c])
        problems.cells(src, c, nonscalar, raw[c], "extra context value is not text or a number",
                       "write a plain value (extra context columns are kept as text)")
        norm[c] = text.where(text.notna() & (text != ""), None)
    order = np.argsort(norm["request_id"].to_numpy(dtype=object).astype(str), kind="stable")
    return ValidRequests(norm.iloc[order].reset_index(drop=True), extra)


# ---- trace_candidates, one chunk at a time ------------------------------------------------------
def check_candidate_columns(names: list[str], src: Source, problems: Problems, warnings: list[str]) -> bool:
    """Missing required columns (ingest's message) and ignored extra ones; True when usable."""
    before = len(problems)
    normalise_table(TRACE_CANDIDATES, pd.DataFrame(columns=names), src, problems, warnings)
    return len(problems) == before


def _fallback(col: pa.Array, c: Column, log: CellLog, offset: int) -> pd.Series:
    """Ingest's coercer for this column type decides (and reports) the bad cells."""
    series = col.to_pandas()
    if not isinstance(series, pd.Series):
        series = pd.Series(series)
    series = series.astype(object).where(series.notna(), None)
    values, bad = COERCERS[c.type](series, c)
    what, fix = TYPE_FIX[c.type]
    log.add(c.name, bad, series, offset, f"value {what}", fix)
    return values


def _text(col: pa.Array, c: Column, log: CellLog, offset: int) -> pa.Array:
    """Trimmed strings, null where missing (numbers become their text, as in ingest)."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        s = pc.utf8_trim_whitespace(col.cast(pa.string()))
    elif pa.types.is_integer(col.type):
        s = col.cast(pa.string())
    else:
        vals = _fallback(col, c, log, offset)
        s = pa.array(vals.where(vals.notna(), None).tolist(), pa.string())
    if c.allowed:
        s = pc.utf8_lower(s)
    return pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)


def _number(col: pa.Array, c: Column, log: CellLog, offset: int) -> pa.Array:
    """float64 (int64 for `int` columns), null where missing."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    f = None
    try:
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            f = col.cast(pa.float64())
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            s = pc.utf8_trim_whitespace(col.cast(pa.string()))
            f = pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s).cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        f = None
    if f is not None:
        arr = f.to_numpy(zero_copy_only=False)
        ok = np.isfinite(arr) | np.asarray(f.is_null().to_numpy(zero_copy_only=False))
        if c.type == "int":
            ok &= ~(np.isfinite(arr) & (np.mod(arr, 1) != 0))
        if not ok.all():
            f = None
    if f is None:
        vals = _fallback(col, c, log, offset)
        f = pa.array(pd.to_numeric(vals, errors="coerce").astype(float).to_numpy(), pa.float64(), from_pandas=True)
    arr = f.to_numpy(zero_copy_only=False)
    if c.name in NON_NEGATIVE:
        log.add(c.name, np.nan_to_num(arr, nan=0.0) < 0, col, offset, "value is negative", "use a number >= 0")
    if c.name in POSITIVE:
        log.add(c.name, np.nan_to_num(arr, nan=1.0) < 1, col, offset, "value is below 1", "positions start at 1")
    return f.cast(pa.int64()) if c.type == "int" else f


def _rebuild(items: pa.Array, parents: np.ndarray, n: int) -> pa.ListArray:
    counts = np.bincount(parents, minlength=n) if len(parents) else np.zeros(n, np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items)


def _clean(lists: pa.Array) -> pa.ListArray:
    """Items trimmed, null and empty items dropped, a null list the empty list (ingest's rule)."""
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    items = pc.utf8_trim_whitespace(flat.cast(pa.string()))
    keep = pc.fill_null(pc.not_equal(items, ""), False)
    return _rebuild(items.filter(keep), parents[np.asarray(keep.to_numpy(zero_copy_only=False))], len(lists))


def _string_list(col: pa.Array, c: Column, log: CellLog, offset: int) -> pa.ListArray:
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        s = pc.utf8_trim_whitespace(col.cast(pa.string()))
        log.add(c.name, pc.fill_null(pc.starts_with(s, "["), False).to_numpy(zero_copy_only=False), col, offset,
                "value is not a list", JSON_LIST_FIX)
        return _clean(pc.split_pattern(s, LIST_SEPARATOR))
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
            pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        return _clean(col)
    vals = _fallback(col, c, log, offset)  # numbers, numeric lists, ...: ingest's rules
    vals = vals.where(vals.notna(), None)
    return _clean(pa.array([v if v is not None else [] for v in vals.tolist()], pa.list_(pa.string())))


def _number_list(col: pa.Array, c: Column, n_sources: np.ndarray, log: CellLog, offset: int) -> pa.ListArray:
    """A list of numbers aligned with `sources` (or empty)."""
    kind = NUMBER_LISTS[c.name]
    t = col.type
    numeric = (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type))
    if numeric:
        lists = col  # a null list has no items: the empty list
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(lists)
        values = flat.cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad_item = np.asarray(flat.is_null().to_numpy(zero_copy_only=False)) | ~np.isfinite(values)
    else:
        lists = _string_list(col, c, log, offset)
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(lists)
        try:
            values = flat.cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = pd.to_numeric(pd.Series(flat.to_pylist(), dtype=object), errors="coerce").astype(float).to_numpy()
        bad_item = ~np.isfinite(values)
    if kind == "int":
        bad_item |= np.isfinite(values) & ((np.mod(values, 1) != 0) | (values < 1))
    n = len(col)
    bad_row = np.zeros(n, bool)
    bad_row[parents[bad_item]] = True
    what = "value is not a list of whole numbers >= 1" if kind == "int" else "value is not a list of numbers"
    fix = (f"write one {'rank (1 = first)' if kind == 'int' else 'number'} per source, separated by "
           f"'{LIST_SEPARATOR}' (e.g. {c.example}), or leave it empty")
    log.add(c.name, bad_row, col, offset, what, fix)
    lengths = np.bincount(parents, minlength=n) if len(parents) else np.zeros(n, np.int64)
    log.add(c.name, ~bad_row & (lengths > 0) & (lengths != n_sources), col, offset,
            "number of items differs from the number of sources",
            "give one value per entry of 'sources', in the same order, or leave the cell empty")
    items = pa.array(np.where(np.isfinite(values), values, 0.0), pa.float64())
    if kind == "int":
        items = pa.array(np.clip(np.nan_to_num(values), 0, 2**31 - 1).astype(np.int32), pa.int32())
    return _rebuild(items, parents, n)


CANDIDATE_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("ad_id", pa.string()), ("sources", pa.list_(pa.string())),
    ("stage_reached", pa.string()), ("reasons", pa.list_(pa.string())),
    ("source_ranks", pa.list_(pa.int32())), ("source_scores", pa.list_(pa.float64())),
    ("early_score", pa.float64()), ("bid", pa.float64()), ("ecpm", pa.float64()), ("slate_position", pa.int32()),
])
"""The stored candidates (Parquet in the trace set), in this column order."""


def normalise_chunk(chunk: pa.Table, offset: int, request_ids: pa.Array | None, requests_name: str,
                    log: CellLog) -> pa.Table:
    """One chunk of `trace_candidates` (rows offset.. of the file) as CANDIDATE_SCHEMA plus `pos`
    (the request's index in the sorted `request_ids`, null when unknown; `request_ids` None: the
    requests file is unusable, so references are not checked) and `row` (file row)."""
    chunk = chunk.rename_columns([str(c).strip().lower() for c in chunk.column_names])
    n = chunk.num_rows
    null = pa.nulls(n)
    col = {c.name: (chunk.column(c.name).combine_chunks() if c.name in chunk.column_names else null)
           for c in TRACE_CANDIDATES.columns}
    out: dict[str, pa.Array] = {}
    for c in TRACE_CANDIDATES.columns:
        if c.type in ("id", "str"):
            out[c.name] = _text(col[c.name], c, log, offset)
        elif c.type in ("float", "int"):
            out[c.name] = _number(col[c.name], c, log, offset)
        elif c.name not in NUMBER_LISTS:
            out[c.name] = _string_list(col[c.name], c, log, offset)
    n_sources = pc.list_value_length(out["sources"]).to_numpy(zero_copy_only=False)
    for name in NUMBER_LISTS:
        out[name] = _number_list(col[name], TRACE_CANDIDATES.column(name), n_sources, log, offset)
    for c in TRACE_CANDIDATES.columns:
        if not c.required:
            continue
        empty = (n_sources == 0) if c.type == "list" else out[c.name].is_null().to_numpy(zero_copy_only=False)
        fix = "name at least one source that found the candidate" if c.type == "list" else \
            f"fill in '{c.name}' (required; see data/README.md)"
        log.add(c.name, empty, col[c.name], offset, "required value is empty", fix)
    stage = out["stage_reached"]
    wrong = pc.invert(pc.fill_null(pc.is_in(stage, pa.array(TRACE_CANDIDATES.column("stage_reached").allowed)), True))
    log.add("stage_reached", wrong.to_numpy(zero_copy_only=False), col["stage_reached"], offset,
            "value is not allowed", f"use one of: {', '.join(TRACE_CANDIDATES.column('stage_reached').allowed)}")
    if request_ids is None:  # the requests file is unusable (reported): check the rest of each row
        pos = pa.nulls(n, pa.int32())
    else:
        pos = pc.index_in(out["request_id"], value_set=request_ids)
        unknown = pc.and_(pos.is_null(), out["request_id"].is_valid()).to_numpy(zero_copy_only=False)
        log.add("request_id", unknown, out["request_id"], offset, f"id not found in {requests_name}",
                f"add these request ids to {requests_name} or correct them")
    arrays = [out[f.name].cast(f.type) for f in CANDIDATE_SCHEMA]
    table = pa.Table.from_arrays(arrays, schema=CANDIDATE_SCHEMA)
    return table.append_column("pos", pos.cast(pa.int32())).append_column(
        "row", pa.array(np.arange(offset, offset + n, dtype=np.int64)))
