"""AdLens dashboard's page router: the script `streamlit run dashboard` runs for each session
(dashboard/streamlit_app.py serves it, and warms the server's caches at start: dashboard/warm.py).

A thin router: it sets up the page, validates the deep link, renders the shared request sidebar
for the pages that need one and runs the chosen page. Pages live in dashboard/views/. Every
AdLensError a page or the sidebar raises (a corrupted version, a bad request value) is shown here,
once for all pages, as its message instead of Streamlit's exception box.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

START = time.perf_counter()  # this script run's start, imports included (the timing log's "script run")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core.common.errors import AdLensError  # noqa: E402
from core.common.escape import md  # noqa: E402
from dashboard import sidebar, state  # noqa: E402
from dashboard.messages import show_error  # noqa: E402
from dashboard.views import compare, embedding_map, health, inspect, onboarding, parity, why_not  # noqa: E402

st.set_page_config(page_title="AdLens", page_icon="🔎", layout="wide")

PAGES = {
    # The default page is served at "/"; its url_path only names it inside Streamlit, so
    # "/inspect" (the path users type) is a hidden alias of the same page below.
    "inspect": st.Page(inspect.render, title="Inspect", icon=":material/search:", url_path="home", default=True),
    "why_not": st.Page(why_not.render, title="Why not", icon=":material/help:", url_path="why-not"),
    "map": st.Page(embedding_map.render, title="Embedding map", icon=":material/scatter_plot:", url_path="map"),
    "compare": st.Page(compare.render, title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    "health": st.Page(health.render, title="Health", icon=":material/monitor_heart:", url_path="health"),
    "parity": st.Page(parity.render, title="Parity", icon=":material/balance:", url_path="parity"),
}
ALIASES = {"inspect": st.Page(inspect.render, title="Inspect", url_path="inspect", visibility="hidden")}
REQUEST_PAGES = {"inspect", "why_not", "map", "compare"}

try:
    ready = bool(state.version_names()) and state.catalog().n_ads > 0
except Exception as exc:  # a broken workspace must not show a traceback
    show_error(f"The workspace could not be opened: {exc}")
    st.stop()

if not ready:
    start = st.Page(onboarding.render, title="Get started", icon=":material/rocket_launch:", url_path="start")
    st.navigation([start]).run()
    st.stop()

st.session_state["_pages"] = PAGES  # for st.switch_page from views
page = st.navigation([*PAGES.values(), *ALIASES.values()])
for msg in state.init_from_link():
    st.warning(md(msg))
key = next(k for pages in (PAGES, ALIASES) for k, p in pages.items() if p.url_path == page.url_path)
try:
    if key in REQUEST_PAGES:
        with state.steps().step("sidebar"):
            sidebar.render_request_controls()
    page.run()
except AdLensError as exc:
    show_error(exc)
finally:
    state.steps().record(f"script run {key}", time.perf_counter() - START)
