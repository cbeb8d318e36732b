"""core/traces/side_by_side: a logged request beside its replay, on a hand-made Trace and log of
six ads whose every row has a known answer (found by, stage, reasons, where the two part)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from core.data.request import Request
from core.funnel.params import FunnelParams
from core.funnel.trace import Trace
from core.traces.logged import LoggedRequest
from core.traces.side_by_side import BOTH, LOGGED_ONLY, REPLAY_ONLY, SHOWN, parting, side_by_side

REQ = Request("u1", None, "home_feed", "ios", "US", datetime(2026, 10, 15, 12))

# the replay: ad, outcome, blocking stage, primary reason, failed reasons, slate #, sources
REPLAY = [
    ("a1", "slate", None, None, (), 1, ("two_tower",)),
    ("a2", "slate", None, None, (), 2, ("two_tower", "targeting")),
    ("a3", "filtered", "eligible", "GEO_MISMATCH", ("GEO_MISMATCH",), None, ("two_tower",)),
    ("a4", "ranked_out", "ranked", "BELOW_CUTOFF", (), None, ("two_tower",)),
    ("a5", "ranked_out", "ranked", "BELOW_CUTOFF", (), None, ("targeting",)),
]
# the log: ad, stage reached, reasons, sources, slate #
LOG = [
    ("a1", "slate", [], ["two_tower"], 1),  # agrees
    ("a2", "retrieved", ["PACING_THROTTLE"], ["two_tower", "targeting"], None),  # production dropped it
    ("a3", "retrieved", ["AGE_MISMATCH"], ["two_tower"], None),  # both dropped it, other reason
    ("a4", "eligible", [], ["two_tower", "prod_lookalike"], None),  # same stage, no reason; a source AdLens lacks
    ("a6", "slate", [], ["targeting"], 2),  # production only
]


def _trace() -> Trace:
    n = len(REPLAY)
    rank = {"two_tower": [1, 2, 3, 4, None], "targeting": [None, 1, None, None, 2]}  # as REPLAY's sources
    table = pd.DataFrame({
        "ad_id": [r[0] for r in REPLAY], "outcome": [r[1] for r in REPLAY],
        "blocking_stage": [r[2] for r in REPLAY], "primary_reason": [r[3] for r in REPLAY],
        "failed_reasons": [r[4] for r in REPLAY],
        "final_position": pd.array([r[5] for r in REPLAY], dtype="Int64"),
        "sources": [r[6] for r in REPLAY], "pctr": np.linspace(0.5, 0.1, n), "ecpm": np.linspace(5, 1, n),
        "version_pos": np.arange(n),
        **{f"rank_{s}": pd.array(v, dtype="Int64") for s, v in rank.items()},
        **{f"score_{s}": np.where(pd.array(v, dtype="Int64").isna(), np.nan, 0.5) for s, v in rank.items()},
    })
    return Trace(REQ, "v1", "sha", FunnelParams(), table, {}, {}, source_names=("two_tower", "targeting"),
                 sources_ran=("two_tower", "targeting"))


def _logged() -> LoggedRequest:
    c = pd.DataFrame({
        "ad_id": [r[0] for r in LOG], "sources": pd.Series([r[3] for r in LOG], dtype=object),
        "stage_reached": [r[1] for r in LOG], "reasons": pd.Series([r[2] for r in LOG], dtype=object),
        "source_ranks": pd.Series([[1] * len(r[3]) for r in LOG], dtype=object),
        "source_scores": pd.Series([[0.5] * len(r[3]) for r in LOG], dtype=object),
        "early_score": [0.4] * len(LOG), "bid": [1.0] * len(LOG), "ecpm": [2.0] * len(LOG),
        "slate_position": pd.array([r[4] for r in LOG], dtype="Int64")})
    return LoggedRequest("req_1", REQ, {}, c, "set1")


@pytest.fixture
def sbs():
    return side_by_side(_logged(), _trace())


def test_one_table_of_every_ad_either_side_touched(sbs):
    t = sbs.table.set_index("ad_id")
    assert list(t.index) == ["a1", "a2", "a3", "a4", "a6", "a5"]  # log order, then the replay's own
    assert t["found_by"].to_dict() == {"a1": BOTH, "a2": BOTH, "a3": BOTH, "a4": BOTH, "a6": LOGGED_ONLY,
                                       "a5": REPLAY_ONLY}
    assert sbs.found_by_counts() == {BOTH: 4, LOGGED_ONLY: 1, REPLAY_ONLY: 1}
    assert t["logged_blocked_at"].to_dict() == {"a1": SHOWN, "a2": "eligible", "a3": "eligible", "a4": "ranked",
                                                "a6": SHOWN, "a5": "retrieved"}
    assert t["replay_blocked_at"].to_dict() == {"a1": SHOWN, "a2": SHOWN, "a3": "eligible", "a4": "ranked",
                                                "a6": "retrieved", "a5": "ranked"}
    assert t.loc["a3", "logged_reasons"] == ["AGE_MISMATCH"] and t.loc["a3", "replay_reasons"] == ["GEO_MISMATCH"]
    assert t.loc["a4", "replay_reasons"] == ["BELOW_CUTOFF"] and t.loc["a4", "logged_fate"] == "eligible (no reason)"
    assert t.loc["a2", "replay_sources"] == ["two_tower", "targeting"] and t.loc["a6", "replay_sources"] == []
    assert t.loc["a2", "replay_position"] == 2 and pd.isna(t.loc["a2", "logged_position"])
    assert t.loc["a6", "logged_position"] == 2 and t.loc["a1", "logged_score"] == 0.4


def test_where_the_two_part(sbs):
    t = sbs.table.set_index("ad_id")
    assert {k: v if isinstance(v, str) else None for k, v in t["parts_at"].items()} == {
        "a1": None,  # both showed it at position 1
        "a2": "eligible",  # production dropped it at eligibility, the replay showed it
        "a3": "eligible",  # both dropped it at eligibility, for different reasons
        "a4": "retrieved",  # same fate (a log without a reason agrees by stage); sources credited differently
        "a6": "retrieved", "a5": "retrieved"}  # only one side retrieved it
    assert "production dropped it at eligibility (PACING_THROTTLE), the replay showed it" in t.loc["a2", "parting"]
    assert "production for AGE_MISMATCH, the replay for GEO_MISMATCH" in t.loc["a3", "parting"]
    assert t.loc["a6", "parting"] == "only production retrieved it; production showed it"
    assert t.loc["a5", "parting"] == "only the replay retrieved it; the replay dropped it at early ranking (BELOW_CUTOFF)"
    assert sbs.parting_counts() == {"retrieved": 3, "eligible": 2}


def test_per_side_counts_reasons_and_slates(sbs):
    assert sbs.logged.stage_counts == {"retrieved": 5, "eligible": 3, "ranked": 2, "slate": 2}
    assert sbs.replay.stage_counts == {"retrieved": 5, "eligible": 4, "ranked": 2, "slate": 2}
    assert sbs.logged.reason_counts == {"PACING_THROTTLE": 1, "AGE_MISMATCH": 1, "eligible (no reason)": 1}
    assert sbs.replay.reason_counts == {"BELOW_CUTOFF": 2, "GEO_MISMATCH": 1}
    assert (sbs.logged.slate, sbs.replay.slate) == (["a1", "a6"], ["a1", "a2"]) and not sbs.slates_equal()
    assert sbs.logged.sources == {"two_tower": 4, "targeting": 2, "prod_lookalike": 1}


def test_unknown_names_are_kept_verbatim_and_labelled(sbs):
    assert sbs.unknown_sources == ["prod_lookalike"] and sbs.unknown_reasons == ["PACING_THROTTLE"]
    t = sbs.table.set_index("ad_id")
    assert t.loc["a2", "not_modelled"] == ["reason PACING_THROTTLE"]
    assert t.loc["a4", "not_modelled"] == ["source prod_lookalike"]
    assert t.loc["a4", "logged_sources"] == ["two_tower", "prod_lookalike"]
    assert t.loc["a1", "not_modelled"] == []
    # a funnel definition's own code is modelled
    assert side_by_side(_logged(), _trace(), known_reasons={"PACING_THROTTLE", "AGE_MISMATCH"}).unknown_reasons == []


def test_parting_of_slate_positions_and_agreement():
    assert parting("slate", [], 1, "slate", [], 3) == \
        ("slate", "both showed it, production at position 1, the replay at 3")
    assert parting("retrieved", ["GEO_MISMATCH"], None, "retrieved", ["GEO_MISMATCH", "AGE_MISMATCH"], None,
                   ["two_tower"], ["two_tower"]) == (None, "both agree: GEO_MISMATCH")
    assert parting("ranked", ["ADVERTISER_CAP"], None, "eligible", ["BELOW_CUTOFF"], None)[0] == "ranked"
