"""Messages shown on a page: AdLensError texts quote user input (ids, link values, file paths),
so they are rendered as text (core.common.escape.md), never as markdown."""

from __future__ import annotations

import streamlit as st

from core.common.escape import md


def show_error(exc: BaseException | str) -> None:
    """The error's message in an st.error box, exactly as written (line breaks kept)."""
    st.error(md(str(exc), keep_newlines=True))
