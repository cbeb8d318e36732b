"""The logged-trace format: `requests` and `trace_candidates`, their columns, types and rules.

The single source of truth for `adlens import-traces` validation and for the trace tables in
data/README.md (`python -m core.traces.schema` prints them; tests/test_traces_import.py checks the
README holds them). Built from the ingest format's `Column`/`Table`, so the value rules (ids,
numbers, times, `|`-separated lists in CSV) are ingest's.
"""

from __future__ import annotations

from core.data.schema import Column, Table, render_markdown
from core.data.vocab import Device, Placement, values

STAGES_REACHED: tuple[str, ...] = ("retrieved", "eligible", "ranked", "slate")
"""The last funnel stage a logged candidate reached (core.funnel.reasons.Stage, minus inventory)."""

REQUESTS = Table(
    "requests",
    key="request_id",
    required=True,
    doc="One row per logged request: who, when, where. Columns beyond these are kept verbatim (as "
    "text) as extra context and shown with the request.",
    columns=(
        Column("request_id", "id", required=True, example="req_000001"),
        Column("user_id", "id", required=True, example="u_004711",
               doc="Users the catalog lacks are reported by the import, not refused."),
        Column("ts", "datetime", required=True, example="2026-10-14T18:03:00", doc="UTC."),
        Column("community_id", "id", default=None, example="c_hiking", doc="Empty: the home feed."),
        Column("placement", "str", default="home_feed", allowed=values(Placement), example="community_feed"),
        Column("device", "str", default="unknown", allowed=(*values(Device), "unknown"), example="android"),
        Column("country", "str", default="unknown", example="US"),
    ),
)

TRACE_CANDIDATES = Table(
    "trace_candidates",
    key="request_id, ad_id",
    required=True,
    doc="One row per candidate production considered for a request; each (request_id, ad_id) once. "
    "Rows of one request keep their order. Source names and reason codes AdLens does not know are "
    "kept verbatim and listed by the import report.",
    columns=(
        Column("request_id", "id", required=True, references="requests.request_id", example="req_000001"),
        Column("ad_id", "id", required=True, example="ad_000123",
               doc="Ads the catalog lacks are reported by the import, not refused."),
        Column("sources", "list", required=True, example="two_tower|targeting",
               doc="The candidate sources that found the ad (at least one)."),
        Column("stage_reached", "str", required=True, allowed=STAGES_REACHED, example="eligible",
               doc="The last stage it passed: retrieved (then filtered), eligible (then ranked out), "
               "ranked (then cut at the slate), slate (shown)."),
        Column("reasons", "list", default=[], example="GEO_MISMATCH|FREQUENCY_CAP",
               doc="Reason codes logged for it, in the log's order (empty for slate ads)."),
        Column("source_ranks", "list", default=[], example="3|41",
               doc="Whole numbers >= 1, one per entry of `sources` (same order); empty: not logged."),
        Column("source_scores", "list", default=[], example="0.82|0.41",
               doc="Numbers, one per entry of `sources` (same order); empty: not logged."),
        Column("early_score", "float", default=None, example="0.031", doc="The early ranker's score (pCTR)."),
        Column("bid", "float", default=None, example="2.5", doc=">= 0."),
        Column("ecpm", "float", default=None, example="77.5"),
        Column("slate_position", "int", default=None, example="1", doc="1 = first (logged for slate ads)."),
    ),
)

TRACE_TABLES: tuple[Table, ...] = (REQUESTS, TRACE_CANDIDATES)
NUMBER_LISTS: dict[str, str] = {"source_ranks": "int", "source_scores": "float"}
"""List columns whose items are numbers aligned with `sources` (item type)."""
NON_NEGATIVE: frozenset[str] = frozenset({"bid"})
POSITIVE: frozenset[str] = frozenset({"slate_position"})


def render_trace_markdown() -> str:
    """The trace format as Markdown tables (pasted into data/README.md)."""
    return render_markdown(TRACE_TABLES)


if __name__ == "__main__":
    print(render_trace_markdown())
