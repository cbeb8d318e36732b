"""Inspect: what did this user get in this context, and why? (one request's funnel)"""

from __future__ import annotations

import streamlit as st

from core.common.escape import md
from core.funnel.reasons import Stage
from core.funnel.rule_list import reason_breakdown, rules_off_note
from core.funnel.trace import describe_query_source
from dashboard import state
from dashboard.charts import REASON_STAGE_COLORS, bar_figure, funnel_by_source_figure, funnel_figure
from dashboard.views import logged

SHOWN = ["final_position", "ad_id", "title", "advertiser_name", "vertical", "sources", "score", "ann_rank",
         "exact_rank", "pctr", "ecpm", "rank_position", "outcome", "primary_reason", "failed_reasons"]
COLUMN_CONFIG = {
    "final_position": st.column_config.NumberColumn("slate #", width="small"),
    "score": st.column_config.NumberColumn("score", format="%.4f"),
    "pctr": st.column_config.NumberColumn("pCTR", format="%.4f"),
    "ecpm": st.column_config.NumberColumn("eCPM", format="%.3f"),
    "ann_rank": st.column_config.NumberColumn("ANN rank"),
    "exact_rank": st.column_config.NumberColumn("exact rank"),
    "rank_position": st.column_config.NumberColumn("eCPM rank"),
    "failed_reasons": st.column_config.ListColumn("every failed rule"),
    "sources": st.column_config.ListColumn("found by"),
    "title": st.column_config.TextColumn("title", width="large"),
    "ranker_score": st.column_config.NumberColumn("your ranker", format="%.4f"),
    "ranker_inputs": st.column_config.TextColumn("your ranker's inputs", width="large"),
}


def run_trace():
    """The current request's Trace (an AdLensError is shown by the router in place of the page)."""
    return state.engine(st.session_state["version"]).run(state.current_request(), state.current_params())


def render() -> None:
    st.title("Inspect")  # first: drawn while a cold server loads the version
    if logged.mode_switch() == logged.LOGGED:  # a logged request beside its replay
        logged.render()
        return
    trace = run_trace()
    state.sync_link()
    r = trace.request
    st.caption(f"Version **{md(trace.version_name)}** · user **{md(r.user_id)}** · "
               f"{md(r.community_id or 'home feed')} · {md(r.placement)} · {md(r.device)} · {md(r.country)} · "
               f"{r.ts:%Y-%m-%d %H:%M} UTC")
    if trace.params.disabled_rules:  # the sidebar's what-if
        st.info(md(rules_off_note(trace.params.disabled_rules)))
    if describe_query_source(trace.query_source):  # imported request vectors: which row was used
        st.text(describe_query_source(trace.query_source))
    counts = trace.stage_counts
    cols = st.columns(len(Stage))
    for col, s in zip(cols, Stage):
        col.metric(s.value.capitalize(), f"{int(counts.get(s, 0)):,}")

    left, right = st.columns([1, 1])
    with left:
        st.subheader("Funnel")
        by_source = st.toggle("Split by candidate source", key="funnel_split", value=len(trace.source_names) > 1)
        if by_source:
            ran = {n: c for n, c in trace.source_counts().items() if n in trace.sources_ran}
            st.plotly_chart(funnel_by_source_figure(ran), key="funnel_source_chart")
            st.caption(f"Each source's bar counts every candidate it found, so an ad several sources found is "
                       f"counted once per source ({sum(c['retrieved'] for c in ran.values()):,} finds in all); the "
                       f"union above holds {int(counts.get(Stage.RETRIEVED, 0)):,} distinct ads.")
        else:
            st.plotly_chart(funnel_figure(counts), key="funnel_chart")
    with right:
        st.subheader("Why candidates dropped (primary reason)")
        why = reason_breakdown(trace.reason_counts(), state.engine(trace.version_name).rule_infos)
        if len(why):
            st.plotly_chart(bar_figure(list(why["reason"]), list(why["candidates"]),
                                       color=[REASON_STAGE_COLORS.get(s, "#7f7f7f") for s in why["stage"]],
                                       hover=[f"{s} stage · {k} rule: {d}" if d else f"{s} stage · {k} rule"
                                              for s, k, d in zip(why["stage"], why["kind"], why["description"])]),
                            key="reasons_chart")
            st.dataframe(why, hide_index=True, key="reasons_table",
                         column_config={"description": st.column_config.TextColumn("description", width="large")})
        else:
            st.info("No candidate was dropped.")

    frame = trace.to_frame()
    # Above EXACT_RANKS_AUTO_MAX ads exact ranks are opt-in (sidebar); hide an all-empty column.
    shown = [c for c in SHOWN if c != "exact_rank" or frame["exact_rank"].notna().any()]
    shown += [f"rank_{n}" for n in trace.source_names if n != "two_tower"]  # two_tower's is the ANN rank
    if "ranker_inputs" in frame:  # the team's own early ranker: its output and inputs, as text
        frame["ranker_inputs"] = frame["ranker_inputs"].map(lambda d: ", ".join(f"{k}={round(v, 4)}" for k, v in d.items()))
        shown[shown.index("ecpm") + 1:shown.index("ecpm") + 1] = ["ranker_score", "ranker_inputs"]
    st.subheader("Slate")
    slate = trace.slate
    if len(slate):
        st.dataframe(slate[[c for c in shown if c != "failed_reasons"]], hide_index=True,
                     column_config=COLUMN_CONFIG, key="slate_table")
    else:
        st.warning("The slate is empty: every candidate was filtered or ranked out. See the table below.")

    st.subheader("All retrieved candidates")
    f0, f1, f2, f3 = st.columns([2, 2, 2, 3])
    found_by = f0.multiselect("Found by source", list(trace.source_names), key="f_source",
                              help="Candidates any of these sources returned")
    only = f0.checkbox("found by no other source", key="f_source_only")
    outcomes = f1.multiselect("Outcome", sorted(frame["outcome"].unique()), key="f_outcome")
    reasons = f2.multiselect("Primary reason", sorted(frame["primary_reason"].dropna().unique()), key="f_reason")
    text = f3.text_input("Search title, advertiser or ad id", key="f_text")
    view = frame
    if found_by:
        pick = set(found_by)
        view = view[view["sources"].map(lambda s: bool(pick & set(s)) and (not only or set(s) <= pick))]
    if outcomes:
        view = view[view["outcome"].isin(outcomes)]
    if reasons:
        view = view[view["primary_reason"].isin(reasons)]
    if text:
        t = text.lower()
        view = view[view["title"].str.lower().str.contains(t, regex=False)
                    | view["advertiser_name"].fillna("").str.lower().str.contains(t, regex=False)
                    | view["ad_id"].str.lower().str.contains(t, regex=False)]
    st.caption(f"{len(view):,} of {len(frame):,} candidates · select a row to ask *why not?* about it")
    event = st.dataframe(view[shown], hide_index=True, column_config=COLUMN_CONFIG, key="candidates_table",
                         on_select="rerun", selection_mode="single-row", height=420)
    rows = event.selection.rows if event is not None else []
    if rows:
        st.session_state["ad"] = str(view.iloc[rows[0]]["ad_id"])
        st.switch_page(st.session_state["_pages"]["why_not"])

    d1, d2, d3 = st.columns([1, 1, 3])
    d1.download_button("Download trace (CSV)", lambda: frame.to_csv(index=False), file_name=f"trace_{r.user_id}.csv",
                       mime="text/csv", key="dl_csv")
    d2.download_button("Download trace (JSON)", lambda: trace.to_json(indent=2), file_name=f"trace_{r.user_id}.json",
                       mime="application/json", key="dl_json")
    with st.expander("Per-stage timings (ms)"):
        t = trace.stage_timings_ms
        # Text, not a chart: one Plotly figure fewer to redraw on every user switch.
        st.text("   ".join(f"{stage} {ms:.2f}" for stage, ms in t.items()))
        if len(trace.shard_timings_ms) > 1:  # sharded: where the retrieve time went
            st.text(f"retrieve by shard ({trace.backend} backend): "
                    + "   ".join(f"shard {i} {ms:.2f}" for i, ms in sorted(trace.shard_timings_ms.items())))
    rk = trace.ranker
    if rk.get("kind") not in (None, "adlens"):  # the team's own early ranker (its label escaped: a file name)
        with st.expander(f"Early ranker: {md(rk['describe'])}"):
            st.text(f"{rk['kind']} ranker, output {rk['output']}"
                    + (" (pCTR; eCPM by the bid formula)" if rk["output"] == "probability" else " (ranked by it directly)")
                    + f", fingerprint {rk['fingerprint'][:16]}…\ninputs: " + ", ".join(rk["features"]))
        return
    with st.expander("pCTR model (early ranker), fitted on logged impressions"):
        cal = trace.calibration
        st.caption(f"{cal.get('method')} regression on {cal.get('n', 0):,} logged impressions "
                   f"({cal.get('positives', 0):,} clicks); pCTR = sigmoid(Σ coefficient × feature + intercept)")
        # Text, not a table: the candidate grid stays the page's last data frame.
        coefs = {**(cal.get("coefficients") or {}), "intercept": cal.get("intercept") or 0.0}
        st.text("\n".join(f"{k:<28} {v:+.4f}" for k, v in coefs.items()))
