"""Rules in Python: entry-point group `adlens.rules`, for rules an expression cannot say.

A package registers a `core.funnel.filters.Rule` subclass (or a factory returning a Rule) under
`[project.entry-points."adlens.rules"]`; a funnel definition uses it by name:

    [[rule]]
    plugin = "recent_click_block"   # the entry point's name
    code = "RECENT_CLICK"           # optional: the rule's own `code` attribute by default
    params = { hours = 24 }         # optional keyword arguments for the class or factory

The rule has the built-in interface: a vectorised `fails(facts, pos, ctx)` (a boolean mask over
the candidate positions) and `describe(facts, p, ctx)`. `PluginRule` wraps it and checks every
mask it returns, so a broken plugin is named in a clear error, never a numpy traceback.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import numpy as np

from core.common.errors import AdLensError
from core.funnel.filters import Rule

ENTRY_POINT_GROUP = "adlens.rules"


def installed() -> dict[str, object]:
    """Entry points of the group by name (not imported yet)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


class PluginRule(Rule):
    """An entry-point rule under its reason code, its masks checked."""

    def __init__(self, name: str, source: str, rule, code: str):
        self.name, self.source, self.rule, self.code = name, source, rule, code

    def fails(self, facts, pos, ctx):
        try:
            out = self.rule.fails(facts, pos, ctx)
        except AdLensError:
            raise
        except Exception as exc:  # a broken plugin must say which one
            raise AdLensError(f"rule plugin {self.name!r} ({self.source}) failed: {type(exc).__name__}: {exc}") from exc
        out = np.asarray(out)
        if out.shape != (len(pos),) or out.dtype != bool:
            raise AdLensError(f"rule plugin {self.name!r} ({self.source}) returned a {out.dtype} array of shape "
                              f"{out.shape}; fails() must return a boolean mask of shape ({len(pos)},)")
        return out

    def describe(self, facts, p, ctx):
        try:
            return str(self.rule.describe(facts, p, ctx))
        except Exception as exc:
            return f"(rule plugin {self.name!r} could not describe this ad: {type(exc).__name__}: {exc})"


def load_plugin(name: str, params: dict | None = None) -> tuple[object, str, str | None]:
    """(the rule object, its entry point's value, its own code) for entry point `name`;
    AdLensError naming the plugin when it is not installed, fails to import or is not a rule."""
    eps = installed()
    ep = eps.get(name)
    if ep is None:
        raise AdLensError(f"no rule plugin {name!r} in entry-point group {ENTRY_POINT_GROUP}; installed: "
                          f"{', '.join(sorted(eps)) or 'none'}")
    try:
        obj = ep.load()
    except Exception as exc:
        raise AdLensError(f"rule plugin {name!r} ({ep.value}) failed to import: {exc}") from exc
    try:
        rule = obj(**(params or {})) if callable(obj) else obj
    except Exception as exc:
        raise AdLensError(f"rule plugin {name!r} ({ep.value}) could not be made with params {params or {}}: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not (callable(getattr(rule, "fails", None)) and callable(getattr(rule, "describe", None))):
        raise AdLensError(f"rule plugin {name!r} ({ep.value}) is not a rule: it needs fails(facts, pos, ctx) "
                          "and describe(facts, p, ctx) (core.funnel.filters.Rule)")
    code = getattr(rule, "code", None)
    return rule, str(ep.value), None if code is None else str(code)
