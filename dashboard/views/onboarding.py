"""Shown when the workspace has no data or no version yet: what to do, and a demo button."""

from __future__ import annotations

import streamlit as st

from core.common.errors import AdLensError
from core.common.escape import md
from core.demo.pipeline import build_demo
from core.store.readonly import folder_read_only
from dashboard import state
from dashboard.messages import show_error


def render() -> None:
    s = state.settings()
    st.title("Welcome to AdLens")
    st.markdown(
        f"The workspace {md(s.workspace)} has no index version yet, so there is nothing to inspect.\n\n"
        "- **Try it on demo data**: the button below generates a realistic ads dataset (10,000 ads, "
        "5,000 users, ~300k impressions), embeds the ads, trains the user towers and builds the index "
        "versions. It takes a few minutes.\n"
        "- **Use your own data**: `adlens ingest DIR` (format in `data/README.md`), then `adlens embed`, "
        "`adlens train --name T` and `adlens build-index --name V --factory \"IVF256,Flat\" --tower T`."
    )
    if why := folder_read_only(s.workspace):
        st.info(md(f"This workspace is read-only ({why}), so the demo cannot be built here: run "
                   "`adlens --workspace DIR demo` on a writable folder and open that one."))
        return
    if st.button("Build the demo workspace", type="primary", key="build_demo"):
        bar = st.progress(0.0, text="Starting…")
        try:
            build_demo(s, progress=lambda f, step: bar.progress(min(1.0, f), text=f"{step}…"))
        except AdLensError as exc:
            show_error(exc)
            return
        st.cache_data.clear()
        st.cache_resource.clear()
        st.rerun()
