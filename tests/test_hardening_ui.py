"""Hostile input at the dashboard and terminal boundaries, and AdLensError on every page.

- Link values, user ids and ad ids carrying markdown/HTML payloads render as text: the page's
  markdown (rendered here with markdown-it, as Streamlit's renderer would) makes no image, link or
  tag from them, and the Plotly hover escapes them.
- Titles with terminal control sequences are printed as visible escapes by the CLI.
- A version whose file was modified after the build shows the checksum message on every page
  (never Streamlit's exception box); so does a link time outside the supported range.
The browser-level version (no request leaves the page) is in test_e2e.py.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import LEAK_HOST, TERM_TITLE, copy_workspace
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest
from test_dashboard import APP, TIMEOUT, _goto

from core.analysis.links import parse_link
from core.common.escape import md

LINK_PAYLOAD = f"x`![i](http://{LEAK_HOST}/leak.png)`"
PAGES = ("inspect", "why-not", "map", "compare", "health")
slow = pytest.mark.slow


def _rendered(markdown: str) -> str:
    """The HTML Streamlit's markdown renderer (CommonMark + GFM tables) would make."""
    return MarkdownIt("commonmark").enable("table").render(markdown)


def _visible_text(markdown: str) -> str:
    """The text a reader sees (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", _rendered(markdown)))


def _assert_inert(markdown: str, payload: str) -> None:
    out = _rendered(markdown)
    assert "<img" not in out and "<a " not in out and "<b>" not in out, out
    assert LEAK_HOST not in re.sub(r">[^<]*<", "><", out), out  # the host only in text, no attribute
    assert payload in _visible_text(markdown), (payload, _visible_text(markdown))


# ---- core: link messages are plain text -------------------------------------------------------
KW = {"versions": ["exact", "ivf"], "user_ids": pd.Index(["u1", "u2"]), "community_ids": pd.Index(["c_a"]),
      "ad_ids": pd.Index(["ad1"])}


def test_link_messages_quote_the_value_without_markup():
    link = parse_link({"user": LINK_PAYLOAD, "ad": "<b>x</b>", "community": "**c**"}, **KW)
    assert len(link.errors) == 3 and link.user is None
    for msg, value in zip(link.errors, (LINK_PAYLOAD, "**c**", "<b>x</b>")):
        assert value in msg
        _assert_inert(md(msg), value)


def test_link_time_outside_the_supported_range_is_an_invalid_value():
    for t in ("9999-12-31T23:59:59", "0001-01-01", "1500-01-01T00:00:00"):
        link = parse_link({"time": t}, **KW)
        assert link.time is None and len(link.errors) == 1 and f"time={t}" in link.errors[0]
    assert parse_link({"time": "2262-04-11T00:00:00"}, **KW).time is not None


def test_error_messages_keep_their_lines_as_text():
    out = _rendered(md("2 problem(s):\n  - ad `x` <b>\n  - ![i](http://h/x.png)", keep_newlines=True))
    assert out.count("<br") == 2 and "<img" not in out and "<code>" not in out


# ---- dashboard (AppTest) on the hostile workspace -------------------------------------------
@pytest.fixture
def hostile_app(hostile_workspace, use_workspace) -> AppTest:
    use_workspace(hostile_workspace.path)
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


@slow
def test_hostile_link_value_is_shown_as_text(hostile_app):
    hostile_app.query_params.update({"user": LINK_PAYLOAD, "version": "hostile"})
    at = _ok(hostile_app.run())
    [warning] = [w.value for w in at.warning]
    _assert_inert(warning, f"Link parameter user={LINK_PAYLOAD} is not valid")


@slow
def test_hostile_user_id_is_text_in_the_inspect_caption(hostile_app, hostile_workspace):
    hostile_app.query_params.update({"user": hostile_workspace.user, "version": hostile_workspace.version})
    at = _ok(hostile_app.run())
    assert not at.warning and at.selectbox(key="user").value == hostile_workspace.user
    caption = at.caption[0].value
    _assert_inert(caption, f"user {hostile_workspace.user} ")
    assert "<strong>u</strong>" not in _rendered(caption)


@slow
def test_hostile_ad_id_is_escaped_in_the_map_hover(hostile_app, hostile_workspace):
    hostile_app.query_params.update({"user": hostile_workspace.user, "version": hostile_workspace.version})
    at = _ok(_goto(_ok(hostile_app.run()), "map").run())
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    found = 0
    for trace in fig["data"]:
        ids = trace.get("customdata") or []
        for i, ad in enumerate(ids):
            if ad == hostile_workspace.ad:
                found += 1
                # the hover shows `text` only (customdata is the raw id, for selections)
                assert "customdata" not in trace["hovertemplate"]
                assert trace["text"][i].startswith("&lt;b&gt;ad&lt;/b&gt;![a](http://"), trace["text"][i]
        assert "<b>" not in json.dumps(trace.get("name", ""))
    assert found, "the hostile ad is not on the map"


# ---- terminal ------------------------------------------------------------------------------
@slow
def test_cli_prints_control_characters_as_escapes(hostile_workspace, capsys, monkeypatch):
    from core.cli import main

    for k in ("ADLENS_HOME", "ADLENS_DB_URL"):
        monkeypatch.delenv(k, raising=False)
    ws = ["--workspace", str(hostile_workspace.path)]
    assert main([*ws, "inspect", "--version", "hostile", "--user", hostile_workspace.user]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07\\x1b[31mred title" in out  # the title, visibly escaped
    assert f"user {hostile_workspace.user} " in out  # printable payloads stay as typed
    assert main([*ws, "why-not", "--version", "hostile", "--user", hostile_workspace.user, "--ad", TERM_TITLE]) == 2
    err = capsys.readouterr().err  # "ad '…' is in neither the catalog nor version …"
    assert "\x1b" not in err and "\x07" not in err and "\\x1b]0;pwned" in err


def test_text_frame_escapes_text_cells_only():
    from core.cli.output import text_frame

    df = pd.DataFrame({"t": ["a\x1b[31m", None], "x": [0.5, 1.25]}, index=["r\x07", "ok"])
    out = text_frame(df).to_string(float_format=lambda v: f"{v:.1f}")
    assert "\x1b" not in out and "\x07" not in out and "a\\x1b[31m" in out and "r\\x07" in out and "1.2" in out


# ---- AdLensError on every page: a tampered version --------------------------------------------
@pytest.fixture(scope="module")
def tampered_workspace(demo_workspace, tmp_path_factory) -> Path:
    """A copy of the demo workspace whose version `ivf` had one byte of its index flipped."""
    settings = copy_workspace(demo_workspace.path, tmp_path_factory.mktemp("tampered") / "ws")
    vdir = settings.versions_dir / "ivf"
    assert "index.faiss" in json.loads((vdir / "manifest.json").read_text())["files"]
    target = vdir / "index.faiss"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return settings.workspace


@slow
@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_the_checksum_message_of_a_tampered_version(page, tampered_workspace, demo_workspace,
                                                                     use_workspace):
    use_workspace(tampered_workspace)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update({"version": "ivf", "user": demo_workspace.users[1], "ad": demo_workspace.html_ad})
    at = _ok(at.run())
    if page != "inspect":
        at = _ok(_goto(at, page).run())
    errors = " ".join(e.value for e in at.error)
    assert "sha256 mismatch" in errors and "rebuild this version" in errors, errors


@slow
def test_out_of_range_link_time_is_reported_not_raised(app_on_demo):
    app_on_demo.query_params.update({"time": "9999-12-31T23:59:59"})
    at = _ok(app_on_demo.run())
    warnings = " ".join(_visible_text(w.value) for w in at.warning)
    assert "Link parameter time=9999-12-31T23:59:59 is not valid" in warnings
    assert len(at.dataframe(key="candidates_table").value) > 0
    at = _ok(at.text_input(key="ctx_time").input("9999-12-31T23:59:59").run())  # typed in the sidebar
    assert any("outside the supported range" in e.value for e in at.error), [e.value for e in at.error]


@pytest.fixture
def app_on_demo(demo_workspace, use_workspace) -> AppTest:
    use_workspace(demo_workspace.path)
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def test_density_map_sample_hover_shows_the_escaped_id():
    """Above AGGREGATE_ABOVE ads the map is binned; its sample layer hovers the escaped id too."""
    from types import SimpleNamespace

    import numpy as np

    from core.common.escape import hover
    from core.index.map_density import density
    from dashboard.density_map import bin_text, density_figure, label_codes

    ids = np.array(["<b>ad</b>", "ad_2", "ad_3", "ad_4"])
    md_ = SimpleNamespace(x=np.array([0, 1, 2, 3], np.float32), y=np.array([0, 1, 0, 1], np.float32), ad_id=ids,
                          hover=np.array([hover(i) + "<br>title" for i in ids]))
    codes, labels = label_codes(pd.Series(["a", "b", "a", "<i>b</i>"]), 10)
    d = density(md_.x, md_.y, codes, labels, sample=10)
    fig = density_figure(md_, d, bin_text(d), "vertical")
    sample = next(t for t in fig.data if t.name.startswith("sample"))
    assert "customdata" not in sample.hovertemplate
    assert "&lt;b&gt;ad&lt;/b&gt;<br>title" in list(sample.text)
    assert all("<i>" not in (t.name or "") for t in fig.data)
    heat = next(t for t in fig.data if t.type == "heatmap")  # bin hovers name the label escaped too
    assert any("&lt;i&gt;b&lt;/i&gt;" in str(v) for v in np.ravel(heat.text)) and "<i>" not in str(list(np.ravel(heat.text)))
