"""The import format: one file per table, its columns, types, defaults and allowed values.

This is the single source of truth for ingest validation and for the tables in data/README.md
(`python -m core.data.schema` prints them). tests/test_schema.py checks it matches core/models.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from core.data.vocab import (
    AGE_BUCKET_VALUES,
    BidType,
    CampaignStatus,
    Device,
    Placement,
    PolicyStatus,
    SafetyTier,
    values,
)

ColumnType = Literal["id", "str", "text", "float", "int", "bool", "datetime", "date", "list"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = False
    default: Any = None
    allowed: tuple[str, ...] | None = None
    references: str | None = None  # "table.column"
    example: str = ""
    doc: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    key: str
    required: bool
    columns: tuple[Column, ...]
    doc: str = ""
    # Order of columns as written by `adlens demo`; equals `columns` order.
    extra: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


ADVERTISERS = Table(
    "advertisers",
    key="advertiser_id",
    required=False,
    doc="Who pays. Optional: campaigns naming an advertiser missing from this file get a bare "
    "advertiser (name = id, defaults below) only when the file itself is absent.",
    columns=(
        Column("advertiser_id", "id", required=True, example="adv_0042"),
        Column("name", "str", default="<advertiser_id>", example="Northwind Travel"),
        Column("vertical", "str", default="unknown", example="travel"),
        Column(
            "brand_safety", "str", default="nsfw", allowed=values(SafetyTier), example="sensitive",
            doc="Least safe community tier the advertiser accepts (safe < sensitive < mature < nsfw).",
        ),
    ),
)

CAMPAIGNS = Table(
    "campaigns",
    key="campaign_id",
    required=False,
    doc="Budgets, bids and targeting. Optional: an ad without a campaign is always eligible "
    "except for its own policy status.",
    columns=(
        Column("campaign_id", "id", required=True, example="cmp_00042_1"),
        Column("advertiser_id", "id", required=True, references="advertisers.advertiser_id", example="adv_0042"),
        Column("name", "str", default="", example="Summer sale"),
        Column("status", "str", default="active", allowed=values(CampaignStatus), example="active"),
        Column("start_ts", "datetime", default=None, example="2026-10-01T00:00:00", doc="Empty: no start limit."),
        Column("end_ts", "datetime", default=None, example="2026-12-31T23:59:59", doc="Empty: no end limit."),
        Column("daily_budget", "float", default=None, example="500.0", doc="Empty: unlimited."),
        Column("spend_today", "float", default=0.0, example="123.4"),
        Column("bid", "float", default=1.0, example="2.5", doc="Price per 1000 impressions (cpm) or per click (cpc)."),
        Column("bid_type", "str", default="cpm", allowed=values(BidType), example="cpc"),
        Column("frequency_cap", "int", default=None, example="3", doc="Impressions per user per 24 h; empty: none."),
        Column("target_countries", "list", default=[], example="US|CA", doc="Empty: all countries."),
        Column("age_min", "int", default=None, example="18"),
        Column("age_max", "int", default=None, example="34"),
        Column("target_devices", "list", default=[], example="ios|android", doc="Empty: all devices."),
        Column("include_communities", "list", default=[], example="c_hiking|c_travel", doc="Empty: any community."),
        Column("exclude_communities", "list", default=[], example="c_politics"),
    ),
)

ADS = Table(
    "ads",
    key="ad_id",
    required=True,
    doc="The catalog. Re-importing a changed catalog updates rows in place (ads keep their ids).",
    columns=(
        Column("ad_id", "id", required=True, example="ad_000123"),
        Column("campaign_id", "id", default=None, references="campaigns.campaign_id", example="cmp_00042_1"),
        Column("title", "text", required=True, example="Fly to Lisbon from $49"),
        Column("body", "text", default="", example="Book by Friday and save on spring fares."),
        Column("call_to_action", "str", default="", example="Book now"),
        Column("landing_domain", "str", default="", example="northwind.example"),
        Column("vertical", "str", default="unknown", example="travel"),
        Column("policy_status", "str", default="approved", allowed=values(PolicyStatus), example="approved"),
    ),
)

COMMUNITIES = Table(
    "communities",
    key="community_id",
    required=False,
    doc="Where ads are shown (subreddit-like).",
    columns=(
        Column("community_id", "id", required=True, example="c_hiking"),
        Column("name", "str", default="<community_id>", example="r/hiking"),
        Column("topic", "str", default="unknown", example="outdoors"),
        Column("safety_tier", "str", default="safe", allowed=values(SafetyTier), example="safe"),
    ),
)

USERS = Table(
    "users",
    key="user_id",
    required=False,
    doc="Profiles. Optional: a user seen only in impressions has unknown features.",
    columns=(
        Column("user_id", "id", required=True, example="u_004711"),
        Column("country", "str", default="unknown", example="US"),
        Column("age_bucket", "str", default="unknown", allowed=AGE_BUCKET_VALUES, example="25-34"),
        Column("device", "str", default="unknown", allowed=(*values(Device), "unknown"), example="ios"),
        Column("communities", "list", default=[], example="c_hiking|c_cooking"),
        Column("signup_date", "date", default=None, example="2024-05-17"),
    ),
)

IMPRESSIONS = Table(
    "impressions",
    key="impression_id",
    required=True,
    doc="Logged impressions; clicks are the training positives.",
    columns=(
        Column(
            "impression_id", "id", default="<hash of the row>", example="imp_0000001",
            doc="Empty: derived from (user_id, ad_id, ts, community_id, placement), so re-imports are idempotent.",
        ),
        Column("user_id", "id", required=True, references="users.user_id", example="u_004711"),
        Column("ad_id", "id", required=True, references="ads.ad_id", example="ad_000123"),
        Column("ts", "datetime", required=True, example="2026-10-14T18:03:00", doc="UTC."),
        Column("community_id", "id", default=None, references="communities.community_id", example="c_hiking"),
        Column("placement", "str", default="home_feed", allowed=values(Placement), example="community_feed"),
        Column("device", "str", default="unknown", allowed=(*values(Device), "unknown"), example="android"),
        Column("clicked", "bool", default=False, example="true"),
    ),
)

# Import order: referenced tables before the tables that reference them.
TABLES: tuple[Table, ...] = (ADVERTISERS, CAMPAIGNS, ADS, COMMUNITIES, USERS, IMPRESSIONS)
TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
LIST_SEPARATOR = "|"


def render_markdown(tables: tuple[Table, ...] = TABLES) -> str:
    """The schema as Markdown tables (pasted into data/README.md); `tables` defaults to the
    ingest format (core/traces/schema.py renders the trace format with it too)."""
    out: list[str] = []
    for t in tables:
        req = "required" if t.required else "optional"
        out.append(f"### `{t.name}` ({req}; key `{t.key}`)\n\n{t.doc}\n")
        out.append("| column | type | required | default | allowed / references | example | notes |")
        out.append("|---|---|---|---|---|---|---|")
        for c in t.columns:
            allowed = ", ".join(c.allowed) if c.allowed else (f"→ `{c.references}`" if c.references else "")
            default = "" if c.required else ("empty" if c.default in (None, []) else f"`{c.default}`")
            out.append(
                f"| `{c.name}` | {c.type} | {'yes' if c.required else 'no'} | {default} | {allowed} "
                f"| `{c.example}` | {c.doc} |"
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render_markdown())
