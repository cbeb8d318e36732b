"""Cell-level coercion for ingest: raw cells (CSV text or Parquet values) to typed values.

Each `coerce_*` function takes a raw column and returns the normalised column plus a mask of
cells that could not be converted; missing cells (empty string, null) are never "bad" here:
the caller fills defaults or reports a missing required value. The rules are documented in
data/README.md ("Format rules").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime

import numpy as np
import pandas as pd

from core.data.schema import LIST_SEPARATOR, Column

TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})

# What to tell the user for a cell of each type that does not convert.
TYPE_FIX: dict[str, tuple[str, str]] = {
    "id": ("is not a text or whole-number id", "write the id as text, e.g. ad_000123 or 123"),
    "str": ("is not text", "write it as text"),
    "text": ("is not text", "write the ad copy as text"),
    "float": ("is not a number", "write a plain number such as 2.5 (no currency signs or thousands separators)"),
    "int": ("is not a whole number", "write a whole number such as 3"),
    "bool": ("is not a boolean", "write true/false, 1/0 or yes/no"),
    "datetime": (
        "is not an ISO 8601 timestamp",
        "write e.g. 2026-10-14T18:03:00 (read as UTC) or 2026-10-14T18:03:00+02:00 (converted to UTC)",
    ),
    "date": ("is not an ISO 8601 date", "write a date such as 2024-05-17"),
    "list": ("is not a list", f"write the items separated by '{LIST_SEPARATOR}', e.g. US|CA (empty: no items)"),
}


def _is_null(v: object) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _scalar_text(v: object) -> tuple[str | None, bool]:
    """(text, is_number) for one scalar cell; text is None for a null cell."""
    if _is_null(v):
        return None, False
    if isinstance(v, str):
        return v.strip(), False
    if isinstance(v, (date, datetime)):  # Parquet date32 and object columns of timestamps
        return v.isoformat(), False
    if isinstance(v, (bool, np.bool_)):
        return ("true" if v else "false"), True
    if isinstance(v, (int, np.integer)):
        return str(int(v)), True
    if isinstance(v, (float, np.floating)):
        f = float(v)
        # 12.0 from a Parquet float column (ints with nulls) is the id "12", not "12.0".
        return (str(int(f)) if f.is_integer() else repr(f)), True
    return None, True  # lists, dicts, bytes...: never text


def to_text(raw: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Stripped text (object dtype, None where null), a mask of cells that were numbers or
    booleans (converted: "12", never "12.0"), and a mask of cells that are not scalars at all."""
    false = pd.Series(False, index=raw.index)
    if isinstance(raw.dtype, pd.StringDtype):
        return raw.str.strip().astype(object).where(raw.notna(), None), false, false
    if pd.api.types.is_integer_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype):
        notna = raw.notna()
        conv = raw.astype(object).map(lambda v: _scalar_text(v)[0])
        return conv.where(notna, None), notna, false
    cells = raw.tolist()
    pairs = [_scalar_text(v) for v in cells]
    text = pd.Series([p[0] for p in pairs], index=raw.index, dtype=object)
    numeric = pd.Series([p[1] and p[0] is not None for p in pairs], index=raw.index, dtype=bool)
    nonscalar = pd.Series([p[0] is None and p[1] for p in pairs], index=raw.index, dtype=bool)
    return text, numeric, nonscalar


def missing_mask(text: pd.Series) -> pd.Series:
    """Null or empty-string cells."""
    return text.isna() | (text == "")


def coerce_text(raw: pd.Series, col: Column) -> tuple[pd.Series, pd.Series]:
    """id/str/text columns. Ids and plain strings accept numbers; ad copy (`text`) must be text.
    Values of enum columns (`allowed`) are lower-cased."""
    text, numeric, nonscalar = to_text(raw)
    if col.allowed:
        text = text.str.lower().astype(object).where(text.notna(), None)
    bad = nonscalar | numeric if col.type == "text" else nonscalar
    return text, bad


def coerce_float(raw: pd.Series, col: Column) -> tuple[pd.Series, pd.Series]:
    text, _, nonscalar = to_text(raw)
    num = pd.to_numeric(text.where(~missing_mask(text), None), errors="coerce").astype(float)
    bad = (~missing_mask(text) & (num.isna() | np.isinf(num))) | nonscalar
    return num.where(~bad), bad


def coerce_int(raw: pd.Series, col: Column) -> tuple[pd.Series, pd.Series]:
    num, bad = coerce_float(raw, col)
    frac = num.notna() & (num % 1 != 0)
    bad = bad | frac
    return num.where(~bad).astype("Int64"), bad


def coerce_bool(raw: pd.Series, col: Column) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_bool_dtype(raw.dtype) and not raw.isna().any():
        return raw.astype(bool).astype(object), pd.Series(False, index=raw.index)
    text, _, nonscalar = to_text(raw)
    low = text.map(lambda v: v.lower() if isinstance(v, str) else v)
    out = pd.Series(None, index=raw.index, dtype=object)
    out[low.isin(TRUE_WORDS)] = True
    out[low.isin(FALSE_WORDS)] = False
    bad = (~missing_mask(text) & out.isna()) | nonscalar
    return out, bad


def coerce_datetime(raw: pd.Series, col: Column) -> tuple[pd.Series, pd.Series]:
    """Naive UTC datetime64[us]; tz-aware values are converted to UTC first."""
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        ts = raw
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        return ts.astype("datetime64[us]"), pd.Series(False, index=raw.index)
    text, _, nonscalar = to_text(raw)
    empty = missing_mask(text)
    parsed = pd.to_datetime(text.where(~empty, None), format="ISO8601", utc=True, errors="coerce")
    ts = parsed.dt.tz_localize(None).astype("datetime64[us]")
    bad = (~empty & ts.isna()) | nonscalar
    return ts, bad


def coerce_date(raw: pd.Series, col: Column) -> tuple[pd.Series, pd.Series]:
    ts, bad = coerce_datetime(raw, col)
    out = pd.Series([None if pd.isna(v) else v.date() for v in ts], index=raw.index, dtype=object)
    return out, bad


def _list_cell(v: object) -> tuple[list[str] | None, bool]:
    """(items, bad) for one cell; None when null (the default applies)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        items = []
        for x in v:
            t, _ = _scalar_text(x)
            if t is None and not _is_null(x):
                return None, True
            if t:
                items.append(t)
        return items, False
    if _is_null(v):
        return None, False
    t, _ = _scalar_text(v)
    if t is None:
        return None, True
    return [p.strip() for p in t.split(LIST_SEPARATOR) if p.strip()], False


def coerce_list(raw: pd.Series, col: Column) -> tuple[pd.Series, pd.Series]:
    """Parquet lists or '|'-separated strings ('' is the empty list) to lists of str."""
    cells = [_list_cell(v) for v in raw.tolist()]
    out = pd.Series([c[0] for c in cells], index=raw.index, dtype=object)
    bad = pd.Series([c[1] for c in cells], index=raw.index, dtype=bool)
    return out, bad


COERCERS: dict[str, Callable[[pd.Series, Column], tuple[pd.Series, pd.Series]]] = {
    "id": coerce_text,
    "str": coerce_text,
    "text": coerce_text,
    "float": coerce_float,
    "int": coerce_int,
    "bool": coerce_bool,
    "datetime": coerce_datetime,
    "date": coerce_date,
    "list": coerce_list,
}


def is_missing(values: pd.Series, col: Column) -> pd.Series:
    """Cells with no value after coercion (the column default applies)."""
    if col.type in ("id", "str", "text"):
        return missing_mask(values)
    return values.isna()


def fill_default(values: pd.Series, col: Column, missing: pd.Series, frame: pd.DataFrame) -> pd.Series:
    """Fill missing cells with the schema default; "<other_column>" defaults copy that column."""
    if not missing.any():
        return values
    d = col.default
    out = values.copy()
    if isinstance(d, str) and d.startswith("<") and d.endswith(">") and d[1:-1] in frame.columns:
        out = out.astype(object)
        out[missing] = frame.loc[missing, d[1:-1]]
    elif col.type == "list":
        out = out.astype(object)
        out[missing] = pd.Series([[] for _ in range(int(missing.sum()))], index=out.index[missing], dtype=object)
    elif d is None:
        out = out.astype(object) if col.type in ("id", "str", "text") else out
        out[missing] = None
    else:
        out[missing] = d
    return out


def display(v: object) -> str:
    """A cell as shown in an error message (short, quoted)."""
    if isinstance(v, (np.ndarray, np.generic)):
        v = v.tolist()
    s = "empty" if _is_null(v) or (isinstance(v, str) and not v.strip()) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def canonical(values: pd.Series, col_type: str) -> np.ndarray:
    """Values in a form comparable with `==` between a validated frame and database rows
    (datetimes as int64 microseconds, lists as JSON text, nulls as None or NaN)."""
    if col_type in ("float", "int"):
        return pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
    if col_type in ("datetime", "date"):
        return pd.to_datetime(values, format="ISO8601").to_numpy().astype("datetime64[us]").astype(np.int64)
    notna = values.notna().to_numpy()
    if col_type == "list":
        return np.array([None if not ok else json.dumps(json.loads(v) if isinstance(v, str) else list(v))
                         for v, ok in zip(values.tolist(), notna)], dtype=object)
    out = values.to_numpy(dtype=object, copy=True)
    if col_type == "bool":
        out[notna] = out[notna].astype(bool)
    out[~notna] = None
    return out
