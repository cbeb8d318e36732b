"""Shareable deep links: the dashboard's URL query parameters, parsed and validated here.

Query parameter values are untrusted strings: every one is checked against the workspace
(versions, users, communities, ads) and the vocabularies; a bad value is dropped with a message
that names the parameter, the value and what is allowed, and never crashes the page. Messages are
plain text (they quote the hostile value): render them with core.common.escape (md, term).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from core.common.errors import AdLensError
from core.data.request import TIME_MAX, TIME_MIN, parse_request_time
from core.data.vocab import UNKNOWN, Device, Placement, values
from core.funnel.reasons import check_reason_code
from core.sources.base import SOURCE_ORDER

LINK_KEYS: tuple[str, ...] = ("version", "b", "user", "community", "placement", "device", "country", "time", "ad",
                              "off", "quota", "request", "rules_off")
MAX_QUOTA = 5000
"""`off=co_engagement,targeting` switches sources off; `quota=co_engagement:300,targeting:50` sets
per-source candidate counts (two_tower's is K; each at most MAX_QUOTA)."""
RULES_OFF_HELP = ("`rules_off=CRYPTO_EU,GEO_MISMATCH` switches rules of the version's funnel off (the sidebar's "
                  "what-if; any rule: built-in, expression, plugin, eligibility or ranking stage)")
MAX_ID_LENGTH = 200
"""`request=<id>` opens a logged request (core.traces.logged); longer values are refused."""
HOME = "home"
"""`community=home` means the home feed (no community)."""


@dataclass
class LinkState:
    """The validated view a link asks for; None means "not given" (use the default)."""

    version: str | None = None
    version_b: str | None = None
    user: str | None = None
    community: str | None = None  # community id, or HOME for the home feed
    placement: str | None = None
    device: str | None = None
    country: str | None = None
    time: datetime | None = None
    ad: str | None = None
    disabled_sources: tuple[str, ...] | None = None
    quotas: dict[str, int] | None = None
    request: str | None = None  # a logged request id
    disabled_rules: tuple[str, ...] | None = None  # rule codes of the version's funnel switched off
    errors: list[str] = field(default_factory=list)


def _first(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        v = v[0] if v else None
    s = str(v).strip() if v is not None else None
    return s or None


def parse_link(params: Mapping[str, object], *, versions: list[str], user_ids: pd.Index,
               community_ids: pd.Index, ad_ids: pd.Index,
               request_exists: Callable[[str], bool] | None = None,
               rule_codes: Callable[[str | None], Sequence[str]] | None = None) -> LinkState:
    """Validate query parameters against the workspace; collect a message per bad value.
    `request_exists(id)` checks a `request=` id against the imported logged requests (without it
    only its form is checked); `rule_codes(version)` gives the rule codes of the link's version
    (None: the link names no valid version) that `rules_off` may switch off (without it only
    the codes' form is checked)."""
    st = LinkState()
    get = {k: _first(params.get(k)) for k in LINK_KEYS}

    def bad(key: str, value: str, allowed: str) -> None:
        st.errors.append(f"Link parameter {key}={value} is not valid: {allowed}. It was ignored.")

    for key, attr in (("version", "version"), ("b", "version_b")):
        v = get[key]
        if v is not None:
            if v in versions:
                setattr(st, attr, v)
            else:
                bad(key, v, f"known versions are {', '.join(versions) or 'none'}")
    if (u := get["user"]) is not None:
        if u in user_ids:
            st.user = u
        else:
            bad("user", u, f"no such user (e.g. {', '.join(map(str, user_ids[:3]))})")
    if (c := get["community"]) is not None:
        if c == HOME or c in community_ids:
            st.community = c
        else:
            bad("community", c, f"no such community; use {HOME} for the home feed")
    for key, allowed in (("placement", values(Placement)), ("device", (*values(Device), UNKNOWN))):
        v = get[key]
        if v is not None:
            if v in allowed:
                setattr(st, key, v)
            else:
                bad(key, v, f"allowed: {', '.join(allowed)}")
    if (c := get["country"]) is not None:
        if c.isalpha() and 2 <= len(c) <= 7:
            st.country = c if c == UNKNOWN else c.upper()
        else:
            bad("country", c, "use a country code such as US or DE")
    if (t := get["time"]) is not None:
        try:
            st.time = parse_request_time(t)
        except AdLensError:
            bad("time", t, f"use an ISO 8601 time between {TIME_MIN.date()} and {TIME_MAX.date()}, "
                           "such as 2026-10-31T18:00:00")
    if (a := get["ad"]) is not None:
        if a in ad_ids:
            st.ad = a
        else:
            bad("ad", a, f"no such ad (e.g. {', '.join(map(str, ad_ids[:3]))})")
    if (o := get["off"]) is not None:
        names = tuple(n.strip() for n in o.split(",") if n.strip())
        if all(n in SOURCE_ORDER for n in names):
            st.disabled_sources = names
        else:
            bad("off", o, f"comma-separated sources from {', '.join(SOURCE_ORDER)}")
    if (q := get["quota"]) is not None:
        st.quotas = _parse_quotas(q)
        if st.quotas is None:
            bad("quota", q, f"use source:count pairs such as co_engagement:300 (sources "
                            f"{', '.join(SOURCE_ORDER[1:])}; counts 1 to {MAX_QUOTA})")
    if (r := get["request"]) is not None:
        if len(r) > MAX_ID_LENGTH or not r.isprintable():
            bad("request", r[:60], f"a logged request id is printable text of at most {MAX_ID_LENGTH} characters")
        elif request_exists is not None and not request_exists(r):
            bad("request", r, "no such logged request (list them with `adlens logged`)")
        else:
            st.request = r
    if (r := get["rules_off"]) is not None:
        codes = tuple(dict.fromkeys(c.strip() for c in r.split(",") if c.strip()))
        known = tuple(rule_codes(st.version)) if rule_codes is not None else None
        bad_form = [c for c in codes if check_reason_code(c) is not None]
        unknown = [c for c in codes if known is not None and c not in known]
        if not codes or bad_form or unknown:
            what = (f"this version's rules are {', '.join(known)}" if known is not None
                    else "use comma-separated reason codes such as GEO_MISMATCH")
            bad("rules_off", r[:200], f"{', '.join((bad_form + unknown)[:5]) or 'no code'} is not a rule of the "
                                       f"version's funnel; {what}")
        else:
            st.disabled_rules = codes
    return st


def _parse_quotas(text: str) -> dict[str, int] | None:
    out = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition(":")
        if not sep or name not in SOURCE_ORDER[1:] or not value.isdigit() or not 1 <= int(value) <= MAX_QUOTA:
            return None
        out[name] = int(value)
    return out or None


def format_sources(disabled: tuple[str, ...] | None, quotas: dict[str, int] | None) -> dict[str, str | None]:
    """The `off` and `quota` link values for these settings (None when default)."""
    return {"off": ",".join(disabled) if disabled else None,
            "quota": ",".join(f"{k}:{v}" for k, v in quotas.items()) if quotas else None}


def to_query_params(**fields) -> dict[str, str]:
    """Query parameters for a view (None values are left out; datetimes in ISO 8601)."""
    out: dict[str, str] = {}
    for key, value in fields.items():
        if key not in LINK_KEYS:
            raise ValueError(f"unknown link parameter {key!r}; known: {', '.join(LINK_KEYS)}")
        if value is None:
            continue
        out[key] = value.isoformat() if isinstance(value, datetime) else str(value)
    return out
