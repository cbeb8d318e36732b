"""Funnel stages and reason codes: the one place they are defined.

Reason codes are an open vocabulary: `Reason` holds AdLens's built-in codes (the default), and a
funnel definition (core.funnel.definition) may add its own, checked by `check_reason_code`.
Everything that reads reasons treats them as plain strings.
"""

from __future__ import annotations

import re
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


REASON_DESCRIPTIONS: dict[str, str] = {
    "POLICY_REJECTED": "the ad's policy status is not approved",
    "CAMPAIGN_INACTIVE": "the campaign is paused or ended",
    "OUT_OF_SCHEDULE": "the request time is outside the campaign's start and end",
    "BUDGET_EXHAUSTED": "the campaign spent its daily budget",
    "GEO_MISMATCH": "the campaign targets other countries",
    "AGE_MISMATCH": "the user's age bucket is outside the campaign's age range",
    "DEVICE_MISMATCH": "the campaign targets other devices",
    "COMMUNITY_EXCLUDED": "the campaign excludes the request's community",
    "COMMUNITY_NOT_TARGETED": "the campaign targets other communities",
    "BRAND_SAFETY": "the community's safety tier is above what the advertiser accepts",
    "FREQUENCY_CAP": "the user saw the campaign its daily cap of times",
    "BELOW_CUTOFF": "eligible, but ranked below the top-N eCPM cutoff or left when the slate filled",
    "ADVERTISER_CAP": "its advertiser already has M ads in the slate",
}
"""One line per built-in code, for lists and chart hovers (a funnel definition's own rules carry
their own description)."""


BUILTIN_REASONS: frozenset[str] = frozenset(r.value for r in Reason)
"""Every built-in code (eligibility and post-eligibility)."""

REASON_CODE_RE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
REASON_CODE_MAX = 48


def check_reason_code(code: object) -> str | None:
    """Why `code` is not a valid reason code (UPPER_SNAKE, e.g. GAMBLING_DE), or None when it is."""
    if not isinstance(code, str) or not code:
        return f"reason code must be a non-empty string; got {code!r}"
    if len(code) > REASON_CODE_MAX:
        return f"reason code {code!r} is longer than {REASON_CODE_MAX} characters"
    if not REASON_CODE_RE.match(code):
        return f"reason code {code!r} is not UPPER_SNAKE_CASE (letters, digits and single underscores, e.g. GAMBLING_DE)"
    return None


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
    # ranked out with no rank: a ranking-stage rule removed it (core.funnel.definition)
    out[(outcomes == Outcome.RANKED_OUT.value) & ((ranks > n_ranked) | (ranks == 0))] = Stage.RANKED.value
    out[outcomes == Outcome.SLATE.value] = None
    return out
