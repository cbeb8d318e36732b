"""Deep-link parsing: good values kept, every bad value named in a message and dropped."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from core.analysis.links import parse_link, to_query_params

KW = dict(versions=["exact", "ivf"], user_ids=pd.Index(["u1", "u2"]),
          community_ids=pd.Index(["c_a"]), ad_ids=pd.Index(["ad1"]))


def test_valid_link_round_trips():
    q = to_query_params(version="ivf", user="u2", community="c_a", placement="community_feed",
                        device="ios", country="de", time=datetime(2026, 10, 31, 18), ad="ad1")
    st = parse_link(q, **KW)
    assert st.errors == []
    assert (st.version, st.user, st.community, st.placement, st.device, st.ad) == (
        "ivf", "u2", "c_a", "community_feed", "ios", "ad1")
    assert st.country == "DE" and st.time == datetime(2026, 10, 31, 18)


def test_bad_values_are_named_and_dropped():
    st = parse_link({"version": "nope", "user": "u9", "placement": "billboard", "time": "yesterday-ish",
                     "community": "c_zzz", "ad": "<script>", "country": "12"}, **KW)
    joined = "\n".join(st.errors)
    for fragment in ("version=nope", "exact, ivf", "user=u9", "placement=billboard", "home_feed",
                     "time=yesterday-ish", "community=c_zzz", "ad=<script>", "country=12"):
        assert fragment in joined
    assert st.version is None and st.user is None and st.placement is None and st.ad is None


def test_home_feed_and_lists_from_query_params():
    st = parse_link({"community": ["home"], "user": ["u1", "u2"]}, **KW)
    assert st.community == "home" and st.user == "u1" and not st.errors


def test_source_switches_and_quotas_round_trip_and_are_validated():
    from core.analysis.links import format_sources

    q = to_query_params(user="u1", **format_sources(("co_engagement", "targeting"), {"popular_in_context": 30}))
    assert q["off"] == "co_engagement,targeting" and q["quota"] == "popular_in_context:30"
    st = parse_link(q, **KW)
    assert st.errors == [] and st.disabled_sources == ("co_engagement", "targeting")
    assert st.quotas == {"popular_in_context": 30}
    assert format_sources((), None) == {"off": None, "quota": None}
    bad = parse_link({"off": "two_tower,bogus", "quota": "targeting:0,two_tower:5"}, **KW)
    joined = "\n".join(bad.errors)
    assert "off=two_tower,bogus" in joined and "quota=targeting:0,two_tower:5" in joined
    assert bad.disabled_sources is None and bad.quotas is None
    assert parse_link({"quota": "targeting:99999"}, **KW).quotas is None


def test_logged_request_link_is_checked_when_a_lookup_is_given():
    q = to_query_params(request="req_000001", version="ivf", ad="ad1")
    assert q == {"request": "req_000001", "version": "ivf", "ad": "ad1"}
    assert parse_link(q, **KW).request == "req_000001"  # no lookup: only its form is checked
    exists = {"req_000001"}.__contains__
    assert parse_link(q, **KW, request_exists=exists).request == "req_000001"
    st = parse_link({"request": "req_9"}, **KW, request_exists=exists)
    assert st.request is None and "request=req_9" in st.errors[0] and "adlens logged" in st.errors[0]
    st = parse_link({"request": "r\x1b[2J" + "x" * 300}, **KW)
    assert st.request is None and "at most 200 characters" in st.errors[0]


def test_rules_off_is_checked_against_the_links_own_version():
    rules = {"exact": ["GEO_MISMATCH", "CRYPTO_EU"], "ivf": ["GEO_MISMATCH"]}
    seen = []

    def codes(version):
        seen.append(version)
        return rules[version or "exact"]
    st = parse_link(to_query_params(version="exact", rules_off="CRYPTO_EU,GEO_MISMATCH"), **KW, rule_codes=codes)
    assert st.disabled_rules == ("CRYPTO_EU", "GEO_MISMATCH") and not st.errors and seen == ["exact"]
    st = parse_link({"version": "ivf", "rules_off": "CRYPTO_EU"}, **KW, rule_codes=codes)
    assert st.disabled_rules is None and seen[-1] == "ivf"
    assert st.errors == ["Link parameter rules_off=CRYPTO_EU is not valid: CRYPTO_EU is not a rule of the "
                         "version's funnel; this version's rules are GEO_MISMATCH. It was ignored."]
    st = parse_link({"rules_off": "CRYPTO_EU"}, **KW, rule_codes=codes)  # no version in the link
    assert st.disabled_rules == ("CRYPTO_EU",) and seen[-1] is None
    st = parse_link({"rules_off": "<b>x</b>,GEO_MISMATCH"}, **KW)  # without a lookup: the codes' form
    assert st.disabled_rules is None and "rules_off=<b>x</b>,GEO_MISMATCH is not valid: <b>x</b>" in st.errors[0]
    assert parse_link({"rules_off": "GEO_MISMATCH,GEO_MISMATCH"}, **KW).disabled_rules == ("GEO_MISMATCH",)
    assert parse_link({"rules_off": " , "}, **KW).errors  # no code at all
