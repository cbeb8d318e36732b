"""Two versions that differ only in their funnel definition (core.analysis.rule_diff through
core.analysis.compare): the rules added, removed and changed, and the share of slates each one
changed, hand-computed on the toy catalog of funnel_data.

On the toy, with every user's usual request: u1 (US) gets 2 of the food advertiser's ads in
A's slate (its cap is 2); u2 (CA), u3 and u4 (DE) are not in the US. A rule that blocks food ads
for US requests therefore removes ads from 1 slate of 4 (25.0 %), 2 ads in all.
"""

from __future__ import annotations

import pytest
from funnel_data import stub_version, toy_catalog

from core.analysis.compare import compare_versions
from core.funnel.definition import parse_definition
from core.funnel.engine import FunnelEngine

USERS = ["u1", "u2", "u3", "u4"]
FOOD_US = '''
[[rule]]
code = "NO_FOOD_FOR_US"
description = "food ads are not for US users"
expr = 'ad.vertical == "food" and request.country == "US"'
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    cat = toy_catalog(tmp_path_factory.mktemp("rule_diff"))
    version = stub_version(cat)

    def engine(text: str | None = None) -> FunnelEngine:
        return FunnelEngine(version, cat, funnel_definition=None if text is None else parse_definition(text))
    return engine


def test_an_added_rule_removed_a_quarter_of_the_slates(toy):
    a, b = toy(), toy(FOOD_US)
    rep = compare_versions(a, b, users=USERS)
    f = rep.funnels
    assert [r["code"] for r in f["added"]] == ["NO_FOOD_FOR_US"] and not f["removed"] and not f["changed"]
    assert f["a"]["sha256"] is None and f["b"]["sha256"] == b.funnel.definition.sha256 and not f["same"]
    (row,) = rep.rule_attribution
    assert (row["code"], row["change"], row["removed_requests"], row["ads_removed"]) == \
        ("NO_FOOD_FOR_US", "added in B", 1, 2)
    assert row["removed_share"] == pytest.approx(0.25) and row["restored_share"] == 0.0
    assert row["sentence"] == "rule NO_FOOD_FOR_US removed 25.0 % of slates"
    lost = rep.diffs[0].lost  # u1's
    assert list(lost["lost_reason"]) == ["NO_FOOD_FOR_US"] * 2 and set(lost["lost_stage"]) == {"eligible"}
    # the other way round the rule is removed in B, and gives the same slates back
    back = compare_versions(b, a, users=USERS)
    assert [r["code"] for r in back.funnels["removed"]] == ["NO_FOOD_FOR_US"]
    (row,) = back.rule_attribution
    assert row["change"] == "removed in B" and row["restored_share"] == pytest.approx(0.25)
    assert row["ads_restored"] == 2 and row["removed_share"] == 0.0
    assert row["sentence"].startswith("dropping rule NO_FOOD_FOR_US gave back 25.0 % of slates")
    assert back.to_dict()["rule_attribution"][0]["code"] == "NO_FOOD_FOR_US"  # in the JSON report


def test_a_changed_expression_is_named_and_attributed_both_ways(toy):
    a, b = toy(FOOD_US), toy(FOOD_US.replace('"US"', '"CA"'))
    rep = compare_versions(a, b, users=USERS)
    (ch,) = rep.funnels["changed"]
    assert ch["code"] == "NO_FOOD_FOR_US" and 'request.country == "CA"' in ch["what"]
    (row,) = rep.rule_attribution
    # u2 (CA) loses its two food ads, u1 (US) gets its two back: one slate of four each way
    assert row["change"] == "changed"
    assert (row["removed_requests"], row["ads_removed"], row["restored_requests"], row["ads_restored"]) == (1, 2, 1, 2)
    assert row["sentence"] == ("rule NO_FOOD_FOR_US as changed removed 25.0 % of slates and gave back 25.0 % "
                               "(an ad it blocked in A)")


def test_a_ranking_stage_rule_is_the_lost_reason_and_the_same_funnel_is_no_difference(toy):
    late = (FOOD_US.replace("expr =", 'stage = "ranking"\nexpr =')
            .replace("and request", "and candidate.ecpm > 0 and request"))
    rep = compare_versions(toy(), toy(late), users=USERS)
    lost = rep.diffs[0].lost
    assert list(lost["lost_reason"]) == ["NO_FOOD_FOR_US"] * 2 and set(lost["lost_stage"]) == {"ranked"}
    assert rep.rule_attribution[0]["removed_share"] == pytest.approx(0.25)
    same = compare_versions(toy(FOOD_US), toy(FOOD_US.replace("expr", "\nexpr")), users=USERS[:2])
    assert same.funnels["same"] and same.rule_attribution == []
