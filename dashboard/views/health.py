"""Health: a version's manifest, recall-vs-effort curve, IVF balance, dead and hub ads, funnel rules,
tower metrics."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core.common.escape import md
from core.index.manifest import Manifest
from core.index.versions import describe_sides
from core.traces.report_cache import HEALTH_K, HEALTH_REQUESTS
from dashboard import state


def _manifest(m: Manifest) -> None:
    cols = st.columns(4)
    cols[0].metric("Ads", f"{m.n_ads:,}")
    cols[1].metric("Index", md(m.factory))  # metric values are markdown
    cols[2].metric("Bytes per ad", f"{m.bytes_per_ad or 0:,.0f}")
    sides = describe_sides(m)
    cols[3].metric("Query side", md(sides["query"]))
    st.text(f"Ads: {sides['ads']} · metric {sides['metric']}  (fingerprint {m.fingerprint[:16]})")
    st.text(f"Search params: {m.search_params} · parent: {m.parent or '—'} · created {m.created_at}")
    if m.recall:
        st.text("Recall vs exact at build time: " + ", ".join(f"{k} {v:.3f}" for k, v in m.recall.items()
                                                            if isinstance(v, (int, float))))
    with st.expander("Build timings"):
        st.json(m.timings)
    with st.expander("Files and sha256 checksums"):
        st.dataframe(pd.DataFrame([{"file": f, "sha256": h} for f, h in m.files.items()]),
                     hide_index=True, key="files_table")


def _tower(m: Manifest) -> None:
    ev = m.tower_metrics
    if not ev:
        st.info(f"This version has no AdLens-trained tower (query side: {md(describe_sides(m)['query'])}): "
                "no tower evaluation.")
        return
    split = ev.get("split") or {}
    st.caption(f"{ev.get('n_test_clicks', 0):,} held-out clicks from {ev.get('n_test_users', 0):,} users, "
               f"{split.get('kind', '?')} split; every ad ranked exactly. Baselines computed the same way.")
    st.dataframe(pd.DataFrame(ev.get("models") or {}).T, key="tower_overall")
    seg = ev.get("segments") or []
    if seg:
        rows = [{"by": s_["by"], "value": s_["value"], "clicks": s_.get("n_clicks"),
                 **{f"{model} {metric}": v for model, vals in (s_.get("models") or {}).items()
                    for metric, v in vals.items() if metric.startswith("recall@")}} for s_ in seg]
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="tower_segments")


def _shards(sh: dict) -> None:
    st.subheader(f"Shards: {sh['n']} served by the {sh['backend']} backend")
    rows = pd.DataFrame(sh["rows"])
    cols = st.columns(3)
    cols[0].metric("Balance (largest / mean shard)", f"{sh['balance']:.2f}")
    if rows["p50_ms"].notna().any():
        cols[1].metric("Slowest shard p50", f"{rows['p50_ms'].max():.2f} ms")
    cols[2].metric("Index bytes", f"{rows['bytes'].sum() / 2**20:,.1f} MiB")
    st.caption("Per-shard latency is measured through the serving backend (with Ray: until that shard's "
               "answer arrived); result share = the shard's part of the sampled requests' top-k.")
    st.dataframe(rows, hide_index=True, key="shard_table")


def render() -> None:
    st.title("Index health")
    names = state.version_names()
    ss = st.session_state
    if ss.get("health_version") not in names:
        ss["health_version"] = ss.get("version") if ss.get("version") in names else names[-1]
    c1, c2, c3 = st.columns([2, 1, 1])
    name = c1.selectbox("Version", names, key="health_version")
    n = c2.number_input("Sampled requests", 20, 2000, HEALTH_REQUESTS, step=20, key="health_n")
    k = c3.number_input("Recall@k", 1, 1000, HEALTH_K, step=10, key="health_k")
    st.query_params.from_dict({"version": name})
    eng = state.engine(name)
    _manifest(eng.version.manifest)
    bars = []  # created on the first progress report: a cached report shows no bar

    def progress(fraction: float, what: str) -> None:
        if not bars:
            bars.append(st.progress(0.0))
        bars[0].progress(fraction, text=f"{what}…")

    rep = state.health_report(name, int(n), int(k), progress=progress)
    for bar in bars:
        bar.empty()

    st.subheader(f"Recall@{rep.k} vs exact, and latency, on {rep.n_requests} sampled requests")
    curve = rep.curve
    if len(curve) and curve["param"].iloc[0] != "exact":
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        fig.add_trace(go.Scatter(x=curve["value"], y=curve["recall_at_k"], name="recall", mode="lines+markers"))
        fig.add_trace(go.Scatter(x=curve["value"], y=curve["p50_ms"], name="p50 ms", mode="lines+markers",
                                 line=dict(dash="dot")), secondary_y=True)
        fig.update_xaxes(type="log", title=curve["param"].iloc[0], tickvals=list(curve["value"]))
        fig.update_yaxes(title_text="recall", range=[0, 1.02], secondary_y=False)
        fig.update_yaxes(title_text="ms per query", secondary_y=True)
        fig.update_layout(height=350, margin=dict(l=10, r=10, t=10, b=10))
        st.plotly_chart(fig, key="recall_curve")
    st.dataframe(curve, hide_index=True, key="curve_table")

    if rep.ivf_lists:
        L = rep.ivf_lists
        st.subheader("IVF inverted lists")
        cols = st.columns(4)
        cols[0].metric("nlist", L["nlist"])
        cols[1].metric("Imbalance factor", f"{L['imbalance_factor']:.2f}")
        cols[2].metric("Empty lists", L["empty_lists"])
        cols[3].metric("Largest list", L["max_size"])
        fig = go.Figure(go.Histogram(x=L["sizes"], nbinsx=40, marker_color="#1f77b4"))
        fig.update_layout(height=260, xaxis_title="list size (ads)", yaxis_title="lists",
                          margin=dict(l=10, r=10, t=10, b=10))
        st.plotly_chart(fig, key="ivf_hist")

    if rep.shards:
        _shards(rep.shards)

    c1, c2 = st.columns(2)
    with c1:
        st.subheader(f"Dead ads: {len(rep.dead_ads):,}")
        st.caption("Never retrieved for any sampled request.")
        if len(rep.dead_ads):
            st.dataframe(rep.dead_by_vertical, hide_index=True, key="dead_vertical")
            st.dataframe(rep.dead_ads.head(500), hide_index=True, key="dead_table")
    with c2:
        st.subheader(f"Hub ads: {len(rep.hub_ads):,}")
        st.caption("Retrieved for ≥ 10× the average share of requests.")
        if len(rep.hub_ads):
            st.dataframe(rep.hub_ads, hide_index=True, key="hub_table")
    if rep.sources:
        st.subheader("Candidate sources: coverage and dead ads")
        st.caption("Ads each source can ever return, and ads it returned for none of the sampled requests.")
        st.dataframe(pd.DataFrame([{"source": n, **c} for n, c in rep.sources.items()]), hide_index=True,
                     key="source_coverage")
    if rep.rules:
        _rules(rep.rules)
    st.subheader("Tower evaluation")
    _tower(eng.version.manifest)


def _rules(rules: dict) -> None:
    """Per rule of the version's funnel: how often it fails candidates, flagged when it never
    fires or fires on every candidate (core.analysis.rule_health)."""
    st.subheader("Funnel rules")
    st.caption(f"On {rules['n_requests']:,} sampled users in their usual contexts "
               f"({rules['candidates']:,} candidates): "
               "the share of the candidates each rule sees (ranking-stage rules: those that passed eligibility) "
               "that it fails, and that it is the primary reason for.")
    frame = pd.DataFrame(rules["rules"])
    for r in frame[frame["flag"].notna()].itertuples():
        st.warning(md(f"{r.code} ({r.kind}, {r.stage}) {r.flag}"))
    st.dataframe(frame, hide_index=True, key="rules_health",
                 column_config={"fail_share": st.column_config.NumberColumn("fails", format="percent"),
                                "primary_share": st.column_config.NumberColumn("primary reason", format="percent"),
                                "description": st.column_config.TextColumn("description", width="large")})
