"""AdLens dashboard entry point: `streamlit run dashboard`.

Serves the page router (dashboard/router.py) as a Streamlit `st.App`, whose lifespan runs
`dashboard.warm.warm_up` in a background thread as the server starts and waits for it, up to
dashboard.warm.WARM_BEFORE_SERVING_S, before the server answers: the imports, the catalog and the
engines of the newest version and of Compare's default B are loaded before the first page is asked
for, so no first view races them for the CPU (2-3 s on the 10k-ad demo on 2 cores). A warm-up that
takes longer (a large catalog) goes on while the server answers: a page that needs what it is
still loading waits for the same computation (Streamlit's cache computes one value once) under the
page's own spinner, never a second copy.
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
    from dashboard.warm import wait_for_warm_up

    await wait_for_warm_up()
    yield


app = st.App("router.py", lifespan=lifespan)
