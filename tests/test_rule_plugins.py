"""Rules in Python from entry-point group adlens.rules (core.funnel.plugins), with the example
package tests/plugins/adlens_example_rules installed the way a package would be: through inspect
(the Trace), why-not (the rule's describe) and compare (two versions that differ only in their
funnel); a missing, broken or misnamed plugin fails clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from funnel_data import fill_random_db, stub_version

from core.common.errors import AdLensError, ValidationError
from core.funnel.definition import parse_definition
from core.funnel.engine import FunnelEngine
from core.funnel.params import FunnelParams
from core.store.catalog import load_catalog
from core.store.db import make_engine

PLUGINS = Path(__file__).resolve().parent / "plugins"
DEFN = '''
[[rule]]
plugin = "holdout"
params = { percent = 30 }
description = "A/B holdout"
'''


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The example package plus a dist-info declaring its entry points, on sys.path."""
    dist = tmp_path / "site" / "adlens_example_rules-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: adlens-example-rules\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[adlens.rules]\nholdout = adlens_example_rules:HoldoutRule\n"
                                           "broken = adlens_example_rules:BrokenRule\n"
                                           "missing = adlens_example_rules:NoSuchRule\n")
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    db = make_engine(f"sqlite:///{tmp_path_factory.mktemp('plug') / 'p.db'}")
    fill_random_db(db, n_ads=200, n_users=12)
    out = load_catalog(db)
    db.dispose()
    return out


def test_plugin_rule_through_inspect_why_not_and_compare(installed, cat):
    from adlens_example_rules import bucket

    from core.analysis.compare import compare_versions
    from core.funnel.explain import why_not

    version = stub_version(cat)
    plain = FunnelEngine(version, cat)
    eng = FunnelEngine(version, cat, funnel_definition=parse_definition(DEFN))
    assert eng.funnel.order[-1] == "HOLDOUT"
    assert eng.funnel.describe()["plugins"] == {"HOLDOUT": {"plugin": "holdout",
                                                            "entry_point": "adlens_example_rules:HoldoutRule"}}
    req = eng.default_request("u000")
    t = eng.run(req)
    c = t.candidates
    held = c["failed_reasons"].map(lambda r: "HOLDOUT" in r).to_numpy()
    want = bucket("u000", eng.facts.campaign_code[c["version_pos"].to_numpy()])
    assert np.array_equal(held, (want >= 0) & (want < 30)) and held.any() and not held.all()
    assert "HOLDOUT" in t.reason_counts()
    ad = str(c.loc[c["primary_reason"] == "HOLDOUT", "ad_id"].iloc[0])
    w = why_not(eng, req, ad)
    assert w.summary.startswith("filtered: HOLDOUT — holdout bucket") and "below 30 are held out" in w.summary
    assert eng.run(req, FunnelParams(disabled_rules=("HOLDOUT",))).reason_counts().get("HOLDOUT") is None
    rep = compare_versions(plain, eng, users=["u000", "u001", "u002"], n_clicks=0)
    lost = [d.lost for d in rep.diffs if len(d.lost)]
    assert lost and any((x["lost_reason"] == "HOLDOUT").any() for x in lost)


@pytest.mark.parametrize("text, part", [
    ("[[rule]]\nplugin = 'nope'", "no rule plugin 'nope' in entry-point group adlens.rules; installed: broken, holdout"),
    ("[[rule]]\nplugin = 'missing'", "rule plugin 'missing' (adlens_example_rules:NoSuchRule) failed to import"),
    ("[[rule]]\nplugin = 'holdout'\nparams = { percent = 300 }", "could not be made with params {'percent': 300}"),
    ("[[rule]]\nplugin = 'holdout'\ncode = 'GEO_MISMATCH'", "is a built-in's"),
    ("[[rule]]\nplugin = 'holdout'\ncode = 'bad code'", "UPPER_SNAKE"),
    ("[[rule]]\nplugin = 'holdout'\n[[rule]]\ncode = 'HOLDOUT'\nexpr = 'campaign.exists'", "duplicate reason code HOLDOUT"),
])
def test_bad_plugin_rules_fail_clearly(installed, cat, text, part):
    with pytest.raises(ValidationError) as err:
        FunnelEngine(stub_version(cat), cat, funnel_definition=parse_definition(text))
    assert part in str(err.value)


def test_a_plugin_returning_a_bad_mask_is_named(installed, cat):
    eng = FunnelEngine(stub_version(cat), cat, funnel_definition=parse_definition("[[rule]]\nplugin = 'broken'"))
    with pytest.raises(AdLensError, match=r"rule plugin 'broken' .* returned a float64 array of shape \(\d+,\)"):
        eng.run(eng.default_request("u000"))
