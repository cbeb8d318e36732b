"""Health of a version's funnel rules: how often each rule fails candidates on sampled requests.

`rule_rates(engine)` runs a seeded sample of users in their usual contexts through the funnel
and gives, per rule of the version's funnel (core.funnel.rule_list, in order): its code, stage,
kind, the candidates it was evaluated on (every retrieved candidate for an eligibility rule; for a
ranking-stage rule those that passed eligibility), the share of them it fails and the share it is
the primary reason for. A rule that never fires, or fires on every candidate it sees, is flagged:
both usually mean a broken expression (a misspelt value, an inverted condition).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from core.common.progress import Progress, report
from core.funnel.audience import sample_users
from core.funnel.params import FunnelParams
from core.funnel.reasons import Outcome

NEVER = "never fires on the sampled requests: check its expression and values"
ALWAYS = "fires on every candidate it sees: likely a broken expression"
NEVER_BUILTIN = "never fires on the sampled requests (a built-in: their usual contexts may not exercise it)"


def rule_rates(engine, *, n_requests: int = 200, seed: int = 0, params: FunnelParams | None = None,
               progress: Progress | None = None) -> dict:
    """Per rule of `engine`'s funnel: fail and primary-reason shares on sampled requests (see the
    module docstring); `{"n_requests", "candidates", "rules": [...]}`."""
    users = sample_users(engine, n_requests, seed)
    params = replace(params or FunnelParams(), exact_ranks=False)  # ranks do not change a rule's verdict
    fails: Counter = Counter()
    primary: Counter = Counter()
    total = reached = 0
    for i, uid in enumerate(users):
        c = engine.run(engine.default_request(uid), params).candidates
        total += len(c)
        reached += int((c["outcome"] != Outcome.FILTERED.value).sum())
        fails.update(code for codes in c["failed_reasons"] for code in codes)
        primary.update(c["primary_reason"].dropna().astype(str))
        report(progress, (i + 1) / max(len(users), 1), f"Request {i + 1} of {len(users)}")
    off = set(engine.funnel.off) | set(params.disabled_rules)
    rows = []
    for r in engine.rule_infos:
        seen = reached if r.stage == "ranking" else total
        on = r.enabled and r.code not in off
        n_fail, n_primary = int(fails.get(r.code, 0)), int(primary.get(r.code, 0))
        flag = None
        if on and seen:
            never = NEVER_BUILTIN if r.kind == "built-in" else NEVER
            flag = never if n_fail == 0 else ALWAYS if n_fail == seen else None
        rows.append({"code": r.code, "stage": r.stage, "kind": r.kind, "enabled": on,
                     "evaluated": seen if on else 0, "fails": n_fail,
                     "fail_share": n_fail / seen if on and seen else np.nan,
                     "primary": n_primary, "primary_share": n_primary / seen if on and seen else np.nan,
                     "flag": flag, "description": r.description})
    return {"n_requests": len(users), "candidates": total, "rules": rows}
