"""A funnel definition's own reason code in the dashboard (AppTest): Inspect's "why candidates
dropped" chart, its reasons table and the candidate table, Why-not's rule table with the
expression's values; the sidebar's what-if switching the rule off (its reason leaves the trace)
and the deep link that carries it (validated)."""

from __future__ import annotations

from pathlib import Path

import pytest
from funnel_data import FakeTextEncoder, fill_random_db
from streamlit.testing.v1 import AppTest

from core.funnel.definition import funnel_builder, parse_definition

APP = Path(__file__).resolve().parent.parent / "dashboard" / "router.py"
OWN = '''
[[rule]]
code = "HOUSE_RULE"
description = "our house rule"
expr = 'campaign.exists and campaign.bid_type == "cpm"'
'''


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from core.index.versions import build_version
    from core.store.db import make_engine
    from core.store.settings import load_settings

    ws = tmp_path_factory.mktemp("funnel_dash") / "ws"
    settings = load_settings(workspace=ws, db_url=f"sqlite:///{ws / 'adlens.db'}")
    db = make_engine(settings.db_url)
    fill_random_db(db, n_ads=150, n_users=12)
    build_version(settings, "plain", "Flat", text_encoder=FakeTextEncoder(), engine=db, with_map=False)
    build_version(settings, "own", "Flat", text_encoder=FakeTextEncoder(), engine=db, with_map=False,
                  extra_builders=(funnel_builder(parse_definition(OWN)),))
    db.dispose()
    return ws


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _app() -> AppTest:
    """The dashboard on version "own" (the one with the house rule)."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params["version"] = "own"
    return at


def test_custom_reason_in_inspect_and_why_not(ws, use_workspace):
    from streamlit.util import calc_hash

    use_workspace(ws)
    at = _ok(_app().run())
    table = at.dataframe(key="candidates_table").value
    own = table[table["primary_reason"] == "HOUSE_RULE"]
    assert len(own), "the house rule filters some candidates"
    assert own["failed_reasons"].map(lambda r: "HOUSE_RULE" in r).all()
    chart = at.get("plotly_chart")
    assert any("HOUSE_RULE" in c.proto.spec for c in chart), "the reasons chart shows the own code"
    at.session_state["ad"] = str(own["ad_id"].iloc[0])
    at._page_hash = calc_hash("why-not")
    _ok(at.run())
    rules = next(df.value for df in at.dataframe if {"code", "enabled"} <= set(df.value.columns))
    row = rules[rules["code"] == "HOUSE_RULE"].iloc[0]
    assert bool(row["failed"]) and "campaign.bid_type = 'cpm'" in row["detail"]
    verdicts = [e.value.replace("\\", "") for e in at.error]  # markdown-escaped
    assert any(v.startswith("filtered: HOUSE_RULE — our house rule: campaign.exists") for v in verdicts), verdicts
    assert any("HOUSE_RULE: our house rule: campaign.exists and" in t.value for t in at.text)  # the eligible stage


def test_reasons_table_gives_the_own_rule_its_stage_kind_and_description(ws, use_workspace):
    use_workspace(ws)
    at = _ok(_app().run())
    # (AppTest keeps a data frame's key only when it is selectable: found by its columns)
    why = next(d.value for d in at.dataframe if {"reason", "stage", "kind"} <= set(d.value.columns))
    why = why.set_index("reason")
    cands = at.dataframe(key="candidates_table").value
    assert why.loc["HOUSE_RULE", "candidates"] == (cands["primary_reason"] == "HOUSE_RULE").sum() > 0
    assert tuple(why.loc["HOUSE_RULE", ["stage", "kind", "description"]]) == ("eligibility", "expression",
                                                                              "our house rule")
    assert why["candidates"].sum() == cands["primary_reason"].notna().sum()
    chart = next(c for c in at.get("plotly_chart") if "HOUSE_RULE" in c.proto.spec)
    assert "eligibility stage · expression rule: our house rule" in chart.proto.spec


def test_sidebar_switches_the_own_rule_off_and_the_link_carries_it(ws, use_workspace):
    use_workspace(ws)
    at = _ok(_app().run())
    before = at.dataframe(key="candidates_table").value
    only_own = set(before.loc[before["failed_reasons"].map(lambda r: list(r) == ["HOUSE_RULE"]), "ad_id"])
    assert only_own, "some candidates fail the house rule alone"
    at.checkbox(key="rule_HOUSE_RULE").uncheck()
    _ok(at.run())
    after = at.dataframe(key="candidates_table").value
    assert not after["failed_reasons"].map(lambda r: "HOUSE_RULE" in r).any()
    assert "HOUSE_RULE" not in set(after["primary_reason"].dropna())
    rows = after.set_index("ad_id").loc[sorted(only_own)]
    assert (rows["outcome"] != "filtered").all()  # the rule alone filtered them: now they pass
    assert at.query_params["rules_off"] == "HOUSE_RULE"
    assert any("rules switched off: HOUSE_RULE" in i.value.replace("\\", "") for i in at.info)
    _ok(at.button(key="rules_all_on").click().run())  # and back on
    assert at.checkbox(key="rule_HOUSE_RULE").value is True and "rules_off" not in at.query_params
    assert "HOUSE_RULE" in set(at.dataframe(key="candidates_table").value["primary_reason"].dropna())
    # the link opens the same what-if in a new session
    link = _app()
    link.query_params["rules_off"] = "HOUSE_RULE,GEO_MISMATCH"
    _ok(link.run())
    assert link.checkbox(key="rule_HOUSE_RULE").value is False
    assert link.checkbox(key="rule_GEO_MISMATCH").value is False
    table = link.dataframe(key="candidates_table").value
    assert not table["failed_reasons"].map(lambda r: bool({"HOUSE_RULE", "GEO_MISMATCH"} & set(r))).any()


def test_deep_link_with_an_unknown_rule_warns_and_switches_nothing_off(ws, use_workspace):
    use_workspace(ws)
    at = _app()
    at.query_params["rules_off"] = "HOUSE_RULE,NOT_A_RULE"
    _ok(at.run())
    warnings = " ".join(w.value.replace("\\", "") for w in at.warning)
    assert "rules_off=HOUSE_RULE,NOT_A_RULE is not valid" in warnings and "NOT_A_RULE" in warnings
    assert "HOUSE_RULE" in warnings.split("version's rules are")[1]  # lists the rules it has
    assert at.checkbox(key="rule_HOUSE_RULE").value is True
    assert "HOUSE_RULE" in set(at.dataframe(key="candidates_table").value["primary_reason"].dropna())


def test_health_lists_the_funnel_rules_with_their_rates(ws, use_workspace):
    from streamlit.util import calc_hash

    use_workspace(ws)
    at = _ok(_app().run())
    at._page_hash = calc_hash("health")
    _ok(at.run())
    _ok(at.number_input(key="health_n").set_value(20).run())
    rules = next(d.value for d in at.dataframe if {"code", "fail_share", "primary_share"} <= set(d.value.columns))
    own = rules.set_index("code").loc["HOUSE_RULE"]
    assert (own["stage"], own["kind"], own["description"]) == ("eligibility", "expression", "our house rule")
    assert 0 < own["fail_share"] < 1 and own["primary"] <= own["fails"]
    assert list(rules["code"])[-1] == "HOUSE_RULE"  # the unlisted built-ins run first


def test_compare_attributes_slate_changes_to_the_rule_only_one_version_has(ws, use_workspace):
    from streamlit.util import calc_hash

    use_workspace(ws)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"version": "own", "b": "plain"})
    _ok(at.run())
    at._page_hash = calc_hash("compare")
    _ok(at.run())
    _ok(at.button_group(key="cmp_view").set_value("Aggregate").run())
    _ok(at.button(key="cmp_go").click().run())
    rep = at.session_state["cmp_report"]
    (row,) = rep.rule_attribution
    assert row["code"] == "HOUSE_RULE" and row["change"] == "removed in B" and row["restored_requests"] > 0
    assert row["restored_requests"] == len(rep.per_request) - rep.summary["identical_slates"]  # nothing else differs
    diff = next(d.value for d in at.dataframe if {"change", "code", "rule"} <= set(d.value.columns))
    assert list(diff["code"]) == ["HOUSE_RULE"] and "campaign.bid_type" in diff["rule"].iloc[0]
    shown = " ".join(m.value.replace("\\", "") for m in at.markdown)
    assert row["sentence"] in shown and row["sentence"].startswith("dropping rule HOUSE_RULE gave back ")
    # switched off in the sidebar: off in A, which has it, and ignored in B, which does not; then the
    # two versions run the same rules and every slate is the same
    at.checkbox(key="rule_HOUSE_RULE").uncheck()
    _ok(at.run())
    _ok(at.button(key="cmp_go").click().run())
    rep = at.session_state["cmp_report"]
    assert rep.summary["identical_slates"] == len(rep.per_request) and rep.rule_attribution[0]["restored_requests"] == 0


def test_a_link_to_why_not_for_an_ad_the_own_rule_filters(ws, use_workspace):
    from streamlit.util import calc_hash

    use_workspace(ws)
    at = _ok(_app().run())
    table = at.dataframe(key="candidates_table").value
    ad = str(table.loc[table["failed_reasons"].map(lambda r: list(r) == ["HOUSE_RULE"]), "ad_id"].iloc[0])
    link = _app()
    link.query_params["ad"] = ad
    link._page_hash = calc_hash("why-not")
    _ok(link.run())
    assert link.query_params["ad"] == ad
    assert any(e.value.replace("\\", "").startswith("filtered: HOUSE_RULE — our house rule") for e in link.error)
    _ok(link.button(key="aud_go").click().run())  # its audience: the own code with its description
    chart = next(c for c in link.get("plotly_chart") if "HOUSE_RULE" in c.proto.spec)
    assert "eligibility stage · expression rule: our house rule" in chart.proto.spec
    # the same link with the rule switched off: the ad passes eligibility, the rule is listed off
    off = _app()
    off.query_params.update({"ad": ad, "rules_off": "HOUSE_RULE"})
    off._page_hash = calc_hash("why-not")
    _ok(off.run())
    assert not any("HOUSE_RULE" in e.value.replace("\\", "") for e in off.error)
    rules = next(df.value for df in off.dataframe if {"code", "enabled", "kind"} <= set(df.value.columns))
    row = rules.set_index("code").loc["HOUSE_RULE"]
    assert not row["enabled"] and row["failed"] and row["kind"] == "expression"
    assert any("rules switched off: HOUSE_RULE" in i.value.replace("\\", "") for i in off.info)
