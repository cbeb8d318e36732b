"""Logged requests as the rest of AdLens reads them: find them (by user and time range, or by
request id), open one (`load_logged_request`: the core `Request` plus production's candidates),
or stream many grouped by file position (`iter_logged_requests`, for parity over N requests).

A logged request's candidates frame has one row per logged candidate in the log's order, with
CANDIDATE_COLUMNS (lists as Python lists); source names and reason codes are the log's own
strings, so code comparing them with AdLens's replay decides what "unknown" means.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Engine, func, select

from core.common.errors import NotFoundError
from core.data.request import Request, parse_request_time
from core.sources.base import SOURCE_ORDER
from core.store.models import LoggedRequest as LoggedRow
from core.store.models import TraceSet
from core.store.settings import Settings
from core.traces.schema import STAGES_REACHED
from core.traces.store import CANDIDATES_FILE, open_candidates, read_rows
from core.traces.validate import CANDIDATE_SCHEMA

CANDIDATE_COLUMNS: tuple[str, ...] = tuple(n for n in CANDIDATE_SCHEMA.names if n != "request_id")
LIST_COLUMNS = ("sources", "reasons", "source_ranks", "source_scores")
LISTING_COLUMNS = ("request_id", "user_id", "ts", "community_id", "placement", "device", "country",
                   "n_candidates", "set_id", "extra")


@dataclass(frozen=True)
class LoggedRequest:
    """What production logged for one request."""

    request_id: str
    request: Request  # the context, as AdLens's funnel takes it (replay it with FunnelEngine.run)
    extra: dict[str, str]  # the log's extra context columns, verbatim
    candidates: pd.DataFrame  # CANDIDATE_COLUMNS, one row per logged candidate, in log order
    set_id: str
    meta: dict = field(default_factory=dict, compare=False)  # row_offset, n_candidates

    def stage_counts(self) -> dict[str, int]:
        """Candidates that reached at least each stage (retrieved >= eligible >= ranked >= slate)."""
        idx = self.candidates["stage_reached"].map({s: i for i, s in enumerate(STAGES_REACHED)}).to_numpy()
        return {s: int((idx >= i).sum()) for i, s in enumerate(STAGES_REACHED)}

    def slate(self) -> pd.DataFrame:
        """The logged slate, in slate position order (log order where positions are missing)."""
        s = self.candidates[self.candidates["stage_reached"] == "slate"]
        return s.sort_values("slate_position", kind="stable", na_position="last")

    def unknown_sources(self) -> list[str]:
        """Source names in this request that AdLens's candidate sources do not use."""
        names = {x for xs in self.candidates["sources"] for x in xs}
        return sorted(names - set(SOURCE_ORDER))


def _row_frame(rows) -> pd.DataFrame:
    out = []
    for r in rows:
        c = r.context or {}
        out.append({"request_id": r.request_id, "user_id": r.user_id, "ts": r.ts,
                    **{k: c.get(k) for k in ("community_id", "placement", "device", "country")},
                    "n_candidates": r.n_candidates, "set_id": r.set_id, "extra": dict(c.get("extra") or {})})
    frame = pd.DataFrame(out, columns=list(LISTING_COLUMNS))
    frame["ts"] = pd.to_datetime(frame["ts"])
    return frame


def list_logged_requests(engine: Engine, *, user_id: str | None = None, start=None, end=None,
                         request_ids: Iterable[str] | None = None, limit: int | None = 1000,
                         offset: int = 0) -> pd.DataFrame:
    """Logged requests (LISTING_COLUMNS) by user and/or time range [start, end), or by ids,
    ordered by (ts, request_id); `limit=None` for all. Times: ISO text or datetimes (UTC)."""
    q = select(LoggedRow.__table__)
    if user_id is not None:
        q = q.where(LoggedRow.user_id == str(user_id))
    if start is not None:
        q = q.where(LoggedRow.ts >= parse_request_time(start))
    if end is not None:
        q = q.where(LoggedRow.ts < parse_request_time(end))
    if request_ids is not None:
        ids = [str(i) for i in request_ids]
        rows = []
        with engine.connect() as conn:
            for i in range(0, len(ids), 5_000):
                rows += conn.execute(q.where(LoggedRow.request_id.in_(ids[i:i + 5_000]))).all()
        frame = _row_frame(rows).sort_values(["ts", "request_id"], kind="stable").reset_index(drop=True)
        return frame.iloc[offset: None if limit is None else offset + limit].reset_index(drop=True)
    q = q.order_by(LoggedRow.ts, LoggedRow.request_id).offset(offset)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        return _row_frame(conn.execute(q).all())


def count_logged_requests(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(LoggedRow)).scalar_one())


def sample_request_ids(engine: Engine, n: int, seed: int = 0) -> list[str]:
    """A seeded sample of `n` logged request ids (all when there are fewer), in id order."""
    with engine.connect() as conn:
        ids = sorted(conn.execute(select(LoggedRow.request_id)).scalars())
    if len(ids) <= n:
        return ids
    pick = np.random.default_rng(seed).choice(len(ids), size=n, replace=False)
    return [ids[i] for i in sorted(pick)]


def _frame(table: pa.Table) -> pd.DataFrame:
    cols = {}
    for name in CANDIDATE_COLUMNS:
        col = table.column(name)
        if name in LIST_COLUMNS:
            cols[name] = pd.Series(col.to_pylist(), dtype=object)
        elif name == "slate_position":
            cols[name] = pd.array(col.to_pylist(), dtype="Int64")
        else:
            cols[name] = col.to_pandas()
    return pd.DataFrame(cols, columns=list(CANDIDATE_COLUMNS))


def _to_logged(row: LoggedRow, table: pa.Table) -> LoggedRequest:
    c = row.context or {}
    req = Request(user_id=row.user_id, community_id=c.get("community_id"), placement=c.get("placement") or "home_feed",
                  device=c.get("device") or "unknown", country=c.get("country") or "unknown",
                  ts=pd.Timestamp(row.ts).to_pydatetime())
    return LoggedRequest(row.request_id, req, dict(c.get("extra") or {}), _frame(table), row.set_id,
                         {"row_offset": row.row_offset, "n_candidates": row.n_candidates})


class _Sets:
    """Trace set folders and recorded file sizes, looked up once per call."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings, self.engine, self._sets = settings, engine, {}

    def file(self, set_id: str):
        if set_id not in self._sets:
            with self.engine.connect() as conn:
                ts = conn.execute(select(TraceSet.__table__).where(TraceSet.set_id == set_id)).first()
            if ts is None:
                raise NotFoundError(f"trace set {set_id!r} is not registered; re-import the traces")
            size = ((ts.manifest or {}).get("bytes") or {}).get(CANDIDATES_FILE)
            self._sets[set_id] = (self.settings.workspace / ts.path / CANDIDATES_FILE, size)
        path, size = self._sets[set_id]
        return open_candidates(path, size)


def load_logged_request(settings: Settings, engine: Engine, request_id: str) -> LoggedRequest:
    """One logged request with its candidates (reads only the row groups that hold them).
    NotFoundError naming close ids when it was never imported."""
    with engine.connect() as conn:
        row = conn.execute(select(LoggedRow.__table__).where(LoggedRow.request_id == str(request_id))).first()
        if row is None:
            n = conn.execute(select(func.count()).select_from(LoggedRow)).scalar_one()
            near = conn.execute(select(LoggedRow.request_id).where(LoggedRow.request_id > str(request_id))
                                .order_by(LoggedRow.request_id).limit(3)).scalars().all()
    if row is None:
        hint = (f"{n:,} logged requests are imported" + (f"; ids after it: {', '.join(near)}" if near else "")) \
            if n else "no traces are imported yet; import them with `adlens import-traces DIR`"
        raise NotFoundError(f"no logged request {request_id!r}: {hint}")
    f = _Sets(settings, engine).file(row.set_id)
    return _to_logged(row, read_rows(f, row.row_offset, row.n_candidates))


def iter_logged_requests(settings: Settings, engine: Engine, request_ids: Iterable[str]) -> Iterator[LoggedRequest]:
    """The given logged requests in file order (each row group read once for requests sharing
    it), memory bounded by one group of neighbours. Unknown ids raise NotFoundError first."""
    ids = [str(i) for i in request_ids]
    rows = []
    with engine.connect() as conn:
        for i in range(0, len(ids), 5_000):
            rows += conn.execute(select(LoggedRow.__table__).where(LoggedRow.request_id.in_(ids[i:i + 5_000]))).all()
    missing = sorted(set(ids) - {r.request_id for r in rows})
    if missing:
        raise NotFoundError(f"{len(missing)} request id(s) were never imported: {', '.join(missing[:5])}")
    rows.sort(key=lambda r: (r.set_id, r.row_offset))
    sets = _Sets(settings, engine)
    i = 0
    while i < len(rows):  # neighbours whose rows lie in the same span of row groups: one read
        f = sets.file(rows[i].set_id)
        j, end = i, rows[i].row_offset + rows[i].n_candidates
        group_end = int(f.starts[min(len(f.starts) - 1, np.searchsorted(f.starts, rows[i].row_offset, "right"))])
        while j + 1 < len(rows) and rows[j + 1].set_id == rows[i].set_id and \
                rows[j + 1].row_offset + rows[j + 1].n_candidates <= max(end, group_end):
            j += 1
            end = max(end, rows[j].row_offset + rows[j].n_candidates)
        base = rows[i].row_offset
        table = read_rows(f, base, end - base)
        for r in rows[i:j + 1]:
            yield _to_logged(r, table.slice(r.row_offset - base, r.n_candidates))
        i = j + 1


def time_range(engine: Engine) -> tuple[datetime, datetime] | None:
    """(first, last) logged request time, or None when none is imported."""
    with engine.connect() as conn:
        lo, hi = conn.execute(select(func.min(LoggedRow.ts), func.max(LoggedRow.ts))).one()
    return None if lo is None else (lo, hi)


def verify_trace_sets(settings: Settings, engine: Engine) -> list[dict]:
    """Check every registered trace set's files against the sha256 its manifest recorded
    (reading every byte: opening a request checks only the size). ArtifactError names the first
    file that fails; returns (set_id, n_requests, n_candidates) of the sets checked."""
    from core.store.artifacts import verify_files
    from core.traces.store import read_manifest

    with engine.connect() as conn:
        sets = conn.execute(select(TraceSet.__table__)).all()
    out = []
    for s in sets:
        folder = settings.workspace / s.path
        verify_files(folder, read_manifest(folder)["files"])
        out.append({"set_id": s.set_id, "n_requests": s.n_requests, "n_candidates": int(s.n_candidates)})
    return out


def logged_user_ids(engine: Engine) -> list[str]:
    """Users with at least one logged request, sorted."""
    with engine.connect() as conn:
        return sorted(map(str, conn.execute(select(LoggedRow.user_id).distinct()).scalars()))


def trace_sets_stamp(engine: Engine) -> str:
    """Changes whenever a trace set is imported or replaced (set ids and content fingerprints):
    the cache key of anything computed from the logged traces."""
    with engine.connect() as conn:
        rows = conn.execute(select(TraceSet.set_id, TraceSet.fingerprint).order_by(TraceSet.set_id)).all()
    return ",".join(f"{s}:{f}" for s, f in rows)
