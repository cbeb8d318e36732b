"""Extra columns: what a team's files hold on ads, campaigns and users beyond the format.

Ingest keeps them (one JSON object per row in `extra_values`, written in the import's
transaction; core.store.catalog.load_catalog reads them back) so funnel-definition rules can read them (`ad.<column>`, `campaign.<column>`,
`user.<column>`; core.funnel.fields). Values keep their type: numbers, booleans, text, and lists
(a Parquet list column, or a CSV column whose values use the list separator "|": then every
value of that column is a list; a CSV column of true/false is boolean, one of numbers numeric). A re-import replaces the extra values of the rows it holds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import delete, insert, select

from core.data.schema import LIST_SEPARATOR, TABLES_BY_NAME
from core.store.models import ExtraValues

EXTRA_TABLES = ("ads", "campaigns", "users")
_CHUNK = 500


def extra_columns(table: str, raw: pd.DataFrame) -> list[str]:
    """The columns of `raw` (names as ingest normalises them) that the format does not have."""
    known = {c.name for c in TABLES_BY_NAME[table].columns}
    return [c for c in (str(c).strip().lower() for c in raw.columns) if c not in known]


def _value(v):
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(x) for x in v]
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    return str(v)


def _typed(s: pd.Series) -> pd.Series:
    """A text column (CSV) as lists when some value holds the list separator, as booleans when
    every non-empty value is true/false, as numbers when every one is a number; other columns
    (Parquet) keep their values."""
    text = s.map(lambda v: isinstance(v, str))
    if not text.any():
        return s
    if s[text].map(lambda v: LIST_SEPARATOR in v).any():
        return s.map(lambda v: [x.strip() for x in v.split(LIST_SEPARATOR) if x.strip()] if isinstance(v, str)
                     else list(v) if isinstance(v, (list, tuple, np.ndarray)) else [])
    blank = s.map(lambda v: v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and np.isnan(v)))
    words = s[~blank].map(lambda v: str(v).strip().lower())
    if len(words) and words.isin(("true", "false")).all():
        return s.map(lambda v: None if not isinstance(v, str) or not v.strip() else v.strip().lower() == "true")
    nums = pd.to_numeric(s.where(~blank, None), errors="coerce")
    if (~blank).any() and nums[~blank].notna().all():
        return nums.astype(object).where(~blank, None)
    return s.where(~blank, None)


def extra_frames(raw: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Per table with a file: key column plus its extra columns (empty of extras when it has none)."""
    out = {}
    for table in EXTRA_TABLES:
        if table not in raw:
            continue
        frame = raw[table].copy()
        frame.columns = [str(c).strip().lower() for c in frame.columns]
        key = TABLES_BY_NAME[table].key
        if key not in frame:
            continue
        cols = extra_columns(table, raw[table])
        sub = frame[[key, *cols]].copy()
        sub[key] = sub[key].map(lambda v: None if pd.isna(v) else str(v).strip())
        for c in cols:
            sub[c] = _typed(sub[c].astype(object))
        out[table] = sub[sub[key].notna()]
    return out


def write_extras(conn, frames: dict[str, pd.DataFrame], replace: bool = False) -> int:
    """Store the extra values of every row the import holds (inside the caller's transaction),
    replacing what those rows had; returns how many rows' values changed (0 for a re-import of
    the same files, so the data revision stays)."""
    tbl = ExtraValues.__table__
    if replace:
        conn.execute(delete(tbl))
    changed = 0
    for table, frame in frames.items():
        key = TABLES_BY_NAME[table].key
        cols = [c for c in frame.columns if c != key]
        new = {}
        for rec in frame.to_dict("records"):
            data = {c: v for c in cols if (v := _value(rec[c])) is not None}
            new[rec[key]] = data
        ids = list(new)
        old = {}
        for i in range(0, len(ids), _CHUNK):
            got = conn.execute(select(tbl.c.row_id, tbl.c.data).where(
                tbl.c.table_name == table, tbl.c.row_id.in_(ids[i:i + _CHUNK]))).all()
            old.update({r.row_id: r.data for r in got})
        stale = [r for r in old if old[r] != new.get(r)]
        for i in range(0, len(stale), _CHUNK):
            conn.execute(delete(tbl).where(tbl.c.table_name == table, tbl.c.row_id.in_(stale[i:i + _CHUNK])))
        rows = [{"table_name": table, "row_id": r, "data": d} for r, d in new.items()
                if d and old.get(r) != d]
        for i in range(0, len(rows), _CHUNK):
            conn.execute(insert(tbl), rows[i:i + _CHUNK])
        changed += len(set(stale) | {r["row_id"] for r in rows})
    return changed
