"""The Trace: one request's funnel, every candidate's fate. Produced by `FunnelEngine.run`;
the CLI, the dashboard, why-not and audience read it and never re-implement a stage.

`candidates` has one row per retrieved candidate (merge order: two_tower's in ANN order, then each
other source's new ads in its rank order; core.sources.merge) with the columns CANDIDATE_COLUMNS
and, for every source of the version, `rank_<source>` (1-based rank in that source, <NA> when
it did not return the ad) and `score_<source>` (NaN when not returned):
- score: tower similarity (inner product of L2-normalised vectors), for every candidate; ann_rank:
  1-based rank in the ANN result (<NA> for ads only other sources found); exact_rank: 1-based
  rank among all ads by exact search (<NA> when not computed);
- failed_reasons: every failing eligibility code (configured order; a funnel definition's own
  codes too, and for eligible ads its ranking-stage codes: core.funnel.definition);
  primary_reason: the first failing rule, else the first failing ranking-stage rule, else
  BELOW_CUTOFF / ADVERTISER_CAP for eligible ads that missed the slate;
- pctr, ecpm: early-ranking values (computed for every candidate, used only for eligible ones);
- rank_position: 1-based eCPM rank among eligible candidates (<NA> if not eligible);
- final_position: 1-based slate position (<NA> if not in the slate);
- outcome: one of OUTCOMES; blocking_stage: the first stage the ad did not pass (None in the
  slate; core.funnel.reasons.blocking_stages); version_pos: the ad's position in the version;
- shard: the index shard that holds the candidate (0 for an unsharded version);
- sources: the tuple of sources that found the candidate (SOURCE_ORDER);
- with the team's own early ranker (core.funnel.rankers) also ranker_score (its raw output; for
  an output of kind "score" pctr is NaN and ecpm holds it) and ranker_inputs (a dict feature ->
  value per candidate). `ranker` names what ranked: the team's ranker (kind, file, fingerprint,
  output kind) or AdLens's pCTR model (kind "adlens").

`shard_timings_ms` holds each shard's retrieve time ({shard: ms}; with the ray backend the time
until that shard's answer arrived) and `backend` the serving backend (local or ray).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.common.jsonio import to_jsonable
from core.data.request import Request
from core.funnel.reasons import Outcome, Stage

if TYPE_CHECKING:
    from core.funnel.params import FunnelParams

CANDIDATE_COLUMNS: tuple[str, ...] = (
    "ad_id", "advertiser_id", "advertiser_name", "campaign_id", "vertical", "title", "score",
    "ann_rank", "exact_rank", "failed_reasons", "primary_reason", "pctr", "ecpm", "rank_position",
    "final_position", "outcome", "blocking_stage", "version_pos", "shard", "sources",
)
OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome if o is not Outcome.NOT_RETRIEVED)
"""The outcomes a retrieved candidate can have (core.funnel.reasons.Outcome)."""



def describe_query_source(query_source: dict) -> str:
    """One line on what made the query vector (for the CLI and the dashboard), "" if nothing to say."""
    if not query_source.get("detail"):
        return ""
    ctx = query_source.get("context") or {}
    where = ", ".join(f"{k}={v}" for k, v in ctx.items()) or "any context"
    ts = f", ts {query_source['ts']}" if query_source.get("ts") else ""
    used = f" ({where}{ts})" if query_source.get("matched") else ""
    return f"query vector: {query_source.get('encoder')}: {query_source['detail']}{used}"


def _num(v) -> str:
    return "NaN" if v is None or v != v else str(round(float(v), 4))


def ranker_text(ranker: dict, pctr, ecpm, raw=None, inputs: dict | None = None, max_inputs: int = 20) -> str:
    """One line on a candidate's early-ranking value and where it came from, e.g. "pCTR 0.0123 from
    your ranker (ranker.onnx); inputs: candidate.score=0.61, campaign.bid=2.0" (plain text: escape
    it where it is rendered)."""
    if not ranker or ranker.get("kind") == "adlens":
        return f"pCTR {float(pctr):.4f} from AdLens's pCTR model"
    name = ranker.get("file") or ranker.get("kind")
    if ranker.get("output") == "score":
        head = f"score {_num(raw if raw is not None else ecpm)} from your ranker ({name}; ranked by it directly)"
    else:
        head = f"pCTR {float(pctr):.4f} from your ranker ({name})"
    if not inputs:
        return head
    items = list(inputs.items())
    shown = ", ".join(f"{k}={_num(v)}" for k, v in items[:max_inputs])
    more = f", … (+{len(items) - max_inputs} more)" if len(items) > max_inputs else ""
    return f"{head}; inputs: {shown}{more}"


@dataclass
class Trace:
    """One simulated request through every funnel stage. `table` is the candidates frame or the
    function that builds it: `candidates` builds it on first use, so a caller that only needs the
    slate, counts or timings (compare over many users, the latency bench) never pays for it."""

    request: Request
    version_name: str
    version_checksum: str
    params: "FunnelParams"
    table: pd.DataFrame | Callable[[], pd.DataFrame] = field(repr=False)
    stage_counts: dict[Stage, int]
    stage_timings_ms: dict[str, float]
    calibration: dict = field(default_factory=dict)  # the pCTR model: coefficients per feature
    query: np.ndarray | None = field(default=None, repr=False)  # the request's query vector
    query_source: dict = field(default_factory=dict)  # encoder kind and what it used (e.g. which row)
    shard_timings_ms: dict[int, float] = field(default_factory=dict)
    backend: str = "local"
    source_names: tuple[str, ...] = ("two_tower",)  # the version's sources
    sources_ran: tuple[str, ...] = ("two_tower",)  # those enabled for this request
    ranker: dict = field(default_factory=dict)  # what ranked early (core.funnel.engine.ranker_info)

    @property
    def candidates(self) -> pd.DataFrame:
        """One row per retrieved candidate (see the module docstring), built once on first use."""
        if callable(self.table):
            self.table = self.table()
        return self.table

    def found_by(self, source: str) -> pd.Series:
        """Boolean per candidate: did `source` return it?"""
        col = f"rank_{source}"
        if col not in self.candidates:
            return pd.Series(False, index=self.candidates.index)
        return self.candidates[col].notna()

    def source_counts(self) -> dict[str, dict[str, int]]:
        """Per source: candidates it found, how many of them are eligible, ranked and in the slate,
        and how many only it found (the funnel split by source)."""
        c = self.candidates
        only = c["sources"].map(len) == 1
        rank = c["rank_position"].fillna(0).astype(np.int64).replace(0, np.iinfo(np.int64).max)
        out = {}
        for name in self.source_names:
            f = self.found_by(name)
            out[name] = {"retrieved": int(f.sum()),
                         "eligible": int((f & (c["outcome"] != "filtered")).sum()),
                         "ranked": int((f & (rank <= self.params.n_ranked)).sum()),
                         "slate": int((f & (c["outcome"] == "slate")).sum()),
                         "only_this_source": int((f & only).sum())}
        return out

    def to_frame(self) -> pd.DataFrame:
        """The candidates frame (a copy: callers may sort or filter it freely)."""
        return self.candidates.copy()

    @property
    def slate(self) -> pd.DataFrame:
        """Slate rows in slate order."""
        c = self.candidates
        return c[c["outcome"] == Outcome.SLATE.value].sort_values("final_position")

    def row(self, ad_id: str) -> pd.Series | None:
        """The candidate row of `ad_id`, or None if it was not retrieved."""
        hit = self.candidates.index[self.candidates["ad_id"] == ad_id]
        return self.candidates.loc[hit[0]] if len(hit) else None

    def reason_counts(self) -> dict[str, int]:
        """Primary reason -> number of candidates (filtered and ranked-out ones)."""
        r = self.candidates["primary_reason"].dropna()
        return {str(k): int(v) for k, v in r.value_counts().items()}

    def to_dict(self) -> dict:
        """Plain JSON-ready values (NA/NaN -> None, enums -> strings)."""
        params = asdict(self.params) if self.params is not None else {}
        records = self.candidates.astype(object).where(self.candidates.notna(), None).to_dict("records")
        return to_jsonable({
            "request": self.request.to_dict(),
            "version": {"name": self.version_name, "checksum": self.version_checksum},
            "params": params,
            "calibration": self.calibration,
            "ranker": self.ranker,
            "query_source": self.query_source,
            "sources": {"version": list(self.source_names), "ran": list(self.sources_ran),
                        "counts": self.source_counts()},
            "stage_counts": {str(k): v for k, v in self.stage_counts.items()},
            "stage_timings_ms": self.stage_timings_ms,
            "retrieve": {"backend": self.backend,
                         "shard_timings_ms": {str(k): v for k, v in self.shard_timings_ms.items()}},
            "candidates": records,
        })

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)
