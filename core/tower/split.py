"""The held-out split: which impressions train and which clicks test. One definition, used by
training, evaluation and compare (so all three hold out the same clicks for a tower).

- time: clicks at or after the cutoff (default: the 80th percentile of impression timestamps) are
  held out; training sees only what happened before.
- random: a seeded hash of the impression id holds out `test_fraction` of impressions.
- user: the recommender-library protocol. A seeded hash of the (user, ad) pair holds out
  `test_fraction` of the interactions (every impression of a pair falls on the same side, so a
  held-out ad is never in that user's training history); each user is then ranked once, after
  their training history, with their training ads excluded (core.tower.user_protocol).
- none: nothing is held out (train a final tower on every impression; no evaluation).

Hyper-parameters (EASE's λ, item-kNN's shrinkage, the tower's settings under `adlens train
--tune`, a version's learned quotas) are chosen on the *validation split* of the training side
(`validation_split`): the same protocol one level down, a user split of the training (user, ad)
pairs with the next seed, so the test side is never looked at while choosing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from core.common.errors import AdLensError

DEFAULT_TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.2
TIME_QUANTILE = 0.8
KINDS: tuple[str, ...] = ("time", "random", "user", "none")


@dataclass(frozen=True)
class Split:
    """Which impressions train and which clicks test (see the module docstring)."""

    kind: str  # one of KINDS
    cutoff: datetime | None = None  # time split
    seed: int = 0  # random and user splits
    test_fraction: float = DEFAULT_TEST_FRACTION  # random and user splits

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
        if len(impressions) == 0 or self.kind == "none":
            return np.zeros(len(impressions), bool)
        if self.kind == "time":
            ts = pd.to_datetime(impressions["ts"]).to_numpy(dtype="datetime64[ns]")
            return ts >= np.datetime64(pd.Timestamp(self.cutoff).to_datetime64(), "ns")
        if self.kind == "user":
            return self.held_pairs(impressions["user_id"].to_numpy(), impressions["ad_id"].to_numpy())
        keys = impressions["impression_id"].astype(str)
        return hashed_fraction(keys.to_numpy(dtype=object), self.seed) < self.test_fraction

    def held_pairs(self, user_ids, ad_ids) -> np.ndarray:
        """Boolean mask over (user, ad) pairs given as id arrays: True where a user split holds
        the pair out (what `test_side` says of every impression of that pair)."""
        if self.kind != "user":
            raise ValueError(f"held_pairs is for a user split; this one is {self.kind!r}")
        return hashed_fraction(pair_keys(user_ids, ad_ids), self.seed) < self.test_fraction


def validation_split(split: Split) -> Split:
    """The validation split of `split`'s training side: a user split (held-out (user, ad) pairs)
    with the next seed holding out VALIDATION_FRACTION of the training pairs. Apply it to the
    training impressions only (`split.test_side` False); the rest is the fitting side."""
    return Split("user", None, int(split.seed) + 1, VALIDATION_FRACTION)


def pair_keys(user_ids, ad_ids) -> np.ndarray:
    """The (user, ad) key a user split hashes (so pairs given as ids hash as impressions do)."""
    return (pd.Series(np.asarray(user_ids, dtype=object)).astype(str) + "\x1f"
            + pd.Series(np.asarray(ad_ids, dtype=object)).astype(str)).to_numpy(dtype=object)


def hashed_fraction(keys: np.ndarray, seed: int) -> np.ndarray:
    """A seeded, order-independent uniform number in [0, 1) per key (stable across runs)."""
    h = pd.util.hash_array(np.asarray(keys, dtype=object), hash_key=f"adlens{int(seed):010d}"[-16:])
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def make_split(impressions: pd.DataFrame, kind: str = "time", cutoff=None, seed: int = 0,
               test_fraction: float = DEFAULT_TEST_FRACTION) -> Split:
    """The split for `impressions`: time (cutoff default: 80th percentile of ts), random, user or
    none. A time cutoff that leaves no clicked impression before it, or none at or after it, is
    rejected here, before anything trains."""
    if kind not in KINDS:
        raise AdLensError(f"unknown split {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "none":
        return _checked(impressions, Split("none"))
    if kind in ("random", "user"):
        if not 0.0 < test_fraction < 1.0:
            raise AdLensError(f"test_fraction must be in (0, 1); got {test_fraction}")
        return _checked(impressions, Split(kind, None, int(seed), float(test_fraction)))
    if cutoff is None:
        if len(impressions) == 0:
            raise AdLensError("no impressions: ingest data first (adlens ingest DIR or adlens demo)")
        cutoff = pd.to_datetime(impressions["ts"]).quantile(TIME_QUANTILE).floor("s")
    try:
        cutoff = pd.Timestamp(cutoff).to_pydatetime()
    except (ValueError, TypeError) as exc:
        raise AdLensError(f"cutoff {cutoff!r} is not a timestamp (e.g. 2026-10-20T00:00:00)") from exc
    return _checked(impressions, Split("time", cutoff.replace(tzinfo=None)))


def _checked(impressions: pd.DataFrame, split: Split) -> Split:
    """`split`, unless it leaves no clicks to train on or (except "none") none to evaluate on:
    refused here, before anything trains."""
    if len(impressions) == 0:
        raise AdLensError("no impressions: ingest data first (adlens ingest DIR or adlens demo)")
    clicked = impressions["clicked"].astype(bool).to_numpy()
    test = split.test_side(impressions)
    if split.kind == "time":
        ts = pd.to_datetime(impressions["ts"])
        where = f"cutoff {split.cutoff} (impressions run from {ts.min()} to {ts.max()})"
        fix_train, fix_test = "pick a later cutoff", "pick an earlier cutoff"
    else:
        where = f"the {split.kind} split {split.to_dict()}"
        fix_train = fix_test = "ingest more clicked impressions or change --seed"
    if not (clicked & ~test).any():
        raise AdLensError(f"{where} leaves no clicked impression to train on: {fix_train}")
    if split.kind != "none" and not (clicked & test).any():
        raise AdLensError(f"{where} leaves no clicked impression to evaluate on: {fix_test}, or train on every "
                          "impression with --holdout none (no evaluation)")
    return split


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
