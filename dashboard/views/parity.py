"""Parity: over N logged requests, how far AdLens's replay on a version reproduces production
(core.traces.parity computes it; this page renders the report)."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass

import pandas as pd
import streamlit as st

from core.common.escape import md
from core.traces.logged import count_logged_requests
from core.traces.parity import ParityReport, percent
from core.traces.report_cache import PARITY_REQUESTS, PARITY_SEED, cached_parity
from dashboard import state
from dashboard.views import logged

DEFAULT_N = PARITY_REQUESTS  # the demo saves the report at this N (core.demo.warm_reports)
DISAGREEMENTS_SHOWN = 20


@st.cache_resource(show_spinner=False)
def _store():
    # Not st.cache_data: a run takes seconds and shows a progress bar, which Streamlit would
    # replay on every cache hit (the health page keeps its reports the same way).
    return state._ReportStore(size=16)


def report(version: str, n: int, seed: int, progress=None) -> ParityReport:
    """The parity report of `version` on a seeded sample of `n` logged requests, run once per
    version checksum, data, trace sets, N and seed (kept in the workspace's cache:
    core.traces.report_cache); `progress` is called only while it runs."""
    s = state.settings()
    key = (version, state.checksum(version), s.db_url, state.data_stamp(s.db_url),
           logged._traces_stamp(s.db_url), n, seed)
    rep = _store().get(key)
    if rep is None:
        with state.steps().step(f"parity {version} n={n}"):
            # the engine is loaded only when the report is not saved: the page needs nothing else of it
            rep = cached_parity(s, state.db(s.db_url), lambda: state.engine(version), n_requests=n, seed=seed,
                                stamp=key[3], traces_stamp=key[4], checksum=key[1], progress=progress)
        _store().put(key, rep)
    return rep


def _row(obj) -> dict:
    """A report item as a flat table row (lists and nested items left out): new fields show as columns."""
    d = asdict(obj) if is_dataclass(obj) else dict(obj)
    return {k: v for k, v in d.items() if not isinstance(v, (list, dict, tuple)) and k != "label_text"}


def _link(query: str) -> str:
    """A parity example link (`?request=...`) as a link into Inspect's Logged mode."""
    return "/" + query if query.startswith("?") else query


def render() -> None:
    st.title("Parity with production")
    ss = st.session_state
    db = state.db(state.settings().db_url)
    total = count_logged_requests(db)
    if total == 0:
        st.info(md(logged.IMPORT_HELP))
        return
    names = state.version_names()
    if ss.get("parity_version") not in names:
        ss["parity_version"] = ss.get("version") if ss.get("version") in names else names[-1]
    c1, c2, c3 = st.columns([2, 1, 1])
    version = c1.selectbox("Version replayed", names, key="parity_version")
    n = c2.number_input(f"Logged requests (of {total:,})", 1, total, min(DEFAULT_N, total), step=50,
                        key="parity_n", help="A seeded sample; set it to the total for all")
    seed = c3.number_input("Seed", 0, 2**31 - 1, PARITY_SEED, key="parity_seed")
    st.query_params.from_dict({"version": version})
    bars = []  # made on the first progress report: a cached report shows no bar

    def progress(fraction: float, what: str) -> None:
        if not bars:
            bars.append(st.progress(0.0))
        bars[0].progress(min(1.0, fraction), text=md(what) + "…")

    rep = report(version, int(n), int(seed), progress=progress)
    for bar in bars:
        bar.empty()

    st.subheader("Verdict")
    st.info(md(rep.verdict))
    st.caption(f"{rep.n_requests:,} logged requests replayed on {md(rep.version)} (seed {rep.seed}): "
               f"{rep.n_logged_candidates:,} logged and {rep.n_replay_candidates:,} replayed candidates, "
               f"{rep.seconds:.1f} s")
    m = st.columns(4)
    m[0].metric("Slates equal", percent(rep.slates_equal_rate), help="the same ads in the same order")
    m[1].metric("Same slate set", f"{rep.slate_sets_equal:,} / {rep.n_requests:,}")
    m[2].metric("Mean overlap@slate", percent(rep.mean_overlap), help="|logged ∩ replayed slate| / |logged slate|")
    m[3].metric("Recall of logged candidates", percent(rep.recall.recall),
                help="logged candidates the replay also retrieved")
    if rep.unknown_sources or rep.unknown_reasons:
        st.warning(md("Not modelled by AdLens (kept verbatim): "
                      + "; ".join(x for x in (
                          "sources " + ", ".join(rep.unknown_sources) if rep.unknown_sources else "",
                          "reason codes " + ", ".join(rep.unknown_reasons) if rep.unknown_reasons else "") if x)))

    left, right = st.columns(2)
    with left:
        st.subheader("Recall by logged stage")
        st.caption("Of the logged candidates that reached each stage in production, those the replay brought there.")
        st.dataframe(pd.DataFrame([{"logged stage": s, **_row(r), "recall": percent(r.recall)}
                                   for s, r in rep.stage_recall.items()]), hide_index=True, key="parity_stage_recall")
    with right:
        st.subheader("Recall by logged source")
        st.dataframe(pd.DataFrame([{**_row(s), "recall": percent(s.recall),
                                    "modelled": "yes" if s.modelled else "no: not modelled by AdLens"}
                                   for s in rep.source_recall]), hide_index=True, key="parity_source_recall")

    st.subheader("Logged fate → replayed fate")
    if rep.confusion:
        conf = pd.DataFrame(rep.confusion).T.fillna(0).astype(int)
        st.dataframe(conf.rename_axis("logged fate").reset_index(), hide_index=True, key="parity_confusion")
    st.subheader("Rules and sources that disagree most")
    if rep.disagreements:
        rows = []
        for d in rep.disagreements[:DISAGREEMENTS_SHOWN]:
            ex = d.examples[0] if d.examples else None
            rows.append({"label": d.label(), "example": _link(ex.link) if ex else None, **_row(d)})
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="parity_disagreements",
                     column_config={"example": st.column_config.LinkColumn(
                         "example (opens the logged request)", display_text=r"request=([^&]+)")})
        with st.expander("Examples of each disagreement (deep links into Inspect's Logged mode)"):
            st.dataframe(pd.DataFrame([{"kind": d.kind, "name": d.name, **_row(e), "link": _link(e.link)}
                                       for d in rep.disagreements[:DISAGREEMENTS_SHOWN] for e in d.examples]),
                         hide_index=True, key="parity_examples",
                         column_config={"link": st.column_config.LinkColumn("open", display_text="open")})
    else:
        st.success("No rule or source disagrees.")
    for line in rep.not_replayed:
        st.text(f"not replayed: {line}")
