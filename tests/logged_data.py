"""Logged traces with planted differences for the Logged mode and Parity tests (test_dashboard_logged.py).

AdLens's own replay is exported (core.traces.export) and one request is edited so that each kind
of row of the side-by-side table occurs with a known answer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

UNKNOWN_SOURCE = "prod_lookalike"
UNKNOWN_REASON = "PACING_THROTTLE"
PROD_AD = "ad_only_in_prod"
GHOST_USER = "ghost <b>user</b> *x*"
"""The user of the second request, renamed: AdLens has never seen them (and the id is markup)."""


@dataclass(frozen=True)
class Planted:
    request_id: str  # the edited request
    user_id: str
    throttled: str  # its first slate ad, logged as dropped at eligibility with UNKNOWN_REASON
    credited: str  # its first candidate, also credited to UNKNOWN_SOURCE (same fate on both sides)
    replay_only: str  # its last candidate, left out of the log
    logged_only: str  # PROD_AD, an ad production logged that AdLens has never seen
    ghost_request: str  # the second request, its user renamed to GHOST_USER


def plant(folder: Path, out: Path) -> Planted:
    """Copy an export from `folder` to `out` with the first two requests edited (see Planted)."""
    c = pq.read_table(folder / "trace_candidates.parquet").to_pandas()
    reqs = pq.read_table(folder / "requests.parquet").to_pandas()
    rid = str(reqs["request_id"].iloc[0])
    mine = c.index[c["request_id"] == rid]
    first, last = mine[0], mine[-1]
    slate = c.loc[mine][c.loc[mine, "stage_reached"] == "slate"].sort_values("slate_position")
    s = slate.index[0]
    assert s != first and s != last, "pick another request: its first or last candidate is in the slate"
    planted = Planted(rid, str(reqs["user_id"].iloc[0]), str(c.at[s, "ad_id"]), str(c.at[first, "ad_id"]),
                      str(c.at[last, "ad_id"]), PROD_AD, str(reqs["request_id"].iloc[1]))
    reqs.loc[1, "user_id"] = GHOST_USER
    c.at[s, "stage_reached"] = "retrieved"
    c.at[s, "reasons"] = [UNKNOWN_REASON]
    c.at[s, "slate_position"] = None
    for col, add in (("sources", UNKNOWN_SOURCE), ("source_ranks", 1), ("source_scores", 0.5)):
        c.at[first, col] = [*list(c.at[first, col]), add]
    extra = c.loc[[first]].assign(ad_id=PROD_AD, sources=[["two_tower"]], source_ranks=[[7]], source_scores=[[0.3]],
                                  stage_reached="retrieved", reasons=[["GEO_MISMATCH"]], slate_position=None)
    c = pd.concat([c.drop(index=last).loc[:last], extra, c.loc[last:].iloc[1:]], ignore_index=True)
    out.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(c, preserve_index=False), out / "trace_candidates.parquet")
    pq.write_table(pa.Table.from_pandas(reqs, preserve_index=False), out / "requests.parquet")
    return planted
