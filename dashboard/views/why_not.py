"""Why not: follow one ad through every stage of the current request; and who can see it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.common.escape import md
from core.funnel.audience import audience
from core.funnel.explain import why_not
from core.funnel.rule_list import reason_breakdown, rules_off_note
from dashboard import state
from dashboard.charts import bar_figure
from dashboard.views import logged

MAX_MATCHES = 200


def _ad_picker(cat) -> str | None:
    ads = cat.ads
    current = st.session_state.get("ad")
    text = st.text_input("Find an ad by id, advertiser or title", key="ad_search",
                         placeholder="e.g. ad_000123, Northwind, 'running shoes'")
    if text:
        t = text.lower()
        hit = ads[ads["ad_id"].str.lower().str.contains(t, regex=False)
                  | ads["title"].str.lower().str.contains(t, regex=False)
                  | ads["advertiser_name"].fillna("").str.lower().str.contains(t, regex=False)]
    else:
        hit = ads.head(0)
    options = list(hit["ad_id"].head(MAX_MATCHES))
    if current and current not in options:
        options.insert(0, current)
    if not options:
        st.info("Select a candidate on the Inspect page, or search for an ad above.")
        return None
    labels = ads.set_index("ad_id")
    if st.session_state.get("ad") not in options:
        st.session_state["ad"] = options[0]
    more = f", first {MAX_MATCHES} shown" if len(hit) > MAX_MATCHES else ""
    label = f"Ad ({len(hit):,} matches{more})" if text else "Ad"
    st.selectbox(label, options, key="ad",
                 format_func=lambda a: f"{a} · {_text(labels['advertiser_name'].get(a)) or '—'} · {_text(labels['title'].get(a))}")
    return st.session_state["ad"]


def _stage_icon(passed) -> str:
    # Material icons ship with Streamlit; emoji need a colour-emoji font the browser may lack.
    return (":green[:material/check_circle:]" if passed else
            ":red[:material/block:]" if passed is False else ":gray[:material/pause_circle:]")


def _text(value) -> str:
    """Data text for a label: missing values show as empty, never as "None" or "nan"."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def render() -> None:
    st.title("Why not this ad?")
    cat = state.catalog()
    ad_id = _ad_picker(cat)
    if ad_id is None:
        state.sync_link()
        return
    engine = state.engine(st.session_state["version"])
    params = state.current_params()
    request_id = logged.active_request()
    if request_id is not None:  # on a logged request: production's row first, then AdLens's account
        res = logged.render_why_not_head(request_id, ad_id)
        if res.verdict is None:  # an ad only production knows: nothing for AdLens to follow
            logged.render_parting(res)
            return
        st.subheader("AdLens's replay, stage by stage")
        verdict = res.verdict
    else:
        state.sync_link(ad=ad_id)
        verdict = why_not(engine, state.current_request(), ad_id, params)
    (st.success if verdict.shown else st.error)(md(verdict.summary))
    if params.disabled_rules:  # the sidebar's what-if
        st.info(md(rules_off_note(params.disabled_rules)))
    for sv in verdict.stages:
        with st.container(border=True):
            st.markdown(f"{_stage_icon(sv.passed)} **{sv.stage}**")
            st.text(sv.detail)
    if request_id is not None:  # right after both accounts: where production and the replay part
        logged.render_parting(res)
    st.subheader("Candidate sources")
    st.dataframe(pd.DataFrame(verdict.sources), hide_index=True, key="sources_table",
                 column_config={"reason": st.column_config.TextColumn("reason", width="large")})
    rv = verdict.retrieval
    st.subheader("Retrieval numbers (two_tower)")
    st.dataframe(pd.DataFrame([{k: v for k, v in vars(rv).items() if k != "detail"}]), hide_index=True,
                 key="retrieval_table")
    st.subheader("Eligibility rules")
    kinds = {r.code: r.kind for r in engine.rule_infos}
    rules = pd.DataFrame(verdict.eligibility)
    if len(rules):  # which kind of rule: built-in, expression or plugin
        rules.insert(1, "kind", rules["code"].map(kinds).fillna("?"))
    st.dataframe(rules, hide_index=True, key="rules_table",
                 column_config={"detail": st.column_config.TextColumn("detail", width="large")})
    c1, c2 = st.columns(2)
    with c1:
        st.subheader("Ranking")
        st.json(verdict.ranking, expanded=True)
    with c2:
        st.subheader("Diversity")
        st.json(verdict.diversity, expanded=True)
    st.caption("Timings: " + " · ".join(f"{k} {v:.1f} ms" for k, v in verdict.timings_ms.items()))

    st.divider()
    st.subheader("Audience: who can see this ad?")
    n = st.number_input("Users sampled (in their usual contexts)", 10, 2000, 200, step=50, key="aud_n")
    if st.button("Compute audience", key="aud_go"):
        bar = st.progress(0.0, text="Running the funnel for sampled users…")
        rep = audience(engine, ad_id, n_users=int(n), params=state.current_params(),
                       progress=lambda f, step: bar.progress(f, text=f"{step}…"))
        bar.progress(1.0, text="Done")
        st.session_state["audience"] = (ad_id, st.session_state["version"], rep)
    saved = st.session_state.get("audience")
    if saved and saved[0] == ad_id and saved[1] == st.session_state["version"]:
        rep = saved[2]
        m = st.columns(4)
        m[0].metric("Retrieved", f"{rep.retrieved} / {rep.n_users}")
        m[1].metric("Eligible", f"{rep.eligible} / {rep.n_users}")
        m[2].metric("Retrieved and eligible", rep.retrieved_and_eligible)
        m[3].metric("In slate", rep.in_slate)
        if rep.failed_reason_counts:
            why = reason_breakdown(rep.failed_reason_counts, engine.rule_infos)  # the rules' own descriptions
            st.plotly_chart(bar_figure(list(why["reason"]), list(why["candidates"]),
                                       hover=[f"{s} stage · {k} rule: {d}" for s, k, d in
                                              zip(why["stage"], why["kind"], why["description"])]),
                            key="aud_reasons")
        st.caption(f"ANN rank quantiles where retrieved: {rep.rank_quantiles}")
        st.caption("Reached through sources (users retrieved / in slate / only this source): " + " · ".join(
            f"{n} {c['retrieved']}/{c['slate']}/{c['only_this_source']}" for n, c in rep.source_counts.items()))
        st.dataframe(rep.users, hide_index=True, key="aud_users")
