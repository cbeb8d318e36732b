"""Plotly figures built from core results (no computation beyond shaping for display)."""

from __future__ import annotations

import plotly.graph_objects as go

from core.common.escape import hover
from core.funnel.reasons import Stage

OUTCOME_COLORS = {"slate": "#2ca02c", "ranked_out": "#1f77b4", "advertiser_cap": "#9467bd",
                  "filtered": "#d62728", "not retrieved": "#c7c7c7"}


plain = hover  # Plotly labels and hover texts interpret HTML-like tags: data text is escaped


def funnel_figure(stage_counts: dict) -> go.Figure:
    stages = [s for s in Stage]
    fig = go.Figure(go.Funnel(y=[s.value for s in stages], x=[int(stage_counts.get(s, 0)) for s in stages],
                              textinfo="value+percent initial", marker={"color": "#FF4500"}))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10))
    return fig


SOURCE_COLORS = {"two_tower": "#FF4500", "co_engagement": "#1f77b4", "popular_in_context": "#2ca02c",
                 "targeting": "#9467bd"}
SOURCE_STAGES = (("retrieved", "retrieved"), ("eligible", "eligible"), ("ranked", "ranked"), ("slate", "slate"))


def funnel_by_source_figure(source_counts: dict) -> go.Figure:
    """The funnel split by candidate source: one series per source (an ad found by two sources
    counts in both), from Trace.source_counts()."""
    fig = go.Figure()
    for name, c in source_counts.items():
        fig.add_trace(go.Funnel(name=name, y=[label for _, label in SOURCE_STAGES],
                                x=[int(c.get(key, 0)) for key, _ in SOURCE_STAGES], textinfo="value",
                                marker={"color": SOURCE_COLORS.get(name, "#7f7f7f")},
                                hovertemplate=f"{name}<br>%{{y}}: %{{x}} (only this source retrieved "
                                              f"{int(c.get('only_this_source', 0))})<extra></extra>"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=-0.1))
    return fig


REASON_STAGE_COLORS = {"eligibility": "#d62728", "ranking": "#1f77b4", "diversity": "#9467bd"}
"""Bars of "why candidates dropped" by the stage of the reason's rule."""


def bar_figure(labels: list, values: list, *, horizontal: bool = True, height: int = 300,
               color: str | list = "#d62728", hover: list | None = None) -> go.Figure:
    """A bar chart of data labels (escaped); `hover`: one more line of data text per bar."""
    labels = [plain(v) for v in labels]
    extra = {"hovertext": [plain(h) for h in hover]} if hover is not None else {}
    bar = go.Bar(y=labels, x=values, orientation="h", marker_color=color, **extra) if horizontal else \
        go.Bar(x=labels, y=values, marker_color=color, **extra)
    fig = go.Figure(bar)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10))
    if horizontal:
        fig.update_yaxes(autorange="reversed")
    return fig
