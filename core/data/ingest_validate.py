"""Validate and normalise an import dataset against core.data.schema, collecting every problem.

No database access here: ids already in the database come in as `known_ids`. The result is one
normalised frame per table (schema columns in order, defaults filled, ids as str, lists as
lists, datetimes naive UTC) plus the bare rows to create for ids referenced by other tables when
an optional table's file is absent. Public entry point: `core.data.ingest.validate_dataset`.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.ingest_columns import (
    COERCERS,
    TYPE_FIX,
    display,
    fill_default,
    is_missing,
)
from core.data.ingest_extra import EXTRA_TABLES
from core.data.schema import TABLES, TABLES_BY_NAME, Table

MAX_SHOWN = 5  # offending rows quoted per problem
# Range rules the schema's types do not express.
NON_NEGATIVE = {("campaigns", c) for c in ("daily_budget", "spend_today", "bid", "frequency_cap", "age_min", "age_max")}


@dataclass
class Source:
    """Where a table's rows came from, to name file, row and line in messages."""

    table: str
    path: Path | None = None
    _lines: list[int] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else f"{self.table} table"

    def where(self, pos: int) -> str:
        """'row 5 (line 6)' for the 0-based data row `pos` (line only for CSV files)."""
        if self.path is None or self.path.suffix.lower() != ".csv":
            return f"row {pos + 1}"
        lines = self._csv_lines()
        line = f" (line {lines[pos]})" if pos < len(lines) else ""
        return f"row {pos + 1}{line}"

    def _csv_lines(self) -> list[int]:
        # Computed only when a message needs it: quoted fields may span several lines.
        if self._lines is None:
            starts: list[int] = []
            with open(self.path, newline="", encoding="utf-8-sig", errors="replace") as fh:
                reader = csv.reader(fh)
                next(reader, None)
                prev_end = reader.line_num
                for record in reader:
                    if record:  # pandas skips blank lines
                        starts.append(prev_end + 1)
                    prev_end = reader.line_num
            self._lines = starts
        return self._lines


class Problems(list):
    """Problem messages; `cells` reports offending cells with their first few rows."""

    def cells(self, src: Source, column: str, mask: pd.Series, raw: pd.Series, what: str, fix: str) -> None:
        pos = np.flatnonzero(np.asarray(mask, dtype=bool))
        if not len(pos):
            return
        self.at(src, column, [(int(p), display(raw.iat[int(p)])) for p in pos[:MAX_SHOWN]], len(pos), what, fix)

    def at(self, src: Source, column: str, shown: list[tuple[int, str]], count: int, what: str, fix: str) -> None:
        """One message for `count` offending cells, quoting `shown` ((0-based row, displayed value),
        the first few): the form of `cells`, for callers that find bad cells chunk by chunk."""
        quoted = ", ".join(f"{src.where(p)} {v}" for p, v in shown[:MAX_SHOWN])
        more = f" and {count - MAX_SHOWN} more" if count > MAX_SHOWN else ""
        rows = "row" if count == 1 else "rows"
        self.append(f"{src.name}, column '{column}': {what} in {count} {rows}: {quoted}{more}. Fix: {fix}.")


@dataclass
class Validated:
    frames: dict[str, pd.DataFrame]  # normalised rows per table, bare rows included
    bare: dict[str, int]  # bare rows created per table
    rows: dict[str, int]  # data rows read per file
    warnings: list[str]
    problems: Problems


def _required_fix(table: Table, column: str) -> str:
    if column == table.key:
        return f"give every row a unique {column}"
    if column == "title":
        return "give every ad a non-empty title"
    return f"fill in '{column}' (required; see data/README.md)"


def normalise_table(table: Table, raw: pd.DataFrame, src: Source, problems: Problems,
                     warnings: list[str]) -> pd.DataFrame | None:
    """Typed frame with every schema column, or None when required columns are missing."""
    raw = raw.reset_index(drop=True)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    known = {c.name for c in table.columns}
    extra = [c for c in raw.columns if c not in known]
    if extra and table.name in EXTRA_TABLES:
        prefix = {"ads": "ad", "campaigns": "campaign", "users": "user"}[table.name]
        warnings.append(f"{src.name}: kept extra column(s) {', '.join(extra)} for funnel-definition rules "
                        f"(read as {prefix}.<column>)")
    elif extra:
        warnings.append(f"{src.name}: ignored column(s) not in the format: {', '.join(extra)}")
    absent = [c for c in table.columns if c.required and c.name not in raw.columns]
    for c in absent:
        problems.append(
            f"{src.name}: required column '{c.name}' is missing (columns found: "
            f"{', '.join(raw.columns) or 'none'}). Fix: add a '{c.name}' column (e.g. {c.example}); "
            "see data/README.md."
        )
    if absent:
        return None
    n = len(raw)
    out = pd.DataFrame(index=raw.index)
    missing: dict[str, pd.Series] = {}
    for c in table.columns:
        col_raw = raw[c.name] if c.name in raw.columns else pd.Series([None] * n, index=raw.index, dtype=object)
        values, bad = COERCERS[c.type](col_raw, c)
        what, fix = TYPE_FIX[c.type]
        problems.cells(src, c.name, bad, col_raw, f"value {what}", fix)
        miss = is_missing(values, c) & ~bad
        if c.required:
            problems.cells(src, c.name, miss, col_raw, "required value is empty", _required_fix(table, c.name))
        if c.allowed:
            wrong = ~miss & ~bad & ~values.isin(c.allowed)
            problems.cells(src, c.name, wrong, col_raw, "value is not allowed",
                           f"use one of: {', '.join(c.allowed)}")
        if (table.name, c.name) in NON_NEGATIVE:
            neg = ~miss & ~bad & (pd.to_numeric(values, errors="coerce") < 0).fillna(False).astype(bool)
            problems.cells(src, c.name, neg, col_raw, "value is negative", "use a number >= 0")
        out[c.name] = values
        missing[c.name] = miss
    for c in table.columns:
        if not c.required and not (table.name == "impressions" and c.name == "impression_id"):
            out[c.name] = fill_default(out[c.name], c, missing[c.name], out)
    _cross_checks(table, out, raw, src, problems)
    if table.name == "impressions":
        out["impression_id"] = out["impression_id"].astype(object)
        miss = missing["impression_id"]
        if miss.any():
            out.loc[miss, "impression_id"] = derive_impression_ids(out[miss])
    if table.key in out:  # a composite key (the trace format's candidates) is checked by its caller
        key = out[table.key]
        dup = key.notna() & key.duplicated(keep=False)
        problems.cells(src, table.key, dup, key, "duplicate id",
                       f"each {table.key} must appear once: remove or merge the duplicate rows")
    return out


def _cross_checks(table: Table, out: pd.DataFrame, raw: pd.DataFrame, src: Source, problems: Problems) -> None:
    if table.name != "campaigns":
        return
    ages = out["age_min"].astype("Float64") > out["age_max"].astype("Float64")
    pair = out["age_min"].astype(str) + " > " + out["age_max"].astype(str)
    problems.cells(src, "age_min", ages.fillna(False).astype(bool), pair, "age_min is greater than age_max",
                   "swap the two ages or correct them (the range is inclusive)")
    sched = (out["start_ts"] > out["end_ts"]).fillna(False).astype(bool)
    pair = out["start_ts"].astype(str) + " > " + out["end_ts"].astype(str)
    problems.cells(src, "start_ts", sched, pair, "start_ts is after end_ts", "correct the schedule")


def derive_impression_ids(df: pd.DataFrame) -> list[str]:
    """Deterministic ids from (user_id, ad_id, ts, community_id, placement), plus the occurrence
    number among identical rows so that exact duplicates stay distinct and re-imports idempotent."""
    ts = df["ts"].to_numpy().astype("datetime64[us]").astype(np.int64).astype(str)
    parts = [df["user_id"].fillna("").astype(str).to_numpy(), df["ad_id"].fillna("").astype(str).to_numpy(), ts,
             df["community_id"].fillna("").astype(str).to_numpy(), df["placement"].fillna("").astype(str).to_numpy()]
    base = pd.Series(["\x1f".join(t) for t in zip(*parts)], index=df.index)
    occurrence = base.groupby(base, sort=False).cumcount().to_numpy()
    return ["imp_" + hashlib.blake2b(f"{b}\x1f{k}".encode(), digest_size=10).hexdigest()
            for b, k in zip(base.tolist(), occurrence.tolist())]


def bare_frame(table: Table, ids: Iterable[str]) -> pd.DataFrame:
    """Rows holding only an id and the schema defaults (a bare campaign's advertiser has the
    campaign's id, since a campaign needs an advertiser)."""
    keys = sorted(ids)
    out = pd.DataFrame({table.key: pd.Series(keys, dtype=object)})
    n = len(keys)
    for c in table.columns:
        if c.name == table.key:
            continue
        if table.name == "campaigns" and c.name == "advertiser_id":
            out[c.name] = out[table.key]
            continue
        values, _ = COERCERS[c.type](pd.Series([None] * n, dtype=object), c)
        out[c.name] = fill_default(values, c, pd.Series(True, index=out.index), out)
    return out[[c.name for c in table.columns]]


def validate_frames(raw: dict[str, pd.DataFrame], sources: dict[str, Source],
                    known_ids: dict[str, set[str]] | None = None) -> Validated:
    """Normalise every given table, check references, and plan bare rows (see module doc)."""
    known_ids = known_ids or {}
    problems, warnings = Problems(), []
    frames: dict[str, pd.DataFrame] = {}
    for t in TABLES:
        if t.name in raw:
            src = sources.get(t.name) or Source(t.name)
            norm = normalise_table(t, raw[t.name], src, problems, warnings)
            if norm is not None:
                frames[t.name] = norm
    present = set(raw)
    bare: dict[str, set[str]] = {}
    for t in TABLES:
        if t.name not in frames:
            continue
        df, src = frames[t.name], sources.get(t.name) or Source(t.name)
        for c in t.columns:
            if not c.references:
                continue
            rt, rc = c.references.split(".")
            if rt in present and rt not in frames:
                continue  # that file is already reported (missing columns): no noise here
            known = set(known_ids.get(rt, ()))
            if rt in frames:
                known |= set(frames[rt][rc].dropna())
            vals = df[c.name]
            unknown = vals.notna() & ~vals.isin(known)
            if rt in present:
                problems.cells(src, c.name, unknown, vals, f"id not found in {sources[rt].name} or the database",
                               f"add these ids to {sources[rt].name} or correct them")
            elif TABLES_BY_NAME[rt].required:
                problems.cells(src, c.name, unknown, vals, f"id not found in the database (no {rt} file given)",
                               f"include {rt}.csv or {rt}.parquet with these ids, or correct them")
            elif unknown.any():
                bare.setdefault(rt, set()).update(vals[unknown])
    if bare.get("campaigns"):
        adv_known = set(known_ids.get("advertisers", ()))
        if "advertisers" in frames:
            adv_known |= set(frames["advertisers"]["advertiser_id"])
        bare.setdefault("advertisers", set()).update(bare["campaigns"] - adv_known)
    counts: dict[str, int] = {}
    for name, ids in bare.items():
        if not ids:
            continue
        rows = bare_frame(TABLES_BY_NAME[name], ids)
        frames[name] = pd.concat([frames[name], rows], ignore_index=True) if name in frames else rows
        counts[name] = len(rows)
    return Validated(frames, counts, {k: len(v) for k, v in raw.items()}, warnings, problems)
