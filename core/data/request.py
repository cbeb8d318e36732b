"""A funnel request: (user, context). Evaluating one is a simulation: it never writes anything."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import cached_property

import numpy as np
import pandas as pd

from core.common.errors import AdLensError

REQUEST_COLUMNS: tuple[str, ...] = ("user_id", "community_id", "placement", "device", "country", "ts")


@dataclass(frozen=True)
class Request:
    """One request. `community_id` is None on the home feed; `ts` is naive UTC."""

    user_id: str
    community_id: str | None
    placement: str
    device: str
    country: str
    ts: datetime

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ts"] = self.ts.isoformat()
        return d


TIME_MIN = pd.Timestamp("1677-09-22")
TIME_MAX = pd.Timestamp("2262-04-11")
"""Request times must fit the nanosecond timestamps the log and features are held in."""


def parse_request_time(value) -> datetime:
    """A request time (ISO 8601 text, datetime or Timestamp) as naive UTC; AdLensError when it is
    not a time or lies outside TIME_MIN..TIME_MAX."""
    example = "use an ISO 8601 time such as 2026-10-14T18:03:00"
    if isinstance(value, datetime) and not isinstance(value, pd.Timestamp):
        value = value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise AdLensError(f"time {str(value)!r} is not a valid time: {example}") from exc
    if ts is pd.NaT:
        raise AdLensError(f"time {str(value)!r} is not a valid time: {example}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if not TIME_MIN <= ts <= TIME_MAX:
        raise AdLensError(f"time {str(value)!r} is outside the supported range {TIME_MIN.date()} .. "
                          f"{TIME_MAX.date()}: {example}")
    return ts.to_pydatetime()


def requests_frame(requests: list[Request]) -> pd.DataFrame:
    """Requests as a frame with REQUEST_COLUMNS (the batch input of query encoders)."""
    return pd.DataFrame([asdict(r) for r in requests], columns=list(REQUEST_COLUMNS))


@dataclass(frozen=True)
class RequestBatch:
    """Requests as one NumPy array per REQUEST_COLUMNS column (object; `ts` datetime64[ns]): what
    encoders and candidate sources read. A funnel run passes one of these for its single request,
    since building a one-row DataFrame costs more than encoding the request."""

    user_id: np.ndarray
    community_id: np.ndarray
    placement: np.ndarray
    device: np.ndarray
    country: np.ndarray
    ts: np.ndarray

    @classmethod
    def of(cls, requests: list[Request]) -> "RequestBatch":
        cols = {c: np.array([getattr(r, c) for r in requests] + [None], dtype=object)[:-1]
                for c in REQUEST_COLUMNS if c != "ts"}  # + [None]: never a 2-d array of characters
        ts = np.array([np.datetime64(r.ts, "ns") for r in requests], dtype="datetime64[ns]")
        return cls(**cols, ts=ts)

    def __len__(self) -> int:
        return len(self.user_id)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The batch as a requests frame (built once)."""
        return pd.DataFrame({c: getattr(self, c) for c in REQUEST_COLUMNS}, columns=list(REQUEST_COLUMNS))


def request_arrays(requests: "pd.DataFrame | RequestBatch") -> RequestBatch:
    """A requests frame (REQUEST_COLUMNS) or batch as a RequestBatch; ValueError naming the
    columns a frame lacks."""
    if isinstance(requests, RequestBatch):
        return requests
    absent = [c for c in REQUEST_COLUMNS if c not in requests]
    if absent:
        raise ValueError(f"requests frame lacks columns {absent}; expected {list(REQUEST_COLUMNS)}")
    return RequestBatch(**{c: requests[c].to_numpy(dtype=object) for c in REQUEST_COLUMNS if c != "ts"},
                        ts=pd.to_datetime(requests["ts"]).to_numpy(dtype="datetime64[ns]"))


def as_frame(requests: "pd.DataFrame | RequestBatch") -> pd.DataFrame:
    """A requests frame of a frame or batch (for encoders that work on frames; built once per batch)."""
    return requests.frame if isinstance(requests, RequestBatch) else requests


def requests_from_impressions(impressions: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """The logged request of each impression row, in row order, as a requests frame.

    The country comes from the user's profile ("unknown" without one)."""
    country = users.set_index("user_id")["country"] if len(users) else pd.Series(dtype=object)
    out = pd.DataFrame({
        "user_id": impressions["user_id"].to_numpy(dtype=object),
        "community_id": impressions["community_id"].to_numpy(dtype=object),
        "placement": impressions["placement"].to_numpy(dtype=object),
        "device": impressions["device"].to_numpy(dtype=object),
        "country": impressions["user_id"].map(country).fillna("unknown").to_numpy(dtype=object),
        "ts": pd.to_datetime(impressions["ts"]).to_numpy(),
    }, columns=list(REQUEST_COLUMNS))
    return out.reset_index(drop=True)


def sample_requests(impressions: pd.DataFrame, users: pd.DataFrame, n: int, seed: int = 0,
                    clicked_only: bool = False) -> pd.DataFrame:
    """A seeded sample of real logged requests (one per sampled impression) as a requests frame."""
    imps = impressions[impressions["clicked"].astype(bool)] if clicked_only else impressions
    if len(imps) == 0:
        return pd.DataFrame(columns=list(REQUEST_COLUMNS))
    picked = imps.sample(n=min(n, len(imps)), random_state=seed, replace=False)
    return requests_from_impressions(picked, users)
