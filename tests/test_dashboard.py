"""The dashboard's page logic, run in-process with Streamlit's AppTest on a small demo workspace.

Each test drives `dashboard/router.py` (the page router `streamlit run dashboard` serves):
widgets are found by `key=`, pages are switched by their st.navigation page, and every test
asserts that no exception reached the page. The browser-level checks are in test_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.escape import md
from core.funnel.reasons import ELIGIBILITY_REASONS

APP = Path(__file__).resolve().parent.parent / "dashboard" / "router.py"
TIMEOUT = 120  # the first run loads the catalog, a version's index and its tower
PAGES = {"inspect": "Inspect", "why-not": "Why not this ad?", "map": "Embedding map",
         "compare": "Compare versions", "health": "Index health"}
SIDEBAR_KEYS = ("version", "user", "ctx_community", "ctx_placement", "ctx_device", "ctx_country", "ctx_time",
                "p_k", "p_n", "p_m", "p_slate", "p_exact",
                "src_two_tower", "src_co_engagement", "src_popular_in_context", "src_targeting", "src_ease",
                "q_co_engagement", "q_popular_in_context", "q_targeting", "q_ease",
                *(f"rule_{c.value}" for c in ELIGIBILITY_REASONS))  # the demo versions run the built-in rules

# Tests on the demo workspace are `slow`: its session fixture embeds with the real model and trains
# (once per session, shared with test_e2e.py). The onboarding tests need no workspace.
slow = pytest.mark.slow


def _goto(at: AppTest, url_path: str) -> AppTest:
    """Select an st.navigation page by url_path for the next run.

    AppTest.switch_page() only resolves file pages; these pages are callables, so we request the
    page's script hash the way a browser would (st.Page hashes its url_path)."""
    from streamlit.util import calc_hash

    if not at._registered_pages:
        raise AssertionError("run the app once before switching pages")
    assert calc_hash(url_path) in at._registered_pages, f"no page {url_path!r}: {at._registered_pages}"
    at._page_hash = calc_hash(url_path)
    return at


def _ok(at: AppTest, *, errors: bool = False) -> AppTest:
    """Fail with the page's exception or (unless `errors`: Why-not shows a "not shown" verdict
    with st.error) its error messages."""
    assert not at.exception, [e.value for e in at.exception]
    assert errors or not at.error, [e.value for e in at.error]
    return at


@pytest.fixture
def app(demo_workspace, use_workspace) -> AppTest:
    use_workspace(demo_workspace.path)
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


@pytest.fixture
def inspect(app: AppTest) -> AppTest:
    return _ok(app.run())


def _frame(at: AppTest, *columns: str):
    """The first table showing all of `columns` (only tables with a selection carry their key)."""
    for df in at.dataframe:
        if set(columns) <= set(df.value.columns):
            return df.value
    raise AssertionError(f"no table with columns {columns}")


def _caption(at: AppTest) -> str:
    return at.caption[0].value if at.caption else ""


@slow
def test_inspect_is_the_home_page_with_every_control(inspect: AppTest, demo_workspace):
    at = inspect
    assert at.title[0].value == "Inspect"
    for key in ("version", "user", "ctx_community", "ctx_placement", "ctx_device"):
        assert at.selectbox(key=key).value is not None
    for key in ("ctx_country", "ctx_time"):
        assert at.text_input(key=key).value
    for key in ("p_k", "p_n", "p_m", "p_slate"):
        assert at.number_input(key=key).value > 0
    assert at.selectbox(key="version").options == demo_workspace.versions
    assert at.selectbox(key="user").options == demo_workspace.users
    metrics = {m.label: int(m.value.replace(",", "")) for m in at.metric}
    assert metrics["Inventory"] == 600 >= metrics["Retrieved"] >= metrics["Eligible"] >= metrics["Slate"]
    table = at.dataframe(key="candidates_table").value
    assert len(table) == metrics["Retrieved"] > 500  # the union of every source's candidates
    assert table["ann_rank"].notna().sum() == at.number_input(key="p_k").value == 500  # two_tower's quota
    assert len(_frame(at, "final_position", "ecpm")) == metrics["Slate"]
    # the view is written into the URL so it can be shared
    assert at.query_params["user"] == at.selectbox(key="user").value
    assert at.query_params["version"] == at.selectbox(key="version").value


@slow
def test_changing_the_user_changes_the_candidate_table(inspect: AppTest, demo_workspace):
    at = inspect
    first = at.selectbox(key="user").value
    before = at.dataframe(key="candidates_table").value
    other = next(u for u in demo_workspace.users[1:] if u != first)
    _ok(at.selectbox(key="user").select(other).run())
    after = at.dataframe(key="candidates_table").value
    assert f"user **{md(other)}**" in _caption(at)
    assert at.query_params["user"] == other
    assert list(after["ad_id"]) != list(before["ad_id"])


@slow
def test_exact_ranks_are_shown_and_agree_with_the_exact_version(inspect: AppTest, demo_workspace):
    at = inspect  # 600 ads: under EXACT_RANKS_AUTO_MAX, so computed without asking
    _ok(at.selectbox(key="version").select("exact").run())
    table = at.dataframe(key="candidates_table").value
    assert table["exact_rank"].notna().all()
    ann = table[table["ann_rank"].notna()]  # two_tower's candidates (other sources' have no ANN rank)
    # a Flat index is the exact oracle; exact_rank gives ads tied in float32 their best rank
    assert (ann["exact_rank"] == ann.groupby("score")["ann_rank"].transform("min")).all()
    assert (table.loc[table["ann_rank"].isna(), "exact_rank"] > 500).all()  # the rest lie beyond K


@slow
def test_exact_ranks_above_the_auto_limit_are_opt_in(inspect: AppTest, monkeypatch):
    import core.funnel.engine

    at = inspect
    monkeypatch.setattr(core.funnel.engine, "EXACT_RANKS_AUTO_MAX", 100)  # as if the catalog were large
    _ok(at.selectbox(key="version").select("ivf").run())
    assert "exact_rank" not in at.dataframe(key="candidates_table").value.columns  # no empty column
    _ok(at.checkbox(key="p_exact").check().run())
    ranks = at.dataframe(key="candidates_table").value["exact_rank"]
    assert ranks.notna().all() and ranks.min() >= 1


@slow
def test_changing_the_version_and_k_reruns_the_funnel(inspect: AppTest):
    at = inspect
    _ok(at.selectbox(key="version").select("exact").run())
    assert "Version **exact**" in _caption(at)
    _ok(at.number_input(key="p_k").set_value(60).run())
    table = at.dataframe(key="candidates_table").value
    assert table["ann_rank"].notna().sum() == 60  # K is two_tower's quota; other sources add theirs


@slow
def test_what_if_context_and_a_bad_time_show_messages_not_tracebacks(inspect: AppTest):
    at = inspect
    _ok(at.selectbox(key="ctx_placement").select("community_feed").run())
    at.text_input(key="ctx_time").input("not a time").run()
    assert not at.exception
    assert at.error, "an invalid time must be reported on the page"
    _ok(at.button(key="reset_ctx").click().run())
    assert at.text_input(key="ctx_time").value != "not a time"


@slow
def test_inspect_filters(inspect: AppTest, demo_workspace):
    at = inspect
    _ok(at.selectbox(key="version").select("exact").run())
    at.selectbox(key="user").select(demo_workspace.users[0]).run()
    _ok(at.text_input(key="f_text").input("<script>").run())
    table = at.dataframe(key="candidates_table").value
    assert list(table["ad_id"]) == [demo_workspace.html_ad]
    assert table["title"].iloc[0] == demo_workspace.html_title
    _ok(at.text_input(key="f_text").input("").run())
    outcomes = at.multiselect(key="f_outcome").options
    _ok(at.multiselect(key="f_outcome").select("slate").run())
    assert "slate" in outcomes and set(at.dataframe(key="candidates_table").value["outcome"]) == {"slate"}


@slow
def test_inspect_filters_by_source_and_splits_the_funnel(inspect: AppTest):
    at = inspect
    assert at.toggle(key="funnel_split").value  # on by default when the version has several sources
    full = at.dataframe(key="candidates_table").value
    finds = sum(int(full[f"rank_{n}"].notna().sum()) for n in ("co_engagement", "popular_in_context", "targeting", "ease")
                if f"rank_{n}" in full) + int(full["ann_rank"].notna().sum())
    assert any(f"({finds:,} finds in all); the union above holds {len(full):,} distinct ads" in c.value
               for c in at.caption)  # overlapping sources: the bars sum to more than the union
    assert {"rank_co_engagement", "rank_popular_in_context", "rank_targeting"} <= set(full.columns)
    _ok(at.multiselect(key="f_source").select("popular_in_context").run())
    view = at.dataframe(key="candidates_table").value
    assert 0 < len(view) < len(full) and view["rank_popular_in_context"].notna().all()
    assert len(view) == full["rank_popular_in_context"].notna().sum()
    _ok(at.checkbox(key="f_source_only").check().run())
    only = at.dataframe(key="candidates_table").value
    assert only["ann_rank"].isna().all() and only["rank_popular_in_context"].notna().all()
    assert len(only) <= len(view)
    assert any("found:co_engagement" in t.value for t in at.text)  # the pCTR model's coefficients
    _ok(at.toggle(key="funnel_split").set_value(False).run())


@slow
def test_what_if_switches_sources_and_quotas_and_the_link_carries_them(inspect: AppTest, demo_workspace):
    at = inspect
    co_before = int(at.dataframe(key="candidates_table").value["rank_co_engagement"].notna().sum())
    _ok(at.checkbox(key="src_popular_in_context").uncheck().run())
    table = at.dataframe(key="candidates_table").value
    assert table["sources"].map(lambda s: "popular_in_context" not in list(s)).all()
    assert at.query_params["off"] == "popular_in_context"
    _ok(at.number_input(key="q_co_engagement").set_value(3).run())
    table = at.dataframe(key="candidates_table").value
    assert table["rank_co_engagement"].notna().sum() == min(3, co_before)
    assert (table["rank_co_engagement"].dropna() <= 3).all()
    assert at.query_params["quota"] == "co_engagement:3"
    # the same link opens the same what-if in a new session
    link = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    link.query_params.update({"user": at.selectbox(key="user").value, "off": "popular_in_context",
                              "quota": "co_engagement:3"})
    _ok(link.run())
    assert link.checkbox(key="src_popular_in_context").value is False
    assert link.number_input(key="q_co_engagement").value == 3
    assert list(link.dataframe(key="candidates_table").value["ad_id"]) == list(table["ad_id"])


@slow
@pytest.mark.parametrize("url_path", list(PAGES))
def test_every_page_renders(app: AppTest, url_path: str):
    at = _ok(app.run())
    _ok(_goto(at, url_path).run())
    assert at.title[0].value == PAGES[url_path]
    if url_path != "health":  # the request pages share the sidebar's request controls
        widgets = {w.key for kind in ("selectbox", "text_input", "number_input", "checkbox")
                   for w in getattr(at.sidebar, kind)}
        assert widgets == set(SIDEBAR_KEYS)


@slow
def test_page_switches_reuse_the_cached_index_tower_and_map(app: AppTest, monkeypatch):
    import core.index.maps
    from dashboard import state

    at = _ok(app.run())
    for url_path in PAGES:  # warm every cache these pages use
        _ok(_goto(at, url_path).run())
    loads = []

    def counted(name, real):
        return lambda *a, **k: loads.append(name) or real(*a, **k)

    monkeypatch.setattr(state, "load_version", counted("load_version", state.load_version))
    monkeypatch.setattr(state, "FunnelEngine", counted("FunnelEngine", state.FunnelEngine))
    monkeypatch.setattr(core.index.maps, "load_layout", counted("load_layout", core.index.maps.load_layout))
    for url_path in [*PAGES, *PAGES]:
        _ok(_goto(at, url_path).run())
    assert loads == []


@slow
def test_why_not_explains_the_selected_ad(app: AppTest, demo_workspace):
    at = _ok(app.run())
    at.session_state["ad"] = demo_workspace.html_ad
    _ok(_goto(at, "why-not").run(), errors=True)
    assert at.selectbox(key="ad").value == demo_workspace.html_ad
    assert at.success or at.error  # the summary verdict (shown / why not)
    rules = _frame(at, "code", "enabled")
    assert len(rules)
    assert at.query_params["ad"] == demo_workspace.html_ad
    _ok(at.text_input(key="ad_search").input("ad_00001").run(), errors=True)
    assert all(o.startswith(("ad_00001", demo_workspace.html_ad)) for o in at.selectbox(key="ad").options)
    _ok(at.number_input(key="aud_n").set_value(20).run(), errors=True)
    _ok(at.button(key="aud_go").click().run(), errors=True)
    assert {m.label for m in at.metric} >= {"Retrieved", "Eligible", "In slate"}


@slow
def test_selecting_a_candidate_opens_why_not(inspect: AppTest):
    at = inspect
    first = at.dataframe(key="candidates_table").value["ad_id"].iloc[0]
    at.session_state["candidates_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    _ok(at.run(), errors=True)
    assert at.title[0].value == PAGES["why-not"]
    assert at.selectbox(key="ad").value == first


def _map_traces(at: AppTest) -> dict[str, list[str]]:
    """Trace name -> ad ids (customdata) of the map figure."""
    (chart,) = at.get("plotly_chart")
    return {t.get("name"): list(t.get("customdata") or []) for t in json.loads(chart.proto.spec)["data"]}


@slow
def test_map_draws_every_ad_and_highlights_the_request(app: AppTest, demo_workspace):
    at = _ok(app.run())
    _ok(at.number_input(key="p_k").set_value(80).run())
    slate = set(_frame(at, "final_position", "ecpm")["ad_id"])
    n_cand = len(at.dataframe(key="candidates_table").value)  # two_tower's 80 and the other sources'
    _ok(_goto(at, "map").run())
    assert not at.warning  # every demo version has a map
    traces = _map_traces(at)
    overlays = {"retrieved candidates", "slate", "user's clicked ads", "request (query vector)"}
    base = [ad for name, ads in traces.items() if name not in overlays for ad in ads]
    assert sorted(base) == sorted(set(base)) and len(base) == 600  # every ad once, coloured by vertical
    assert len(traces["retrieved candidates"]) == n_cand >= 80
    assert set(traces["slate"]) == slate
    assert "request (query vector)" in traces

    _ok(at.selectbox(key="map_color").select("Funnel outcome (current request)").run())
    traces = _map_traces(at)
    assert set(traces["slate"]) == slate
    assert len(traces["not retrieved"]) == 600 - n_cand
    assert "retrieved candidates" not in traces  # the colours already say it
    _ok(at.toggle(key="map_users").set_value(True).run())
    assert "users" in _map_traces(at)


@slow
def test_compare_aggregate_runs(app: AppTest):
    at = _ok(app.run())
    _ok(_goto(at, "compare").run())
    assert at.selectbox(key="version_b").value != at.selectbox(key="version").value
    _ok(at.button_group(key="cmp_view").set_value("Aggregate").run())
    _ok(at.number_input(key="cmp_users").set_value(10).run())
    _ok(at.button(key="cmp_go").click().run())
    assert len(_frame(at, "metric", "A", "B")) > 0
    _ok(at.button_group(key="cmp_view").set_value("Map movement").run())


@slow
def test_health_shows_the_recall_curve(app: AppTest):
    at = _ok(app.run())
    _ok(_goto(at, "health").run())
    _ok(at.number_input(key="health_n").set_value(20).run())
    curve = _frame(at, "param", "recall_at_k")
    assert len(curve) and curve["recall_at_k"].between(0, 1).all()
    _ok(at.selectbox(key="health_version").select("exact").run())


@slow
def test_deep_link_opens_the_same_view(app: AppTest, demo_workspace):
    user = demo_workspace.users[7]
    app.query_params.update({"version": "exact", "user": user, "community": "home", "placement": "home_feed",
                             "device": "android", "country": "de", "ad": demo_workspace.html_ad})
    at = _ok(app.run())
    assert not at.warning, [w.value for w in at.warning]
    assert at.selectbox(key="user").value == user
    assert at.selectbox(key="version").value == "exact"
    assert at.selectbox(key="ctx_device").value == "android"
    assert at.text_input(key="ctx_country").value == "DE"
    assert f"user **{md(user)}**" in _caption(at) and "android" in _caption(at)
    _ok(_goto(at, "why-not").run(), errors=True)
    assert at.selectbox(key="ad").value == demo_workspace.html_ad


@slow
def test_bad_deep_link_warns_and_falls_back(app: AppTest, demo_workspace):
    app.query_params.update({"user": "nope", "version": "v999", "placement": "<b>x</b>", "time": "yesterday-ish",
                             "ad": "no_such_ad"})
    at = _ok(app.run())
    warnings = " ".join(w.value for w in at.warning)
    for param in ("user=nope", "version=v999", "placement=<b>x</b>", "time=yesterday-ish", "ad=no_such_ad"):
        assert f"Link parameter {md(param)} is not valid" in warnings  # shown as text (core.common.escape.md)
    assert at.selectbox(key="user").value == demo_workspace.users[0]  # the default view instead
    assert len(at.dataframe(key="candidates_table").value) > 0


def test_empty_workspace_shows_onboarding(tmp_path, use_workspace):
    use_workspace(tmp_path / "empty")
    at = _ok(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run())
    assert at.title[0].value == "Welcome to AdLens"
    assert at.button(key="build_demo").label == "Build the demo workspace"


def test_onboarding_build_failure_is_a_message(tmp_path, use_workspace, monkeypatch):
    from core.common.errors import AdLensError
    from dashboard.views import onboarding

    def fail(settings, progress=None, **kw):
        progress(0.5, "generate")
        raise AdLensError("disk full: free some space and retry")

    monkeypatch.setattr(onboarding, "build_demo", fail)
    use_workspace(tmp_path / "empty")
    at = _ok(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run())
    at.button(key="build_demo").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [md("disk full: free some space and retry")]
