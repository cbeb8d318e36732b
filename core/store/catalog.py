"""Read the database into pandas frames: the in-memory view every computation works on.

The funnel, the towers and the analytics never query SQL per request: they load a `Catalog`
once (the dashboard caches it) and work on its frames with vectorised numpy/pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from core.store.models import Ad, Advertiser, Campaign, Community, ExtraValues, Impression, User

EXTRA_KEYS = {"ads": "ad_id", "campaigns": "campaign_id", "users": "user_id"}
"""Tables whose extra imported columns are kept (core.data.ingest_extra), with their keys."""


def _frame(engine: Engine, model) -> pd.DataFrame:
    table = model.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table)).all()  # SQLAlchemy decodes JSON lists and datetimes
    return pd.DataFrame(rows, columns=[c.name for c in table.columns])


@dataclass
class Catalog:
    """All tables as frames. `ads` is joined with its campaign and advertiser (prefixed columns
    `campaign_*` are not used: campaign fields keep their names, advertiser fields are
    `advertiser_id`, `advertiser_name`, `brand_safety`); ads without a campaign have NaN there."""

    ads: pd.DataFrame
    campaigns: pd.DataFrame
    advertisers: pd.DataFrame
    users: pd.DataFrame
    communities: pd.DataFrame
    impressions: pd.DataFrame
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)  # table -> extra columns by key

    @property
    def n_ads(self) -> int:
        return len(self.ads)


def load_catalog(engine: Engine, *, with_impressions: bool = True) -> Catalog:
    """Load every table; `ads` sorted by ad_id and joined with campaign and advertiser fields."""
    ads = _frame(engine, Ad)
    campaigns = _frame(engine, Campaign)
    advertisers = _frame(engine, Advertiser)
    adv = advertisers.rename(columns={"name": "advertiser_name", "vertical": "advertiser_vertical"})
    camp = campaigns.rename(columns={"name": "campaign_name"}).merge(adv, on="advertiser_id", how="left")
    joined = ads.merge(camp, on="campaign_id", how="left").sort_values("ad_id", kind="stable")
    joined = joined.reset_index(drop=True)
    impressions = _frame(engine, Impression) if with_impressions else _frame_empty(Impression)
    if len(impressions):
        impressions = impressions.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    return Catalog(
        ads=joined,
        campaigns=campaigns,
        advertisers=advertisers,
        users=_frame(engine, User).sort_values("user_id").reset_index(drop=True),
        communities=_frame(engine, Community).sort_values("community_id").reset_index(drop=True),
        impressions=impressions,
        extra=load_extras(engine),
    )


def load_extras(engine: Engine) -> dict[str, pd.DataFrame]:
    """Per table, a frame of the extra columns a team imported, indexed by the table's key
    (core.data.ingest_extra writes them); tables without any are absent."""
    tbl = ExtraValues.__table__
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(tbl.c.table_name, tbl.c.row_id, tbl.c.data)).all()
    except (OperationalError, ProgrammingError):  # a database opened without creating the table
        return {}
    out: dict[str, pd.DataFrame] = {}
    for table, key in EXTRA_KEYS.items():
        recs = {r.row_id: r.data for r in rows if r.table_name == table and r.data}
        if recs:
            frame = pd.DataFrame.from_dict(recs, orient="index")
            frame.index.name = key
            out[table] = frame
    return out


def _frame_empty(model) -> pd.DataFrame:
    return pd.DataFrame(columns=[c.name for c in model.__table__.columns])


def table_counts(engine: Engine) -> dict[str, int]:
    """Row count of every data table."""
    from sqlalchemy import func

    out: dict[str, int] = {}
    with engine.connect() as conn:
        for model in (Advertiser, Campaign, Ad, Community, User, Impression):
            out[model.__tablename__] = conn.execute(select(func.count()).select_from(model)).scalar_one()
    return out


def bump_revision(conn) -> None:
    """Record, inside the caller's transaction, that the data changed."""
    from datetime import datetime, timezone

    from sqlalchemy import insert, update

    from core.store.models import DataRevision

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    res = conn.execute(update(DataRevision).where(DataRevision.id == 1)
                       .values(revision=DataRevision.revision + 1, updated_at=now))
    if res.rowcount == 0:
        conn.execute(insert(DataRevision).values(id=1, revision=1, updated_at=now))


def data_revision(engine: Engine) -> int:
    """How many committed imports changed data (0 for a database never written by ingest)."""
    from core.store.models import DataRevision

    with engine.connect() as conn:
        return int(conn.execute(select(DataRevision.revision).where(DataRevision.id == 1)).scalar() or 0)
