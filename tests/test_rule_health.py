"""Health's per-rule section (core.analysis.rule_health) on the toy catalog of funnel_data, with
answers known by construction: every request retrieves all ads (K is above the catalog); the
four food ads fail NO_FOOD_FOR_US for u1 (US) only and pass every built-in rule there; a rule on
a vertical nobody has never fires; a ranking-stage rule true for every eCPM fires on every
candidate that reaches ranking; a built-in listed off is reported off, not flagged."""

from __future__ import annotations

import numpy as np
import pytest
from funnel_data import stub_version, toy_catalog

from core.analysis.rule_health import ALWAYS, NEVER, rule_rates
from core.funnel.definition import parse_definition
from core.funnel.engine import FunnelEngine
from core.funnel.params import FunnelParams

DEFN = '''
[[rule]]
builtin = "GEO_MISMATCH"
enabled = false

[[rule]]
code = "NO_FOOD_FOR_US"
description = "food ads are not for US users"
expr = 'ad.vertical == "food" and request.country == "US"'

[[rule]]
code = "NO_SUCH_VERTICAL"
expr = 'ad.vertical == "fod"'

[[rule]]
code = "ANY_ECPM"
stage = "ranking"
expr = 'candidate.ecpm >= 0'
'''


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    cat = toy_catalog(tmp_path_factory.mktemp("rule_health"))
    return FunnelEngine(stub_version(cat), cat, funnel_definition=parse_definition(DEFN))


def test_rule_rates_on_the_toy(engine):
    rep = rule_rates(engine, n_requests=50)
    n_ads = engine.n_ads
    assert rep["n_requests"] == 4 and rep["candidates"] == 4 * n_ads  # u1..u4, every ad retrieved
    rules = {r["code"]: r for r in rep["rules"]}
    # the listing read from the definition is the order the compiled funnel runs
    assert list(rules) == [*engine.funnel.all_order, *engine.funnel.ranking]
    assert list(rules)[:11] == [c for c in rules if c not in ("NO_FOOD_FOR_US", "NO_SUCH_VERTICAL", "ANY_ECPM")]
    food = rules["NO_FOOD_FOR_US"]
    assert (food["stage"], food["kind"], food["evaluated"], food["fails"], food["primary"]) == \
        ("eligibility", "expression", 4 * n_ads, 4, 4)
    assert food["fail_share"] == pytest.approx(4 / (4 * n_ads)) and food["flag"] is None
    assert rules["NO_SUCH_VERTICAL"]["fails"] == 0 and rules["NO_SUCH_VERTICAL"]["flag"] == NEVER
    late = rules["ANY_ECPM"]
    assert late["stage"] == "ranking" and late["flag"] == ALWAYS
    assert 0 < late["evaluated"] < 4 * n_ads and late["fails"] == late["evaluated"] == late["primary"]
    geo = rules["GEO_MISMATCH"]
    assert geo["enabled"] is False and geo["flag"] is None and np.isnan(geo["fail_share"])
    assert rules["POLICY_REJECTED"]["kind"] == "built-in" and rules["POLICY_REJECTED"]["fails"] > 0
    # switched off for the what-if: not evaluated, not flagged
    off = {r["code"]: r for r in rule_rates(engine, n_requests=50,
                                            params=FunnelParams(disabled_rules=("NO_SUCH_VERTICAL",)))["rules"]}
    assert off["NO_SUCH_VERTICAL"]["enabled"] is False and off["NO_SUCH_VERTICAL"]["flag"] is None
