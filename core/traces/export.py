"""AdLens's own replay written as logged traces (the `adlens import-traces` format).

`as_logged(trace)` is the ONE mapping from a replayed Trace to the logged candidate columns
(stage reached, reasons, sources with their ranks and scores, early score, eCPM, slate position):
`export_replay` writes it, core.traces.parity compares a log with it. A team reads an export to see
the format filled in; a log written by AdLens's own default funnel replays to parity 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.common.errors import AdLensError
from core.common.progress import Progress, report
from core.data.request import Request, sample_requests
from core.funnel.params import FunnelParams
from core.funnel.reasons import Outcome
from core.funnel.trace import Trace
from core.store.artifacts import write_via_temp
from core.traces.schema import STAGES_REACHED

STAGE_BEFORE_BLOCK: dict[str | None, str] = {"eligible": "retrieved", "ranked": "eligible", "slate": "ranked",
                                             None: "slate"}
"""Trace.blocking_stage (the first stage not passed) -> the logged stage_reached (the last passed)."""
LOGGED_VIEW_COLUMNS = ("ad_id", "sources", "stage_reached", "reasons", "source_ranks", "source_scores",
                       "early_score", "bid", "ecpm", "slate_position")


def as_logged(trace: Trace, bids: np.ndarray | None = None) -> pd.DataFrame:
    """The replay's candidates as a log writes them (LOGGED_VIEW_COLUMNS, one row per retrieved
    candidate, merge order). Reasons: every failed eligibility code for filtered ads, the primary
    reason (BELOW_CUTOFF / ADVERTISER_CAP) for eligible ads that missed the slate, none in the
    slate. `bids`: the engine's per-position bids (FunnelEngine.bid); bid is empty without them."""
    c = trace.candidates
    n = len(c)
    blocking = c["blocking_stage"].to_numpy(dtype=object)
    stage = [STAGE_BEFORE_BLOCK[None if pd.isna(b) else str(b)] for b in blocking]
    outcome = c["outcome"].astype(str).to_numpy()
    failed = c["failed_reasons"].tolist()
    primary = c["primary_reason"].tolist()
    reasons = [[str(x) for x in f] if o == Outcome.FILTERED.value else
               ([] if o == Outcome.SLATE.value or pd.isna(p) else [str(p)])
               for o, f, p in zip(outcome, failed, primary)]
    srcs = [list(s) for s in c["sources"]]
    ranks_by = {s: c[f"rank_{s}"].to_numpy(dtype=object) for s in trace.source_names if f"rank_{s}" in c}
    scores_by = {s: c[f"score_{s}"].to_numpy(dtype=np.float64) for s in trace.source_names if f"score_{s}" in c}
    ranks = [[int(ranks_by[s][i]) for s in srcs[i]] if all(s in ranks_by for s in srcs[i]) else []
             for i in range(n)]
    scores = [[float(scores_by[s][i]) for s in srcs[i]] if all(s in scores_by for s in srcs[i]) else []
              for i in range(n)]
    pos = c["version_pos"].to_numpy()
    return pd.DataFrame({
        "ad_id": c["ad_id"].astype(str).to_numpy(dtype=object),
        "sources": pd.Series(srcs, dtype=object), "stage_reached": stage,
        "reasons": pd.Series(reasons, dtype=object),
        "source_ranks": pd.Series(ranks, dtype=object), "source_scores": pd.Series(scores, dtype=object),
        "early_score": c["pctr"].to_numpy(dtype=np.float64),
        "bid": bids[pos] if bids is not None else np.full(n, np.nan),
        "ecpm": c["ecpm"].to_numpy(dtype=np.float64),
        "slate_position": pd.array(c["final_position"], dtype="Int64"),
    }, columns=list(LOGGED_VIEW_COLUMNS))


def stage_index(stages) -> np.ndarray:
    """Logged stage names -> 0..3 (retrieved..slate), -1 for anything else (absent)."""
    order = {s: i for i, s in enumerate(STAGES_REACHED)}
    return np.array([order.get(s, -1) for s in stages], dtype=np.int64)


@dataclass
class ExportReport:
    directory: str
    version: str
    n_requests: int
    n_candidates: int
    files: list[str]


_CANDIDATE_TYPES = pa.schema([
    ("request_id", pa.string()), ("ad_id", pa.string()), ("sources", pa.list_(pa.string())),
    ("stage_reached", pa.string()), ("reasons", pa.list_(pa.string())), ("source_ranks", pa.list_(pa.int64())),
    ("source_scores", pa.list_(pa.float64())), ("early_score", pa.float64()), ("bid", pa.float64()),
    ("ecpm", pa.float64()), ("slate_position", pa.int64())])


def replay_requests(engine, n: int, seed: int = 0) -> list[Request]:
    """A seeded sample of `n` real logged requests (one per sampled impression; every known
    user's usual request when the catalog has no impressions)."""
    cat = engine.catalog
    frame = sample_requests(cat.impressions, cat.users, n, seed=seed)
    out = []
    for r in frame.itertuples(index=False):
        c = r.community_id
        c = None if c is None or (isinstance(c, float) and np.isnan(c)) or c == "" else str(c)
        out.append(Request(str(r.user_id), c, str(r.placement), str(r.device), str(r.country),
                           pd.Timestamp(r.ts).to_pydatetime()))
    if not out:
        out = [engine.default_request(u) for u in list(engine.user_ids)[:n]]
    return out


def export_replay(engine, out: Path, n_requests: int, *, seed: int = 0, params: FunnelParams | None = None,
                  progress: Progress | None = None) -> ExportReport:
    """Replay `n_requests` sampled requests on the engine's version and write them to `out` as
    requests.parquet + trace_candidates.parquet (ids req_000001...). Refuses a folder that already
    holds trace files (nothing overwritten)."""
    if n_requests < 1:
        raise AdLensError(f"--requests must be at least 1 (got {n_requests})")
    out = Path(out)
    existing = [p.name for p in out.glob("*") if p.stem in ("requests", "trace_candidates")] if out.is_dir() else []
    if existing:
        raise AdLensError(f"{out} already holds {', '.join(sorted(existing))}; pass an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    params = params or FunnelParams()
    reqs = replay_requests(engine, n_requests, seed)
    width = max(6, len(str(len(reqs))))
    rows, tables = [], []
    for i, req in enumerate(reqs):
        rid = f"req_{i + 1:0{width}d}"
        rows.append({"request_id": rid, "user_id": req.user_id, "ts": pd.Timestamp(req.ts),
                     "community_id": req.community_id, "placement": req.placement, "device": req.device,
                     "country": req.country})
        frame = as_logged(engine.run(req, params), engine.bid)
        frame.insert(0, "request_id", rid)
        frame["slate_position"] = frame["slate_position"].astype(object).where(frame["slate_position"].notna(), None)
        tables.append(pa.Table.from_pandas(frame, schema=_CANDIDATE_TYPES, preserve_index=False))
        report(progress, 0.95 * (i + 1) / len(reqs), f"replay request {i + 1:,} of {len(reqs):,}")
    cands = pa.concat_tables(tables) if tables else _CANDIDATE_TYPES.empty_table()
    requests = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    for name, table in (("requests.parquet", requests), ("trace_candidates.parquet", cands)):
        write_via_temp(out / name, lambda p, t=table: pq.write_table(t, p))
    report(progress, 1.0, "done")
    return ExportReport(str(out), engine.version.name, len(reqs), cands.num_rows,
                        ["requests.parquet", "trace_candidates.parquet"])
