"""Eligibility rules: one small interface, one class per rule, evaluated vectorised.

`core.funnel.ad_facts.AdFacts` holds every ad's campaign/advertiser fields as numpy arrays aligned to a
version's positions (built once); `RequestContext` holds what one request contributes (country,
device, community tier, age range, frequency counts). Each `Rule` returns a boolean *fails* mask
over an array of candidate positions and can `describe` one ad's outcome with concrete values.
`evaluate` runs every enabled rule on every candidate (no short-circuit); the primary reason is
the first failing rule in the configured order.

Semantics (an ad without a campaign is always eligible except for its own policy status):
- POLICY_REJECTED: policy_status != "approved" (pending blocks too: it has not passed review).
- CAMPAIGN_INACTIVE: campaign status != "active".
- OUT_OF_SCHEDULE: request time outside [start_ts, end_ts] (an empty bound is open).
- BUDGET_EXHAUSTED: spend_today >= daily_budget (no budget: unlimited).
- GEO_MISMATCH / DEVICE_MISMATCH: a non-empty target list that lacks the request's value.
- AGE_MISMATCH: the campaign has age_min or age_max and the user's age bucket does not overlap
  [age_min, age_max]; an unknown age fails an age-targeted campaign.
- COMMUNITY_EXCLUDED: the request's community is in the exclude list.
- COMMUNITY_NOT_TARGETED: the include list is non-empty and the request's community is not in it
  (the home feed, with no community, fails an include-targeted campaign).
- BRAND_SAFETY: the community's safety tier ranks above the advertiser's brand_safety tier (the
  home feed counts as "safe").
- FREQUENCY_CAP: the user's impressions of the campaign in [ts - 24 h, ts) >= frequency_cap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from core.common.errors import ValidationError
from core.data.vocab import PolicyStatus
from core.funnel.ad_facts import (
    I64_MAX,
    I64_MIN,
    TIER_RANK,
    AdFacts,
    ListColumn,
    RequestContext,
    fmt_ns,
)
from core.funnel.reasons import ELIGIBILITY_REASONS, Reason


class Rule(ABC):
    """One eligibility rule: a vectorised fails-mask and a description with concrete values.
    `code` is its reason code: a built-in `Reason` or a funnel definition's own
    (core.funnel.definition)."""

    code: ClassVar[str]

    def evaluate(self, facts: AdFacts, pos: np.ndarray, ctx: RequestContext, env=None) -> np.ndarray:
        """`fails` with the evaluation's shared field cache (`env`, core.funnel.fields.Env), which
        expression rules read; built-in rules ignore it."""
        return self.fails(facts, pos, ctx)

    @abstractmethod
    def fails(self, facts: AdFacts, pos: np.ndarray, ctx: RequestContext) -> np.ndarray:
        """Boolean mask over `pos` (version positions): True where the ad fails this rule."""

    @abstractmethod
    def describe(self, facts: AdFacts, p: int, ctx: RequestContext) -> str:
        """The rule's inputs for ad position `p` in this request, e.g. "targets US, CA; request country DE"."""


class PolicyRule(Rule):
    code = Reason.POLICY_REJECTED

    def fails(self, facts, pos, ctx):
        return ~facts.approved[pos]

    def describe(self, facts, p, ctx):
        if not facts.in_catalog[p]:
            return "ad is in this version but no longer in the catalog"
        s = facts.policy_status[p]
        return f"policy status {s}" + ("" if s == PolicyStatus.APPROVED.value else " (only approved ads serve)")


def _no_campaign(facts: AdFacts, p: int) -> str | None:
    return None if facts.has_campaign[p] else "no campaign (campaign rules do not apply)"


class CampaignActiveRule(Rule):
    code = Reason.CAMPAIGN_INACTIVE

    def fails(self, facts, pos, ctx):
        return facts.inactive[pos]

    def describe(self, facts, p, ctx):
        return _no_campaign(facts, p) or f"campaign {facts.campaign_id[p]} status {facts.status[p]}"


class ScheduleRule(Rule):
    code = Reason.OUT_OF_SCHEDULE

    def fails(self, facts, pos, ctx):
        return facts.has_campaign[pos] & ((ctx.ts_ns < facts.start_ns[pos]) | (ctx.ts_ns > facts.end_ns[pos]))

    def describe(self, facts, p, ctx):
        if msg := _no_campaign(facts, p):
            return msg
        a, b = facts.start_ns[p], facts.end_ns[p]
        sa = "open" if a == I64_MIN else fmt_ns(a)
        sb = "open" if b == I64_MAX else fmt_ns(b)
        return f"runs {sa} to {sb}; request time {fmt_ns(ctx.ts_ns)}"


class BudgetRule(Rule):
    code = Reason.BUDGET_EXHAUSTED

    def fails(self, facts, pos, ctx):
        budget = facts.daily_budget[pos]
        return facts.has_campaign[pos] & ~np.isnan(budget) & (facts.spend_today[pos] >= budget)

    def describe(self, facts, p, ctx):
        if msg := _no_campaign(facts, p):
            return msg
        if np.isnan(facts.daily_budget[p]):
            return f"spent {facts.spend_today[p]:.2f} today; no daily budget"
        return f"spent {facts.spend_today[p]:.2f} of daily budget {facts.daily_budget[p]:.2f}"


class _ListTargetRule(Rule):
    column: ClassVar[str]
    noun: ClassVar[str]

    def _value(self, ctx: RequestContext) -> str | None:
        raise NotImplementedError

    def fails(self, facts, pos, ctx):
        col: ListColumn = getattr(facts, self.column)
        return facts.has_campaign[pos] & col.nonempty(pos) & ~col.contains(pos, self._value(ctx))

    def describe(self, facts, p, ctx):
        if msg := _no_campaign(facts, p):
            return msg
        vals = getattr(facts, self.column).values(p)
        target = ", ".join(vals) if vals else f"every {self.noun}"
        return f"targets {target}; request {self.noun} {self._value(ctx)}"


class GeoRule(_ListTargetRule):
    code, column, noun = Reason.GEO_MISMATCH, "countries", "country"

    def _value(self, ctx):
        return ctx.request.country


class DeviceRule(_ListTargetRule):
    code, column, noun = Reason.DEVICE_MISMATCH, "devices", "device"

    def _value(self, ctx):
        return ctx.request.device


class AgeRule(Rule):
    code = Reason.AGE_MISMATCH

    def fails(self, facts, pos, ctx):
        lo, hi = facts.age_min[pos], facts.age_max[pos]
        targeted = facts.has_campaign[pos] & ~(np.isnan(lo) & np.isnan(hi))
        rng = ctx.age_range
        if rng is None:
            return targeted
        overlap = (np.nan_to_num(lo, nan=-np.inf) <= rng[1]) & (np.nan_to_num(hi, nan=np.inf) >= rng[0])
        return targeted & ~overlap

    def describe(self, facts, p, ctx):
        if msg := _no_campaign(facts, p):
            return msg
        lo, hi = facts.age_min[p], facts.age_max[p]
        if np.isnan(lo) and np.isnan(hi):
            return f"no age targeting; user age {ctx.age_bucket}"
        a = "any" if np.isnan(lo) else str(int(lo))
        b = "any" if np.isnan(hi) else str(int(hi))
        return f"targets ages {a}-{b}; user age bucket {ctx.age_bucket}"


class CommunityExcludedRule(Rule):
    code = Reason.COMMUNITY_EXCLUDED

    def fails(self, facts, pos, ctx):
        return facts.has_campaign[pos] & facts.exclude.contains(pos, ctx.request.community_id)

    def describe(self, facts, p, ctx):
        if msg := _no_campaign(facts, p):
            return msg
        vals = facts.exclude.values(p)
        return f"excludes {', '.join(vals) if vals else 'no communities'}; request {ctx.community_label}"


class CommunityTargetRule(Rule):
    code = Reason.COMMUNITY_NOT_TARGETED

    def fails(self, facts, pos, ctx):
        return facts.has_campaign[pos] & facts.include.nonempty(pos) & \
            ~facts.include.contains(pos, ctx.request.community_id)

    def describe(self, facts, p, ctx):
        if msg := _no_campaign(facts, p):
            return msg
        vals = facts.include.values(p)
        return f"targets {'communities ' + ', '.join(vals) if vals else 'any community'}; request {ctx.community_label}"


class BrandSafetyRule(Rule):
    code = Reason.BRAND_SAFETY

    def fails(self, facts, pos, ctx):
        return facts.has_campaign[pos] & (TIER_RANK.get(ctx.community_tier, 0) > facts.brand_rank[pos])

    def describe(self, facts, p, ctx):
        if msg := _no_campaign(facts, p):
            return msg
        where = (f"community {ctx.request.community_id} is {ctx.community_tier}"
                 if ctx.request.community_id is not None else "home feed counts as safe")
        return f"advertiser accepts up to {facts.brand_safety[p]}; {where}"


class FrequencyCapRule(Rule):
    code = Reason.FREQUENCY_CAP

    def fails(self, facts, pos, ctx):
        cap = facts.frequency_cap[pos]
        capped = facts.has_campaign[pos] & ~np.isnan(cap)
        if not capped.any():
            return capped
        n = ctx.frequency.counts(ctx.request.user_id, ctx.ts_ns, facts.campaign_code[pos])
        return capped & (n >= np.nan_to_num(cap, nan=np.inf))

    def describe(self, facts, p, ctx):
        if msg := _no_campaign(facts, p):
            return msg
        n = int(ctx.frequency.counts(ctx.request.user_id, ctx.ts_ns, facts.campaign_code[p:p + 1])[0])
        cap = facts.frequency_cap[p]
        return f"{n} impression{'' if n == 1 else 's'} in 24 h, {'no cap' if np.isnan(cap) else f'cap {int(cap)}'}"


RULES: dict[str, Rule] = {r.code.value: r for r in (
    PolicyRule(), CampaignActiveRule(), ScheduleRule(), BudgetRule(), GeoRule(), AgeRule(),
    DeviceRule(), CommunityExcludedRule(), CommunityTargetRule(), BrandSafetyRule(), FrequencyCapRule(),
)}
assert tuple(RULES) == ELIGIBILITY_REASONS, "one rule per eligibility code, in the default order"


def active_rules(rule_order=ELIGIBILITY_REASONS, disabled=(), known=ELIGIBILITY_REASONS) -> tuple[str, ...]:
    """The rules to evaluate, in order: `rule_order` minus `disabled`, out of the `known` codes
    (the funnel's rules). Codes left out of `rule_order` are not evaluated. Raises
    ValidationError naming unknown or repeated codes."""
    known = tuple(str(c) for c in known)
    problems: list[str] = []
    order: list[str] = []
    allowed = ", ".join(known)
    for raw in list(rule_order) + list(disabled):
        if str(raw) not in known:
            problems.append(f"unknown eligibility rule {raw!r}; known: {allowed}")
    for raw in rule_order:
        if str(raw) in known:
            code = str(raw)
            if code in order:
                problems.append(f"rule {code} listed twice in rule_order")
            order.append(code)
    if problems:
        raise ValidationError(problems)
    off = {str(d) for d in disabled}
    return tuple(c for c in order if c not in off)


@dataclass(frozen=True)
class EligibilityResult:
    """`fails[i, j]`: candidate i fails rule `codes[j]`; `primary[i]`: first failing code or None."""

    codes: tuple[str, ...]
    fails: np.ndarray
    primary: np.ndarray

    @property
    def eligible(self) -> np.ndarray:
        return ~self.fails.any(axis=1) if self.fails.shape[1] else np.ones(len(self.fails), bool)

    def failed_lists(self) -> list[list[str]]:
        """Per candidate, every failing code (in rule order)."""
        out: list[list[str]] = [[] for _ in range(len(self.fails))]
        names = [str(c) for c in self.codes]
        rows, cols = np.nonzero(self.fails)  # row-major: codes stay in rule order
        for i, j in zip(rows.tolist(), cols.tolist()):  # Python ints: no numpy scalar per pair
            out[i].append(names[j])
        return out


def evaluate(facts: AdFacts, pos: np.ndarray, ctx: RequestContext, codes: tuple[str, ...],
             rules: Mapping[str, Rule] | None = None, env=None) -> EligibilityResult:
    """Evaluate every rule in `codes` (out of `rules`, default the built-ins) on every candidate
    position (no short-circuit); `env` is the field cache expression rules share."""
    rules = RULES if rules is None else rules
    pos = np.asarray(pos, dtype=np.int64)
    fails = np.zeros((len(pos), len(codes)), bool)
    for j, code in enumerate(codes):
        fails[:, j] = rules[code].evaluate(facts, pos, ctx, env)
    primary = np.full(len(pos), None, dtype=object)
    any_fail = fails.any(axis=1)
    if any_fail.any():
        first = fails.argmax(axis=1)
        names = np.array([str(c) for c in codes], dtype=object)
        primary[any_fail] = names[first[any_fail]]
    return EligibilityResult(tuple(codes), fails, primary)


def explain_rules(facts: AdFacts, p: int, ctx: RequestContext, codes: tuple[str, ...],
                  rules: Mapping[str, Rule] | None = None, env=None) -> list[dict]:
    """Every eligibility rule's verdict for one ad position (enabled rules in their configured
    order, then the disabled ones): code, enabled, failed, detail. `env` (an Env over `[p]`)
    lets expression rules show their operand values."""
    rules = RULES if rules is None else rules
    pos = np.array([p], np.int64)
    out = []
    for code in (*codes, *(c for c in rules if c not in codes)):
        rule = rules[code]
        detail = rule.describe(facts, p, ctx, env) if getattr(rule, "compiled", None) is not None \
            else rule.describe(facts, p, ctx)
        out.append({"code": str(code), "enabled": code in codes,
                    "failed": bool(rule.evaluate(facts, pos, ctx, env)[0]),
                    "detail": detail})
    return out
