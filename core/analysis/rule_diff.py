"""Two versions that differ in their funnel definition: which rules differ, and what each did.

`funnel_diff(engine_a, engine_b)` lists the rules added, removed and changed between the two
funnels (by code: a changed expression, stage, kind, plugin parameters or enabled flag), with
each side's definition sha256 (None: AdLens's built-in funnel). `rule_attribution(diffs, funnel)`
attributes slate changes to those rules over the compared requests (core.analysis.compare):
- removed share: the share of requests where B's slate lost an ad that A's slate had and B's
  primary reason for that ad is the rule ("rule GAMBLING_DE removed 3.1 % of slates");
- restored share: the share of requests where B's slate gained an ad that A's slate lacked and
  A's primary reason for that ad is the rule (what dropping or changing the rule gave back).
"""

from __future__ import annotations

from collections.abc import Sequence

from core.funnel.rule_list import RuleInfo


def _signature(r: RuleInfo) -> tuple:
    expr = " ".join(r.expr.split()) if r.expr else None  # layout of the expression text is not a change
    return (r.stage, r.kind, expr, r.plugin, r.params, r.enabled)


def _what_changed(a: RuleInfo, b: RuleInfo) -> str:
    if {a.kind, b.kind} == {"built-in", "expression"} and (a.stage, a.enabled) == (b.stage, b.enabled):
        expr = " ".join((a.expr or b.expr or "").split())
        return f"built-in re-expressed as {expr}" if b.expr else f"expression {expr} replaced by the built-in"
    parts = []
    if (a.expr and " ".join(a.expr.split())) != (b.expr and " ".join(b.expr.split())):
        parts.append(f"expression {a.expr or '(built-in)'!s} → {b.expr or '(built-in)'!s}")
    for name in ("stage", "kind", "plugin", "params"):
        if getattr(a, name) != getattr(b, name):
            parts.append(f"{name} {getattr(a, name)} → {getattr(b, name)}")
    if a.enabled != b.enabled:
        parts.append("switched " + ("on" if b.enabled else "off") + " in B's definition")
    return "; ".join(parts)


def _row(r: RuleInfo) -> dict:
    return {"code": r.code, "stage": r.stage, "kind": r.kind, "enabled": r.enabled,
            "expr": r.expr, "plugin": r.plugin, "description": r.description}


def funnel_diff(engine_a, engine_b) -> dict:
    """The difference between two engines' funnels (see the module docstring); `same` is True
    when both run the same rules in the same order."""
    ra = {r.code: r for r in engine_a.rule_infos}
    rb = {r.code: r for r in engine_b.rule_infos}
    da, db = engine_a.funnel.definition, engine_b.funnel.definition
    changed = [{"code": c, "a": _row(ra[c]), "b": _row(rb[c]), "what": _what_changed(ra[c], rb[c])}
               for c in ra if c in rb and _signature(ra[c]) != _signature(rb[c])]
    common_a = [c for c in ra if c in rb]
    common_b = [c for c in rb if c in ra]
    added = [_row(rb[c]) for c in rb if c not in ra]
    removed = [_row(ra[c]) for c in ra if c not in rb]
    return {
        "a": {"source": "builtin" if da is None else da.name, "sha256": None if da is None else da.sha256,
              "rules": len(ra)},
        "b": {"source": "builtin" if db is None else db.name, "sha256": None if db is None else db.sha256,
              "rules": len(rb)},
        "added": added, "removed": removed, "changed": changed,
        "reordered": common_a != common_b,
        "same": not (added or removed or changed) and common_a == common_b,
    }


def _primary(trace, ad_id: str) -> str | None:
    row = trace.row(ad_id)
    if row is None or row["primary_reason"] is None:
        return None
    reason = str(row["primary_reason"])
    return None if reason in ("", "nan", "<NA>") else reason


def share_text(share: float) -> str:
    return f"{100 * share:.1f} %"


def rule_attribution(diffs: Sequence, fdiff: dict) -> list[dict]:
    """Per rule that differs between the funnels (added, removed or changed): the share of compared
    requests whose slate it changed (see the module docstring), with a one-line sentence."""
    codes = {**{r["code"]: "added in B" for r in fdiff["added"]},
             **{r["code"]: "removed in B" for r in fdiff["removed"]},
             **{r["code"]: "changed" for r in fdiff["changed"]}}
    n = max(len(diffs), 1)
    out = []
    for code, change in codes.items():
        removed_in = restored_in = ads_removed = ads_restored = 0
        for d in diffs:
            lost = sum(_primary(d.trace_b, a) == code for a in d.lost["ad_id"])
            gained = sum(_primary(d.trace_a, a) == code for a in d.gained["ad_id"])
            ads_removed, ads_restored = ads_removed + lost, ads_restored + gained
            removed_in += lost > 0
            restored_in += gained > 0
        removed_share, restored_share = removed_in / n, restored_in / n
        a, b = share_text(removed_share), share_text(restored_share)
        sentence = {"added in B": f"rule {code} removed {a} of slates",
                    "removed in B": f"dropping rule {code} gave back {b} of slates (an ad it blocked in A)",
                    "changed": f"rule {code} as changed removed {a} of slates and gave back {b} "
                               "(an ad it blocked in A)"}[change]
        out.append({"code": code, "change": change, "requests": len(diffs),
                    "removed_requests": removed_in, "removed_share": removed_share, "ads_removed": ads_removed,
                    "restored_requests": restored_in, "restored_share": restored_share,
                    "ads_restored": ads_restored, "sentence": sentence})
    return sorted(out, key=lambda r: (-r["removed_share"], -r["restored_share"], r["code"]))
