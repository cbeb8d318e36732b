"""Cached heavy objects and the shared request state of the dashboard.

`st.cache_resource` holds one shared, never-mutated object per key (catalog, versions, funnel
engines, maps, map placers); keys include the data stamp and the version's manifest checksum, so a new
import or version is picked up and nothing stale is served. `st.cache_data` holds frames.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import streamlit as st

from core.analysis.links import HOME, format_sources, parse_link, to_query_params
from core.data.request import Request
from core.funnel.context import default_request
from core.funnel.engine import FunnelEngine
from core.funnel.params import DEFAULT_PARAMS, FunnelParams
from core.funnel.pctr_cache import pctr_cache
from core.index.versions import list_versions, load_version
from core.common.timer import StepLog
from core.sources.base import SOURCE_ORDER
from core.store.artifacts import sha256_file
from core.store.catalog import Catalog, catalog_stamp, load_catalog
from core.store.db import make_engine
from core.store.settings import Settings, dashboard_timings_path, load_settings
from dashboard.charts import plain

REQUEST_KEYS = ("user", "ctx_community", "ctx_placement", "ctx_device", "ctx_country", "ctx_time")


@st.cache_resource
def settings() -> Settings:
    return load_settings()


@st.cache_resource
def steps() -> StepLog:
    """The timing log (ADLENS_DASHBOARD_TIMINGS; a no-op when unset): what a page loaded or built."""
    return StepLog(dashboard_timings_path())


@st.cache_resource
def db(url: str):
    return make_engine(url)


@st.cache_data(ttl=5, show_spinner=False)
def data_stamp(url: str) -> str:
    """Changes whenever an import changes data (cache key for the catalog): table sizes plus the
    data revision that every changing import bumps (an edited title leaves the sizes alone)."""
    return catalog_stamp(db(url))


@st.cache_resource(show_spinner="Loading the catalog…")
def _catalog(url: str, stamp: str) -> Catalog:
    with steps().step("catalog"):
        return load_catalog(db(url), snapshot_dir=settings().cache_dir, stamp=stamp)


def catalog() -> Catalog:
    s = settings()
    return _catalog(s.db_url, data_stamp(s.db_url))


@st.cache_data(ttl=10, show_spinner=False)
def _versions(workspace: str, url: str, stamp: str) -> list[dict]:
    with steps().step("versions list"):
        return [v for v in list_versions(settings(), engine=db(url)) if v["status"] == "ok"]


def versions() -> list[dict]:
    s = settings()
    return _versions(str(s.workspace), s.db_url, data_stamp(s.db_url))


def version_names() -> list[str]:
    return [v["name"] for v in versions()]


def serving(name: str) -> str:
    """One line saying which backend serves version `name` and over how many shards."""
    s = settings()
    n = next((v.get("shards") or 1 for v in versions() if v["name"] == name), 1)
    shards = f"{n} shards" if n > 1 else "1 index (unsharded)"
    if s.backend == "ray":
        return f"Served by Ray ({s.ray_address or 'auto'}), one actor per shard: {shards}"
    return f"Served in-process (local backend): {shards}"


def checksum(name: str) -> str:
    return sha256_file(settings().versions_dir / name / "manifest.json")


@st.cache_data(show_spinner=False, max_entries=64)
def _version_sources(name: str, checksum: str) -> tuple[str, ...]:
    from core.sources.registry import source_names

    try:
        return source_names(json.loads((settings().versions_dir / name / "manifest.json").read_text()))
    except (OSError, ValueError, AttributeError):  # loading the version says what is wrong with it
        return ("two_tower",)


def version_sources(name: str) -> tuple[str, ...]:
    """The candidate sources version `name` serves (read from its manifest: no engine needed, so
    the sidebar draws before the version is loaded)."""
    return _version_sources(name, checksum(name))


@st.cache_data(show_spinner=False, max_entries=64)
def _version_rules(name: str, checksum: str) -> tuple:
    from core.common.errors import AdLensError
    from core.funnel.definition import definition_at
    from core.funnel.rule_list import rule_list

    folder = settings().versions_dir / name
    try:
        section = json.loads((folder / "manifest.json").read_text()).get("funnel")
        return rule_list(definition_at(folder, section))
    except (OSError, ValueError, AttributeError, AdLensError):  # loading the version says what is wrong
        return ()


def version_rules(name: str) -> tuple:
    """The rules of version `name`'s funnel in order (core.funnel.rule_list.RuleInfo), read from
    its funnel.toml: no engine needed, so the sidebar lists them before the version is loaded."""
    return _version_rules(name, checksum(name))


def rules_off(name: str | None = None) -> tuple[str, ...]:
    """The rules of the version's funnel the sidebar's what-if switched off, in funnel order."""
    ss = st.session_state
    return tuple(r.code for r in version_rules(name or ss["version"])
                 if r.enabled and ss.get(f"rule_{r.code}") is False)


@st.cache_resource(show_spinner=False)
def _engine(name: str, checksum: str, url: str, stamp: str) -> FunnelEngine:
    cat = _catalog(url, stamp)
    with steps().step(f"version {name}"):
        version = load_version(settings(), name)
    with steps().step(f"engine {name}"):
        return FunnelEngine(version, cat, pctr_cache=pctr_cache(settings().cache_dir, version, url, stamp))


_BUILT: set = set()  # engine keys built in this process: the spinner shows only while one is built


def _engine_key(name: str) -> tuple[str, str, str, str]:
    s = settings()
    return name, checksum(name), s.db_url, data_stamp(s.db_url)


def warm_engine(name: str) -> None:
    """Build version `name`'s engine into the cache outside a page (dashboard/warm.py)."""
    key = _engine_key(name)
    _engine(*key)
    _BUILT.add(key)


def engine(name: str) -> FunnelEngine:
    """Version `name`'s funnel engine (shared: never mutate it); while it is built, the page says so."""
    key = _engine_key(name)
    if key in _BUILT:
        return _engine(*key)
    with st.spinner(f"Loading version {name}: its index, query tower and candidate sources, and the early "
                    "ranker's pCTR model (once per version)…"):
        eng = _engine(*key)
    _BUILT.add(key)
    return eng


@st.cache_resource(show_spinner=False)
def user_ids(url: str, stamp: str) -> list[str]:
    from core.funnel.context import known_user_ids

    return sorted(map(str, known_user_ids(_catalog(url, stamp))))


def all_user_ids() -> list[str]:
    s = settings()
    return user_ids(s.db_url, data_stamp(s.db_url))


@st.cache_data(show_spinner=False, max_entries=2000)
def _user_summary(url: str, stamp: str, user_id: str) -> dict:
    from core.analysis.profiles import user_summary

    return user_summary(_catalog(url, stamp), user_id)


def user_profile(user_id: str) -> dict:
    """The sidebar's profile of a user (core.analysis.profiles.user_summary), computed once per user
    and data stamp: it scans the impression log, which every rerun of every session would repeat."""
    s = settings()
    return _user_summary(s.db_url, data_stamp(s.db_url), str(user_id))


@st.cache_resource(show_spinner=False)
def _community_labels(url: str, stamp: str) -> dict[str, str]:
    comms = _catalog(url, stamp).communities
    labels = {HOME: "— home feed (no community) —"}
    labels.update({cid: f"{cid} · {name}"
                   for cid, name in zip(comms["community_id"].tolist(), comms["name"].tolist())})
    return labels


def community_labels() -> dict[str, str]:
    """Community id → label for the context picker, the home feed first (built once per catalog:
    the selectbox formats every option on every rerun)."""
    s = settings()
    return _community_labels(s.db_url, data_stamp(s.db_url))


@st.cache_resource(show_spinner=False)
def _clicked_ads(url: str, stamp: str) -> dict[str, np.ndarray]:
    imps = _catalog(url, stamp).impressions
    clicks = imps.loc[imps["clicked"].astype(bool), ["user_id", "ad_id"]]
    return {str(u): g.to_numpy(str) for u, g in clicks.groupby("user_id", sort=False)["ad_id"]}


def user_clicked_ads(user_id: str) -> np.ndarray:
    """Ids of the ads this user clicked in the impression log (grouped once per catalog)."""
    s = settings()
    return _clicked_ads(s.db_url, data_stamp(s.db_url)).get(str(user_id), np.array([], dtype=str))


# ---- deep links and the request -----------------------------------------------------------
def init_from_link() -> list[str]:
    """On a session's first run, copy valid query parameters into session state; return the
    messages for invalid ones (shown by the page on that run, never raised)."""
    ss = st.session_state
    if "link_errors" in ss:
        return []  # shown once, on the run that opened the link
    cat = catalog()
    names = version_names()
    link = parse_link(st.query_params.to_dict(), versions=names, user_ids=pd.Index(all_user_ids()),
                      community_ids=pd.Index(cat.communities["community_id"]), ad_ids=pd.Index(cat.ads["ad_id"]),
                      rule_codes=lambda v: _rule_codes(v or ss.get("version") or (names[-1] if names else None)),
                      request_exists=logged_request_exists)
    if link.version:
        ss["version"] = link.version
    if link.version_b:
        ss["version_b"] = link.version_b
    if link.user:
        ss["user"] = link.user
        reset_context()
    for key, value in (("ctx_community", link.community), ("ctx_placement", link.placement),
                       ("ctx_device", link.device), ("ctx_country", link.country)):
        if value is not None:
            ss[key] = value
    if link.time is not None:
        ss["ctx_time"] = link.time.isoformat(sep=" ")
    if link.ad:
        ss["ad"] = link.ad
    for name in link.disabled_sources or ():
        ss[f"src_{name}"] = False
    for name, value in (link.quotas or {}).items():
        ss[f"q_{name}"] = value
    for code in link.disabled_rules or ():
        ss[f"rule_{code}"] = False
    if link.request:  # a logged request: Inspect opens in Logged mode (dashboard/views/logged.py)
        ss["logged_request"] = link.request
        ss["inspect_mode"] = "Logged"
        ss["logged_on"] = True
        ss["link_why_not"] = bool(link.ad)
    ss["link_errors"] = link.errors
    return link.errors


def _rule_codes(version: str | None) -> list[str]:
    return [r.code for r in version_rules(version)] if version else []


def logged_request_exists(request_id: str) -> bool:
    """Whether `request_id` is an imported logged request (validates `?request=` links)."""
    from core.traces.logged import list_logged_requests

    return not list_logged_requests(db(settings().db_url), request_ids=[request_id], limit=1).empty


def reset_context() -> None:
    """Set the context controls to the selected user's usual context."""
    ss = st.session_state
    user = ss.get("user")
    if not user:
        return
    req = default_request(catalog(), user)
    ss["ctx_community"] = req.community_id or HOME
    ss["ctx_placement"] = req.placement
    ss["ctx_device"] = req.device
    ss["ctx_country"] = req.country
    ss["ctx_time"] = req.ts.isoformat(sep=" ")


def current_request() -> Request:
    """The request the sidebar describes (validated by core.funnel.context.default_request)."""
    ss = st.session_state
    comm = ss.get("ctx_community")
    ts = ss.get("ctx_time")
    return default_request(
        catalog(), ss["user"],
        community_id=comm,  # "home" = the home feed (core.funnel.context understands it)
        placement=ss.get("ctx_placement"), device=ss.get("ctx_device"),
        country=ss.get("ctx_country"), ts=ts if ts else None,
    )


def source_settings() -> tuple[tuple[str, ...], dict[str, int]]:
    """(sources switched off, quotas that differ from the defaults) from the sidebar's what-if."""
    ss = st.session_state
    off = tuple(n for n in SOURCE_ORDER if ss.get(f"src_{n}") is False)
    quotas = {n: int(ss[f"q_{n}"]) for n in SOURCE_ORDER[1:]
              if ss.get(f"q_{n}") is not None and int(ss[f"q_{n}"]) != DEFAULT_PARAMS.quota(n)}
    return off, quotas


def current_params() -> FunnelParams:
    ss = st.session_state
    d = DEFAULT_PARAMS
    off, quotas = source_settings()
    return FunnelParams(k=int(ss.get("p_k", d.k)), n_ranked=int(ss.get("p_n", d.n_ranked)),
                        max_per_advertiser=int(ss.get("p_m", d.max_per_advertiser)),
                        slate_size=int(ss.get("p_slate", d.slate_size)),
                        exact_ranks=True if ss.get("p_exact") else None, quotas=quotas or None,
                        disabled_sources=off, disabled_rules=rules_off() if ss.get("version") else ())


def sync_link(**extra) -> None:
    """Write the current view into the URL so it can be shared."""
    ss = st.session_state
    fields = {"version": ss.get("version"), "user": ss.get("user"), "community": ss.get("ctx_community"),
              "placement": ss.get("ctx_placement"), "device": ss.get("ctx_device"),
              "country": ss.get("ctx_country"), "time": _iso(ss.get("ctx_time")),
              **format_sources(*source_settings()),
              "rules_off": ",".join(rules_off()) or None if ss.get("version") else None}
    fields.update(extra)
    params = to_query_params(**fields)
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def _iso(value) -> str | None:
    if not value:
        return None
    return pd.Timestamp(value).isoformat() if not isinstance(value, datetime) else value.isoformat()


# ---- maps ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MapData:
    """A version's map ready to draw: `ads` (ad_id, x, y, fitted, title, advertiser_name, vertical,
    status, hover) and `users` frames, plus the ads' columns as NumPy arrays in the frame's row
    order (fixed-width strings: Plotly copies and serialises them without a Python call per point)."""

    ads: pd.DataFrame
    users: pd.DataFrame
    x: np.ndarray
    y: np.ndarray
    ad_id: np.ndarray
    hover: np.ndarray
    rows: pd.Index  # ad_id -> row (for get_indexer; its hash table is built once)


@st.cache_resource(show_spinner="Loading the map…")
def _map_data(name: str, checksum: str, url: str, stamp: str) -> MapData | None:
    from core.index.maps import load_layout

    layout = load_layout(settings().versions_dir / name)
    if layout is None:
        return None
    cat = _catalog(url, stamp)
    with steps().step(f"map data {name}"):
        return _map_frame(layout, cat)


def _map_frame(layout, cat: Catalog) -> MapData:
    ads = cat.ads[["ad_id", "title", "advertiser_name", "vertical", "status"]]
    frame = layout.ads.merge(ads, on="ad_id", how="left")
    frame["status"] = frame["status"].fillna("no campaign")
    # Escaped once per version: hover labels are Plotly text, which interprets HTML-like tags
    # (the ad id too: customdata keeps the raw id for selections, so the hover never shows it).
    frame["hover"] = (plain(frame["ad_id"]) + "<br>" + plain(frame["title"].fillna("")) + "<br>"
                      + plain(frame["advertiser_name"].fillna("—")))
    return MapData(ads=frame, users=layout.users, x=frame["x"].to_numpy(np.float32), y=frame["y"].to_numpy(np.float32),
                   ad_id=frame["ad_id"].to_numpy(str), hover=frame["hover"].to_numpy(str),
                   rows=pd.Index(frame["ad_id"]))


def map_data(name: str) -> MapData | None:
    """The version's map (shared: never mutate it), or None when the version has none."""
    s = settings()
    return _map_data(name, checksum(name), s.db_url, data_stamp(s.db_url))


@st.cache_resource(show_spinner=False)
def _map_codes(name: str, checksum: str, url: str, stamp: str, field: str, max_labels: int):
    from dashboard.density_map import label_codes

    return label_codes(_map_data(name, checksum, url, stamp).ads[field], max_labels)


@st.cache_resource(show_spinner=False, max_entries=64)
def _map_density(name: str, checksum: str, url: str, stamp: str, field: str, max_labels: int,
                 viewport: tuple[float, float, float, float] | None, sample: int):
    from core.index.map_density import density
    from dashboard.density_map import bin_text

    md = _map_data(name, checksum, url, stamp)
    codes, labels = _map_codes(name, checksum, url, stamp, field, max_labels)
    d = density(md.x, md.y, codes, labels, viewport=viewport, sample=sample)
    return d, bin_text(d)


def map_density(name: str, field: str, max_labels: int, viewport, sample: int):
    """(Density, its bins' hover text) of the version's map in `viewport` (None: all), binned by
    `field`: the same for every request, so a user switch re-sends the request's points only."""
    s = settings()
    return _map_density(name, checksum(name), s.db_url, data_stamp(s.db_url), field, max_labels,
                        None if viewport is None else tuple(map(float, viewport)), sample)


@st.cache_resource(show_spinner=False)
def _placer(name: str, checksum: str, url: str, stamp: str):
    from core.index.maps import MapPlacer, load_layout

    layout = load_layout(settings().versions_dir / name)
    if layout is None:
        return None
    version = _engine(name, checksum, url, stamp).version
    with steps().step(f"map placer {name}"):
        return MapPlacer(version, layout.ads)


def map_placer(name: str):
    s = settings()
    return _placer(name, checksum(name), s.db_url, data_stamp(s.db_url))


class _ReportStore:
    """Health reports by key, newest `size` kept. Not st.cache_resource: a report takes seconds to
    measure and the page shows a progress bar meanwhile (Streamlit would replay a cached
    function's elements, bar included, on every cache hit)."""

    def __init__(self, size: int = 16) -> None:
        self.size, self._items, self._lock = size, {}, threading.Lock()

    def get(self, key):
        with self._lock:
            return self._items.get(key)

    def put(self, key, value) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))


@st.cache_resource(show_spinner=False)
def _health_store() -> _ReportStore:
    return _ReportStore()


def health_report(name: str, n_requests: int = 200, k: int = 100, progress=None):
    """The version's health report, measured once per version, data and settings (kept in the
    workspace's cache: core.traces.report_cache); `progress` is only called while a report is
    being measured."""
    from core.traces.report_cache import cached_health

    s = settings()
    key = (name, checksum(name), s.db_url, data_stamp(s.db_url), n_requests, k)
    rep = _health_store().get(key)
    if rep is None:
        with steps().step(f"health {name} n={n_requests}"):
            rep = cached_health(s, engine(name), n_requests=n_requests, k=k, stamp=key[3], progress=progress)
        _health_store().put(key, rep)
    return rep
