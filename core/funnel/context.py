"""Default request context for a user, with what-if overrides.

`default_request(catalog, user_id)` fills every field of a `Request` from the data:
- community and placement: the user's most frequent logged (community, placement) pair (ties go
  to the most recent); without logs, the first subscribed community on the community feed, else
  the home feed;
- device: the most frequent logged device, else the profile's device, else "unknown";
- country: the profile's country ("unknown" without a profile);
- time: the latest impression timestamp in the whole dataset ("now" for the data), so that
  frequency caps and click histories see everything that was logged. Without any impression the
  current UTC time is used.

Any field can be overridden (`community_id=..., placement=..., device=..., country=..., ts=...`)
to ask "what if the same user were in another context?". Overrides are validated against the
vocabularies and the catalog, with errors listing the allowed values.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from core.common.errors import AdLensError, NotFoundError
from core.data.request import Request, parse_request_time
from core.data.vocab import UNKNOWN, Device, Placement, values
from core.store.catalog import Catalog

OVERRIDABLE = ("community_id", "placement", "device", "country", "ts")
_NO_COMMUNITY = ("", "none", "home")  # CLI spellings of "no community" (the home feed)


def known_user_ids(catalog: Catalog) -> pd.Index:
    """Every user id with a profile or a logged impression."""
    ids = pd.Index(catalog.users["user_id"]) if len(catalog.users) else pd.Index([], dtype=object)
    if len(catalog.impressions):
        ids = ids.union(pd.Index(catalog.impressions["user_id"].unique()))
    return ids


def example_ids(ids, n: int = 5) -> str:
    shown = [str(i) for i in list(ids)[:n]]
    return ", ".join(shown) if shown else "(none: import data or run `adlens demo` first)"


def latest_ts(catalog: Catalog) -> datetime:
    """The dataset's "now": its latest impression time (naive UTC)."""
    if len(catalog.impressions):
        return pd.Timestamp(catalog.impressions["ts"].max()).to_pydatetime()
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)




@dataclass(frozen=True)
class UsualContexts:
    """Every user's usual context, computed once per catalog (one groupby over the log), so
    `default_request` is a dictionary lookup. The funnel engine holds one."""

    user_ids: pd.Index    # sorted, for listing examples
    known: frozenset      # the same ids, for O(1) membership
    logged: dict          # user_id -> (community_id | None, placement, device | None)
    profiles: dict        # user_id -> profile row dict
    communities: frozenset
    latest_ts: datetime

    @classmethod
    def build(cls, catalog: Catalog) -> "UsualContexts":
        imps = catalog.impressions
        logged: dict = {}
        if len(imps):
            u, u_vals = _codes(imps["user_id"])
            c, c_vals = _codes(imps["community_id"])
            p, p_vals = _codes(imps["placement"])
            d, d_vals = _codes(imps["device"])
            t = imps["ts"].to_numpy("datetime64[us]").view(np.int64)
            users, (bc, bp) = _most_frequent(u, [c, p], t)
            known_device = (d < 0) | (d_vals[np.maximum(d, 0)] != UNKNOWN) if len(d_vals) else d < 0
            dev_users, (bd,) = _most_frequent(u[known_device], [d[known_device]], t[known_device])
            devices = dict(zip(u_vals[dev_users].tolist(), _decode(d_vals, bd)))
            for uid, cv, pv in zip(u_vals[users].tolist(), _decode(c_vals, bc), _decode(p_vals, bp)):
                logged[uid] = (None if pd.isna(cv) else str(cv), str(pv), devices.get(uid))
        users = catalog.users
        profiles = {r["user_id"]: r for r in users.to_dict("records")} if len(users) else {}
        comms = frozenset(catalog.communities["community_id"]) if len(catalog.communities) else frozenset()
        ids = known_user_ids(catalog)
        return cls(ids, frozenset(ids), logged, profiles, comms, latest_ts(catalog))


_USUAL_CACHE: dict[int, tuple[weakref.ref, UsualContexts]] = {}


def usual_contexts(catalog: Catalog) -> UsualContexts:
    """The catalog's UsualContexts, built on first use and remembered while the catalog lives
    (a Catalog is never modified after `load_catalog`)."""
    hit = _USUAL_CACHE.get(id(catalog))
    if hit is not None and hit[0]() is catalog:
        return hit[1]
    usual = UsualContexts.build(catalog)
    key = id(catalog)
    _USUAL_CACHE[key] = (weakref.ref(catalog, lambda _ref: _USUAL_CACHE.pop(key, None)), usual)
    return usual


def _field(profile: dict, key: str):
    v = profile.get(key)
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


def _codes(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(int64 codes, values as an object array) of a column; a missing value has code -1."""
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    return codes.astype(np.int64, copy=False), np.asarray(uniques, dtype=object)


def _decode(vals: np.ndarray, codes: np.ndarray) -> list:
    """Values of `codes`; NaN for -1 (a missing value is a group of its own, as in groupby(dropna=False))."""
    return [np.nan if k < 0 else vals[k] for k in codes.tolist()]


def _most_frequent(user: np.ndarray, keys: list[np.ndarray], ts: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per user code, the codes of `keys` seen most often with it (ties: the most recently seen,
    then the first seen), as (user codes in ascending order, [key codes]): one np.unique over
    integer group keys (a pandas groupby over the log's strings took a second at 10k ads)."""
    if not len(user):
        return user, [k[:0] for k in keys]
    sizes = [int(k.max()) + 2 for k in keys]  # -1 (missing) .. max
    group = user.copy()
    for k, size in zip(keys, sizes):
        group = group * size + (k + 1)
    uniq, first, inv, n = np.unique(group, return_index=True, return_inverse=True, return_counts=True)
    last = np.full(len(uniq), np.iinfo(np.int64).min, np.int64)
    np.maximum.at(last, inv.ravel(), ts)
    rest, out = uniq.copy(), []
    for size in reversed(sizes):
        out.append(rest % size - 1)
        rest //= size
    out.reverse()
    order = np.lexsort((first, -last, -n, rest))  # rest: the user code
    best = order[np.r_[True, rest[order][1:] != rest[order][:-1]]]
    return rest[best], [k[best] for k in out]


def _validate(usual: UsualContexts, req: dict) -> None:
    if req["placement"] not in values(Placement):
        raise AdLensError(f"placement {req['placement']!r} is not allowed; allowed: {', '.join(values(Placement))}")
    devices = (*values(Device), UNKNOWN)
    if req["device"] not in devices:
        raise AdLensError(f"device {req['device']!r} is not allowed; allowed: {', '.join(devices)}")
    c = req["community_id"]
    if c is not None:
        known = sorted(usual.communities)
        if c not in usual.communities:
            raise NotFoundError(
                f"community {c!r} is not in the communities table; allowed: {example_ids(known, 20)}"
                f"{' ...' if len(known) > 20 else ''} (or 'none' for the home feed)")
    if not isinstance(req["country"], str) or not req["country"].strip():
        raise AdLensError("country must be a non-empty code such as US (or 'unknown')")


def default_request(catalog: Catalog, user_id: str, *, usual: UsualContexts | None = None,
                    **overrides) -> Request:
    """The user's usual request, with `overrides` applied (what-if; None means "not overridden").
    `usual` is the catalog's precomputed UsualContexts (built here when not given). Raises
    NotFoundError for an unknown user or community, AdLensError for an invalid override."""
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise AdLensError(f"cannot override {sorted(unknown)}; overridable: {', '.join(OVERRIDABLE)}")
    usual = usual if usual is not None else usual_contexts(catalog)
    user_id = str(user_id)
    if user_id not in usual.known:
        ids = usual.user_ids
        raise NotFoundError(
            f"user {user_id!r} has no profile and no impressions; valid ids include {example_ids(ids)} "
            f"({len(ids):,} users; `adlens status` shows the table counts)")
    profile = usual.profiles.get(user_id, {})
    logged = usual.logged.get(user_id)
    subscribed = profile.get("communities")
    subscribed = list(subscribed) if isinstance(subscribed, (list, tuple, np.ndarray)) else []
    if logged is not None:
        community, placement = logged[0], logged[1]
    elif subscribed:
        community, placement = str(subscribed[0]), Placement.COMMUNITY_FEED.value
    else:
        community, placement = None, Placement.HOME_FEED.value
    device = (logged[2] if logged is not None else None) or _field(profile, "device") or UNKNOWN
    req = {
        "user_id": user_id,
        "community_id": community,
        "placement": placement,
        "device": str(device),
        "country": str(_field(profile, "country") or UNKNOWN),
        "ts": usual.latest_ts,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    if "community_id" in given:
        c = given["community_id"]
        given["community_id"] = None if str(c).strip().lower() in _NO_COMMUNITY else str(c)
        # Moving the user into a community puts them on its feed unless a placement is given.
        if "placement" not in given:
            if given["community_id"] is None:
                given["placement"] = Placement.HOME_FEED.value
            elif req["placement"] == Placement.HOME_FEED.value:
                given["placement"] = Placement.COMMUNITY_FEED.value
    elif given.get("placement") == Placement.HOME_FEED.value:
        given["community_id"] = None  # the home feed has no community
    if "ts" in given:
        given["ts"] = parse_request_time(given["ts"])
    req.update(given)
    _validate(usual, req)
    return Request(**req)
