"""A funnel definition's own reason code in the dashboard (AppTest): Inspect's "why candidates
dropped" chart and candidate table, and Why-not's rule table with the expression's values."""

from __future__ import annotations

from pathlib import Path

import pytest
from funnel_data import FakeTextEncoder, fill_random_db
from streamlit.testing.v1 import AppTest

from core.funnel.definition import funnel_builder, parse_definition

APP = Path(__file__).resolve().parent.parent / "dashboard" / "streamlit_app.py"
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
    build_version(settings, "own", "Flat", text_encoder=FakeTextEncoder(), engine=db, with_map=False,
                  extra_builders=(funnel_builder(parse_definition(OWN)),))
    db.dispose()
    return ws


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_custom_reason_in_inspect_and_why_not(ws, use_workspace):
    from streamlit.util import calc_hash

    use_workspace(ws)
    at = _ok(AppTest.from_file(str(APP), default_timeout=120).run())
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
