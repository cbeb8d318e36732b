"""Health and Parity reports kept on disk, so a cold dashboard reads them instead of measuring.

A Health report (core.analysis.health) samples requests and the funnel for seconds, a Parity
report (core.traces.parity) replays logged requests for longer; the dashboard's first view of
either page on a fresh server would pay that every time. Each report is a pure function of the
version (its manifest checksum), the catalog (the database, password hidden, and its
`catalog_stamp`), for Parity the imported trace sets (`trace_sets_stamp`), the page's parameters
and the funnel's default parameters: that is the key, stored in the file and compared in full on
reading (the file name is only its hash). Reports are JSON (never pickle) in the workspace's cache
folder, written atomically; a file that is unreadable, of another key or malformed is ignored and
the report measured again; a folder that cannot be written (a read-only workspace) means measuring
every time, silently. The demo's last step saves the reports of the version the dashboard opens
by default (core.demo.warm_reports). Tests: tests/test_report_cache.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pandas as pd

from core.analysis.health import HealthReport, health
from core.common.jsonio import to_jsonable
from core.common.progress import Progress
from core.funnel.params import FunnelParams
from core.store.artifacts import atomic_write_json, sha256_bytes
from core.traces.parity import ParityReport, run_parity
from core.traces.parity_tally import Disagreement, Example, Recall, SourceRecall

log = logging.getLogger(__name__)
FORMAT = 1  # bump when a report's procedure changes (stored reports would differ from new ones)
KEEP = 8  # files kept per kind and version (other parameters), newest first

HEALTH_REQUESTS, HEALTH_K, HEALTH_SEED = 200, 100, 0
"""The Health page's defaults: sampled requests, recall@k, seed."""
PARITY_REQUESTS, PARITY_SEED = 50, 0
"""The Parity page's defaults: logged requests replayed (at most those imported), seed. 50, not
200: a replay costs ~70 ms a request on the demo (200: 11 s, 50: 4 s, the demo's warm step pays
it) and the demo's verdict names the same three planted differences at 50 as at all 150."""

_FRAMES = ("curve", "dead_ads", "dead_by_vertical", "hub_ads")  # HealthReport's DataFrame fields
_RATES = ("fail_share", "primary_share")  # rule_health's shares: NaN for a rule that saw nothing


def _schema(*classes) -> str:
    """The reports' field names: a report class that gains or loses a field misses the cache."""
    names = ",".join(f"{c.__name__}:{'|'.join(f.name for f in fields(c))}" for c in classes)
    return sha256_bytes(names.encode())[:12]


def catalog_key(settings, stamp: str) -> str:
    """The database and its catalog_stamp: the workspace's own SQLite file by its place in the
    workspace (a copied workspace keeps its reports), any other database by its URL (password hidden)."""
    from core.store.db import redact_url
    from core.store.settings import default_db_url

    ws = Path(settings.workspace)
    if settings.db_url in (default_db_url(ws), default_db_url(ws.resolve())):
        return f"workspace database|{stamp}"
    return f"{redact_url(settings.db_url)}|{stamp}"


def health_key(settings, checksum: str, stamp: str, *, n_requests: int, k: int, seed: int = HEALTH_SEED) -> dict:
    """The key of the Health report of the version with manifest `checksum` on the settings' catalog at `stamp`."""
    return {"report": "health", "format": FORMAT, "schema": _schema(HealthReport),
            "version": checksum, "catalog": catalog_key(settings, stamp),
            "n_requests": int(n_requests), "k": int(k), "seed": int(seed), "backend": settings.backend,
            "funnel": to_jsonable(FunnelParams())}


def parity_key(settings, checksum: str, stamp: str, traces_stamp: str, *, n_requests: int,
               seed: int = PARITY_SEED, params: FunnelParams | None = None) -> dict:
    """The key of the Parity report of the version with manifest `checksum` on the trace sets at `traces_stamp`."""
    return {"report": "parity", "format": FORMAT,
            "schema": _schema(ParityReport, Recall, SourceRecall, Disagreement, Example),
            "version": checksum, "catalog": catalog_key(settings, stamp),
            "traces": traces_stamp, "n_requests": int(n_requests), "seed": int(seed),
            "funnel": to_jsonable(params or FunnelParams())}


# -- reports <-> JSON ------------------------------------------------------------------------------

def _frame_to_dict(frame: pd.DataFrame) -> dict:
    return {"columns": [str(c) for c in frame.columns], "dtypes": [str(t) for t in frame.dtypes],
            "index": frame.index.tolist(), "data": frame.to_numpy(dtype=object).tolist()}


def _frame_from_dict(d: dict) -> pd.DataFrame:
    frame = pd.DataFrame(d["data"], columns=d["columns"], index=pd.Index(d["index"], dtype="int64"),
                         dtype=object)
    if not len(frame.index):
        frame.index = pd.RangeIndex(0)
    for col, dtype in zip(d["columns"], d["dtypes"]):
        if dtype != "object":
            frame[col] = frame[col].astype(dtype)  # None in a float column: NaN
    return frame


def health_to_dict(rep: HealthReport) -> dict:
    """The whole report as plain JSON values (`HealthReport.to_dict` is the CLI's summary)."""
    d = {f.name: getattr(rep, f.name) for f in fields(rep)}
    for name in _FRAMES:
        d[name] = _frame_to_dict(d[name])
    return to_jsonable(d)


def health_from_dict(d: dict) -> HealthReport:
    """The report `health_to_dict` wrote; KeyError / TypeError / ValueError / AttributeError when malformed."""
    d = dict(d)
    for name in _FRAMES:
        d[name] = _frame_from_dict(d[name])
    if d.get("rules"):
        d["rules"] = {**d["rules"], "rules": [
            {k: (np.nan if k in _RATES and v is None else v) for k, v in row.items()} for row in d["rules"]["rules"]]}
    return HealthReport(**d)


def parity_to_dict(rep: ParityReport) -> dict:
    return to_jsonable(asdict(rep))


def parity_from_dict(d: dict) -> ParityReport:
    """The report `parity_to_dict` wrote; KeyError / TypeError / AttributeError when malformed."""
    d = dict(d)
    d["recall"] = Recall(**d["recall"])
    d["stage_recall"] = {k: Recall(**v) for k, v in d["stage_recall"].items()}
    d["source_recall"] = [SourceRecall(**s) for s in d["source_recall"]]
    d["disagreements"] = [Disagreement(**{**x, "examples": [Example(**e) for e in x["examples"]]})
                          for x in d["disagreements"]]
    return ParityReport(**d)


# -- the cache -------------------------------------------------------------------------------------

def _path(directory: Path, key: dict) -> Path:
    digest = sha256_bytes(json.dumps(key, sort_keys=True).encode())[:16]
    return Path(directory) / f"report-{key['report']}-{key['version'][:12]}-{digest}.json"


def load_report(directory: Path, key: dict) -> dict | None:
    """The report stored under `key` (its JSON values), or None (missing, another key, unreadable)."""
    path = _path(directory, key)
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") != json.loads(json.dumps(key)):  # the key as JSON reads it back
            return None
        return stored["report"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the cached report %s: %s", path, exc)
        return None


def save_report(directory: Path, key: dict, report: dict) -> bool:
    """Store `report` under `key`, keeping the newest KEEP of its kind and version; False when the
    folder cannot be written (a read-only workspace: the caller keeps the report in memory)."""
    from core.store.readonly import folder_read_only

    path = _path(directory, key)
    if folder_read_only(directory):
        return False
    try:
        atomic_write_json(path, {"key": key, "report": report})
        olds = sorted(Path(directory).glob(f"report-{key['report']}-{key['version'][:12]}-*.json"),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        for old in olds[KEEP:]:
            old.unlink(missing_ok=True)
        return True
    except OSError as exc:
        log.info("report not cached in %s: %s", directory, exc)
        return False


def cached_health(settings, engine, *, n_requests: int = HEALTH_REQUESTS, k: int = HEALTH_K,
                  seed: int = HEALTH_SEED, stamp: str | None = None,
                  progress: Progress | None = None) -> HealthReport:
    """`engine`'s version's Health report (with its funnel rules) read from the workspace's cache,
    or measured and saved there; `stamp`: the catalog_stamp the engine's catalog was loaded at
    (default: read now); `progress` is called only while measuring."""
    stamp = stamp if stamp is not None else _stamp(settings)
    key = health_key(settings, engine.version.checksum, stamp, n_requests=n_requests, k=k, seed=seed)
    return _load_or_compute(
        settings.cache_dir, key, "Health", health_from_dict, health_to_dict,
        lambda: health(engine.version, engine.catalog, n_requests=n_requests, k=k, seed=seed, progress=progress,
                       engine=engine))


def cached_parity(settings, db, engine, *, n_requests: int = PARITY_REQUESTS, seed: int = PARITY_SEED,
                  stamp: str | None = None, traces_stamp: str | None = None, checksum: str | None = None,
                  progress: Progress | None = None) -> ParityReport:
    """The Parity report of `engine`'s version on `n_requests` logged requests (default funnel
    parameters) read from the workspace's cache, or replayed and saved there; `db`: the
    workspace's SQLAlchemy engine; `engine`: the version's FunnelEngine, or a function returning
    it, called only when the report must be replayed (loading a version takes seconds; then
    `checksum`, the version's manifest checksum, is required); `progress` is called only while replaying."""
    from core.traces.logged import trace_sets_stamp

    stamp = stamp if stamp is not None else _stamp(settings, db)
    traces_stamp = traces_stamp if traces_stamp is not None else trace_sets_stamp(db)
    if checksum is None:
        if callable(engine):
            raise TypeError("cached_parity: pass the version's checksum with an engine factory")
        checksum = engine.version.checksum
    key = parity_key(settings, checksum, stamp, traces_stamp, n_requests=n_requests, seed=seed)
    return _load_or_compute(
        settings.cache_dir, key, "Parity", parity_from_dict, parity_to_dict,
        lambda: run_parity(settings, db, engine() if callable(engine) else engine, n_requests=n_requests,
                           seed=seed, progress=progress))


def _load_or_compute(directory, key: dict, what: str, decode, encode, compute):
    """The report saved under `key` (decoded), or `compute()` saved there; a saved report that does
    not decode is logged and measured again."""
    stored = load_report(directory, key)
    if stored is not None:
        try:
            return decode(stored)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("ignoring a malformed cached %s report: %s", what, exc)
    rep = compute()
    save_report(directory, key, encode(rep))
    return rep


def _stamp(settings, db=None) -> str:
    from core.store.catalog import catalog_stamp
    from core.store.db import make_engine

    if db is not None:
        return catalog_stamp(db)
    db = make_engine(settings.db_url)
    try:
        return catalog_stamp(db)
    finally:
        db.dispose()
