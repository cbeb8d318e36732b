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
