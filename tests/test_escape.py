"""One escaping helper per medium, against the payloads a hostile dataset or link would use."""

import pandas as pd
import pytest
from markdown_it import MarkdownIt

from core.common.escape import hover, md, term

PAYLOADS = ["x`![i](http://127.0.0.1:9/leak.png)`", "**bold** _it_", "<b>tag</b><img src=x onerror=1>",
            "[link](javascript:alert(1))", "# heading", "a | b", "http://example.invalid/x", "&lt;", "1. item"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_markdown_renders_the_characters_given(payload):
    out = MarkdownIt("commonmark").enable("table").render(md(payload))
    assert "<img" not in out and "<a " not in out and "<b>" not in out and "<strong>" not in out
    assert "<h1>" not in out and "<ol>" not in out
    text = MarkdownIt("commonmark").render(md(payload)).removeprefix("<p>").removesuffix("</p>\n")
    import html as h
    assert h.unescape(text) == payload


def test_markdown_flattens_newlines():
    assert "\n" not in md("a\n# b\r\nc")


def test_hover_escapes_tags_for_values_and_series():
    assert hover("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert hover(pd.Series(["<br>", "ok"])).tolist() == ["&lt;br&gt;", "ok"]
    assert hover(None) == ""


def test_terminal_shows_control_characters_as_escapes():
    assert term("a\x1b]0;evil\x07b") == "a\\x1b]0;evil\\x07b"
    assert term("x\x9by\u202ez") == "x\\x9by\\u202ez"
    assert term("tab\tok\nline") == "tab\tok\\x0aline"
    assert term("tab\tok\nline", keep_newlines=True) == "tab\tok\nline"
    assert term("Café – ☕") == "Café – ☕"
