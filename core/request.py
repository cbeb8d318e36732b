"""A funnel request: (user, context). Evaluating one is a simulation: it never writes anything."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import pandas as pd

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


def requests_frame(requests: list[Request]) -> pd.DataFrame:
    """Requests as a frame with REQUEST_COLUMNS (the batch input of query encoders)."""
    return pd.DataFrame([asdict(r) for r in requests], columns=list(REQUEST_COLUMNS))
