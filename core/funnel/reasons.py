"""Funnel stages and reason codes: the one place they are defined."""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class Stage(StrEnum):
    """Funnel stages in pipeline order."""

    INVENTORY = "inventory"
    RETRIEVED = "retrieved"
    ELIGIBLE = "eligible"
    RANKED = "ranked"
    SLATE = "slate"


class Reason(StrEnum):
    """Why a candidate did not reach the slate. Eligibility codes are listed in default rule order."""

    POLICY_REJECTED = "POLICY_REJECTED"
    CAMPAIGN_INACTIVE = "CAMPAIGN_INACTIVE"
    OUT_OF_SCHEDULE = "OUT_OF_SCHEDULE"
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
    GEO_MISMATCH = "GEO_MISMATCH"
    AGE_MISMATCH = "AGE_MISMATCH"
    DEVICE_MISMATCH = "DEVICE_MISMATCH"
    COMMUNITY_EXCLUDED = "COMMUNITY_EXCLUDED"
    COMMUNITY_NOT_TARGETED = "COMMUNITY_NOT_TARGETED"
    BRAND_SAFETY = "BRAND_SAFETY"
    FREQUENCY_CAP = "FREQUENCY_CAP"
    # Post-eligibility stages.
    BELOW_CUTOFF = "BELOW_CUTOFF"
    ADVERTISER_CAP = "ADVERTISER_CAP"


ELIGIBILITY_REASONS: tuple[Reason, ...] = tuple(Reason)[: list(Reason).index(Reason.FREQUENCY_CAP) + 1]
"""Eligibility rule codes in the default pipeline order (the primary reason is the first failing)."""


class Outcome(StrEnum):
    """What happened to one candidate of a request."""

    SLATE = "slate"  # shown
    ADVERTISER_CAP = "advertiser_cap"  # ranked, but its advertiser already filled M slots
    RANKED_OUT = "ranked_out"  # eligible, but below the top-N cutoff or left over when the slate was full
    FILTERED = "filtered"  # failed an eligibility rule
    NOT_RETRIEVED = "not_retrieved"  # not among the retrieved candidates (why-not, audience)


def blocking_stages(outcomes: np.ndarray, rank_positions: np.ndarray, n_ranked: int) -> np.ndarray:
    """The first stage each candidate did not pass (None for slate ads): the one definition used
    by the Trace, why-not, audience and compare. A ranked-out ad within the top N was left over
    when the slate filled, so it is blocked at the slate, not at ranking."""
    outcomes = np.asarray(outcomes, dtype=object)
    ranks = np.nan_to_num(np.asarray(rank_positions, dtype=np.float64), nan=0.0)
    out = np.full(len(outcomes), Stage.SLATE.value, dtype=object)
    out[outcomes == Outcome.NOT_RETRIEVED.value] = Stage.RETRIEVED.value
    out[outcomes == Outcome.FILTERED.value] = Stage.ELIGIBLE.value
    out[(outcomes == Outcome.RANKED_OUT.value) & (ranks > n_ranked)] = Stage.RANKED.value
    out[outcomes == Outcome.SLATE.value] = None
    return out
