"""AdLens dashboard entry point (`streamlit run dashboard`)."""

from __future__ import annotations

import streamlit as st

from core.catalog import table_counts
from core.db import make_engine, redact_url
from core.settings import load_settings

st.set_page_config(page_title="AdLens", layout="wide")
settings = load_settings()
st.title("AdLens")
st.caption(f"Workspace `{settings.workspace}` · database `{redact_url(settings.db_url)}`")
counts = table_counts(make_engine(settings.db_url))
st.dataframe([{"table": k, "rows": v} for k, v in counts.items()], hide_index=True)
if counts["ads"] == 0:
    st.info("The workspace is empty. Build the demo with `adlens demo` (or `make run`).")
