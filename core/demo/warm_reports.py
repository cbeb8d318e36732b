"""The demo's saved reports: the Health report of the version the dashboard opens by default and
its Parity report on the demo's production logs, at the pages' default parameters, saved in the
workspace's cache (core.traces.report_cache) so that a new user's first view of either page
reads them instead of measuring them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from core.traces.report_cache import (
    HEALTH_K,
    HEALTH_REQUESTS,
    HEALTH_SEED,
    PARITY_REQUESTS,
    PARITY_SEED,
    cached_health,
    cached_parity,
)
from core.common.progress import Progress, report


def default_version(settings, db) -> str | None:
    """The version the dashboard opens on: the newest one whose files are whole."""
    from core.index.versions import list_versions

    names = [v["name"] for v in list_versions(settings, engine=db) if v["status"] == "ok"]
    return names[-1] if names else None


def warm_reports(settings, db, engines: Mapping[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Compute (or find) and save the default version's Health report and, when logged traces are
    imported, its Parity report; `engines`: FunnelEngines by version name (the default one is
    opened when missing). Returns the seconds each took."""
    from core.funnel.engine import open_engine
    from core.store.catalog import catalog_stamp
    from core.traces.logged import count_logged_requests

    name = default_version(settings, db)
    if name is None:
        return {}
    eng = engines.get(name) or open_engine(settings, name)
    stamp = catalog_stamp(db)
    out: dict[str, Any] = {"version": name}
    t = time.perf_counter()
    report(progress, 0.0, f"Health report of {name}")
    cached_health(settings, eng, n_requests=HEALTH_REQUESTS, k=HEALTH_K, seed=HEALTH_SEED, stamp=stamp,
                  progress=lambda f, _what: report(progress, 0.5 * f, f"Health report of {name}"))
    out["health_s"] = round(time.perf_counter() - t, 2)
    total = count_logged_requests(db)
    if total:
        t = time.perf_counter()
        n = min(PARITY_REQUESTS, total)  # the Parity page's default
        cached_parity(settings, db, eng, n_requests=n, seed=PARITY_SEED, stamp=stamp,
                      progress=lambda f, _what: report(progress, 0.5 + 0.5 * f, f"Parity report of {name}"))
        out["parity_s"] = round(time.perf_counter() - t, 2)
        out["parity_requests"] = n
    report(progress, 1.0, "reports saved")
    return out
