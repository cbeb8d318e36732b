"""Embedding map: the version's precomputed UMAP layout, coloured by a field or by the current
request's funnel outcome, with the query point, clicked ads and candidates highlighted. Above
AGGREGATE_ABOVE ads the layout is binned on the server (dashboard/density_map.py): a density
layer, a bounded sample of the view, and the request's points; box-select zooms and re-bins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
import streamlit as st

from core.common.escape import md as md_text
from core.index.map_density import AGGREGATE_ABOVE, MAX_BROWSER_POINTS
from dashboard import density_map, state
from dashboard.charts import OUTCOME_COLORS, plain

# 48 distinct colours, so up to MAX_LEGEND groups (the demo has 36 verticals) never share one.
PALETTE = plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24
COLOR_BY = {"Vertical": "vertical", "Advertiser": "advertiser_name", "Campaign status": "status",
            "Funnel outcome (current request)": "outcome"}
MAX_LEGEND = 40


def _points(md: state.MapData, idx: np.ndarray, name: str, kind=go.Scattergl, **marker):
    """One legend group of ad points (rows `idx` of the map) as a `kind` trace (WebGL, or SVG on the
    aggregated map); hover shows id, title and advertiser (escaped in MapData.hover; customdata is
    the raw id, for selections only)."""
    return kind(
        x=md.x[idx], y=md.y[idx], mode="markers", name=plain(name), customdata=md.ad_id[idx], text=md.hover[idx],
        hovertemplate="%{text}<extra>%{fullData.name}</extra>", marker=marker,
    )


def _groups(labels: pd.Series) -> dict[str, np.ndarray]:
    """Label -> row positions, in one pass over the map."""
    return {str(k): v for k, v in labels.groupby(labels.to_numpy(), sort=False).indices.items()}


def render() -> None:
    st.title("Embedding map")
    version = st.session_state["version"]
    md = state.map_data(version)
    if md is None:
        st.warning(md_text(f"Version {version} has no map yet. Build it with: adlens map --version {version} "
                           "(maps are computed once, never on a page load)."))
        return
    ads = md.ads  # shared by every session: read, never write
    state.sync_link()
    c1, c2, c3 = st.columns([2, 1, 1])
    color_by = c1.selectbox("Colour by", list(COLOR_BY), key="map_color")
    show_users = c2.toggle("User points", key="map_users")
    show_request = c3.toggle("Highlight current request", value=True, key="map_request")
    field = COLOR_BY[color_by]

    trace = outcome = None
    if show_request or field == "outcome":
        trace = state.engine(version).run(state.current_request(), state.current_params())
        r = trace.request
        st.caption(f"Request of user **{md_text(r.user_id)}** · {md_text(r.community_id or 'home feed')} · "
                   f"{md_text(r.placement)} · {r.ts:%Y-%m-%d %H:%M} UTC")

    if len(ads) > AGGREGATE_ABOVE:
        _render_aggregated(md, version, field, trace, show_request)
        if show_users:
            st.caption(f"User points are drawn on maps of up to {AGGREGATE_ABOVE:,} ads; this version has "
                       f"{len(ads):,}, so its map is aggregated: it shows the current request (query point, candidates, "
                       "clicked ads) instead of every user.")
        return
    if trace is not None:
        # map row -> outcome for every ad (a lookup over the whole catalog: small maps only)
        outcome = ads["ad_id"].map(_candidate_outcomes(trace)).fillna("not retrieved")
    fig = go.Figure()
    if field == "outcome":
        groups = _groups(outcome)
        order = sorted(groups, key=lambda g: (g == "not retrieved", g))
        for i, g in enumerate(order):
            base = g.split(":")[0]
            # one colour per filter reason; the other outcomes keep their fixed colours
            color = PALETTE[i % len(PALETTE)] if base == "filtered" else OUTCOME_COLORS.get(base, "#7f7f7f")
            fig.add_trace(_points(md, groups[g], g, color=color, size=3 if g == "not retrieved" else 6,
                                  opacity=0.25 if g == "not retrieved" else 0.9))
    else:
        values = ads[field].fillna("unknown")
        top = list(values.value_counts().index[:MAX_LEGEND])
        groups = _groups(values.where(values.isin(top), "other"))
        for i, g in enumerate([*top, "other"]):
            if g in groups:
                fig.add_trace(_points(md, groups[g], g, color=PALETTE[i % len(PALETTE)] if g != "other" else "#cccccc",
                                      size=5 if len(ads) <= 20_000 else 3, opacity=0.6))  # small maps: bigger dots
    if show_users and len(md.users):
        users = md.users
        fig.add_trace(go.Scattergl(x=users["x"], y=users["y"], mode="markers", name="users",
                                   text=plain(users["user_id"]), hovertemplate="%{text}<extra>user</extra>",
                                   marker=dict(size=4, color="#000000", symbol="x", opacity=0.4)))
    if trace is not None and show_request:
        _request_layers(fig, md, version, trace, outlined_candidates=field != "outcome")
    # uirevision: zoom, pan and hidden legend groups survive reruns (another user, another colouring).
    fig.update_layout(height=680, margin=dict(l=0, r=0, t=10, b=0), dragmode="lasso", uirevision=version,
                      legend=dict(itemsizing="constant"), xaxis=dict(visible=False), yaxis=dict(visible=False))
    event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("box", "lasso", "points"))
    st.caption(f"{len(ads):,} ads (UMAP fitted on a stratified sample, the rest placed by their neighbours). "
               "Box or lasso-select points to list them.")
    picked = []
    if event is not None and event.selection:
        picked = [p.get("customdata") for p in event.selection.get("points", []) if p.get("customdata")]
    if picked:
        mask = ads["ad_id"].isin(set(picked))
        sel = ads.loc[mask, ["ad_id", "title", "advertiser_name", "vertical", "status"]]
        if outcome is not None:
            sel = sel.assign(outcome=outcome[mask])
        st.subheader(f"{len(sel):,} selected ads")
        st.dataframe(sel, hide_index=True, key="map_selected")


def _candidate_outcomes(trace) -> pd.Series:
    """ad_id -> the request's outcome for each candidate ("filtered: <reason>" for filtered ones)."""
    cand = trace.candidates
    label = np.where(cand["outcome"] == "filtered", "filtered: " + cand["primary_reason"].astype(str),
                     cand["outcome"].astype(str))
    return pd.Series(label, index=cand["ad_id"].to_numpy())


def _render_aggregated(md: state.MapData, version: str, field: str, trace, show_request: bool) -> None:
    """Large versions: density + viewport sample + the request's points, never more than
    MAX_BROWSER_POINTS points. The viewport lives in session state per version."""
    key = f"map_viewport:{version}"
    if st.button("Reset zoom", key="map_reset"):
        st.session_state.pop(key, None)
    viewport = st.session_state.get(key)
    density_field = field if field != "outcome" else "vertical"  # outcomes are drawn as the request's points
    layers = []
    if trace is not None and field == "outcome":  # the candidates themselves, coloured by outcome
        outcomes = _candidate_outcomes(trace)
        where = md.rows.get_indexer(outcomes.index)  # map rows of the candidates only, not the catalog
        retrieved = pd.Series(outcomes.to_numpy()[where >= 0], index=where[where >= 0])
        for i, (g, rows) in enumerate(sorted(_groups(retrieved).items())):
            color = PALETTE[i % len(PALETTE)] if g.startswith("filtered") else OUTCOME_COLORS.get(g, "#7f7f7f")
            layers.append((g, retrieved.index.to_numpy()[rows], dict(size=7, color=color, opacity=0.9)))
    if trace is not None and show_request:
        layers += _request_layer_specs(md, trace, outlined_candidates=field != "outcome")
    room, bounded = MAX_BROWSER_POINTS - 1, []  # 1: the query point
    for name, idx, marker in layers:
        if len(idx[:room]):
            bounded.append((name, idx[:room], marker))
        room -= len(idx[:room])
    layers = bounded
    n_req = sum(len(idx) for _, idx, _ in layers) + 1
    d, text = state.map_density(version, density_field, MAX_LEGEND, viewport, density_map.sample_size(n_req))
    fig = density_map.density_figure(md, d, text, density_field)
    for name, idx, marker in layers:  # SVG: see MAX_BROWSER_POINTS
        fig.add_trace(_points(md, idx, name, kind=go.Scatter, **marker).update(legendrank=1))
    if trace is not None and (show_request or field == "outcome"):
        _query_point(fig, version, trace, kind=go.Scatter)
    fig.update_layout(height=680, margin=dict(l=0, r=0, t=10, b=0), dragmode="select",
                      uirevision=f"{version}:{d.viewport}", legend=dict(itemsizing="constant"),
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("box", "points"))
    st.caption(density_map.caption(d, density_field, n_req))
    box = density_map.box_of(event.selection if event is not None else None)
    if box is not None and box != st.session_state.get(key):
        st.session_state[key] = box
        st.rerun()


def _request_layer_specs(md: state.MapData, trace, outlined_candidates: bool) -> list[tuple[str, np.ndarray, dict]]:
    """(name, map rows, marker) of the request's layers, at most MAX_BROWSER_POINTS points in all."""
    cand = trace.candidates
    specs = []
    if outlined_candidates:
        specs += [("retrieved candidates", cand["ad_id"],
                   dict(size=9, color="rgba(0,0,0,0)", line=dict(width=1, color="rgba(0,0,0,0.55)"))),
                  ("slate", cand.loc[cand["outcome"] == "slate", "ad_id"],
                   dict(size=12, color=OUTCOME_COLORS["slate"], symbol="diamond", line=dict(width=1, color="#000")))]
    specs.append(("user's clicked ads", state.user_clicked_ads(trace.request.user_id),
                  dict(size=11, color="rgba(0,0,0,0)", line=dict(width=2, color="#000000"))))
    out, room = [], MAX_BROWSER_POINTS - 1
    for name, ids, marker in specs:
        idx = md.rows.get_indexer(ids)
        idx = idx[idx >= 0][:room]
        room -= len(idx)
        if len(idx):
            out.append((name, idx, marker))
    return out


def _query_point(fig: go.Figure, version: str, trace, kind=go.Scattergl) -> None:
    placer = state.map_placer(version)
    q = placer.place(trace.query[None, :])[0] if placer is not None else None
    if q is not None and not np.isnan(q).any():
        fig.add_trace(kind(x=[q[0]], y=[q[1]], mode="markers", name="request (query vector)", legendrank=1,
                                   marker=dict(size=18, color="#FF4500", symbol="star",
                                               line=dict(width=1, color="#000"))))


def _request_layers(fig: go.Figure, md: state.MapData, version: str, trace, outlined_candidates: bool) -> None:
    """The request on top of the map: its retrieved candidates and slate (unless the map is
    already coloured by outcome), the user's clicked ads and the query vector's placement."""
    for name, idx, marker in _request_layer_specs(md, trace, outlined_candidates):
        # legendrank: the request's layers head a legend that may scroll
        fig.add_trace(_points(md, idx, name, **marker).update(legendrank=1))
    _query_point(fig, version, trace)
