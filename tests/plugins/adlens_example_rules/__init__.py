"""An example rule package for entry-point group `adlens.rules` (used by tests/test_rule_plugins.py).

A package would declare it in its pyproject.toml:

    [project.entry-points."adlens.rules"]
    holdout = "adlens_example_rules:HoldoutRule"

`HoldoutRule` keeps a deterministic share of (user, campaign) pairs out of the funnel (an A/B
holdout): a hash an expression cannot compute.

It also holds example early rankers for entry-point group `adlens.rankers` (used by
tests/test_ranker.py): `BidScoreRanker` ranks by `weight * candidate.score + campaign.bid` (output
kind "score"); `NanRanker` returns NaN (refused at build time).
"""

from __future__ import annotations

import zlib

import numpy as np

from core.funnel.filters import Rule


def bucket(user_id: str, campaign_codes: np.ndarray) -> np.ndarray:
    """The pair's holdout bucket in 0..99 (-1 for ads without a campaign)."""
    base = zlib.crc32(str(user_id).encode()) % 100
    return np.where(campaign_codes >= 0, (base + 37 * campaign_codes) % 100, -1)


class HoldoutRule(Rule):
    code = "HOLDOUT"

    def __init__(self, percent: int = 10):
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be in 0..100; got {percent}")
        self.percent = percent

    def fails(self, facts, pos, ctx):
        b = bucket(ctx.request.user_id, facts.campaign_code[pos])
        return (b >= 0) & (b < self.percent)

    def describe(self, facts, p, ctx):
        b = int(bucket(ctx.request.user_id, facts.campaign_code[p:p + 1])[0])
        if b < 0:
            return "no campaign (not in any holdout)"
        return f"holdout bucket {b} of 100; buckets below {self.percent} are held out"


class BrokenRule(Rule):
    code = "BROKEN"

    def fails(self, facts, pos, ctx):
        return np.zeros(len(pos) + 1)  # wrong shape and dtype

    def describe(self, facts, p, ctx):
        return "broken"


class BidScoreRanker:
    """An early ranker (core.funnel.rankers.EarlyRanker): weight * tower score + bid, a score."""

    features = ("candidate.score", "campaign.bid")
    output = "score"

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def score(self, X):
        return self.weight * X[:, 0].astype(np.float64) + X[:, 1]

    def describe(self):
        return f"{self.weight:g} x score + bid"


class NanRanker:
    features = ("candidate.score",)
    output = "probability"

    def score(self, X):
        return np.full(len(X), np.nan)
