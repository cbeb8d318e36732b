"""AdLens dashboard entry point: `streamlit run dashboard`.

Serves the page router (dashboard/router.py) as a Streamlit `st.App`, whose lifespan starts
`dashboard.warm.warm_up` in a background thread as the server starts: the imports, the catalog and
the newest version's engine are loaded while the first browser is still loading the app, off the
first page's critical path. A page that needs them before they are ready waits for the same
computation (Streamlit's cache computes one value once), never a second copy.
"""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402


@asynccontextmanager
async def lifespan(_app):
    from dashboard.warm import start_warm_up

    start_warm_up()
    yield


app = st.App("router.py", lifespan=lifespan)
