"""User-supplied text rendered as text: one helper per medium. Ids, titles, names and link
values come from imported data or URLs; none of them may become markup, a link, an image or a
terminal control sequence.

- `md(text)`: Streamlit markdown (st.markdown, st.caption, st.warning, st.info, titles, labels):
  every markdown/HTML metacharacter backslash-escaped, so `![i](http://…)`, `**x**` and `<b>` show
  literally; newlines become spaces (a line break could start a block element).
- `hover(text)`: Plotly labels and hover text, which interpret a subset of HTML (<b>, <br>, <a>):
  entities escaped; Plotly draws the entities back as the characters.
- `term(text)`: a terminal: C0/C1 control characters (ESC, BEL, CR, ...) and other
  non-printables replaced by their visible escape (`\\x1b`), so data cannot retitle, recolour or
  rewrite the terminal; tab and newline kept where asked.
"""

from __future__ import annotations

import html
import re
import unicodedata

import pandas as pd

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&:$=\"'])")


def md(text: object, *, keep_newlines: bool = False) -> str:
    """Text safe to place inside Streamlit markdown (renders exactly as the characters given).
    With `keep_newlines`, each line is escaped on its own and lines end in a markdown hard break
    (multi-line error messages)."""
    s = "" if text is None else str(text)
    if keep_newlines:
        return "  \n".join(md(line) for line in s.splitlines())
    s = s.replace("\r", " ").replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", s)


def hover(text):
    """Plotly-safe text for a value or a Series (labels, hover text, annotations)."""
    if isinstance(text, pd.Series):
        return text.astype(str).map(lambda s: html.escape(s, quote=False))
    return html.escape("" if text is None else str(text), quote=False)


def _visible(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def term(text: object, *, keep_newlines: bool = False) -> str:
    """Text safe to print to a terminal: control and format characters shown as escapes."""
    s = "" if text is None else str(text)
    keep = {"\t", "\n"} if keep_newlines else {"\t"}
    return "".join(ch if ch in keep or not unicodedata.category(ch).startswith("C") else _visible(ch) for ch in s)
