"""The aggregated Embedding map (versions above core.index.map_density.AGGREGATE_ABOVE ads): a
density heatmap coloured by each bin's majority label, a bounded sample of the viewport's ads as
points, and the caller's request layers. Zooming is a box selection: the page re-bins the box."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go

from core.index.map_density import MAX_BROWSER_POINTS, SAMPLE_POINTS, Density
from dashboard.charts import plain

PALETTE = plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24


def label_codes(values: pd.Series, max_labels: int) -> tuple[np.ndarray, list[str]]:
    """(code per ad, labels): the `max_labels` most frequent values, the rest as "other"."""
    values = values.fillna("unknown").astype(str)
    top = list(values.value_counts().index[:max_labels])
    codes = pd.Categorical(values.where(values.isin(top), "other"), categories=[*top, "other"]).codes
    return np.asarray(codes, np.int64), [*top, "other"]


def _colorscale(labels: list[str]) -> list:
    """One band per label: z in [i, i + 1) runs from the label's light to its full colour."""
    n, stops = len(labels), []
    for i, _ in enumerate(labels):
        color = PALETTE[i % len(PALETTE)] if labels[i] != "other" else "#9a9a9a"
        light = plotly.colors.find_intermediate_color(
            plotly.colors.hex_to_rgb("#ffffff"), plotly.colors.hex_to_rgb(color), 0.25)
        stops += [[i / n, f"rgb{tuple(int(c) for c in light)}"], [(i + 0.999) / n, color]]
    return stops


def sample_size(n_request_points: int) -> int:
    """Viewport sample size that keeps sample + request points within MAX_BROWSER_POINTS."""
    return min(max(0, MAX_BROWSER_POINTS - n_request_points), SAMPLE_POINTS)


def bin_text(d: Density) -> np.ndarray:
    """Each bin's hover text, "<majority label> (<share>)", as a fixed-width string array (Plotly
    copies it without a Python call per bin)."""
    names = [plain(v) for v in d.labels]
    maj, share = d.majority.ravel(), d.share.ravel()
    text = [f"{names[m]} ({s:.0%})" if m >= 0 else "" for m, s in zip(maj, share)]
    return np.asarray(text, dtype=str).reshape(d.counts.shape)


def density_figure(md, d: Density, text: np.ndarray, field: str) -> go.Figure:
    """The density layer of `d` (with its `bin_text`) and its viewport sample as a figure; the
    caller adds the request layers, as SVG traces too."""
    labels = d.labels
    n = len(labels)
    logc = np.log1p(d.counts)
    frac = logc / max(float(logc.max()), 1e-9)
    z = np.where(d.counts > 0, d.majority + 0.999 * frac, np.nan)
    fig = go.Figure(go.Heatmap(
        x=d.x_centers, y=d.y_centers, z=z, zmin=0, zmax=n, colorscale=_colorscale(labels), showscale=False,
        customdata=d.counts, text=text, name="density",
        hovertemplate=f"%{{customdata:,}} ads<br>majority {plain(field)}: %{{text}}<extra>density</extra>"))
    for i, lab in enumerate(labels):  # legend entries for the density colours (no points)
        if (d.majority == i).any():
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=plain(lab), showlegend=True,
                                       marker=dict(size=8, symbol="square",
                                                   color=PALETTE[i % len(PALETTE)] if lab != "other" else "#9a9a9a")))
    idx = d.sample
    fig.add_trace(go.Scatter(  # SVG, as every point layer here (see MAX_BROWSER_POINTS)
        x=md.x[idx], y=md.y[idx], mode="markers", name=f"sample of the view ({len(idx):,} ads)",
        customdata=md.ad_id[idx], text=md.hover[idx], hovertemplate="%{text}<extra>sample</extra>",  # hover: escaped id
        marker=dict(size=3, color="rgba(20,20,20,0.45)")))
    x0, x1, y0, y1 = d.viewport
    fig.update_layout(xaxis=dict(range=[x0, x1]), yaxis=dict(range=[y0, y1]))
    return fig


def caption(d: Density, field: str, n_request_points: int) -> str:
    zoom = "" if d.n_in_view == d.n_total else f" (zoomed: {d.n_in_view:,} of them in view)"
    return (f"{d.n_total:,} ads{zoom}, aggregated on the server into {len(d.x_centers)}×{len(d.y_centers)} bins: "
            f"colour = each bin's majority {field}, darker = more ads. Drawn as points: a random sample of "
            f"{len(d.sample):,} ads in view and the request's {n_request_points:,} points (at most "
            f"{MAX_BROWSER_POINTS:,} points are sent). Box-select an area to zoom in and re-bin it.")


def box_of(selection) -> tuple[float, float, float, float] | None:
    """The (x0, x1, y0, y1) of a box selection event, or None."""
    boxes = (selection or {}).get("box") or []
    if not boxes:
        return None
    b = boxes[-1]
    xs, ys = b.get("x") or [], b.get("y") or []
    if len(xs) < 2 or len(ys) < 2:
        return None
    x0, x1, y0, y1 = float(min(xs)), float(max(xs)), float(min(ys)), float(max(ys))
    return (x0, x1, y0, y1) if x1 > x0 and y1 > y0 else None
