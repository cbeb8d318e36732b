"""Plain JSON values from AdLens objects: the one conversion used by artifacts, Traces and the CLI."""

from __future__ import annotations

import dataclasses
import math
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def to_jsonable(obj: Any) -> Any:
    """Dataclasses and `to_dict()` objects expanded, numpy values unwrapped, NA/NaN/inf -> None
    (JSON and PostgreSQL's json type have no NaN), enums -> values, dates -> ISO text, paths -> str."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, (type, dict, pd.DataFrame, pd.Series)):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, np.ndarray)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (datetime, date)):  # pd.Timestamp is a datetime
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return obj
