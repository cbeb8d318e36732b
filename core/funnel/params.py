"""`FunnelParams`: every threshold of the funnel, with the one set of defaults that the CLI, the
dashboard and the analytics share."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.common.errors import ValidationError
from core.funnel.filters import active_rules
from core.funnel.reasons import ELIGIBILITY_REASONS, check_reason_code
from core.sources.base import SOURCE_ORDER

SOURCE_QUOTAS: dict[str, int] = {"two_tower": 500, "co_engagement": 200, "popular_in_context": 100,
                                 "targeting": 100, "ease": 200}
"""Candidates each source contributes to the union by default (two_tower's quota is `k`)."""

EXACT_RANKS_AUTO_MAX = 20_000
"""With `exact_ranks=None`, exact ranks are computed when the version has at most this many ads
(one matrix-vector product); a Flat index is exact, so its ANN rank is the exact rank."""


@dataclass(frozen=True)
class FunnelParams:
    """Every threshold of the funnel, with defaults.

    k: candidates retrieved; n_ranked: top N kept by eCPM; max_per_advertiser: M slate slots per
    advertiser; slate_size: S; rule_order: eligibility rules in evaluation order (codes left
    out are not evaluated; None: the funnel's own order, core.funnel.definition); disabled_rules:
    codes switched off (the engine checks both against its funnel's codes); mmr_lambda: None = plain eCPM
    order, else MMR trade-off in [0, 1]; search_params: per-call ANN params merged over the
    version's (e.g. {"nprobe": 32}); exact_ranks: True/False/None (auto, see EXACT_RANKS_AUTO_MAX);
    quotas: per-source candidate counts overriding SOURCE_QUOTAS (two_tower's is `k`);
    disabled_sources: sources switched off for this request (sources the version lacks are skipped).
    """

    k: int = SOURCE_QUOTAS["two_tower"]
    n_ranked: int = 50
    max_per_advertiser: int = 2
    slate_size: int = 10
    rule_order: tuple | None = None
    disabled_rules: tuple = ()
    mmr_lambda: float | None = None
    search_params: dict | None = None
    exact_ranks: bool | None = None
    quotas: dict | None = None
    disabled_sources: tuple = ()

    def __post_init__(self) -> None:
        problems = [f"{name} must be a positive integer; got {getattr(self, name)!r}"
                    for name in ("k", "n_ranked", "max_per_advertiser", "slate_size")
                    if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), (int, np.integer))
                    or getattr(self, name) < 1]
        if self.mmr_lambda is not None and not 0.0 <= float(self.mmr_lambda) <= 1.0:
            problems.append(f"mmr_lambda must be in [0, 1] or None; got {self.mmr_lambda!r}")
        for name, value in (self.quotas or {}).items():
            if name not in SOURCE_ORDER or name == "two_tower":
                problems.append(f"unknown source {name!r} in quotas; known: {', '.join(SOURCE_ORDER[1:])} "
                                "(two_tower's quota is k)")
            elif isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                problems.append(f"quota of {name} must be a positive integer; got {value!r}")
        for name in self.disabled_sources:
            if name not in SOURCE_ORDER:
                problems.append(f"unknown source {name!r} to disable; known: {', '.join(SOURCE_ORDER)}")
        if problems:
            raise ValidationError(problems)
        object.__setattr__(self, "disabled_sources", tuple(str(n) for n in self.disabled_sources))
        if self.rule_order is not None:
            object.__setattr__(self, "rule_order", tuple(str(r) for r in self.rule_order))
        object.__setattr__(self, "disabled_rules", tuple(str(r) for r in self.disabled_rules))
        bad = [why for c in (*(self.rule_order or ()), *self.disabled_rules) if (why := check_reason_code(c))]
        if bad:
            raise ValidationError(bad)

    @property
    def rules(self) -> tuple[str, ...]:
        """The enabled built-in rules in evaluation order (an engine's funnel may have others:
        `FunnelEngine.active_rules`)."""
        return active_rules(ELIGIBILITY_REASONS if self.rule_order is None else self.rule_order,
                            self.disabled_rules)

    def quota(self, source: str) -> int:
        """Candidates `source` contributes (two_tower: k)."""
        if source == "two_tower":
            return int(self.k)
        return int((self.quotas or {}).get(source, SOURCE_QUOTAS[source]))

    def over_version_quotas(self, counts: dict[str, int] | None) -> "FunnelParams":
        """These params over a version's learned quotas (core.index.manifest `quota_counts`): a
        source without a quota here takes the version's count, one the version gives 0 is switched
        off (a quota given here switches it back on); two_tower's quota stays K. Idempotent."""
        if not counts:
            return self
        given = dict(self.quotas or {})
        quotas = {n: int(c) for n, c in counts.items() if c > 0 and n in SOURCE_QUOTAS and n != "two_tower"}
        off = tuple(n for n, c in counts.items() if c <= 0 and n != "two_tower" and n in SOURCE_QUOTAS
                    and n not in given and n not in self.disabled_sources)
        return replace(self, quotas={**quotas, **given}, disabled_sources=self.disabled_sources + off)

    def enabled(self, source: str) -> bool:
        return source not in self.disabled_sources

    def fit_to_catalog(self, n_ads: int) -> tuple["FunnelParams", list[str]]:
        """These params with K (and N, the slate) no larger than the catalog, plus a notice for
        each value that was lowered (asking for more candidates than ads exist is not an error,
        but silently returning fewer would be)."""
        n_ads = max(int(n_ads), 1)
        changes, notices = {}, []
        for name, label in (("k", "K (candidates retrieved)"), ("n_ranked", "N (kept by early ranking)"),
                            ("slate_size", "the slate size")):
            if getattr(self, name) > n_ads:
                changes[name] = n_ads
                notices.append(f"{label} {getattr(self, name):,} is more than the {n_ads:,} ads in this version; "
                               f"using {n_ads:,}")
        return (replace(self, **changes) if changes else self), notices


DEFAULT_PARAMS = FunnelParams()
"""The defaults the CLI flags and the dashboard's controls start from."""
