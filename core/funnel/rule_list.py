"""The rules of a funnel as a list an analyst reads: code, stage, kind, description, in order.

`rule_list(defn)` reads a funnel definition (core.funnel.definition) without compiling it, so the
dashboard's sidebar lists a version's rules from its funnel.toml before the engine is loaded;
an engine keeps the same list as `FunnelEngine.rule_infos`. It follows the one order the engine
runs (`definition.ordered_specs`): eligibility rules first, then ranking-stage rules.
`check_disabled` is the engine's check of rules switched off by hand (CLI flags, the sidebar).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import pandas as pd

from core.common.errors import ValidationError
from core.funnel.definition import FunnelDefinition, ordered_specs
from core.funnel.reasons import ELIGIBILITY_REASONS, REASON_DESCRIPTIONS, Reason

KINDS = ("built-in", "expression", "plugin")


@dataclass(frozen=True)
class RuleInfo:
    """One rule of a funnel: `stage` is "eligibility" or "ranking"; `kind` one of KINDS;
    `enabled` False when the definition lists it switched off (enabled = false)."""

    code: str
    stage: str
    kind: str
    description: str
    enabled: bool = True
    expr: str | None = None
    plugin: str | None = None
    params: tuple = ()  # a plugin's keyword arguments, as sorted (key, value) pairs

    @property
    def label(self) -> str:
        """One line: "CODE — description (kind, stage)"."""
        desc = f" — {self.description}" if self.description else ""
        return f"{self.code}{desc} ({self.kind}, {self.stage})"

    def to_dict(self) -> dict:
        return asdict(self)


def builtin_rules() -> tuple[RuleInfo, ...]:
    """AdLens's own funnel: the eleven built-in eligibility rules in default order."""
    return tuple(RuleInfo(c.value, "eligibility", "built-in", REASON_DESCRIPTIONS[c.value])
                 for c in ELIGIBILITY_REASONS)


def rule_list(defn: FunnelDefinition | None) -> tuple[RuleInfo, ...]:
    """Every rule `defn` gives a version, in the order the engine runs them (None: the built-ins)."""
    if defn is None:
        return builtin_rules()
    out = []
    for spec in ordered_specs(defn):
        if spec.plugin is not None:
            kind, desc = "plugin", spec.description or f"Python rule {spec.plugin} (entry point adlens.rules)"
        elif spec.expr is None:
            kind, desc = "built-in", spec.description or REASON_DESCRIPTIONS.get(spec.code, "")
        else:
            kind, desc = "expression", spec.description or REASON_DESCRIPTIONS.get(spec.code, "")
        out.append(RuleInfo(spec.code, spec.stage, kind, desc, spec.enabled, spec.expr, spec.plugin, spec.params))
    return tuple(out)


def rules_by_code(rules: Iterable[RuleInfo]) -> dict[str, RuleInfo]:
    return {r.code: r for r in rules}


def check_disabled(codes: Sequence[str], rules: Sequence[RuleInfo]) -> None:
    """ValidationError naming every code that is not one of `rules` (the version's funnel), with
    the codes it has."""
    known = [r.code for r in rules]
    bad = [c for c in codes if c not in known]
    if bad:
        raise ValidationError([f"unknown rule {c!r} to switch off: this version's funnel has {', '.join(known)}"
                               for c in bad])


POST_RULE_STAGES = {Reason.BELOW_CUTOFF.value: "ranking", Reason.ADVERTISER_CAP.value: "diversity"}
"""The stage of AdLens's own post-eligibility codes (they are not rules of a funnel definition)."""


def reason_breakdown(reason_counts: dict[str, int], rules: Sequence[RuleInfo]) -> pd.DataFrame:
    """"Why candidates dropped": one row per primary reason (most candidates first) with the
    rule's stage, kind and description, so a funnel definition's own codes read like the built-ins'."""
    by = rules_by_code(rules)
    rows = []
    for code, n in sorted(reason_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if code in by:
            r = by[code]
            rows.append({"reason": code, "candidates": int(n), "stage": r.stage, "kind": r.kind,
                         "description": r.description})
        else:
            rows.append({"reason": code, "candidates": int(n), "stage": POST_RULE_STAGES.get(code, "?"),
                         "kind": "built-in" if code in POST_RULE_STAGES else "?",
                         "description": REASON_DESCRIPTIONS.get(code, "")})
    return pd.DataFrame(rows, columns=["reason", "candidates", "stage", "kind", "description"])


def rules_off_note(codes: Sequence[str]) -> str:
    """The line a page or report prints when rules are switched off for a what-if."""
    return f"What-if: rules switched off: {', '.join(codes)}. Their reasons do not appear below."


def known_only(params, rules: Sequence[RuleInfo]):
    """`params` (core.funnel.params.FunnelParams) with only the switched-off rules that `rules`
    has: one what-if run on two versions whose funnels differ (compare)."""
    codes = {r.code for r in rules}
    keep = tuple(c for c in params.disabled_rules if c in codes)
    return params if keep == params.disabled_rules else replace(params, disabled_rules=keep)
