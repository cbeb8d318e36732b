"""End to end: `streamlit run dashboard` on a small demo workspace, driven by headless Chromium.

A module fixture starts the server the way a user does and polls `/_stcore/health`; each test
opens pages by URL (deep links included), waits for the page's own content and checks that no
exception or traceback reached the page. Full-page screenshots of every page go to
`test-artifacts/screenshots/`, and the user-switch timings to `test-artifacts/user_switch.json`
(reported, never asserted: the ≤ 1 s target at 100k ads is measured separately).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlencode, urlparse

import pytest

from core.bench.dashboard import (
    CAPTION_NAMES_USER,
    CHROMIUM_ARGS,
    find_chromium,
    serve_dashboard,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SHOTS = ARTIFACTS / "screenshots"
LOAD_MS = 120_000  # a cold page loads the catalog, a version's index and its tower
STEP_MS = 60_000


# ---- the server and the browser -----------------------------------------------------------
@pytest.fixture(scope="module")
def server(demo_workspace, tmp_path_factory) -> str:
    with serve_dashboard(demo_workspace.env(), tmp_path_factory.mktemp("e2e") / "streamlit.log", timeout=90) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    chromium = find_chromium()
    if chromium is None:
        msg = "no Chromium (Debian package `chromium`; or set ADLENS_CHROMIUM)"
        pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(STEP_MS)
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield pg
    assert not dialogs, f"a script opened a dialog: {dialogs}"
    ctx.close()


# ---- helpers --------------------------------------------------------------------------------
def _open(page, url: str, *selectors: str) -> None:
    """Open `url`, wait for the app and for each page-specific selector, then for the run to end."""
    page.goto(url)
    page.wait_for_selector("[data-testid='stAppViewContainer']", timeout=LOAD_MS)
    for sel in selectors:
        page.wait_for_selector(sel, timeout=LOAD_MS)
    _settle(page)


def _settle(page) -> None:
    """Wait until the script run is over (no 'running' status widget, no stale elements)."""
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"
        " && !document.querySelector(\"[data-stale='true']\")", timeout=LOAD_MS)
    page.wait_for_timeout(300)  # let charts and grids paint


def _no_errors(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, page.locator(
        "[data-testid='stException']").all_inner_texts()
    assert "Traceback" not in page.locator("[data-testid='stMain']").inner_text()
    assert page.get_by_text("Page not found").count() == 0


def _shot(page, name: str) -> Path:
    """A full-page screenshot: the main area scrolls inside the app, so grow the viewport to fit."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    h = page.evaluate("""() => Math.max(...["stMain", "stSidebarContent"].map(
        id => (document.querySelector(`[data-testid='${id}']`) || {scrollHeight: 0}).scrollHeight))""")
    page.set_viewport_size({"width": size["width"], "height": min(max(size["height"], int(h) + 40), 8000)})
    page.wait_for_timeout(500)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def _link(server: str, path: str = "", **params) -> str:
    return f"{server}/{path}" + (f"?{urlencode(params)}" if params else "")


def _captions(page) -> str:
    return " | ".join(page.locator("[data-testid='stMain'] [data-testid='stCaptionContainer']").all_inner_texts())


def _table_cells(page) -> list[str]:
    """The visible cells of the candidate table (the grid's accessible DOM mirror of its canvas)."""
    return page.locator("[data-testid='stDataFrame']").last.locator("[data-testid^='glide-cell-']").all_inner_texts()


# ---- tests ----------------------------------------------------------------------------------
PAGES = {  # name -> (url path, title, selectors that prove the page's content rendered)
    "inspect": ("", "Inspect", ["[data-testid='stDataFrame']", ".js-plotly-plot", "[data-testid='stMetric']"]),
    "why-not": ("why-not", "Why not this ad?", ["text=Eligibility rules", "[data-testid='stDataFrame']"]),
    "map": ("map", "Embedding map", [".js-plotly-plot"]),
    "compare": ("compare", "Compare versions", ["[data-testid='stDataFrame']", ".js-plotly-plot"]),
    "health": ("health", "Index health", [".js-plotly-plot", "text=Tower evaluation", "text=IVF inverted lists"]),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_renders(page, server, demo_workspace, name):
    path, title, selectors = PAGES[name]  # the default page (Inspect) is served at "/" only
    params = {"user": demo_workspace.users[1], "version": "ivf"}
    if name == "why-not":
        params["ad"] = demo_workspace.html_ad
    _open(page, _link(server, path, **params), *selectors)
    assert page.locator("h1").first.inner_text().strip() == title
    _no_errors(page)
    if name != "health":
        assert page.get_by_role("combobox", name="User").input_value() == demo_workspace.users[1]
    _shot(page, name)


def test_compare_aggregate(page, server, demo_workspace):
    _open(page, _link(server, "compare", user=demo_workspace.users[1], version="exact", b="ivf-noctx"),
          "[data-testid='stDataFrame']")
    page.get_by_role("radio", name="Aggregate").click()
    users = page.get_by_label("Users sampled")
    users.wait_for()
    users.fill("20")
    users.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Run comparison").click()
    page.wait_for_selector("text=Most changed requests", timeout=LOAD_MS)
    _settle(page)
    _no_errors(page)
    assert page.locator(".js-plotly-plot").count() >= 2  # RBO distribution and vertical mix
    _shot(page, "compare-aggregate")


def test_picking_a_user_rerenders_the_candidate_table(page, server, demo_workspace):
    _open(page, _link(server, version="exact"), "[data-testid='stDataFrame']", ".js-plotly-plot")
    before = _table_cells(page)
    timings = []
    for user in demo_workspace.users[1:4]:
        box = page.get_by_role("combobox", name="User")
        box.click()
        box.fill(user)
        t0 = time.perf_counter()
        page.keyboard.press("Enter")
        page.wait_for_function(CAPTION_NAMES_USER, arg=user, timeout=STEP_MS)
        t_caption = time.perf_counter() - t0
        _settle(page)
        t_done = time.perf_counter() - t0 - 0.3  # _settle's paint allowance
        after = _table_cells(page)
        assert after and after != before, f"candidate table did not change for {user}"
        assert page.evaluate("() => new URL(location.href).searchParams.get('user')") == user
        timings.append({"user": user, "caption_s": round(t_caption, 3), "rerun_done_s": round(t_done, 3)})
        before = after
    _no_errors(page)
    _shot(page, "inspect-after-user-switch")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "user_switch.json").write_text(json.dumps(
        {"ads": 600, "timings": timings, "note": "select user -> caption / whole rerun done, headless Chromium"},
        indent=2))
    print("user switch re-render times:", timings)


@pytest.mark.parametrize("path", ["", "inspect"])
def test_deep_link_shows_that_view(page, server, demo_workspace, path):
    user = demo_workspace.users[5]  # Inspect is served at "/" and, typed by hand, at "/inspect"
    _open(page, _link(server, path, user=user, version="ivf", device="ios", country="JP"),
          "[data-testid='stDataFrame']")
    assert page.locator("h1").first.inner_text().strip() == "Inspect"
    assert page.get_by_role("combobox", name="User").input_value() == user
    assert page.get_by_role("combobox", name="Index version").input_value() == "ivf"
    assert page.get_by_role("combobox", name="Device").input_value() == "ios"
    caption = _captions(page)
    assert f"user {user} " in caption and "Version ivf" in caption and " ios " in caption and " JP " in caption
    assert page.locator("[data-testid='stAlert']").count() == 0
    _no_errors(page)


def test_bad_deep_link_shows_a_warning(page, server, demo_workspace):
    _open(page, _link(server, user="nope", placement="sideways", version="v9"), "[data-testid='stDataFrame']")
    alerts = " ".join(page.locator("[data-testid='stAlert']").all_inner_texts())
    for param in ("user=nope", "placement=sideways", "version=v9"):
        assert f"Link parameter {param} is not valid" in alerts
    assert page.get_by_role("combobox", name="User").input_value() == demo_workspace.users[0]
    _no_errors(page)
    _shot(page, "inspect-bad-link")


def _nothing_ran(page) -> None:
    """The title's markup stayed text: no script ran, no element was made from it."""
    assert page.evaluate("() => window.__xss") is None, "a script from an ad title ran"
    assert page.locator("[data-testid='stMain'] b", has_text="bold").count() == 0
    assert page.locator("img[src='x']").count() == 0


def test_html_in_an_ad_title_is_shown_literally(page, server, demo_workspace):
    title, ad, user = demo_workspace.html_title, demo_workspace.html_ad, demo_workspace.users[0]
    _open(page, _link(server, user=user, version="exact"), "[data-testid='stDataFrame']")
    search = page.get_by_label("Search title, advertiser or ad id")
    search.fill("onerror")
    search.press("Enter")
    page.wait_for_function("() => [...document.querySelectorAll(\"[data-testid='stCaptionContainer']\")]"
                           ".some(e => e.innerText.startsWith('1 of '))", timeout=STEP_MS)
    _settle(page)
    cells = _table_cells(page)
    assert ad in cells and title in cells  # the whole title, tags included, as text
    _nothing_ran(page)
    _shot(page, "inspect-html-title")

    _open(page, _link(server, "why-not", user=user, version="exact", ad=ad), "text=Eligibility rules")
    ad_box = page.locator("[data-testid='stMain'] [data-testid='stSelectbox'] input").first
    assert title in ad_box.input_value()
    _nothing_ran(page)
    _shot(page, "why-not-html-title")

    _open(page, _link(server, "map", user=user, version="exact"), ".js-plotly-plot")
    _nothing_ran(page)
    _no_errors(page)


def test_empty_workspace_offers_the_demo(browser, tmp_path, demo_workspace):
    env = {**demo_workspace.env(), "ADLENS_HOME": str(tmp_path / "empty")}
    with serve_dashboard(env, tmp_path / "streamlit.log", timeout=90) as url:
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = ctx.new_page()
        _open(pg, url, "text=Welcome to AdLens")
        assert pg.get_by_role("button", name="Build the demo workspace").is_visible()
        _no_errors(pg)
        _shot(pg, "onboarding")
        ctx.close()


# ---- hostile links and ids: rendered as text, no request leaves the page ---------------------
@pytest.fixture(scope="module")
def hostile_server(hostile_workspace, tmp_path_factory) -> str:
    with serve_dashboard(hostile_workspace.env(), tmp_path_factory.mktemp("e2e-hostile") / "streamlit.log",
                         timeout=90) as url:
        yield url


# The hover text and template of ad `id` on the map, as Plotly holds them after processing the figure.
HOVER_OF_AD = """id => { const gd = document.querySelector('.js-plotly-plot');
  for (const t of gd._fullData) {
    const i = Array.from(t.customdata || []).indexOf(id);
    if (i >= 0) return [t.text[i], t.hovertemplate];
  } return null; }"""


def test_hostile_link_and_ids_show_as_text_and_request_nothing(browser, hostile_server, hostile_workspace):
    from conftest import LEAK_HOST

    link_payload = f"x`![i](http://{LEAK_HOST}/leak.png)`"
    user, ad, version = hostile_workspace.user, hostile_workspace.ad, hostile_workspace.version
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(STEP_MS)
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))

    _open(pg, _link(hostile_server, user=link_payload, version=version), "[data-testid='stDataFrame']")
    alerts = " ".join(pg.locator("[data-testid='stAlert']").all_inner_texts())
    assert f"Link parameter user={link_payload} is not valid" in alerts, alerts
    _no_errors(pg)

    _open(pg, _link(hostile_server, user=user, version=version), "[data-testid='stDataFrame']", ".js-plotly-plot")
    assert f"user {user} " in _captions(pg)
    assert pg.get_by_role("combobox", name="User").input_value() == user
    _shot(pg, "hostile-inspect")

    _open(pg, _link(hostile_server, "why-not", user=user, version=version, ad=ad), "text=Eligibility rules")
    assert ad in pg.locator("[data-testid='stMain'] [data-testid='stSelectbox'] input").first.input_value()
    _no_errors(pg)

    _open(pg, _link(hostile_server, "map", user=user, version=version), ".js-plotly-plot")
    # What Plotly draws on hover for the hostile ad (its hover label renders entities as the characters):
    # hovering it with the mouse is unreliable (ads with the same text sit on the same spot).
    text, template = pg.evaluate(HOVER_OF_AD, ad)
    assert text.startswith("&lt;b&gt;ad&lt;/b&gt;![a](http://"), text
    assert "customdata" not in template, template  # the raw id is never drawn
    _no_errors(pg)
    _shot(pg, "hostile-map")

    assert pg.locator("[data-testid='stMain'] b").count() == 0
    assert pg.locator(f"img[src*='{LEAK_HOST}']").count() == 0
    server_host = urlparse(hostile_server).netloc
    leaks = [u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
             and urlparse(u).netloc != server_host]
    assert not leaks, f"the page requested other hosts: {leaks}"
    assert requests, "no request was recorded at all"
    ctx.close()


def _legend(page) -> list[str]:
    return [t.strip() for t in page.locator(".js-plotly-plot .legendtext").all_text_contents()]


def test_funnel_chart_is_split_by_source_and_follows_the_what_if_link(page, server, demo_workspace):
    sources = ["two_tower", "co_engagement", "popular_in_context", "targeting", "ease"]  # ease: a small catalog
    _open(page, _link(server, user=demo_workspace.users[2], version="ivf"), ".js-plotly-plot .legendtext")
    _no_errors(page)
    assert _legend(page) == sources  # one funnel series per candidate source
    assert page.locator(".js-plotly-plot .funnellayer .trace").count() == len(sources)
    _shot(page, "inspect-funnel-by-source")
    # a shared link that switches two sources off draws only the sources that ran
    _open(page, _link(server, user=demo_workspace.users[2], version="ivf", off="co_engagement,targeting"),
          ".js-plotly-plot .legendtext")
    _no_errors(page)
    assert _legend(page) == ["two_tower", "popular_in_context", "ease"]
    assert page.get_by_role("checkbox", name="targeting").is_checked() is False
    page.get_by_text("Split by candidate source").click()  # back to the single funnel
    _settle(page)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .funnellayer .trace').length === 1",
                           timeout=STEP_MS)
    assert "two_tower" not in _legend(page)
