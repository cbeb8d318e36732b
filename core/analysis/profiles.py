"""User profile summaries for display: who is this user and what did they click recently."""

from __future__ import annotations

import pandas as pd

from core.store.catalog import Catalog


def user_summary(catalog: Catalog, user_id: str, n_recent: int = 5) -> dict:
    """Profile fields, subscribed communities, impression/click counts and the latest clicks."""
    users = catalog.users
    row = users[users["user_id"] == user_id]
    prof = row.iloc[0].to_dict() if len(row) else {"user_id": user_id, "country": "unknown",
                                                   "age_bucket": "unknown", "device": "unknown",
                                                   "communities": [], "signup_date": None}
    imps = catalog.impressions
    mine = imps[imps["user_id"] == user_id] if len(imps) else imps
    clicks = mine[mine["clicked"].astype(bool)] if len(mine) else mine
    recent = clicks.sort_values("ts", ascending=False).head(n_recent)
    ads = catalog.ads[catalog.ads["ad_id"].isin(set(recent["ad_id"]))].set_index("ad_id")
    recent_rows = [
        {"ts": pd.Timestamp(r.ts).isoformat(sep=" "), "ad_id": r.ad_id,
         "title": ads["title"].get(r.ad_id, ""), "vertical": ads["vertical"].get(r.ad_id, "")}
        for r in recent.itertuples()
    ]
    return {
        **{k: prof.get(k) for k in ("user_id", "country", "age_bucket", "device", "signup_date")},
        "communities": list(prof.get("communities") or []),
        "has_profile": bool(len(row)),
        "impressions": int(len(mine)), "clicks": int(len(clicks)),
        "recent_clicks": recent_rows,
    }
