"""Rule expressions (core.funnel.expr): every form against a hand-computed toy, and every rejected
form with its message and position."""

from __future__ import annotations

import numpy as np
import pytest

from core.funnel.ad_facts import ListColumn
from core.funnel.expr import BOOL, LIST, NUM, STR, ExprError, FieldSpec, RowLists, compile_expr

# four candidates; per-request values are scalars
ROWS = {
    "ad.vertical": np.array(["gambling", "travel", None, "gambling"], dtype=object),
    "ad.advertiser_id": np.array(["a1", "a2", "a3", None], dtype=object),
    "campaign.bid": np.array([1.0, 2.5, np.nan, 4.0]),
    "candidate.pctr": np.array([0.0005, 0.01, 0.002, 0.0009]),
    "campaign.exists": np.array([True, True, False, True]),
}
LISTS = {"campaign.target_countries": ListColumn([["DE", "FR"], [], ["US"], ["de", "DE"]]),
         "ad.tags": ListColumn([["a1"], ["x", "a2"], [], ["a9"]])}
SCALARS = {"request.country": ("DE", STR), "user.blocked_advertisers": (("a2", "a9"), LIST),
           "request.community_id": (None, STR), "user.age_max": (np.nan, NUM), "request.ts": (10.0, NUM)}


class ToyEnv:
    def __init__(self, pos=None):
        self.pos = np.arange(4) if pos is None else np.asarray(pos)

    def get(self, name):
        if name in ROWS:
            return ROWS[name][self.pos]
        if name in LISTS:
            return RowLists(LISTS[name], self.pos)
        return SCALARS[name][0]


def _type(v) -> str:
    return NUM if v.dtype.kind == "f" else BOOL if v.dtype.kind == "b" else STR


FIELDS = {**{k: FieldSpec(k, _type(v), True, None) for k, v in ROWS.items()},
          **{k: FieldSpec(k, LIST, True, None) for k in LISTS},
          **{k: FieldSpec(k, t, False, None) for k, (_, t) in SCALARS.items()}}
FIELDS["candidate.pctr"] = FieldSpec("candidate.pctr", NUM, True, None, stage="ranking")


def run(text: str) -> list[bool]:
    return compile_expr(text, FIELDS).mask(ToyEnv(), 4).tolist()


@pytest.mark.parametrize("text, want", [
    ('ad.vertical == "gambling"', [True, False, False, True]),
    ('ad.vertical != "gambling"', [False, True, True, False]),  # a missing text is not "gambling"
    ('ad.vertical == "gambling" and request.country in ["DE", "FR"]', [True, False, False, True]),
    ('ad.vertical == "travel" or campaign.bid > 3', [False, True, False, True]),
    ('not campaign.exists', [False, False, True, False]),
    ("campaign.bid >= 2.5", [False, True, False, True]),  # NaN compares false
    ("campaign.bid < 2.5", [True, False, False, False]),
    ("campaign.bid <= 1", [True, False, False, False]),
    ("1 < campaign.bid < 4", [False, True, False, False]),  # chained
    ("campaign.bid * 2 - 1 > 4", [False, False, False, True]),
    ("campaign.bid / 2 + 0.5 == 1", [True, False, False, False]),
    ("-campaign.bid < -2", [False, True, False, True]),
    ("candidate.pctr < 0.001", [True, False, False, True]),
    ("campaign.bid is None", [False, False, True, False]),
    ("campaign.bid is not None", [True, True, False, True]),
    ("ad.vertical is None", [False, False, True, False]),
    ('ad.vertical in ["travel", "gambling"]', [True, True, False, True]),
    ('ad.vertical not in ["travel"]', [True, False, True, True]),
    ("campaign.bid in [1, 4]", [True, False, False, True]),
    ("request.country in campaign.target_countries", [True, False, False, True]),  # per-row, case-sensitive
    ("request.country not in campaign.target_countries", [False, True, True, False]),
    ("campaign.target_countries contains request.country", [True, False, False, True]),
    ("user.blocked_advertisers contains ad.advertiser_id", [False, True, False, False]),  # None is in no list
    ("ad.advertiser_id in user.blocked_advertisers", [False, True, False, False]),
    ("ad.advertiser_id in ad.tags", [True, True, False, False]),  # row i's value in row i's list
    ("len(campaign.target_countries) > 0", [True, False, True, True]),
    ("len(user.blocked_advertisers) == 2", [True, True, True, True]),
    ("request.community_id in campaign.target_countries", [False, False, False, False]),
    ("request.community_id is None", [True, True, True, True]),
    ("campaign.bid <= user.age_max", [False, False, False, False]),
    ("True", [True] * 4),
    ("(campaign.exists\n and campaign.bid > 2)", [False, True, False, True]),
    ("campaign.exists\nand campaign.bid > 2", [False, True, False, True]),  # multi-line without parentheses
])
def test_every_form_against_hand_computed_answers(text, want):
    assert run(text) == want


def test_evaluates_at_any_positions_and_records_fields_and_stage():
    c = compile_expr('ad.vertical == "gambling" and candidate.pctr < 0.001', FIELDS)
    assert c.mask(ToyEnv([3, 1]), 2).tolist() == [True, False]
    assert c.fields == ("ad.vertical", "candidate.pctr") and c.stage == "ranking"
    assert compile_expr("campaign.bid > 1", FIELDS).stage == "eligibility"


@pytest.mark.parametrize("text, message, line, col", [
    ("ad.vertical ==", "syntax error", 1, 15),
    ('ad.vertical == "x" and\n  (campaign.bid > ', "syntax error", 2, 19),
    ("ad.verticle == 'x'", "unknown field 'ad.verticle'; the fields there are: ad.advertiser_id, ad.tags, ad.vertical", 1, 1),
    ("campaign.bid > 1 and  nope.x == 1", "unknown field 'nope.x'", 1, 23),
    ('ad.vertical == 3', "type mismatch: 'ad.vertical' (text) == '3' (number)", 1, 1),
    ('campaign.bid == "high"', "type mismatch: 'campaign.bid' (number) == '\"high\"' (text)", 1, 1),
    ('ad.vertical < "m"', "compares numbers only", 1, 1),
    ('ad.vertical in [1, 2]', "type mismatch", 1, 17),
    ("campaign.bid in campaign.target_countries", "list fields hold text", 1, 1),
    ("campaign.bid + 1", "must be true or false", 1, 1),
    ("campaign.bid and campaign.exists", "needs true/false operands", 1, 1),
    ("campaign.bid == None", "is None", 1, 1),
    ("__import__('os').system('x')", "call", 1, 1),
    ("ad.vertical.upper() == 'X'", "is not allowed", 1, 1),
    ("[x for x in ad.tags]", "ListComp", 1, 1),
    ("lambda: 1", "Lambda", 1, 1),
    ("campaign.bid ** 2 > 1", "Pow", 1, 1),
    ("campaign.bid >> 2", "'>>' is not allowed", 1, 14),
    ("ad.vertical[0] == 'g'", "Subscript", 1, 1),
    ("ad.tags == ad.tags", "type mismatch", 1, 1),
    ("", "empty", None, None),
])
def test_bad_expressions_name_the_problem_and_its_position(text, message, line, col):
    with pytest.raises(ExprError) as err:
        compile_expr(text, FIELDS)
    assert message in err.value.message
    assert (err.value.line, err.value.col) == (line, col)


def test_user_text_is_never_evaluated(monkeypatch):
    """Only ast.parse compiles the text, to a syntax tree (PyCF_ONLY_AST); nothing runs it."""
    import ast
    import builtins
    calls, real = [], builtins.compile
    with monkeypatch.context() as m:
        for name in ("eval", "exec"):
            m.setattr(builtins, name, lambda *a, _n=name, **k: calls.append(_n))
        m.setattr(builtins, "compile", lambda *a, **k: calls.append(("compile", k.get("flags", a[3] if len(a) > 3 else 0)))
                  or real(*a, **k))
        got = compile_expr('ad.vertical == "gambling"', FIELDS).mask(ToyEnv(), 4).tolist()
    assert got == [True, False, False, True]
    assert calls and all(c[0] == "compile" and c[1] & ast.PyCF_ONLY_AST for c in calls)
