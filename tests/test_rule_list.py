"""core.funnel.rule_list: a definition's rules in the engine's order, read without compiling,
the check of rules switched off, and "why candidates dropped" with stages and descriptions."""

from __future__ import annotations

import pytest

from core.common.errors import ValidationError
from core.funnel.definition import parse_definition
from core.funnel.params import FunnelParams
from core.funnel.reasons import ELIGIBILITY_REASONS
from core.funnel.rule_list import builtin_rules, check_disabled, known_only, reason_breakdown, rule_list

DEFN = '''
[[rule]]
code = "LATE"
stage = "ranking"
expr = "candidate.pctr < 0.001"
description = "below the reserve"

[[rule]]
builtin = "GEO_MISMATCH"
enabled = false

[[rule]]
code = "OWN"
expr = 'ad.vertical == "crypto"'
'''


def test_rules_in_the_engines_order_with_kind_stage_and_description():
    rules = rule_list(parse_definition(DEFN))
    codes = [r.code for r in rules]
    first = [c.value for c in ELIGIBILITY_REASONS if c.value != "GEO_MISMATCH"]
    assert codes == [*first, "GEO_MISMATCH", "OWN", "LATE"]  # unlisted built-ins first, ranking stage last
    by = {r.code: r for r in rules}
    assert (by["LATE"].stage, by["LATE"].kind, by["LATE"].description) == ("ranking", "expression", "below the reserve")
    assert by["GEO_MISMATCH"].kind == "built-in" and not by["GEO_MISMATCH"].enabled
    assert by["GEO_MISMATCH"].description == "the campaign targets other countries"
    assert by["OWN"].label == "OWN (expression, eligibility)"
    off = rule_list(parse_definition('unlisted_builtins = "off"\n' + DEFN))
    assert [r.code for r in off] == ["GEO_MISMATCH", "OWN", "LATE"]
    assert [r.code for r in rule_list(None)] == [r.code for r in builtin_rules()] == [c.value for c in ELIGIBILITY_REASONS]


def test_switching_off_unknown_rules_names_them_and_the_known_ones():
    rules = rule_list(parse_definition(DEFN))
    check_disabled(("LATE", "OWN", "GEO_MISMATCH"), rules)
    with pytest.raises(ValidationError) as exc:
        check_disabled(("LATE", "NOPE", "ALSO_NOT"), rules)
    msg = str(exc.value)
    assert "unknown rule 'NOPE' to switch off" in msg and "'ALSO_NOT'" in msg and "OWN, LATE" in msg
    p = FunnelParams(disabled_rules=("OWN", "CRYPTO_EU"))
    assert known_only(p, rules).disabled_rules == ("OWN",)
    assert known_only(FunnelParams(disabled_rules=("OWN",)), rules).disabled_rules == ("OWN",)


def test_reason_breakdown_orders_by_count_and_names_every_stage():
    why = reason_breakdown({"OWN": 3, "BELOW_CUTOFF": 40, "LATE": 3, "ADVERTISER_CAP": 2},
                           rule_list(parse_definition(DEFN)))
    assert list(why["reason"]) == ["BELOW_CUTOFF", "LATE", "OWN", "ADVERTISER_CAP"]
    assert list(why["stage"]) == ["ranking", "ranking", "eligibility", "diversity"]
    assert list(why["candidates"]) == [40, 3, 3, 2] and why.loc[1, "description"] == "below the reserve"
