"""Eligibility from a funnel definition versus the built-in rules: the same candidates, timed
alternately (target: the definition within 1.5x of the built-ins' time at 100k ads). The timed
definition runs its re-expressions of the built-ins only (its own rules are extra work).

`bench_rules(engine, requests, definition)` takes each request's retrieved candidates from one
funnel run, then times the eligibility stage (request context, every rule on every candidate)
with the built-in rules and with the definition's compiled expressions in alternation, and checks
that both give the same verdicts on the built-in codes (the definition's own rules aside).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core.funnel.definition import compile_funnel, load_definition
from core.funnel.fields import Env, FieldTable
from core.funnel.filters import evaluate
from core.funnel.params import FunnelParams
from core.funnel.reasons import ELIGIBILITY_REASONS

EXAMPLE_FUNNEL = Path(__file__).resolve().parents[2] / "data" / "examples" / "funnel.toml"
TARGET_RATIO = 1.5


def bench_rules(engine, requests, definition=None, repeats: int = 3) -> dict:
    """Eligibility-stage milliseconds per request, built-in vs definition (see the module docstring)."""
    defn = definition or load_definition(EXAMPLE_FUNNEL)
    t0 = time.perf_counter()
    fields = FieldTable.build(engine.facts, engine.catalog)
    funnel = compile_funnel(defn, fields)
    setup_ms = (time.perf_counter() - t0) * 1e3
    builtin_codes = tuple(c.value for c in ELIGIBILITY_REASONS)
    mine_codes = tuple(c for c in funnel.order if c in builtin_codes)  # verdicts compared on these
    own = tuple(c for c in funnel.order if c not in builtin_codes)
    a_ms, b_ms, same = [], [], True
    for r in requests:
        trace = engine.run(r, FunnelParams())
        pos = trace.candidates["version_pos"].to_numpy(np.int64)
        scores = trace.candidates["score"].to_numpy(np.float64)
        best_a = best_b = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            ra = evaluate(engine.facts, pos, engine.request_context(r), builtin_codes)
            best_a = min(best_a, time.perf_counter() - t)
            t = time.perf_counter()
            ctx = engine.request_context(r)
            rb = evaluate(engine.facts, pos, ctx, mine_codes, funnel.rules,
                          Env(fields, pos, ctx, {"score": scores}))
            best_b = min(best_b, time.perf_counter() - t)
        a_ms.append(best_a * 1e3)
        b_ms.append(best_b * 1e3)
        same &= mine_codes == builtin_codes and np.array_equal(ra.fails, rb.fails)
    a, b = float(np.median(a_ms)), float(np.median(b_ms))
    return {"n_requests": len(a_ms), "n_ads": engine.n_ads, "definition": defn.name, "sha256": defn.sha256,
            "rules": len(mine_codes), "own_rules": list(own),
            "builtin_p50_ms": a, "definition_p50_ms": b, "ratio_p50": b / a if a else None,
            "ratio_total": float(np.sum(b_ms) / np.sum(a_ms)) if np.sum(a_ms) else None,
            "compile_ms": setup_ms, "same_verdicts": bool(same), "target_ratio": TARGET_RATIO,
            "meets_target": bool(a and b / a <= TARGET_RATIO)}
