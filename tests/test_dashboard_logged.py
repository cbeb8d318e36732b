"""Inspect's Logged mode, Why not on a logged request and the Parity page (AppTest), and one
browser test opening a logged request by deep link. On a copy of the demo workspace with AdLens's
own replay of a few requests imported as logs, one request edited (tests/logged_data.py): an ad
production dropped for a reason AdLens lacks, a source AdLens lacks, an ad only production logged
and one only the replay retrieved."""

from __future__ import annotations

import os
from urllib.parse import urlencode

import pytest
from streamlit.testing.v1 import AppTest

from core.common.escape import md
from core.funnel.engine import open_engine
from core.store.db import make_engine
from core.traces.export import export_replay
from core.traces.importer import import_traces
from core.traces.parity import percent
from tests.conftest import copy_workspace
from tests.logged_data import GHOST_USER, PROD_AD, UNKNOWN_REASON, UNKNOWN_SOURCE, plant
from tests.test_dashboard import APP, TIMEOUT, _frame, _goto
from tests.test_e2e import _no_errors, _settle

pytestmark = pytest.mark.slow
VERSION = "exact"
N = 6


@pytest.fixture(scope="module")
def logged_ws(demo_workspace, tmp_path_factory):
    """(workspace path, Planted): the demo workspace copied, N replayed requests imported, one edited."""
    root = tmp_path_factory.mktemp("logged")
    settings = copy_workspace(demo_workspace.path, root / "ws")
    export_replay(open_engine(settings, VERSION), root / "export", N, seed=3)
    planted = plant(root / "export", root / "planted")
    db = make_engine(settings.db_url)
    try:
        # replace: the demo already imported its production logs (core.demo.production), same ids
        import_traces(settings, db, root / "planted", replace=True)
    finally:
        db.dispose()
    return settings.workspace, planted


@pytest.fixture
def app(logged_ws, use_workspace) -> AppTest:
    use_workspace(logged_ws[0])
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def _ok(at: AppTest, *, errors: bool = False) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert errors or not at.error, [e.value for e in at.error]
    return at


def _texts(elements) -> str:
    return " | ".join(e.value for e in elements)


def _open(app: AppTest, *, errors: bool = False, **params) -> AppTest:
    app.query_params.update(params)
    return _ok(app.run(), errors=errors)


def test_deep_link_opens_the_logged_request_beside_its_replay(app, logged_ws):
    _, p = logged_ws
    at = _open(app, request=p.request_id, version=VERSION)
    assert at.button_group(key="inspect_mode").value == "Logged"
    assert f"Logged request **{md(p.request_id)}**" in at.caption[0].value
    assert at.query_params["request"] == p.request_id and at.query_params["version"] == VERSION
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Logged only"], metrics["Replay only"], metrics["Same slate"]) == ("1", "1", "no")
    t = at.dataframe(key="logged_table").value.set_index("ad_id")
    assert t.loc[PROD_AD, "found_by"] == "logged only" and t.loc[p.replay_only, "found_by"] == "replay only"
    assert (t.loc[p.throttled, "parts_at"], t.loc[p.throttled, "replay_blocked_at"]) == ("eligible", "shown")
    # names AdLens does not model: verbatim, and labelled
    assert list(t.loc[p.throttled, "logged_reasons"]) == [UNKNOWN_REASON]
    assert list(t.loc[p.throttled, "not_modelled"]) == [f"reason {UNKNOWN_REASON}"]
    assert UNKNOWN_SOURCE in list(t.loc[p.credited, "logged_sources"])
    assert list(t.loc[p.credited, "not_modelled"]) == [f"source {UNKNOWN_SOURCE}"]
    warning = _texts(at.warning)
    assert md(UNKNOWN_SOURCE) in warning and md(UNKNOWN_REASON) in warning and "not modelled by AdLens" in warning
    reasons = _frame(at, "reason", "modelled").set_index("reason")
    assert reasons.loc[UNKNOWN_REASON, "production"] == 1 and reasons.loc[UNKNOWN_REASON, "replay"] == 0
    counts = _frame(at, "stage", "production", "replay").set_index("stage")
    assert counts.loc["slate", "replay"] == counts.loc["slate", "production"] + 1  # the throttled ad
    slate = _frame(at, "in the replay's slate")
    assert p.throttled not in set(slate["ad_id"]) and p.throttled in set(_frame(at, "in production's slate")["ad_id"])
    # filters of the union table
    _ok(at.checkbox(key="lg_parts").check().run())
    assert set(at.dataframe(key="logged_table").value["ad_id"]) >= {PROD_AD, p.replay_only, p.throttled, p.credited}
    assert at.dataframe(key="logged_table").value["parts_at"].notna().all()


def test_pick_a_logged_request_by_user_and_time_or_by_id(app, logged_ws):
    _, p = logged_ws
    at = _ok(app.run())
    _ok(at.selectbox(key="version").select(VERSION).run())  # the version the logs were exported from
    assert at.button_group(key="inspect_mode").value == "Replay"
    _ok(at.button_group(key="inspect_mode").set_value("Logged").run())
    assert at.selectbox(key="logged_pick").value is not None and len(at.dataframe(key="logged_table").value)
    _ok(at.selectbox(key="logged_user").select(p.user_id).run())
    assert at.selectbox(key="logged_pick").value == p.request_id  # their only (so newest) logged request
    assert at.query_params["request"] == p.request_id
    assert PROD_AD in set(at.dataframe(key="logged_table").value["ad_id"])
    other = next(o for o in at.selectbox(key="logged_user").options if o not in (p.user_id, GHOST_USER))
    _ok(at.selectbox(key="logged_user").select(other).run())
    assert at.query_params["request"] != p.request_id
    # an unedited request: AdLens's own replay, exported and imported, agrees on every ad
    assert {m.label: m.value for m in at.metric}["Same slate"] == "yes"
    assert "nowhere: every ad agrees" in _texts(at.caption)
    assert at.dataframe(key="logged_table").value["found_by"].eq("both").all()
    _ok(at.text_input(key="logged_id").input(p.request_id).run())
    assert at.selectbox(key="logged_user").value == p.user_id and at.query_params["request"] == p.request_id
    _ok(at.text_input(key="logged_id").input("<b>nope</b>").run(), errors=True)
    assert "no logged request" in _texts(at.error) and md("<b>nope</b>") in _texts(at.error)
    # back to Replay: the sidebar's request and its link again
    _ok(at.button_group(key="inspect_mode").set_value("Replay").run())
    assert len(at.dataframe(key="candidates_table").value) and "request" not in at.query_params


def test_selecting_a_row_asks_why_not_on_the_logged_request(app, logged_ws):
    _, p = logged_ws
    at = _open(app, request=p.request_id, version=VERSION)
    table = at.dataframe(key="logged_table").value
    row = list(table["ad_id"]).index(p.throttled)  # the grid's row number
    assert row < 4  # the ads where the two part come first
    at.session_state["logged_table"] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    _ok(at.run(), errors=True)
    assert at.title[0].value == "Why not this ad?" and at.selectbox(key="ad").value == p.throttled
    heads = [s.value for s in at.subheader]
    assert heads.index("What production logged") < heads.index("AdLens's replay, stage by stage") \
        < heads.index("Where production and the replay part")
    assert md(UNKNOWN_REASON) in _texts(at.info)  # production's row first
    assert list(_frame(at, "stage_reached", "reasons")["reasons"].iloc[0]) == [UNKNOWN_REASON]
    assert "shown at position" in _texts(at.success)  # AdLens's verdict
    assert "they part at eligibility" in _texts(at.warning)
    assert at.query_params["request"] == p.request_id and at.query_params["ad"] == p.throttled


def test_why_not_on_an_ad_only_production_knows_shows_its_logged_row(app, logged_ws):
    _, p = logged_ws
    at = _open(app, request=p.request_id, version=VERSION)
    table = at.dataframe(key="logged_table").value
    row = list(table["ad_id"]).index(PROD_AD)
    at.session_state["logged_table"] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    _ok(at.run())
    assert at.title[0].value == "Why not this ad?"
    assert list(_frame(at, "stage_reached", "reasons")["reasons"].iloc[0]) == ["GEO_MISMATCH"]
    warnings = _texts(at.warning)
    assert "AdLens cannot follow this ad" in warnings and "only production retrieved it" in warnings


def test_deep_link_with_an_ad_opens_why_not_and_an_ad_only_the_replay_found(app, logged_ws):
    _, p = logged_ws
    at = _open(app, request=p.request_id, version=VERSION, ad=p.replay_only, errors=True)
    assert at.title[0].value == "Why not this ad?"
    assert "production did not log this ad" in _texts(at.warning)
    assert "only the replay retrieved it" in _texts(at.warning)


def test_a_user_adlens_has_never_seen_is_replayed_as_new_and_shown_as_text(app, logged_ws):
    _, p = logged_ws
    at = _open(app, request=p.ghost_request, version=VERSION)
    assert f"user **{md(GHOST_USER)}**" in at.caption[0].value
    assert f"User {md(GHOST_USER)} has no profile" in _texts(at.warning)
    assert len(at.dataframe(key="logged_table").value)
    assert GHOST_USER in at.selectbox(key="logged_user").options


def test_bad_request_link_warns_and_falls_back_to_replay(app):
    at = _open(app, request="no_such_request")
    assert f"Link parameter {md('request=no_such_request')} is not valid" in _texts(at.warning)
    assert at.button_group(key="inspect_mode").value == "Replay"
    assert len(at.dataframe(key="candidates_table").value)


def test_parity_page(app, logged_ws):
    _, p = logged_ws
    at = _ok(app.run())
    _ok(_goto(at, "parity").run())
    assert at.title[0].value == "Parity with production"
    _ok(at.selectbox(key="parity_version").select(VERSION).run())
    assert at.number_input(key="parity_n").value == N  # all N, fewer than the default (PARITY_REQUESTS)
    verdict = _texts(at.info)  # the new user's replay (GHOST_USER) moves more than the planted edits
    assert f"reproduces {percent((N - 2) / N)} of {N} logged slates" in verdict and "most disagreements" in verdict
    dis = _frame(at, "kind", "fate_changes").set_index("name")
    assert not dis.loc[UNKNOWN_REASON, "modelled"] and not dis.loc[UNKNOWN_SOURCE, "modelled"]
    assert dis.loc[UNKNOWN_REASON, "kind"] == "rule" and dis.loc[UNKNOWN_REASON, "slate_changes"] == 1
    assert dis.loc[UNKNOWN_REASON, "example"] == "/?" + urlencode(
        {"request": p.request_id, "version": VERSION, "ad": p.throttled})
    src = _frame(at, "same_source").set_index("name")
    assert src.loc[UNKNOWN_SOURCE, "modelled"] == "no: not modelled by AdLens"
    conf = _frame(at, "logged fate").set_index("logged fate")
    assert conf.loc[UNKNOWN_REASON, "slate"] == 1
    assert dis.loc["ad not in the version", "logged_only"] == 1  # PROD_AD
    stages = _frame(at, "logged stage", "hit").set_index("logged stage")
    assert list(stages.index) == ["retrieved", "eligible", "ranked", "slate"] and (stages["n"] >= stages["hit"]).all()
    _ok(at.selectbox(key="parity_version").select("ivf").run())
    assert "on ivf" in _texts(at.info)


def test_without_logged_traces_both_views_say_how_to_import(demo_workspace, use_workspace, tmp_path):
    import shutil

    from sqlalchemy import delete

    from core.store.models import LoggedRequest, TraceSet

    settings = copy_workspace(demo_workspace.path, tmp_path / "ws")  # the demo imports production logs:
    db = make_engine(settings.db_url)  # a copy without them
    try:
        with db.begin() as conn:
            conn.execute(delete(LoggedRequest))
            conn.execute(delete(TraceSet))
    finally:
        db.dispose()
    shutil.rmtree(settings.traces_dir)
    use_workspace(settings.workspace)
    at = _ok(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run())
    _ok(at.button_group(key="inspect_mode").set_value("Logged").run())
    assert "adlens import\\-traces DIR" in _texts(at.info)
    _ok(_goto(at, "parity").run())
    assert "adlens import\\-traces DIR" in _texts(at.info)


@pytest.mark.browser
def test_browser_opens_a_logged_request_by_deep_link(logged_ws, tmp_path):
    from core.bench.dashboard import CHROMIUM_ARGS, find_chromium, serve_dashboard

    chromium = find_chromium()
    if chromium is None:
        msg = "no Chromium (Debian package `chromium`; or set ADLENS_CHROMIUM)"
        pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    ws, p = logged_ws
    env = {**{k: v for k, v in os.environ.items() if k not in ("ADLENS_HOME", "ADLENS_DB_URL", "ADLENS_MODEL")},
           "ADLENS_HOME": str(ws), "HF_HUB_OFFLINE": "1"}
    with serve_dashboard(env, tmp_path / "streamlit.log", timeout=90) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/?{urlencode({'request': p.request_id, 'version': VERSION})}")
            page.get_by_text("Every ad either side touched").wait_for(timeout=120_000)
            page.wait_for_selector("[data-testid='stDataFrame']", timeout=120_000)
            _settle(page)
            _no_errors(page)
            text = page.locator("[data-testid='stMain']").inner_text()
            assert f"Logged request {p.request_id}" in text and UNKNOWN_REASON in text
            assert page.locator("[data-testid='stDataFrame']").count() >= 5  # counts, reasons, 2 slates, the table
            assert f"request={p.request_id}" in page.url
        finally:
            browser.close()
