"""Read the database into pandas frames: the in-memory view every computation works on.

The funnel, the towers and the analytics never query SQL per request: they load a `Catalog`
once (the dashboard caches it) and work on its frames with vectorised numpy/pandas.

`load_catalog(..., snapshot_dir=DIR)` keeps the impression log (by far the biggest table: 329k
rows in the demo, 1.7 s of CPU to read from SQLite) as a Parquet snapshot in DIR, named by the
database and its `catalog_stamp` (table sizes and the data revision every changing import bumps),
so a cold dashboard reads it in ~0.15 s; a new stamp reads SQL again and replaces the snapshot. A
folder that cannot be written (a read-only workspace) only means no snapshot. Tests of the snapshot:
tests/test_caches.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from core.common.errors import ArtifactError
from core.store.artifacts import load_parquet, save_parquet, sha256_bytes
from core.store.db import redact_url
from core.store.models import Ad, Advertiser, Campaign, Community, ExtraValues, Impression, User

EXTRA_KEYS = {"ads": "ad_id", "campaigns": "campaign_id", "users": "user_id"}
"""Tables whose extra imported columns are kept (core.data.ingest_extra), with their keys."""

log = logging.getLogger(__name__)
SNAPSHOT_FORMAT = 1  # bump when the impressions frame changes shape (columns, dtypes, order)


def _frame(engine: Engine, model) -> pd.DataFrame:
    table = model.__table__
    names = [c.name for c in table.columns]
    with engine.connect() as conn:
        rows = conn.execute(select(table)).all()  # SQLAlchemy decodes JSON lists and datetimes
    # Column by column: pandas builds a frame from row objects ~3x slower (328k impressions: 1.7 s
    # of a cold dashboard's first view, against 0.6 s), with the same dtypes.
    return pd.DataFrame(dict(zip(names, zip(*rows))) if rows else {}, columns=names)


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


def load_catalog(engine: Engine, *, with_impressions: bool = True, snapshot_dir: Path | None = None,
                 stamp: str | None = None) -> Catalog:
    """Load every table; `ads` sorted by ad_id and joined with campaign and advertiser fields.
    With `snapshot_dir`, the impressions come from (or go to) its snapshot for `stamp` (default:
    `catalog_stamp(engine)`, read now)."""
    ads = _frame(engine, Ad)
    campaigns = _frame(engine, Campaign)
    advertisers = _frame(engine, Advertiser)
    adv = advertisers.rename(columns={"name": "advertiser_name", "vertical": "advertiser_vertical"})
    camp = campaigns.rename(columns={"name": "campaign_name"}).merge(adv, on="advertiser_id", how="left")
    joined = ads.merge(camp, on="campaign_id", how="left").sort_values("ad_id", kind="stable")
    joined = joined.reset_index(drop=True)
    if not with_impressions:
        impressions = _frame_empty(Impression)
    elif snapshot_dir is None:
        impressions = _impressions(engine)
    else:
        impressions = _snapshot_impressions(engine, Path(snapshot_dir), stamp or catalog_stamp(engine))
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


def _impressions(engine: Engine) -> pd.DataFrame:
    imps = _frame(engine, Impression)
    if len(imps):
        imps = imps.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    return imps


def snapshot_path(engine: Engine, snapshot_dir: Path, stamp: str) -> Path:
    """Where the impressions snapshot of this database at `stamp` lives."""
    key = sha256_bytes(f"{redact_url(str(engine.url))}|{stamp}|v{SNAPSHOT_FORMAT}".encode())[:20]
    return Path(snapshot_dir) / f"impressions-{key}.parquet"


def _snapshot_impressions(engine: Engine, snapshot_dir: Path, stamp: str) -> pd.DataFrame:
    path = snapshot_path(engine, snapshot_dir, stamp)
    if path.is_file():
        try:
            imps = load_parquet(path)
            if list(imps.columns) == [c.name for c in Impression.__table__.columns]:
                return imps
        except ArtifactError as exc:
            log.warning("ignoring the impressions snapshot: %s", exc)
    imps = _impressions(engine)
    if not len(imps):
        return imps  # nothing worth a snapshot (and an empty frame's dtypes would not survive it)
    try:
        save_parquet(path, imps)
        for old in Path(snapshot_dir).glob("impressions-*.parquet"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:  # e.g. a read-only workspace: served from SQL every time
        log.info("no impressions snapshot in %s: %s", snapshot_dir, exc)
    return imps


def catalog_stamp(engine: Engine) -> str:
    """Changes whenever an import changes data: table sizes plus the data revision that every
    changing import bumps (an edited title leaves the sizes alone). The key of cached catalogs."""
    counts = ",".join(f"{k}={v}" for k, v in table_counts(engine).items())
    return f"{counts},rev={data_revision(engine)}"


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
