"""The embedding map at any size: above `AGGREGATE_ABOVE` ads the server bins the layout.

A browser cannot draw millions of points (the figure alone is ~130 bytes per point), so for a
large version the map is sent as:
- a density layer: the current viewport cut into `grid` x `grid` bins, each with its ad count
  and the majority label (e.g. vertical) among its ads, with that label's share;
- a drill-down sample: at most `sample` ads drawn uniformly from the viewport, as points
  (hover, selection), so zooming in (a smaller viewport, re-binned) shows individual ads;
- the request's own points (query, candidates, slate, clicks), drawn by the caller.

`MAX_BROWSER_POINTS` bounds everything sent as points. Binning 1M ads takes tens of ms
(one `np.bincount` over bin x label).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGGREGATE_ABOVE = 50_000
"""Versions with more ads than this get the aggregated map. Every ad as a WebGL point costs a user
switch 1.2 s at 10k ads and 3.4 s at 100k (the whole figure, 130 bytes per ad, is re-sent and
re-drawn); aggregated, 100k ads take 0.95 s (`adlens bench --ads 100000 --sections dashboard
--dashboard-page map`)."""
GRID = 128
SAMPLE_POINTS = 500
MAX_BROWSER_POINTS = 2_000
"""Points the browser receives at most on an aggregated map: the viewport sample plus the
request's layers (the sample shrinks to make room; candidates beyond the bound are dropped).
The aggregated map draws its points as SVG, not WebGL: Streamlit mounts a new chart whenever the
figure changes (its element id hashes the spec), so every user switch would pay for a new WebGL
context (~0.7 s in software-rendered Chromium), while SVG costs ~0.3 ms per point; 2,000 points
keep a switch within a second at any catalog size (`adlens bench --sections dashboard
--dashboard-page map`)."""


@dataclass
class Density:
    """Binned counts of one viewport: `counts[i, j]` ads in bin (row y_i, column x_j)."""

    x_centers: np.ndarray
    y_centers: np.ndarray
    counts: np.ndarray  # (grid, grid) int64
    majority: np.ndarray  # (grid, grid) label code of the bin's majority, -1 where empty
    share: np.ndarray  # (grid, grid) the majority label's share of the bin's ads
    labels: list[str]
    viewport: tuple[float, float, float, float]  # x0, x1, y0, y1
    n_total: int
    n_in_view: int
    sample: np.ndarray  # row indices of the drawn sample (sorted)


def full_viewport(x: np.ndarray, y: np.ndarray, pad: float = 0.02) -> tuple[float, float, float, float]:
    """The layout's bounding box, padded by `pad` of its extent."""
    x0, x1, y0, y1 = float(np.nanmin(x)), float(np.nanmax(x)), float(np.nanmin(y)), float(np.nanmax(y))
    dx, dy = max(x1 - x0, 1e-6) * pad, max(y1 - y0, 1e-6) * pad
    return x0 - dx, x1 + dx, y0 - dy, y1 + dy


def density(x: np.ndarray, y: np.ndarray, codes: np.ndarray, labels: list[str], *,
            viewport: tuple[float, float, float, float] | None = None, grid: int = GRID,
            sample: int = SAMPLE_POINTS, seed: int = 0) -> Density:
    """Bin the ads inside `viewport` (default: all) and draw a uniform sample of them.

    `codes[i]` is ad i's label index into `labels` (e.g. `pd.factorize` of the vertical)."""
    if grid < 1 or sample < 0:
        raise ValueError(f"grid must be >= 1 and sample >= 0; got {grid}, {sample}")
    x0, x1, y0, y1 = viewport or full_viewport(x, y)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty viewport {(x0, x1, y0, y1)}")
    inside = np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
    gx = np.minimum(((x[inside] - x0) / (x1 - x0) * grid).astype(np.int64), grid - 1)
    gy = np.minimum(((y[inside] - y0) / (y1 - y0) * grid).astype(np.int64), grid - 1)
    cell = gy * grid + gx
    n_labels = max(len(labels), 1)
    per_label = np.bincount(cell * n_labels + np.asarray(codes)[inside], minlength=grid * grid * n_labels)
    per_label = per_label.reshape(grid * grid, n_labels)
    counts = per_label.sum(axis=1)
    majority = np.where(counts > 0, per_label.argmax(axis=1), -1)
    share = np.divide(per_label.max(axis=1), counts, out=np.zeros(len(counts)), where=counts > 0)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(inside, size=min(sample, len(inside)), replace=False)) if len(inside) else inside
    step_x, step_y = (x1 - x0) / grid, (y1 - y0) / grid
    return Density(
        x_centers=x0 + step_x * (np.arange(grid) + 0.5), y_centers=y0 + step_y * (np.arange(grid) + 0.5),
        counts=counts.reshape(grid, grid), majority=majority.reshape(grid, grid), share=share.reshape(grid, grid),
        labels=list(labels), viewport=(float(x0), float(x1), float(y0), float(y1)), n_total=len(x),
        n_in_view=int(len(inside)), sample=picked,
    )
