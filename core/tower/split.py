"""The held-out split: which impressions train and which clicks test. One definition, used by
training, evaluation and compare (so all three hold out the same clicks for a tower).

- time: clicks at or after the cutoff (default: the 80th percentile of impression timestamps) are
  held out; training sees only what happened before.
- random: a seeded hash of the impression id holds out `test_fraction` of impressions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from core.common.errors import AdLensError

DEFAULT_TEST_FRACTION = 0.2
TIME_QUANTILE = 0.8


@dataclass(frozen=True)
class Split:
    """Which impressions train and which clicks test (see the module docstring)."""

    kind: str  # "time" | "random"
    cutoff: datetime | None = None  # time split
    seed: int = 0  # random split
    test_fraction: float = DEFAULT_TEST_FRACTION  # random split

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cutoff"] = self.cutoff.isoformat() if self.cutoff is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        cutoff = d.get("cutoff")
        return cls(kind=d["kind"], cutoff=pd.Timestamp(cutoff).to_pydatetime() if cutoff else None,
                   seed=int(d.get("seed", 0)), test_fraction=float(d.get("test_fraction", DEFAULT_TEST_FRACTION)))

    def test_side(self, impressions: pd.DataFrame) -> np.ndarray:
        """Boolean mask over `impressions`: True for the held-out side (train is the rest)."""
        if len(impressions) == 0:
            return np.zeros(0, bool)
        if self.kind == "time":
            ts = pd.to_datetime(impressions["ts"]).to_numpy(dtype="datetime64[ns]")
            return ts >= np.datetime64(pd.Timestamp(self.cutoff).to_datetime64(), "ns")
        key = f"adlens{self.seed:010d}"[-16:]
        h = pd.util.hash_array(impressions["impression_id"].astype(str).to_numpy(dtype=object), hash_key=key)
        return (h >> np.uint64(11)).astype(np.float64) / float(2**53) < self.test_fraction


def make_split(impressions: pd.DataFrame, kind: str = "time", cutoff=None, seed: int = 0,
               test_fraction: float = DEFAULT_TEST_FRACTION) -> Split:
    """The split for `impressions`: time (cutoff default: 80th percentile of ts) or random."""
    if kind not in ("time", "random"):
        raise AdLensError(f"unknown split {kind!r}; use 'time' or 'random'")
    if kind == "random":
        if not 0.0 < test_fraction < 1.0:
            raise AdLensError(f"test_fraction must be in (0, 1); got {test_fraction}")
        return Split("random", None, int(seed), float(test_fraction))
    if cutoff is None:
        if len(impressions) == 0:
            raise AdLensError("no impressions: ingest data first (adlens ingest DIR or adlens demo)")
        cutoff = pd.to_datetime(impressions["ts"]).quantile(TIME_QUANTILE).floor("s")
    try:
        cutoff = pd.Timestamp(cutoff).to_pydatetime()
    except (ValueError, TypeError) as exc:
        raise AdLensError(f"cutoff {cutoff!r} is not a timestamp (e.g. 2026-10-20T00:00:00)") from exc
    return Split("time", cutoff.replace(tzinfo=None))


def tower_split(evaluation: dict | None, impressions: pd.DataFrame) -> Split:
    """The split a tower was trained with (from its evaluation report's "split"), or the default
    time split of `impressions` when there is no tower (the history-mean encoder trains nothing)."""
    d = (evaluation or {}).get("split")
    return Split.from_dict(d) if isinstance(d, dict) and d.get("kind") else make_split(impressions, "time")


def heldout_mask(impressions: pd.DataFrame, splits: list[Split]) -> np.ndarray:
    """Impressions on the held-out side of every split: unseen by every tower trained on them."""
    mask = np.ones(len(impressions), bool)
    for split in splits:
        mask &= split.test_side(impressions)
    return mask
