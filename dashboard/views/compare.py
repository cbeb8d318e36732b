"""Compare: what changes if we ship version B instead of A — one request, and in aggregate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.analysis.compare import compare_versions, diff_traces
from core.analysis.sources import compare_sources_table
from core.common.escape import md
from core.funnel.rule_list import known_only
from dashboard import state
from dashboard.charts import bar_figure, plain

LIST_COLS = ["ann_rank", "ad_id", "title", "advertiser_name", "vertical", "outcome", "final_position"]


def default_b(names: list[str], a: str) -> str:
    """Version B before the user picks one: the newest version other than A (A itself when it is
    the only one)."""
    others = [n for n in names if n != a]
    return others[-1] if others else a


def _pick_versions() -> tuple[str, str]:
    """A is the sidebar's version; B is picked here."""
    names = state.version_names()
    ss = st.session_state
    a = ss["version"]
    if ss.get("version_b") not in names:
        ss["version_b"] = default_b(names, a)
    c1, c2 = st.columns(2)
    c1.markdown(f"**Version A** (baseline, from the sidebar): {md(a)}")
    c2.selectbox("Version B (candidate)", names, key="version_b")
    return a, ss["version_b"]


def _per_request(a: str, b: str) -> None:
    req, params = state.current_request(), state.current_params()
    ea, eb = state.engine(a), state.engine(b)
    # a rule switched off in the sidebar is off in each version whose funnel has it
    d = diff_traces(ea.run(req, known_only(params, ea.rule_infos)),
                    eb.run(req, known_only(params, eb.rule_infos)), eb)
    m = st.columns(5)
    m[0].metric("Overlap@K", f"{d.overlap:.2f}")
    m[1].metric("Jaccard", f"{d.jaccard:.2f}")
    m[2].metric("RBO", f"{d.rbo:.2f}")
    m[3].metric("Slate overlap", f"{d.slate_overlap:.2f}")
    m[4].metric("Gained / lost (slate)", f"{len(d.gained)} / {len(d.lost)}")
    sa, sb = set(d.trace_a.slate["ad_id"]), set(d.trace_b.slate["ad_id"])
    left, right = st.columns(2)
    for col, label, tr, mine, other, lost_word in ((left, f"A: {a}", d.trace_a, sa, sb, "lost in B"),
                                                    (right, f"B: {b}", d.trace_b, sb, sa, "gained in B")):
        with col:
            st.subheader(md(label))
            slate = tr.slate[LIST_COLS].copy()
            slate.insert(0, "change", np.where(slate["ad_id"].isin(other), "common", lost_word))
            st.dataframe(slate, hide_index=True, key=f"slate_{label[0]}")
            st.caption("Retrieved (top 100 by ANN rank)")
            ret = tr.candidates.sort_values("ann_rank")[LIST_COLS].head(100).copy()
            other_ret = set((d.trace_b if tr is d.trace_a else d.trace_a).candidates["ad_id"])
            ret.insert(0, "change", np.where(ret["ad_id"].isin(other_ret), "common",
                                             "only in " + label[0]))
            st.dataframe(ret, hide_index=True, key=f"ret_{label[0]}", height=300)
    st.subheader("Why each lost ad was lost in B")
    if len(d.lost):
        st.dataframe(d.lost, hide_index=True, key="lost_table")
    else:
        st.info("No slate ad was lost.")
    st.subheader("Rank shift of common candidates")
    if len(d.rank_shift):
        fig = go.Figure(go.Scattergl(x=d.rank_shift["rank_a"], y=d.rank_shift["rank_b"], mode="markers",
                                     text=plain(d.rank_shift["ad_id"]), marker=dict(size=5, color="#FF4500")))
        top = float(max(d.rank_shift["rank_a"].max(), d.rank_shift["rank_b"].max()))
        fig.add_trace(go.Scatter(x=[1, top], y=[1, top], mode="lines", line=dict(dash="dot", color="#999"),
                                 showlegend=False))
        fig.update_layout(xaxis_title=plain(f"ANN rank in A ({a})"), yaxis_title=plain(f"ANN rank in B ({b})"), height=380,
                          showlegend=False, margin=dict(l=10, r=10, t=10, b=10))
        st.plotly_chart(fig, key="shift_chart")


def _aggregate(a: str, b: str) -> None:
    ss = st.session_state
    c1, c2, c3 = st.columns([1, 1, 2])
    n = c1.number_input("Users sampled", 10, 5000, 100, step=50, key="cmp_users")
    seed = c2.number_input("Seed", 0, 10_000, 0, key="cmp_seed")
    key = (a, state.checksum(a), b, state.checksum(b), int(n), int(seed), str(state.current_params()))
    if c3.button("Run comparison", key="cmp_go", type="primary") or ss.get("cmp_key") == key:
        if ss.get("cmp_key") != key:
            bar = st.progress(0.0, text="Running both versions on the same requests…")
            ss["cmp_report"] = compare_versions(state.engine(a), state.engine(b), n_users=int(n), seed=int(seed),
                                                params=state.current_params(),
                                                progress=lambda f, step: bar.progress(f, text=step))
            ss["cmp_key"] = key
            bar.empty()
    rep = ss.get("cmp_report") if ss.get("cmp_key") == key else None
    if rep is None:
        st.info("Pick the sample size and press **Run comparison**.")
        return
    diff = getattr(rep, "differences", None) or {}
    if diff.get("changed"):  # e.g. two versions that differ only in their early ranker or funnel definition
        rk = diff.get("early_ranker") or {}
        st.caption(f"The versions differ in: {md(', '.join(diff['changed']))} · early ranker: A "
                   f"{md(rk.get('a', {}).get('describe', '?'))} · B {md(rk.get('b', {}).get('describe', '?'))}")
    s = rep.summary
    m = st.columns(5)
    for col, (label, k) in zip(m, [("Mean overlap@K", "overlap"), ("Mean Jaccard", "jaccard"),
                                    ("Mean RBO", "rbo"), ("Mean slate overlap", "slate_overlap"),
                                    ("Mean gained", "n_gained")]):
        col.metric(label, f"{(s.get(k) or {}).get('mean', float('nan')):.2f}")
    table = pd.DataFrame([
        {"metric": f"recall@{rep.k} vs own exact", "A": rep.recall_vs_exact["a"], "B": rep.recall_vs_exact["b"]},
        {"metric": f"recall@{rep.k} of held-out clicks", "A": rep.recall_vs_clicks["a"].get(f"recall@{rep.k}"),
         "B": rep.recall_vs_clicks["b"].get(f"recall@{rep.k}")},
        {"metric": "slate coverage of eligible ads", "A": rep.coverage["a"]["slate_coverage"],
         "B": rep.coverage["b"]["slate_coverage"]},
        {"metric": "Gini over ads", "A": rep.concentration["a"]["gini_ads"], "B": rep.concentration["b"]["gini_ads"]},
        {"metric": "Gini over advertisers", "A": rep.concentration["a"]["gini_advertisers"],
         "B": rep.concentration["b"]["gini_advertisers"]},
        {"metric": "latency p50 (ms)", "A": rep.latency_ms["a"]["p50"], "B": rep.latency_ms["b"]["p50"]},
        {"metric": "latency p99 (ms)", "A": rep.latency_ms["a"]["p99"], "B": rep.latency_ms["b"]["p99"]},
    ])
    c1, c2 = st.columns(2)
    c1.dataframe(table, hide_index=True, key="cmp_table")
    c2.dataframe(rep.stage_counts, hide_index=True, key="cmp_stages")
    st.subheader("Candidate sources")
    st.caption("Share of slate slots each source found, slate slots only it found, and its recall of "
               "held-out clicks (merged: any source).")
    st.dataframe(compare_sources_table(rep.sources), hide_index=True, key="cmp_sources")
    _funnel_rules(rep)
    c1, c2 = st.columns(2)
    with c1:
        st.subheader("Distribution of RBO and slate overlap")
        fig = go.Figure([go.Histogram(x=rep.per_request["rbo"], name="RBO", opacity=0.7, nbinsx=20),
                         go.Histogram(x=rep.per_request["slate_overlap"], name="slate overlap", opacity=0.7, nbinsx=20)])
        fig.update_layout(barmode="overlay", height=300, margin=dict(l=10, r=10, t=10, b=10))
        st.plotly_chart(fig, key="cmp_hist")
    with c2:
        st.subheader(f"Vertical mix shift (TV distance {rep.vertical_tvd:.3f})")
        mix = rep.vertical_mix.head(15)
        st.plotly_chart(bar_figure(list(mix["vertical"]), list(mix["delta"]), color="#1f77b4"), key="cmp_mix")
    st.caption(f"Slate ads lost in B by stage: {rep.lost_by_stage or 'none'} · catalog: "
               f"{rep.catalog_diff['only_in_a']} ads only in A, {rep.catalog_diff['only_in_b']} only in B")
    st.subheader("Most changed requests (select one to open it)")
    mc = rep.most_changed
    ev = st.dataframe(mc, hide_index=True, key="cmp_most_changed", on_select="rerun", selection_mode="single-row")
    if ev is not None and ev.selection.rows:
        row = mc.iloc[ev.selection.rows[0]]
        ss["user"] = row["user_id"]
        state.reset_context()
        ss["cmp_view"] = "One request"
        st.rerun()


def _funnel_rules(rep) -> None:
    """The funnel definitions' difference and, per differing rule, the share of slates it changed."""
    f = rep.funnels
    if not f or f.get("same"):
        return
    st.subheader("Funnel rules")
    side = {k: f[k]["source"] + (f" (sha256 {f[k]['sha256'][:12]}…)" if f[k]["sha256"] else "") for k in ("a", "b")}
    st.caption(md(f"The versions run different funnel definitions: A {side['a']}, B {side['b']}."))
    rows = ([{"change": "added in B", "code": r["code"], "stage": r["stage"], "kind": r["kind"],
              "rule": r["expr"] or r["plugin"] or "built-in"} for r in f["added"]]
            + [{"change": "removed in B", "code": r["code"], "stage": r["stage"], "kind": r["kind"],
                "rule": r["expr"] or r["plugin"] or "built-in"} for r in f["removed"]]
            + [{"change": "changed", "code": r["code"], "stage": r["b"]["stage"], "kind": r["b"]["kind"],
                "rule": r["what"]} for r in f["changed"]])
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="cmp_rules_diff",
                     column_config={"rule": st.column_config.TextColumn("rule", width="large")})
    for r in rep.rule_attribution:
        if r["removed_requests"] or r["restored_requests"]:
            st.markdown("- " + md(f"{r['sentence']} ({r['removed_requests']} / {r['restored_requests']} of "
                                  f"{r['requests']} requests lost / gained an ad)"))
    quiet = [r["code"] for r in rep.rule_attribution if not (r["removed_requests"] or r["restored_requests"])]
    if quiet:
        st.caption(md(f"Changed no compared slate: {', '.join(quiet)}"))
    if f.get("reordered"):
        st.caption("The rules both funnels have run in a different order, so a primary reason may move.")


def _moved_map(a: str, b: str) -> None:
    from core.index.maps import align_to

    ma, mb = state.map_data(a), state.map_data(b)
    if ma is None or mb is None:
        st.info("Both versions need a map (`adlens map --version V`).")
        return
    fa, fb = ma.ads, mb.ads
    moved = align_to(fa[["ad_id", "x", "y"]], fb[["ad_id", "x", "y"]]).merge(
        fa[["ad_id", "x", "y", "title"]], on="ad_id", suffixes=("_b", "_a"))
    moved["dist"] = np.hypot(moved["x_b"] - moved["x_a"], moved["y_b"] - moved["y_a"])
    top = moved.nlargest(300, "dist")
    xs, ys = [], []
    for r in top.itertuples():
        xs += [r.x_a, r.x_b, None]
        ys += [r.y_a, r.y_b, None]
    fig = go.Figure([
        go.Scattergl(x=ma.x, y=ma.y, mode="markers", name=plain(f"A: {a}"), marker=dict(size=2, color="#cccccc")),
        go.Scattergl(x=xs, y=ys, mode="lines", name="moved (top 300)", line=dict(width=1, color="#FF4500")),
        go.Scattergl(x=top["x_b"], y=top["y_b"], mode="markers", name=plain(f"B: {b}"), text=plain(top["title"].fillna("")),
                     marker=dict(size=5, color="#FF4500")),
    ])
    fig.update_layout(height=600, margin=dict(l=0, r=0, t=10, b=0), xaxis=dict(visible=False), yaxis=dict(visible=False))
    st.plotly_chart(fig, key="moved_map")
    st.caption("B's layout aligned onto A's (Procrustes on shared ads); lines join each ad's two positions.")


def render() -> None:
    st.title("Compare versions")
    a, b = _pick_versions()
    state.sync_link(b=b)
    st.session_state.setdefault("cmp_view", "One request")
    view = st.segmented_control("View", ["One request", "Aggregate", "Map movement"], key="cmp_view")
    if view == "Aggregate":
        _aggregate(a, b)
    elif view == "Map movement":
        _moved_map(a, b)
    else:
        _per_request(a, b)
