"""The early ranker's feature vocabulary, gathered as one float32 matrix per request.

One vocabulary, named like the fields funnel expressions read (core.funnel.fields):
- `candidate.score` (tower similarity), `candidate.campaign_impressions_24h`;
- per candidate source s of the version: `candidate.found_<s>` (0/1), `candidate.rank_<s>`
  (1-based rank in that source, 0 when it did not return the ad), `candidate.score_<s>` (that
  source's score, 0 when not returned);
- every numeric or boolean field an expression can read (`ad.*`, `campaign.*`, `advertiser.*`,
  `user.*`, `request.*`, a team's extra columns); a text field one-hot as `field=value`
  (`request.placement=home_feed` is 1.0 when equal, else 0.0).
Missing numbers are 0.0. `RankerInputs(features, fields, sources)` checks the names once (a
ValidationError lists the unknown ones and what there is) and `matrix(...)` gathers the columns
through the fields' `Env`, so each field is read once however many features use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from core.common.errors import ValidationError
from core.funnel.expr import BOOL, NUM, STR
from core.funnel.fields import RANKING_ONLY, Env, FieldTable

PER_SOURCE = ("found", "rank", "score")
TOWER_SCORE = "candidate.score"


def source_features(sources: Sequence[str]) -> list[str]:
    """`candidate.found_<s>`, `candidate.rank_<s>`, `candidate.score_<s>` for each source."""
    return [f"candidate.{kind}_{s}" for s in sources for kind in PER_SOURCE]


def vocabulary(fields: FieldTable, sources: Sequence[str]) -> list[str]:
    """Every feature name a ranker may read (text fields as `field=<value>`), for messages and docs."""
    out = [TOWER_SCORE, *source_features(sources)]
    for name, spec in sorted(fields.specs.items()):
        if name in RANKING_ONLY or name == TOWER_SCORE:
            continue
        if spec.type in (NUM, BOOL):
            out.append(name)
        elif spec.type == STR:
            out.append(f"{name}=<value>")
    return out


def _plan(name: str, fields: FieldTable, sources: Sequence[str]) -> tuple | str:
    """How to gather one feature: a tuple, or a string saying what is wrong with the name."""
    if name.startswith("candidate."):
        key = name.split(".", 1)[1]
        for kind in PER_SOURCE:
            if key.startswith(kind + "_") and key[len(kind) + 1:] in sources:
                return ("source", kind, key[len(kind) + 1:])
    field, eq, value = name.partition("=")
    spec = fields.specs.get(field)
    if spec is None:
        return f"unknown feature {name!r}"
    if field in RANKING_ONLY:
        return f"{name!r} is the ranker's own output (known only after early ranking)"
    if eq:
        if spec.type != STR:
            return f"{name!r}: only a text field takes =value ({field} is {spec.type})"
        return ("equals", field, value)
    if spec.type == STR:
        return f"{name!r} is a text field: use it one-hot as '{field}=VALUE' (e.g. request.placement=home_feed)"
    if spec.type not in (NUM, BOOL):
        return f"{name!r} is a {spec.type} field; a ranker reads numbers, booleans and text fields as =value"
    return ("field", field)


class RankerInputs:
    """The checked column plan of a ranker's `features` over one engine's fields and sources."""

    def __init__(self, features: Sequence[str], fields: FieldTable, sources: Sequence[str], where: str = "ranker"):
        self.features = tuple(features)
        plans, problems = [], []
        for name in self.features:
            p = _plan(str(name), fields, tuple(sources))
            (problems if isinstance(p, str) else plans).append(p)
        dup = sorted({f for f in self.features if self.features.count(f) > 1})
        if dup:
            problems.append(f"feature(s) listed twice: {', '.join(dup)}")
        if problems:
            have = ", ".join(vocabulary(fields, sources))
            raise ValidationError([f"{where}: {p}" for p in problems]
                                  + [f"{where}: the features there are: {have} (data/README.md, 'Your own early ranker')"])
        self.plans = tuple(plans)

    def matrix(self, env: Env, tower_score: np.ndarray, found: Mapping[str, np.ndarray] | None = None,
               ranks: Mapping[str, np.ndarray] | None = None,
               scores: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """(n candidates, len(features)) float32; sources missing from `found`/`ranks`/`scores`
        count as not having returned the candidate."""
        n = len(env.pos)
        X = np.zeros((n, len(self.plans)), np.float32)
        found, ranks, scores = found or {}, ranks or {}, scores or {}
        for j, plan in enumerate(self.plans):
            if plan[0] == "source":
                _, kind, src = plan
                hit = np.asarray(found.get(src, np.zeros(n, bool)), bool)
                if kind == "found":
                    col = hit.astype(np.float64)
                else:
                    raw = (ranks if kind == "rank" else scores).get(src)
                    col = np.zeros(n) if raw is None else np.where(hit, np.asarray(raw, np.float64), 0.0)
            elif plan[0] == "equals":
                v = env.get(plan[1])
                col = (v == plan[2]).astype(np.float64) if isinstance(v, np.ndarray) else np.full(n, float(v == plan[2]))
            elif plan[1] == TOWER_SCORE:
                col = np.asarray(tower_score, np.float64)
            else:
                v = env.get(plan[1])
                col = np.asarray(v, np.float64) if isinstance(v, np.ndarray) \
                    else np.full(n, np.nan if v is None else float(v))
            X[:, j] = np.nan_to_num(np.broadcast_to(col, (n,)).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        return X
