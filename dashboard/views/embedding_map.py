"""Embedding map: the version's precomputed UMAP layout, coloured by a field or by the current
request's funnel outcome, with the query point, clicked ads and candidates highlighted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
import streamlit as st

from core.errors import AdLensError
from dashboard import state
from dashboard.charts import OUTCOME_COLORS, plain

# 48 distinct colours, so up to MAX_LEGEND groups (the demo has 36 verticals) never share one.
PALETTE = plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24
COLOR_BY = {"Vertical": "vertical", "Advertiser": "advertiser_name", "Campaign status": "status",
            "Funnel outcome (current request)": "outcome"}
MAX_LEGEND = 40


def _points(df: pd.DataFrame, name: str, color: str, size: float = 3.0, opacity: float = 0.6) -> go.Scattergl:
    """One legend group of ad points; hover shows id, title and advertiser (escaped: text, not HTML)."""
    name = plain(name)
    return go.Scattergl(
        x=df["x"], y=df["y"], mode="markers", name=name, customdata=df["ad_id"],
        text=plain(df["title"].fillna("")) + "<br>" + plain(df["advertiser_name"].fillna("—")),
        hovertemplate="%{customdata}<br>%{text}<extra>%{fullData.name}</extra>",
        marker=dict(size=size, color=color, opacity=opacity),
    )


def render() -> None:
    st.title("Embedding map")
    version = st.session_state["version"]
    ads, users = state.map_frames(version)
    if ads is None:
        st.warning(f"Version {version} has no map yet. Build it with `adlens map --version {version}` "
                   "(maps are computed once, never on a page load).")
        return
    state.sync_link()
    c1, c2, c3 = st.columns([2, 1, 1])
    color_by = c1.selectbox("Colour by", list(COLOR_BY), key="map_color")
    show_users = c2.toggle("User points", key="map_users")
    show_request = c3.toggle("Highlight current request", value=True, key="map_request")

    ads = ads.copy()
    trace = None
    if show_request or COLOR_BY[color_by] == "outcome":
        try:
            trace = state.engine(version).run(state.current_request(), state.current_params())
        except AdLensError as exc:
            st.error(str(exc))
            return
        out = trace.candidates.set_index("ad_id")
        ads["outcome"] = ads["ad_id"].map(out["outcome"]).fillna("not retrieved")
        ads.loc[ads["outcome"] == "filtered", "outcome"] = (
            "filtered: " + ads["ad_id"].map(out["primary_reason"]).astype(str))

    fig = go.Figure()
    field = COLOR_BY[color_by]
    if field == "outcome":
        groups = ads.groupby("outcome", sort=True)
        order = sorted(groups.groups, key=lambda g: (g == "not retrieved", g))
        for i, g in enumerate(order):
            base = g.split(":")[0]
            color = OUTCOME_COLORS.get(base, PALETTE[i % len(PALETTE)])
            if base == "filtered":
                color = PALETTE[i % len(PALETTE)]
            sub = groups.get_group(g)
            fig.add_trace(_points(sub, g, color, size=3 if g == "not retrieved" else 6,
                                  opacity=0.25 if g == "not retrieved" else 0.9))
    else:
        counts = ads[field].fillna("unknown").value_counts()
        top = list(counts.index[:MAX_LEGEND])
        label = ads[field].fillna("unknown").where(ads[field].fillna("unknown").isin(top), "other")
        for i, g in enumerate([*top, "other"]):
            sub = ads[label == g]
            if len(sub):
                fig.add_trace(_points(sub, g, PALETTE[i % len(PALETTE)] if g != "other" else "#cccccc",
                                      size=5 if len(ads) <= 20_000 else 3))  # small maps: bigger dots
    if show_users and len(users):
        fig.add_trace(go.Scattergl(x=users["x"], y=users["y"], mode="markers", name="users",
                                   text=plain(users["user_id"]), hovertemplate="%{text}<extra>user</extra>",
                                   marker=dict(size=4, color="#000000", symbol="x", opacity=0.4)))
    if trace is not None and show_request:
        placer = state.map_placer(version)
        q = placer.place(trace.query[None, :])[0] if placer is not None else None
        clicked = state.catalog().impressions
        mine = clicked[(clicked["user_id"] == trace.request.user_id) & clicked["clicked"].astype(bool)]
        cl = ads[ads["ad_id"].isin(set(mine["ad_id"]))]
        if len(cl):
            fig.add_trace(go.Scattergl(x=cl["x"], y=cl["y"], mode="markers", name="user's clicked ads",
                                       text=plain(cl["title"]), marker=dict(size=11, color="rgba(0,0,0,0)",
                                       line=dict(width=2, color="#000000"))))
        if q is not None and not np.isnan(q).any():
            fig.add_trace(go.Scattergl(x=[q[0]], y=[q[1]], mode="markers", name="request (query vector)",
                                       marker=dict(size=18, color="#FF4500", symbol="star",
                                                   line=dict(width=1, color="#000"))))
    fig.update_layout(height=680, margin=dict(l=0, r=0, t=10, b=0), dragmode="lasso",
                      legend=dict(itemsizing="constant"), xaxis=dict(visible=False), yaxis=dict(visible=False))
    event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("box", "lasso", "points"))
    st.caption(f"{len(ads):,} ads (UMAP fitted on a stratified sample, the rest placed by their neighbours). "
               "Box or lasso-select points to list them.")
    picked = []
    if event is not None and event.selection:
        picked = [p.get("customdata") for p in event.selection.get("points", []) if p.get("customdata")]
    if picked:
        sel = ads[ads["ad_id"].isin(set(picked))]
        st.subheader(f"{len(sel):,} selected ads")
        st.dataframe(sel[["ad_id", "title", "advertiser_name", "vertical", "status"]
                         + (["outcome"] if "outcome" in sel else [])], hide_index=True, key="map_selected")
