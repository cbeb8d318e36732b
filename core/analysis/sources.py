"""Candidate sources in the analytics: their share of the slate, the slate ads only one source
found, recall of held-out clicks per source and merged (compare), and per-source coverage and
dead ads (health).

- share of the slate: of all slate slots over the compared requests, the fraction filled by an
  ad that source found (an ad found by two sources counts for both);
- only-source slate ads: slate slots whose ad no other source found;
- recall vs clicks: for each held-out click, replayed as its logged request, is the clicked ad in
  the source's top quota (and in the merged candidate set)?
- coverage: ads a source can ever return (`CandidateSource.reachable`); dead ads per source: ads
  it returned for none of the sampled requests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.funnel.params import FunnelParams
from core.sources.base import RetrieveOptions


def slate_attribution(traces: Sequence, source_names: Sequence[str]) -> dict:
    """Share of the slate per source and slate slots only that source found."""
    slates = [t.slate for t in traces]
    n = sum(len(s) for s in slates)
    out = {"slate_slots": int(n), "share": {}, "only_this_source": {}}
    for name in source_names:
        found = sum(int(s["sources"].map(lambda x, m=name: m in x).sum()) for s in slates)
        only = sum(int(s["sources"].map(lambda x, m=name: x == (m,)).sum()) for s in slates)
        out["share"][name] = found / n if n else None
        out["only_this_source"][name] = int(only)
    return out


def source_recall(engine, requests: pd.DataFrame, clicked_ads: np.ndarray, params: FunnelParams | None = None,
                  batch: int = 256) -> dict:
    """Hit rate of held-out clicks per enabled source at its quota, and of their union ("merged")."""
    params = engine.resolve_params(params)  # the version's learned quotas
    target = engine.version.position_of(clicked_ads)
    names = [n for n in engine.sources if params.enabled(n)]
    if not len(requests):
        return {"n_clicks": 0}
    hits = {n: np.zeros(len(requests), bool) for n in names}
    for lo in range(0, len(requests), batch):
        part = requests.iloc[lo:lo + batch].reset_index(drop=True)
        q = engine.version.encoder.encode_requests(part, engine.features)
        opts = RetrieveOptions(queries=q, search_params=params.search_params)
        t = target[lo:lo + batch]
        for n in names:
            pos, _ = engine.sources[n].retrieve(part, params.quota(n), opts)
            hits[n][lo:lo + batch] = (pos == t[:, None]).any(axis=1) & (t >= 0)
    merged = np.zeros(len(requests), bool)
    for h in hits.values():
        merged |= h
    out = {"n_clicks": int(len(requests)), "quotas": {n: params.quota(n) for n in names},
           "recall": {n: float(h.mean()) for n, h in hits.items()}}
    out["recall"]["merged"] = float(merged.mean())
    out["only_this_source"] = {n: int((h & (sum(hits[m] for m in names if m != n) == 0)).sum())
                               for n, h in hits.items()}
    return out


def source_coverage(sources: dict, requests: pd.DataFrame, queries: np.ndarray | None,
                    params: FunnelParams | None = None, batch: int = 256) -> dict:
    """Per source: ads it can ever return, and ads it returned for none of `requests` (dead)."""
    params = params or FunnelParams()
    out = {}
    for name, src in sources.items():
        reach = src.reachable()
        got = np.zeros(len(reach), bool)
        for lo in range(0, len(requests), batch):
            part = requests.iloc[lo:lo + batch].reset_index(drop=True)
            q = queries[lo:lo + batch] if queries is not None else None
            pos, _ = src.retrieve(part, params.quota(name), RetrieveOptions(queries=q))
            got[pos[pos >= 0]] = True
        out[name] = {"quota": params.quota(name), "reachable_ads": int(reach.sum()),
                     "reachable_share": float(reach.mean()) if len(reach) else None,
                     "returned_ads": int(got.sum()), "dead_ads": int((~got).sum()),
                     "dead_reachable_ads": int((reach & ~got).sum())}
    return out


def compare_sources_table(sources: dict) -> pd.DataFrame:
    """CompareReport.sources as one row per source (and "merged"): share of slate slots, slate
    slots only it found, recall of held-out clicks, for A and B."""
    names = list(dict.fromkeys([*sources["a"]["share"], *sources["b"]["share"]]))
    rows = []
    for name in [*names, "merged"]:
        row = {"source": name}
        for lab in ("a", "b"):
            src = sources[lab]
            row[f"slate_share_{lab}"] = src["share"].get(name)
            row[f"only_source_slots_{lab}"] = src["only_this_source"].get(name)
            row[f"click_recall_{lab}"] = (src["recall_vs_clicks"].get("recall") or {}).get(name)
        rows.append(row)
    out = pd.DataFrame(rows)
    for lab in ("a", "b"):
        out[f"only_source_slots_{lab}"] = out[f"only_source_slots_{lab}"].astype("Int64")
    return out
