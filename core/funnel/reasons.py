"""Funnel stages and reason codes: the one place they are defined."""

from __future__ import annotations

from enum import StrEnum


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
