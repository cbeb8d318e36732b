"""core/bench/traces.py: the `traces` bench section at a tiny size (the 10M-row run is
`adlens bench --sections traces`)."""

from __future__ import annotations

import pyarrow.parquet as pq

from core.bench.runner import format_report, run_bench
from core.bench.traces import generate
from core.traces.validate import CellLog, normalise_chunk
from core.data.ingest_validate import Source


def test_generated_traces_are_valid_and_grouped_by_request(tmp_path):
    info = generate(tmp_path / "d", 3_000, seed=1)
    assert info["requests"] == 30
    req = pq.read_table(tmp_path / "d" / "requests.parquet")
    cand = pq.read_table(tmp_path / "d" / "trace_candidates.parquet")
    assert cand.num_rows == 3_000 and req.num_rows == 30
    log = CellLog(Source("trace_candidates"))
    normalise_chunk(cand, 0, req.column("request_id").combine_chunks(), "requests.parquet", log)
    assert not log  # every generated row passes validation


def test_traces_section_at_tiny_size(settings):
    report = run_bench(settings, sections=["traces"], trace_rows=2_000, log=False)
    sec = report["traces"]
    assert (sec["rows"], sec["requests"]) == (2_000, 20)
    assert sec["open_ms"]["n"] == 20 and sec["open_ms"]["p50"] > 0 and sec["import_peak_rss_mb"] > 0
    assert sec["candidates_per_request_mean"] == 100.0
    assert "open one request" in format_report(report)
