"""Inspect's Logged mode: one logged request (production's funnel) beside AdLens's replay of it.

Picked by user and time or by request id, or opened by a deep link `?request=<id>` (with
`&version=`; `&ad=` opens Why not on it). core.traces.side_by_side computes everything shown here.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.analysis.links import format_sources, to_query_params
from core.common.errors import AdLensError
from core.common.escape import md
from core.traces.logged import (LoggedRequest, list_logged_requests, load_logged_request, logged_user_ids,
                                trace_sets_stamp)
from core.traces.schema import STAGES_REACHED
from core.traces.side_by_side import (BOTH, LOGGED_ONLY, NOT_MODELLED, REPLAY_ONLY, LoggedWhyNot, SideBySide,
                                      logged_why_not, replay_side_by_side)
from dashboard import state

REPLAY, LOGGED = "Replay", "Logged"
MODES = (REPLAY, LOGGED)
MAX_LISTED = 1000  # a user's logged requests offered in the picker (newest first)
IMPORT_HELP = ("No logged traces are imported in this workspace. Import production's funnel logs with "
               "`adlens import-traces DIR` (the format is in data/README.md); `adlens export-traces --version V "
               "--out DIR` writes AdLens's own replay in that format as an example.")
TABLE_SHOWN = ["ad_id", "title", "found_by", "parts_at", "logged_blocked_at", "replay_blocked_at", "logged_reasons",
               "replay_reasons", "logged_sources", "replay_sources", "logged_position", "replay_position",
               "logged_score", "replay_score", "logged_ecpm", "replay_ecpm", "not_modelled", "parting"]
TABLE_CONFIG = {
    "found_by": st.column_config.TextColumn("found by"),
    "parts_at": st.column_config.TextColumn("they part at"),
    "logged_blocked_at": st.column_config.TextColumn("production: blocked at"),
    "replay_blocked_at": st.column_config.TextColumn("replay: blocked at"),
    "logged_reasons": st.column_config.ListColumn("production's reasons"),
    "replay_reasons": st.column_config.ListColumn("replay's reasons"),
    "logged_sources": st.column_config.ListColumn("production's sources"),
    "replay_sources": st.column_config.ListColumn("replay's sources"),
    "logged_position": st.column_config.NumberColumn("production slate #"),
    "replay_position": st.column_config.NumberColumn("replay slate #"),
    "logged_score": st.column_config.NumberColumn("production early score", format="%.4f"),
    "replay_score": st.column_config.NumberColumn("replay pCTR", format="%.4f"),
    "logged_ecpm": st.column_config.NumberColumn("production eCPM", format="%.3f"),
    "replay_ecpm": st.column_config.NumberColumn("replay eCPM", format="%.3f"),
    "not_modelled": st.column_config.ListColumn(NOT_MODELLED),
    "parting": st.column_config.TextColumn("where they part", width="large"),
    "title": st.column_config.TextColumn("title", width="medium"),
}


def mode_switch() -> str:
    """Inspect's mode (Replay: the sidebar's request; Logged: a logged request beside its replay)."""
    ss = st.session_state
    if ss.get("inspect_mode") not in MODES:  # Streamlit drops a widget's state on pages without it
        ss["inspect_mode"] = LOGGED if ss.get("logged_on") else REPLAY
    st.segmented_control("Mode", MODES, key="inspect_mode",
                         help="Replay: the request the sidebar describes. Logged: a request production logged "
                              "(`adlens import-traces`), beside AdLens's replay of it on the chosen version.")
    mode = ss.get("inspect_mode") or REPLAY
    ss["logged_on"] = mode == LOGGED  # kept across pages (Why not reads it)
    return mode


def active_request() -> str | None:
    """The logged request Why not follows (Inspect is in Logged mode with one selected), else None."""
    ss = st.session_state
    return ss.get("logged_request") if ss.get("logged_on") else None


@st.cache_data(show_spinner=False, ttl=5)
def _traces_stamp(url: str) -> str:
    return trace_sets_stamp(state.db(url))


@st.cache_data(show_spinner=False, ttl=10)
def _users(url: str, stamp: str) -> list[str]:
    return logged_user_ids(state.db(url))


@st.cache_data(show_spinner=False, max_entries=256)
def _listing(url: str, stamp: str, user: str) -> pd.DataFrame:
    frame = list_logged_requests(state.db(url), user_id=user, limit=None)
    return frame.iloc[::-1].head(MAX_LISTED).reset_index(drop=True)  # newest first


@st.cache_data(show_spinner=False, max_entries=256)
def _load(url: str, stamp: str, request_id: str) -> LoggedRequest:
    return load_logged_request(state.settings(), state.db(url), request_id)


def load(request_id: str) -> LoggedRequest:
    """One logged request (cached per trace sets' stamp)."""
    url = state.settings().db_url
    with state.steps().step("logged request"):
        return _load(url, _traces_stamp(url), request_id)


@st.cache_data(show_spinner=False, max_entries=128)
def _compare(version: str, checksum: str, stamp: str, request_id: str, params_key: str,
             _engine, _logged: LoggedRequest, _params) -> SideBySide:
    return replay_side_by_side(_engine, _logged, _params)


def compare(version: str, lr: LoggedRequest) -> SideBySide:
    """The logged request beside its replay on `version` with the sidebar's funnel parameters."""
    eng = state.engine(version)
    params = state.current_params()
    url = state.settings().db_url
    stamp = f"{state.data_stamp(url)}|{_traces_stamp(url)}"
    with state.steps().step("logged replay"):
        return _compare(version, state.checksum(version), stamp, lr.request_id, repr(params), eng, lr, params)


def _sync(request_id: str, **extra) -> None:
    ss = st.session_state
    params = to_query_params(version=ss.get("version"), request=request_id, **extra,
                             **format_sources(*state.source_settings()))
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def _pick_user() -> None:
    """A new user in the picker: open their newest logged request."""
    ss = st.session_state
    url = state.settings().db_url
    listing = _listing(url, _traces_stamp(url), ss["logged_user"])
    if len(listing):
        ss["logged_request"] = str(listing["request_id"].iloc[0])


def _pick_request() -> None:
    ss = st.session_state
    ss["logged_request"] = ss["logged_pick"]


def _pick_id() -> None:
    ss = st.session_state
    rid = (ss.get("logged_id") or "").strip()
    if rid:
        ss["logged_request"] = rid


def _label(r) -> str:
    """A logged request in the picker: time, context, size, id (plain text: selectbox labels are not markdown)."""
    where = r.community_id if isinstance(r.community_id, str) and r.community_id else "home feed"
    return f"{pd.Timestamp(r.ts):%Y-%m-%d %H:%M:%S} · {where} · {r.placement} · {r.n_candidates:,} candidates · " \
           f"{r.request_id}"


def _picker() -> LoggedRequest | None:
    """The request pickers (user + time, or id); returns the selected logged request."""
    ss = st.session_state
    url = state.settings().db_url
    stamp = _traces_stamp(url)
    users = _users(url, stamp)
    rid = ss.get("logged_request")
    if rid is None:  # the sidebar's user when production logged them, else the first logged user
        user = ss.get("user") if ss.get("user") in users else users[0]
        listing = _listing(url, stamp, user)
        rid = ss["logged_request"] = str(listing["request_id"].iloc[0])
    try:
        current = load(rid)
    except AdLensError as exc:
        st.error(md(str(exc)))
        current = None
    if current is not None and ss.get("logged_user") != current.request.user_id:
        if current.request.user_id in users:
            ss["logged_user"] = current.request.user_id
    if ss.get("logged_user") not in users:
        ss["logged_user"] = users[0]
    c1, c2, c3 = st.columns([2, 3, 2])
    c1.selectbox("Logged user", users, key="logged_user", on_change=_pick_user,
                 help="Users production logged requests for")
    listing = _listing(url, stamp, ss["logged_user"])
    labels = {str(r.request_id): _label(r) for r in listing.itertuples(index=False)}
    options = list(labels)
    if current is not None and rid not in labels:
        options.insert(0, rid)
        labels[rid] = rid
    ss["logged_pick"] = rid if rid in labels else (options[0] if options else None)
    c2.selectbox(f"Request (time UTC; {len(listing):,}{' newest' if len(listing) >= MAX_LISTED else ''} logged)",
                 options, key="logged_pick", on_change=_pick_request, format_func=labels.get)
    ss["logged_id"] = rid
    c3.text_input("…or request id", key="logged_id", on_change=_pick_id,
                  help="`adlens logged` lists them")
    return current


def render() -> None:
    """Inspect's Logged mode (called by dashboard/views/inspect.py)."""
    ss = st.session_state
    if not _traces_stamp(state.settings().db_url):  # no trace set imported
        st.info(md(IMPORT_HELP))
        return
    lr = _picker()
    if lr is None:
        return
    rid = lr.request_id
    version = ss["version"]
    sbs = compare(version, lr)
    _sync(rid)
    if ss.pop("link_why_not", False) and ss.get("ad"):  # ?request=...&ad=...: why not that ad
        st.switch_page(ss["_pages"]["why_not"])
    r = lr.request
    st.caption(f"Logged request **{md(lr.request_id)}** · user **{md(r.user_id)}** · "
               f"{md(r.community_id or 'home feed')} · {md(r.placement)} · {md(r.device)} · {md(r.country)} · "
               f"{r.ts:%Y-%m-%d %H:%M:%S} UTC · replayed on version **{md(version)}** (sidebar's funnel parameters; "
               "its user and context controls do not apply)")
    if not state.engine(version).is_known_user(r.user_id):
        st.warning(md(f"User {r.user_id} has no profile and no impressions in AdLens's catalog: the replay "
                      "treats them as a new user, so its candidates can differ from production's."))
    if lr.extra:
        st.text("extra context (logged): " + ", ".join(f"{k}={v}" for k, v in lr.extra.items()))
    if sbs.unknown_sources or sbs.unknown_reasons:
        st.warning(md(f"Production logged names AdLens does not model ({NOT_MODELLED}), kept verbatim: "
                      + "; ".join(x for x in (
                          "sources " + ", ".join(sbs.unknown_sources) if sbs.unknown_sources else "",
                          "reason codes " + ", ".join(sbs.unknown_reasons) if sbs.unknown_reasons else "") if x)))
    fb = sbs.found_by_counts()
    m = st.columns(5)
    m[0].metric("Found by both", f"{fb[BOTH]:,}")
    m[1].metric("Logged only", f"{fb[LOGGED_ONLY]:,}")
    m[2].metric("Replay only", f"{fb[REPLAY_ONLY]:,}")
    m[3].metric("Same slate", "yes" if sbs.slates_equal() else "no")
    m[4].metric("Slate overlap", f"{len(set(sbs.logged.slate) & set(sbs.replay.slate))} / {len(sbs.logged.slate)}")
    parts = sbs.parting_counts()
    st.caption("Where the two part (ads, by the first stage their fates differ): "
               + (" · ".join(f"{s} {n:,}" for s, n in parts.items()) or "nowhere: every ad agrees"))

    left, right = st.columns(2)
    with left:
        st.subheader("Funnel: production vs replay")
        st.dataframe(pd.DataFrame({"stage": list(STAGES_REACHED),
                                   "production": [sbs.logged.stage_counts[s] for s in STAGES_REACHED],
                                   "replay": [sbs.replay.stage_counts[s] for s in STAGES_REACHED]}),
                     hide_index=True, key="logged_counts")
    with right:
        st.subheader("Why candidates dropped (first reason)")
        names = list(dict.fromkeys([*sbs.logged.reason_counts, *sbs.replay.reason_counts]))
        known = set(sbs.unknown_reasons)
        st.dataframe(pd.DataFrame({"reason": names,
                                   "production": [sbs.logged.reason_counts.get(n, 0) for n in names],
                                   "replay": [sbs.replay.reason_counts.get(n, 0) for n in names],
                                   "modelled": ["no: " + NOT_MODELLED if n in known else "" for n in names]}),
                     hide_index=True, key="logged_reasons")

    titles = state.catalog().ads.set_index("ad_id")["title"]
    s1, s2 = st.columns(2)
    for col, name, slate, key in ((s1, "Production's slate", sbs.logged.slate, "logged_slate"),
                                  (s2, f"Replay's slate ({version})", sbs.replay.slate, "replay_slate")):
        with col:
            st.subheader(name)
            other, where = ((sbs.replay.slate, "in the replay's slate") if key == "logged_slate" else
                            (sbs.logged.slate, "in production's slate"))
            st.dataframe(pd.DataFrame({"#": range(1, len(slate) + 1), "ad_id": slate,
                                       "title": [titles.get(a) for a in slate],
                                       where: [a in other for a in slate]}),
                         hide_index=True, key=key)

    st.subheader("Every ad either side touched")
    table = sbs.table.assign(title=sbs.table["ad_id"].map(titles))
    f0, f1, f2 = st.columns([2, 2, 3])
    found = f0.multiselect("Found by", [BOTH, LOGGED_ONLY, REPLAY_ONLY], key="lg_found_by")
    parting = f1.checkbox("only ads where they part", key="lg_parts")
    text = f2.text_input("Search ad id or title", key="lg_text")
    view = table.iloc[table["parts_at"].isna().to_numpy().argsort(kind="stable")]  # where they part first
    if found:
        view = view[view["found_by"].isin(found)]
    if parting:
        view = view[view["parts_at"].notna()]
    if text:
        t = text.lower()
        view = view[view["ad_id"].str.lower().str.contains(t, regex=False)
                    | view["title"].fillna("").str.lower().str.contains(t, regex=False)]
    st.caption(f"{len(view):,} of {len(table):,} ads, those where the two part first · select a row to ask "
               "*why not?* about it on this logged request")
    event = st.dataframe(view[TABLE_SHOWN], hide_index=True, column_config=TABLE_CONFIG, key="logged_table",
                         on_select="rerun", selection_mode="single-row", height=420)
    rows = event.selection.rows if event is not None else []
    if rows:
        ss["ad"] = str(view.iloc[rows[0]]["ad_id"])
        st.switch_page(ss["_pages"]["why_not"])
    st.download_button("Download the table (CSV)", lambda: sbs.table.to_csv(index=False),
                       file_name=f"logged_{lr.request_id}.csv", mime="text/csv", key="lg_dl")


def render_why_not_head(request_id: str, ad_id: str) -> LoggedWhyNot:
    """Why not on a logged request, production's side first: its logged row for the ad, then
    (returned for the caller to draw) AdLens's verdict and where the two part."""
    ss = st.session_state
    lr = load(request_id)
    res = logged_why_not(state.engine(ss["version"]), lr, ad_id, state.current_params())
    _sync(request_id, ad=ad_id)
    st.caption(f"On logged request **{md(lr.request_id)}** (user {md(lr.request.user_id)}, "
               f"{lr.request.ts:%Y-%m-%d %H:%M:%S} UTC), replayed on version **{md(ss['version'])}**. "
               "Switch Inspect to Replay to use the sidebar's request instead.")
    st.subheader("What production logged")
    (st.info if res.logged_row is not None else st.warning)(md(res.logged_summary))
    if res.logged_row is not None:
        st.dataframe(pd.DataFrame([res.logged_row]), hide_index=True, key="logged_row",
                     column_config={"sources": st.column_config.ListColumn("sources"),
                                    "reasons": st.column_config.ListColumn("reasons")})
    if res.not_modelled:
        st.text(f"{NOT_MODELLED}: " + ", ".join(res.not_modelled))
    if res.unknown_ad:
        st.warning(md(f"AdLens cannot follow this ad through its funnel: {res.unknown_ad}"))
    return res


def render_parting(res: LoggedWhyNot) -> None:
    st.subheader("Where production and the replay part")
    say = st.info if res.parts_at is None else st.warning
    say(md(res.parting))
