"""AdLens's own replay written as logged traces (the `adlens import-traces` format).

`logged_fields(trace)` (`as_logged`: the same as a frame) is the ONE mapping from a replayed Trace to the logged candidate columns
(stage reached, reasons, sources with their ranks and scores, early score, eCPM, slate position):
`export_replay` writes it, core.traces.parity compares a log with it. A team reads an export to see
the format filled in; a log written by AdLens's own default funnel replays to parity 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
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

STAGE_BEFORE_BLOCK: dict[str | None, str] = {"eligible": "retrieved", "ranked": "eligible", "slate": "ranked",
                                             None: "slate"}
"""Trace.blocking_stage (the first stage not passed) -> the logged stage_reached (the last passed)."""
LOGGED_VIEW_COLUMNS = ("ad_id", "sources", "stage_reached", "reasons", "source_ranks", "source_scores",
                       "early_score", "bid", "ecpm", "slate_position")


def logged_fields(trace: Trace, bids: np.ndarray | None = None, *, scores: bool | str = True) -> dict:
    """The replay's candidates as a log writes them: LOGGED_VIEW_COLUMNS as columns (lists), one
    row per retrieved candidate, merge order. Reasons: every failed code (eligibility rules for
    filtered ads; a funnel definition's ranking-stage rules for eligible ads they removed), else
    the primary reason (BELOW_CUTOFF / ADVERTISER_CAP) for eligible ads that missed the slate;
    none in the slate. `bids`: the engine's per-position bids (FunnelEngine.bid; bid is empty
    without them). `scores=False` leaves out ranks, scores, bid and eCPM (fates only);
    `scores="ranking"` keeps the source ranks, early score and eCPM (what parity compares)."""
    c = trace.candidates
    n = len(c)
    stage = [STAGE_BEFORE_BLOCK[b if isinstance(b, str) else None] for b in c["blocking_stage"].tolist()]
    filtered, slate = Outcome.FILTERED.value, Outcome.SLATE.value
    reasons = [[] if o == slate else list(map(str, f)) if o == filtered or len(f) else
               [p] if isinstance(p, str) else []
               for o, f, p in zip(c["outcome"].tolist(), c["failed_reasons"].tolist(),
                                  c["primary_reason"].astype(object).tolist())]
    srcs = [list(x) for x in c["sources"].tolist()]
    final = c["final_position"].to_numpy(dtype=np.int64, na_value=0).tolist()
    out = {"ad_id": c["ad_id"].astype(object).tolist(), "sources": srcs, "stage_reached": stage, "reasons": reasons,
           "slate_position": [p or None for p in final]}
    if not scores:
        return out
    ranks_by = {s: c[f"rank_{s}"].to_numpy(dtype=np.int64, na_value=0).tolist() for s in trace.source_names
                if f"rank_{s}" in c}
    scores_by = {s: c[f"score_{s}"].to_numpy(dtype=np.float64).tolist() for s in trace.source_names
                 if f"score_{s}" in c}
    out["source_ranks"] = _aligned(srcs, ranks_by)
    out["early_score"] = c["pctr"].to_numpy(dtype=np.float64)
    out["ecpm"] = c["ecpm"].to_numpy(dtype=np.float64)
    if scores == "ranking":
        return out
    out["source_scores"] = _aligned(srcs, scores_by)
    out["bid"] = bids[c["version_pos"].to_numpy()] if bids is not None else np.full(n, np.nan)
    return out


def _aligned(srcs: list[list[str]], by: dict[str, list]) -> list[list]:
    """Per candidate, `by[source][i]` for each of its sources; empty (not logged) where a source lacks a column."""
    if set(chain.from_iterable(srcs)) <= by.keys():  # the usual case: one pass, no checks
        return [[by[s][i] for s in ss] for i, ss in enumerate(srcs)]
    return [[by[s][i] for s in ss] if all(s in by for s in ss) else [] for i, ss in enumerate(srcs)]


def as_logged(trace: Trace, bids: np.ndarray | None = None) -> pd.DataFrame:
    """`logged_fields` as a frame (LOGGED_VIEW_COLUMNS; lists as Python lists, slate_position Int64)."""
    f = logged_fields(trace, bids)
    f["slate_position"] = pd.array(f["slate_position"], dtype="Int64")
    return pd.DataFrame({k: pd.Series(v, dtype=object) if isinstance(v, list) and k != "slate_position" else v
                         for k, v in f.items()}, columns=list(LOGGED_VIEW_COLUMNS))


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
        f = logged_fields(engine.run(req, params), engine.bid)
        f["request_id"] = [rid] * len(f["ad_id"])
        tables.append(pa.table({k: f[k] for k in _CANDIDATE_TYPES.names}, schema=_CANDIDATE_TYPES))
        report(progress, 0.95 * (i + 1) / len(reqs), f"replay request {i + 1:,} of {len(reqs):,}")
    cands = pa.concat_tables(tables) if tables else _CANDIDATE_TYPES.empty_table()
    requests = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    for name, table in (("requests.parquet", requests), ("trace_candidates.parquet", cands)):
        write_via_temp(out / name, lambda p, t=table: pq.write_table(t, p))
    report(progress, 1.0, "done")
    return ExportReport(str(out), engine.version.name, len(reqs), cands.num_rows,
                        ["requests.parquet", "trace_candidates.parquet"])
