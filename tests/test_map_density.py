"""The aggregated Embedding map: binning with known answers, the bound on points sent to the
browser at a large synthetic catalog (AppTest inspects the figure; the layout is constructed
directly, no UMAP), and the page switching to it above the threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.index.map_density import MAX_BROWSER_POINTS, density, full_viewport
from dashboard.density_map import bin_text, box_of, label_codes


def test_density_counts_and_majority_have_known_answers():
    # four quadrants of 100 points; the left half is label 0, the right half label 1, except
    # 30 points of label 1 mixed into the bottom-left quadrant
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 1, 200), rng.uniform(2, 3, 200)]).astype(np.float32)
    y = np.concatenate([rng.uniform(0, 1, 100), rng.uniform(2, 3, 100), rng.uniform(0, 1, 100),
                        rng.uniform(2, 3, 100)]).astype(np.float32)
    codes = np.array([0] * 200 + [1] * 200)
    codes[:30] = 1
    d = density(x, y, codes, ["a", "b"], viewport=(0, 3, 0, 3), grid=3, sample=50)
    np.testing.assert_array_equal(d.counts, [[100, 0, 100], [0, 0, 0], [100, 0, 100]])
    np.testing.assert_array_equal(d.majority, [[0, -1, 1], [-1, -1, -1], [0, -1, 1]])
    assert d.share[0, 0] == pytest.approx(0.7)
    text = bin_text(d)  # the bins' hover: majority label and its share, empty where no ads
    assert text[0, 0] == "a (70%)" and text[2, 2] == "b (100%)" and text[1, 1] == ""
    assert d.n_in_view == 400 and len(d.sample) == 50 and len(set(d.sample)) == 50
    zoom = density(x, y, codes, ["a", "b"], viewport=(0, 1.5, 0, 1.5), grid=3, sample=1000)
    assert zoom.n_in_view == 100 and zoom.counts.sum() == 100  # re-binned: only the box
    assert set(zoom.sample) == set(range(100))
    x0, x1, y0, y1 = full_viewport(x, y)
    assert x0 < 0.01 and x1 > 2.99


def test_box_selection_and_label_codes():
    import pandas as pd

    assert box_of({"box": [{"x": [2.0, 1.0], "y": [0.0, 3.0]}]}) == (1.0, 2.0, 0.0, 3.0)
    assert box_of({"box": []}) is None and box_of(None) is None
    codes, labels = label_codes(pd.Series(["a", "b", "a", None, "c"]), 2)
    assert labels == ["a", "b", "other"] and codes.tolist() == [0, 1, 0, 2, 2]


def _arr(v) -> np.ndarray:
    """A figure array as Plotly serialises it: a list, or {"dtype", "bdata" (base64), "shape"}."""
    import base64

    if isinstance(v, dict) and "bdata" in v:
        out = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        return out.reshape([int(n) for n in str(shape).split(",")]) if shape else out
    return np.asarray(v if v is not None else [], dtype=object)


def _n_points(spec: dict) -> int:
    return sum(len(_arr(t.get("x"))) for t in spec["data"] if t["type"] != "heatmap" and t.get("x") != [None])


def _large_map_script():
    """Runs inside AppTest: a 1M-ad layout built directly, drawn by the aggregated map."""
    import numpy as np
    import pandas as pd
    import streamlit as st

    from core.index.map_density import density
    from dashboard import density_map
    from dashboard.state import MapData

    n = 1_000_000
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10, size=(36, 2))
    vertical = rng.integers(0, 36, n)
    xy = (centres[vertical] + rng.normal(size=(n, 2))).astype(np.float32)
    ids = np.char.add("ad", np.arange(n).astype(str))
    ads = pd.DataFrame({"ad_id": ids, "x": xy[:, 0], "y": xy[:, 1], "vertical": [f"v{v}" for v in vertical]})
    md = MapData(ads=ads, users=pd.DataFrame(), x=xy[:, 0], y=xy[:, 1], ad_id=ids, hover=ids.astype(str),
                 rows=pd.Index(ids))
    codes, labels = density_map.label_codes(ads["vertical"], 40)
    d = density(md.x, md.y, codes, labels, viewport=st.session_state.get("vp"), sample=density_map.sample_size(500))
    fig = density_map.density_figure(md, d, density_map.bin_text(d), "vertical")
    st.plotly_chart(fig, key="big_map")
    st.caption(density_map.caption(d, "vertical", 500))


@pytest.mark.slow
def test_aggregated_map_at_1m_ads_sends_a_bounded_figure():
    at = AppTest.from_function(_large_map_script, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    (chart,) = at.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    heat = [t for t in spec["data"] if t["type"] == "heatmap"]
    points = _n_points(spec)
    assert len(heat) == 1 and _arr(heat[0]["customdata"]).astype(float).sum() == 1_000_000
    assert 0 < points <= MAX_BROWSER_POINTS - 500
    assert len(chart.proto.spec) < 3_000_000  # vs ~130 MB for a million points
    assert "1,000,000 ads" in at.caption[0].value and "aggregated on the server" in at.caption[0].value
    at.session_state["vp"] = (0.0, 5.0, 0.0, 5.0)  # a zoomed viewport is re-binned
    at.run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    heat = [t for t in spec["data"] if t["type"] == "heatmap"][0]
    assert 0 < _arr(heat["customdata"]).astype(float).sum() < 1_000_000
    hx = _arr(heat["x"]).astype(float)
    assert hx.min() >= 0.0 and hx.max() <= 5.0
    assert "zoomed" in at.caption[0].value


@pytest.mark.slow
def test_map_page_switches_to_the_aggregated_view_above_the_threshold(demo_workspace, use_workspace, monkeypatch):
    import dashboard.views.embedding_map as page
    from tests.test_dashboard import APP, _goto, _map_traces

    use_workspace(demo_workspace.path)
    monkeypatch.setattr(page, "AGGREGATE_ABOVE", 100)  # the demo's 600 ads count as "large"
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    _goto(at, "map").run()
    assert not at.exception, [e.value for e in at.exception]
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert any(t["type"] == "heatmap" for t in spec["data"])
    # SVG only: the chart is mounted anew on every user switch, and a WebGL trace costs a context
    assert not [t["name"] for t in spec["data"] if t["type"] == "scattergl"]
    traces = _map_traces(at)
    assert "retrieved candidates" in traces and "request (query vector)" in traces
    assert any(k.startswith("sample of the view") for k in traces)
    assert _n_points(spec) <= MAX_BROWSER_POINTS
    captions = [c.value for c in at.caption]
    assert any("aggregated on the server" in c for c in captions)
    assert any(c.startswith("Request of user **") for c in captions)  # which request is drawn
    at.toggle(key="map_users").set_value(True).run()  # users are not drawn when aggregated: said so
    assert not at.exception and any("User points are drawn on maps of up to 100 ads" in c.value for c in at.caption)
