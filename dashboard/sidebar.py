"""The shared request controls: version, user (with profile), context, funnel parameters."""

from __future__ import annotations

import streamlit as st

from core.analysis.links import HOME
from core.common.escape import md
from core.data.vocab import UNKNOWN, Device, Placement, values
from core.funnel.params import DEFAULT_PARAMS, EXACT_RANKS_AUTO_MAX
from dashboard import state


def render_request_controls() -> None:
    ss = st.session_state
    names = state.version_names()
    users = state.all_user_ids()
    if ss.get("version") not in names:
        ss["version"] = names[-1]
    if ss.get("user") not in users:
        ss["user"] = users[0]
        state.reset_context()
    elif "ctx_placement" not in ss:
        state.reset_context()
    with st.sidebar:
        st.selectbox("Index version", names, key="version", help="`adlens versions` lists them")
        st.caption(state.serving(ss["version"]))
        st.selectbox("User", users, key="user", on_change=state.reset_context,
                     help="Type to search by id. Changing the user resets the context to their usual one.")
        prof = state.user_profile(ss["user"])
        st.caption(f"{md(prof['country'])} · {md(prof['age_bucket'])} · {md(prof['device'])} · "
                   f"{prof['impressions']} impressions, {prof['clicks']} clicks"
                   + ("" if prof["has_profile"] else " · no profile"))
        with st.expander("Profile and recent clicks"):
            st.text("Communities: " + (", ".join(prof["communities"]) or "none"))
            for c in prof["recent_clicks"]:
                st.text(f"{c['ts'][:16]}  {c['vertical']}: {c['title']}")
            if not prof["recent_clicks"]:
                st.text("No clicks logged.")
        st.markdown("**Context** (what-if: change any field)")
        labels = state.community_labels()
        if ss.get("ctx_community") not in labels:
            ss["ctx_community"] = HOME
        st.selectbox("Community", list(labels), key="ctx_community", format_func=labels.__getitem__)
        st.selectbox("Placement", values(Placement), key="ctx_placement")
        st.selectbox("Device", (*values(Device), UNKNOWN), key="ctx_device")
        st.text_input("Country", key="ctx_country", help="Country code, e.g. US")
        st.text_input("Time (UTC)", key="ctx_time", help="ISO 8601; defaults to the latest logged impression")
        st.button("Reset to usual context", on_click=state.reset_context, key="reset_ctx")
        _source_controls(state.version_sources(ss["version"]))
        _rule_controls(state.version_rules(ss["version"]))
        with st.expander("Funnel parameters"):
            d = DEFAULT_PARAMS
            st.number_input("K retrieved", 10, 5000, d.k, step=50, key="p_k")
            st.number_input("N kept by early ranking", 1, 1000, d.n_ranked, key="p_n")
            st.number_input("M max per advertiser", 1, 50, d.max_per_advertiser, key="p_m")
            st.number_input("Slate size", 1, 100, d.slate_size, key="p_slate")
            st.checkbox("Exact rank of every candidate", key="p_exact",
                        help=f"Ranks each candidate by an exact scan over all ads (automatic up to "
                             f"{EXACT_RANKS_AUTO_MAX:,} ads; above that it adds a full scan to every request).")


SOURCE_HELP = {
    "two_tower": "ANN over the tower's query vector; its quota is K (Funnel parameters)",
    "co_engagement": "ads co-clicked with the user's recent clicks",
    "popular_in_context": "most clicked in the request's community / placement / country, recent window",
    "targeting": "ads whose campaigns include the request's community",
    "ease": "EASE item-item weights summed over the user's clicks (built for catalogs up to --ease-max-ads)",
}


def _source_controls(sources) -> None:
    """What-if: switch the version's candidate sources on/off and change their quotas."""
    ss = st.session_state
    off = [n for n in sources if ss.get(f"src_{n}") is False]
    label = "Candidate sources" + (f" ({len(off)} off)" if off else "")
    with st.expander(label, expanded=bool(off)):
        for name in sources:
            ss.setdefault(f"src_{name}", True)
            st.checkbox(name, key=f"src_{name}", help=SOURCE_HELP.get(name))
            if name != "two_tower":
                ss.setdefault(f"q_{name}", DEFAULT_PARAMS.quota(name))
                st.number_input(f"{name} quota", 1, 5000, step=10, key=f"q_{name}",
                                disabled=not ss[f"src_{name}"])


def _rules_on() -> None:
    for key in [k for k in st.session_state if str(k).startswith("rule_")]:
        st.session_state[key] = True


def _rule_controls(rules) -> None:
    """What-if: switch any rule of the version's funnel off (built-in, expression or plugin;
    eligibility or ranking stage), listed in the order the engine runs them."""
    ss = st.session_state
    off = state.rules_off(ss["version"])
    label = "Funnel rules" + (f" ({len(off)} off)" if off else "")
    with st.expander(label, expanded=bool(off)):
        if not rules:
            st.caption("The version's funnel definition cannot be read; the page says why.")
            return
        st.caption("Untick a rule to see the funnel without it (in pipeline order).")
        for r in rules:
            key = f"rule_{r.code}"
            if not r.enabled:  # listed in the definition with enabled = false
                st.checkbox(md(r.code), value=False, disabled=True, key=f"listed_off_{r.code}",
                            help=md(f"{r.label}; switched off in the version's funnel definition"))
                continue
            ss.setdefault(key, True)
            st.checkbox(md(r.code) + (" · ranking stage" if r.stage == "ranking" else ""), key=key,
                        help=md(r.label))
        if off:
            st.button("Switch every rule back on", on_click=_rules_on, key="rules_all_on")
