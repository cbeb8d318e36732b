"""Closed vocabularies shared by the data model, ingest, the demo generator and the filters."""

from __future__ import annotations

from enum import StrEnum


class CampaignStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ENDED = "ended"


class PolicyStatus(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    PENDING = "pending"


class BidType(StrEnum):
    CPM = "cpm"
    CPC = "cpc"


class Placement(StrEnum):
    HOME_FEED = "home_feed"
    COMMUNITY_FEED = "community_feed"
    CONVERSATION = "conversation"


class Device(StrEnum):
    IOS = "ios"
    ANDROID = "android"
    DESKTOP = "desktop"
    MOBILE_WEB = "mobile_web"


class SafetyTier(StrEnum):
    """Community safety tiers, from safest to least safe (order matters: see `rank`)."""

    SAFE = "safe"
    SENSITIVE = "sensitive"
    MATURE = "mature"
    NSFW = "nsfw"

    @property
    def rank(self) -> int:
        return list(SafetyTier).index(self)


# Age buckets with their inclusive [low, high] ages; a campaign's age range targets a user
# when the two ranges overlap. "unknown" never matches an age-targeted campaign.
AGE_BUCKETS: dict[str, tuple[int, int]] = {
    "13-17": (13, 17),
    "18-24": (18, 24),
    "25-34": (25, 34),
    "35-44": (35, 44),
    "45-54": (45, 54),
    "55-64": (55, 64),
    "65+": (65, 120),
}
UNKNOWN = "unknown"
AGE_BUCKET_VALUES: tuple[str, ...] = (*AGE_BUCKETS, UNKNOWN)


def values(enum_cls: type[StrEnum]) -> tuple[str, ...]:
    return tuple(e.value for e in enum_cls)
