"""The AdLens data model (SQLAlchemy 2.0). Column meanings and defaults: data/README.md.

Ids are strings (real datasets mix numeric and textual ids). Timestamps are naive UTC.
List-valued fields (targeting, subscriptions) are JSON arrays; an empty list means "no
restriction" for targeting.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Advertiser(Base):
    __tablename__ = "advertisers"

    advertiser_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    vertical: Mapped[str] = mapped_column(String(64), default="unknown")
    # Least safe community tier the advertiser accepts (safe < sensitive < mature < nsfw).
    brand_safety: Mapped[str] = mapped_column(String(16), default="nsfw")


class Campaign(Base):
    __tablename__ = "campaigns"

    campaign_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    advertiser_id: Mapped[str] = mapped_column(ForeignKey("advertisers.advertiser_id"), index=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    start_ts: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    end_ts: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    daily_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    spend_today: Mapped[float] = mapped_column(Float, default=0.0)
    bid: Mapped[float] = mapped_column(Float, default=1.0)
    bid_type: Mapped[str] = mapped_column(String(8), default="cpm")
    frequency_cap: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target_countries: Mapped[list[str]] = mapped_column(JSON, default=list)
    age_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    age_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target_devices: Mapped[list[str]] = mapped_column(JSON, default=list)
    include_communities: Mapped[list[str]] = mapped_column(JSON, default=list)
    exclude_communities: Mapped[list[str]] = mapped_column(JSON, default=list)


class Ad(Base):
    __tablename__ = "ads"

    ad_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    campaign_id: Mapped[str | None] = mapped_column(
        ForeignKey("campaigns.campaign_id"), nullable=True, index=True
    )
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, default="")
    call_to_action: Mapped[str] = mapped_column(String(128), default="")
    landing_domain: Mapped[str] = mapped_column(String(256), default="")
    vertical: Mapped[str] = mapped_column(String(64), default="unknown")
    policy_status: Mapped[str] = mapped_column(String(16), default="approved")


class Community(Base):
    __tablename__ = "communities"

    community_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    topic: Mapped[str] = mapped_column(String(64), default="unknown")
    safety_tier: Mapped[str] = mapped_column(String(16), default="safe")


class User(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    country: Mapped[str] = mapped_column(String(8), default="unknown")
    age_bucket: Mapped[str] = mapped_column(String(16), default="unknown")
    device: Mapped[str] = mapped_column(String(16), default="unknown")
    communities: Mapped[list[str]] = mapped_column(JSON, default=list)
    signup_date: Mapped[date | None] = mapped_column(Date, nullable=True)


class Impression(Base):
    __tablename__ = "impressions"
    __table_args__ = (Index("ix_impressions_user_ts", "user_id", "ts"),)

    impression_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"))
    ad_id: Mapped[str] = mapped_column(ForeignKey("ads.ad_id"), index=True)
    ts: Mapped[datetime] = mapped_column(DateTime)
    community_id: Mapped[str | None] = mapped_column(
        ForeignKey("communities.community_id"), nullable=True
    )
    placement: Mapped[str] = mapped_column(String(32), default="home_feed")
    device: Mapped[str] = mapped_column(String(16), default="unknown")
    clicked: Mapped[bool] = mapped_column(Boolean, default=False)


class Tower(Base):
    """A trained user tower registered after its directory is complete."""

    __tablename__ = "towers"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    path: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IndexVersion(Base):
    """An immutable index version, registered only after its directory is renamed into place."""

    __tablename__ = "index_versions"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    parent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tower: Mapped[str | None] = mapped_column(String(128), nullable=True)
    factory: Mapped[str] = mapped_column(String(256))
    embedding_model: Mapped[str] = mapped_column(Text)
    model_fingerprint: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    n_ads: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TraceSet(Base):
    """One import of logged traces (core/traces), registered after its folder is in place."""

    __tablename__ = "trace_sets"

    set_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    path: Mapped[str] = mapped_column(Text)  # relative to the workspace
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the stored content
    n_requests: Mapped[int] = mapped_column(Integer)
    n_candidates: Mapped[int] = mapped_column(BigInteger)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LoggedRequest(Base):
    """A logged request and where its candidates lie: rows row_offset .. row_offset+n_candidates-1
    of its trace set's candidates file (stored columnar, not one SQL row per candidate)."""

    __tablename__ = "logged_requests"
    __table_args__ = (Index("ix_logged_requests_user_ts", "user_id", "ts"),)

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))  # not a foreign key: the catalog may lack the user
    ts: Mapped[datetime] = mapped_column(DateTime, index=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # community_id, placement, ..., extra
    set_id: Mapped[str] = mapped_column(ForeignKey("trace_sets.set_id"), index=True)
    row_offset: Mapped[int] = mapped_column(BigInteger)
    n_candidates: Mapped[int] = mapped_column(Integer)


class DataRevision(Base):
    """One row counting committed imports that changed data, so caches (the dashboard's catalog)
    notice updates that leave every table's row count unchanged (e.g. an edited ad title)."""

    __tablename__ = "data_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ExtraValues(Base):
    """Columns a team imported on ads, campaigns and users beyond the format (core.data.ingest_extra):
    one JSON object per row, read by funnel-definition rules as `ad.<column>` etc."""

    __tablename__ = "extra_values"

    table_name: Mapped[str] = mapped_column(String(32), primary_key=True)
    row_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
