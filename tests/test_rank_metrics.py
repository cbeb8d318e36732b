"""Comparison metrics against hand-computed values."""

from __future__ import annotations

import pytest

from core.analysis.rank_metrics import gini, jaccard, overlap_at_k, rbo, total_variation


def test_overlap_and_jaccard():
    assert overlap_at_k(list("abcd"), list("abcd"), 4) == 1.0
    assert overlap_at_k(list("abcd"), list("abxy"), 4) == 0.5
    assert overlap_at_k(list("abcd"), list("dcba"), 2) == 0.0
    assert jaccard("abc", "bcd") == pytest.approx(2 / 4)
    assert jaccard([], []) == 1.0


def test_rbo_hand_computed():
    assert rbo(list("abcde"), list("abcde")) == pytest.approx(1.0)
    assert rbo(list("abc"), list("xyz")) == pytest.approx(0.0)
    # a=[a,b], b=[b,a], p=0.5: depth1 agreement 0, depth2 agreement 1.
    # RBO_ext = (2/2)*0.5^2 + (1-0.5)/0.5 * (0*0.5 + 1*0.25) = 0.25 + 0.25 = 0.5
    assert rbo(["a", "b"], ["b", "a"], p=0.5) == pytest.approx(0.5)
    # a=[a,b,c], b=[a,c,b], p=0.5: A1=1, A2=1/2, A3=1 (X3=3)
    # = 1*0.125 + 1*(1*0.5 + 0.5*0.25 + 1*0.125) = 0.125 + 0.75 = 0.875
    assert rbo(list("abc"), list("acb"), p=0.5) == pytest.approx(0.875)
    # top-heavy: a swap at the top costs more than a swap at the bottom
    assert rbo(list("bacde"), list("abcde")) < rbo(list("abced"), list("abcde"))
    with pytest.raises(ValueError):
        rbo("a", "a", p=1.0)


def test_gini_hand_computed():
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 10]) == pytest.approx(0.75)  # (n-1)/n for one item holding everything
    # [1, 2, 3]: 2*(1*1+2*2+3*3)/(3*6) - 4/3 = 28/18 - 24/18 = 2/9
    assert gini([3, 1, 2]) == pytest.approx(2 / 9)
    assert gini([]) == 0.0


def test_total_variation():
    assert total_variation({"a": 1, "b": 1}, {"a": 1, "b": 1}) == 0.0
    assert total_variation({"a": 1}, {"b": 5}) == pytest.approx(1.0)
    assert total_variation({"a": 3, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.25)
