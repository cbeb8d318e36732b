"""`adlens import-traces DIR`: validate logged traces, store them as a trace set, register it.

Every problem in either file is collected first (ingest's rules and messages, file, row, column);
a bad file writes nothing. The candidates are written to a staging folder, renamed into
`<workspace>/traces/<set_id>/`, and registered (one `trace_sets` row, one `logged_requests` row
per request) in ONE transaction; if that fails the folder is removed. Re-importing the same
content (also CSV then Parquet) is a no-op; request ids already imported with other content are
refused unless `replace=True`, which replaces every imported trace set in the same transaction.
Ads and users the catalog lacks, and source names and reason codes AdLens does not know, are
reported (counts and examples), never dropped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Engine, delete, insert, select

from core.common.errors import ValidationError
from core.common.progress import Progress, report
from core.data.ingest import read_table_file
from core.data.ingest_write import insert_columns, sqlite_datetimes
from core.data.ingest_validate import Problems, Source
from core.funnel.reasons import Reason
from core.sources.base import SOURCE_ORDER
from core.store.artifacts import atomic_write_json, fsync_dir, fsync_tree, hash_tree, sha256_file, staging_dir
from core.store.db import write_transaction
from core.store.debris import clean_debris
from core.store.models import Ad, LoggedRequest, TraceSet, User
from core.store.settings import Settings
from core.traces.read_files import candidate_chunks, count_rows, find_files
from core.traces.store import CANDIDATES_FILE, MANIFEST, REQUESTS_FILE, Buckets, CandidateWriter, write_requests
from core.traces.validate import CellLog, check_candidate_columns, normalise_chunk, validate_requests

EXAMPLES = 5
CONTEXT_FIELDS = ("community_id", "placement", "device", "country")


@dataclass
class Missing:
    """Ids a trace names that the catalog lacks: distinct ids, the rows naming them, examples."""

    ids: int = 0
    rows: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class TraceImportReport:
    directory: str
    set_id: str
    status: str  # "imported" | "unchanged"
    n_requests: int
    n_candidates: int
    stages: dict[str, int]  # candidates per stage_reached
    sources: dict[str, int]  # candidates found by each source name (unknown ones included)
    reasons: dict[str, int]  # candidates carrying each reason code
    unknown_sources: list[str]  # names AdLens's sources do not use (kept verbatim)
    unknown_reasons: list[str]  # codes AdLens's funnel does not emit (kept verbatim)
    missing_ads: Missing
    missing_users: Missing
    extra_context: list[str]
    replaced_sets: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    bytes: int = 0


def _sha_key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _counts(chunks: list[pa.StructArray]) -> dict[str, int]:
    """Value counts of several chunks (pc.value_counts each) summed, most frequent first."""
    total: dict[str, int] = {}
    for vc in chunks:
        for k, v in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
            if k is not None:
                total[k] = total.get(k, 0) + int(v)
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def _missing(ids_count: dict[str, int], known: set[str]) -> Missing:
    unknown = sorted(k for k in ids_count if k not in known)
    return Missing(len(unknown), int(sum(ids_count[k] for k in unknown)), unknown[:EXAMPLES])


def _existing(conn, ids: list[str]) -> dict[str, str]:
    """request_id -> set_id of the given ids already imported."""
    out: dict[str, str] = {}
    for i in range(0, len(ids), 5_000):
        rows = conn.execute(select(LoggedRequest.request_id, LoggedRequest.set_id)
                            .where(LoggedRequest.request_id.in_(ids[i:i + 5_000]))).all()
        out.update(dict(rows))
    return out


def _overlap_problem(src: Source, overlap: dict[str, str]) -> str:
    ids = sorted(overlap)
    sets = sorted(set(overlap.values()))
    return (f"{src.name}: {len(ids)} request id(s) were already imported with other content (trace set(s) "
            f"{', '.join(sets[:3])}): {', '.join(map(repr, ids[:EXAMPLES]))}{' ...' if len(ids) > EXAMPLES else ''}. "
            "Fix: import only new requests, re-import the very same files (a no-op), or pass --replace "
            "to replace every imported trace")


def import_traces(settings: Settings, engine: Engine, directory: Path, progress: Progress | None = None, *,
                  replace: bool = False) -> TraceImportReport:
    """Validate `directory` (requests + trace_candidates), store and register it (see module doc).
    Raises ValidationError (nothing written) on any problem."""
    directory = Path(directory)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    report(progress, 0.0, "read requests")
    files = find_files(directory)
    problems, warnings = Problems(files.problems), list(files.warnings)
    if problems:
        raise ValidationError(list(problems))
    req_src, cand_src = Source("requests", files.requests), Source("trace_candidates", files.candidates)
    try:
        raw_requests = read_table_file(files.requests)
    except pd.errors.EmptyDataError:
        raise ValidationError([f"{files.requests.name}: the file is empty. Fix: write a header line with the column "
                               "names (see data/README.md)."]) from None
    except (UnicodeDecodeError, ValueError, OSError) as exc:
        raise ValidationError([f"{files.requests.name}: cannot be read ({type(exc).__name__}: {str(exc)[:200]}). "
                               "Fix: CSV must be UTF-8 with a header line; Parquet must be a valid Parquet file."]) from exc
    requests = validate_requests(raw_requests, req_src, problems, warnings)
    del raw_requests
    source_key = _sha_key(sha256_file(files.requests), sha256_file(files.candidates))
    with engine.connect() as conn:
        stored = list(conn.execute(select(TraceSet.__table__)).all())
        overlap = _existing(conn, requests.frame["request_id"].tolist()) if requests is not None else {}
        known_ads = set(conn.execute(select(Ad.ad_id)).scalars())
        known_users = set(conn.execute(select(User.user_id)).scalars())
    by_source = next((s for s in stored if (s.manifest or {}).get("source_key") == source_key), None)
    if by_source is not None and not replace:
        return _unchanged(by_source, directory, t0)
    if overlap and not replace:
        sets = set(overlap.values())
        full = len(sets) == 1 and len(overlap) == len(requests.frame) and \
            next(s for s in stored if s.set_id in sets).n_requests == len(overlap)
        if not full:  # only the very same requests can be an unchanged re-import
            problems.append(_overlap_problem(req_src, overlap))
    timings["read_requests"] = time.perf_counter() - t0

    clean_debris(settings, under=settings.traces_dir)
    with staging_dir(settings.traces_dir, "import") as tmp:
        summary = _candidates(tmp, files, cand_src, req_src, requests, problems, warnings, progress, timings)
        if problems:
            raise ValidationError(list(problems))
        t = time.perf_counter()
        frame = requests.frame
        frame["n_candidates"] = summary["counts"]
        frame["row_offset"] = (np.cumsum(summary["counts"]) - summary["counts"]).astype(np.int64)
        write_requests(tmp / REQUESTS_FILE, frame, requests.extra_columns)
        files_sha = hash_tree(tmp, exclude=(MANIFEST,))
        fingerprint = _sha_key(files_sha[REQUESTS_FILE], files_sha[CANDIDATES_FILE])
        set_id = fingerprint[:16]
        rep = TraceImportReport(
            str(directory), set_id, "imported", len(frame), int(summary["counts"].sum()), summary["stages"],
            summary["sources"], summary["reasons"],
            [s for s in summary["sources"] if s not in SOURCE_ORDER],
            [r for r in summary["reasons"] if r not in {x.value for x in Reason}],
            _missing(summary["ads"], known_ads),
            _missing(frame["user_id"].value_counts().to_dict(), known_users),
            requests.extra_columns, warnings=warnings,
            bytes=sum((tmp / f).stat().st_size for f in files_sha))
        manifest = {"set_id": set_id, "fingerprint": fingerprint, "source_key": source_key,
                    "created_at": _now().isoformat(timespec="seconds"),
                    "source": {"directory": str(directory), "requests": files.requests.name,
                               "trace_candidates": files.candidates.name},
                    "n_requests": rep.n_requests, "n_candidates": rep.n_candidates,
                    "bytes": {f: (tmp / f).stat().st_size for f in files_sha},
                    "files": files_sha, "report": _summary(rep)}
        atomic_write_json(tmp / MANIFEST, manifest)
        fsync_tree(tmp)
        timings["write_files"] = time.perf_counter() - t
        report(progress, 0.9, "register")
        rep = _register(settings, engine, tmp, frame, manifest, rep, replace, timings, req_src)
    rep.seconds = time.perf_counter() - t0
    rep.timings = {k: round(v, 3) for k, v in timings.items()}
    report(progress, 1.0, "done")
    return rep


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _summary(rep: TraceImportReport) -> dict:
    from dataclasses import asdict

    d = asdict(rep)
    for k in ("directory", "status", "seconds", "timings", "replaced_sets", "warnings"):
        d.pop(k, None)
    return d


def _unchanged(ts: TraceSet, directory: Path, t0: float) -> TraceImportReport:
    s = dict((ts.manifest or {}).get("report") or {})
    return TraceImportReport(
        str(directory), ts.set_id, "unchanged", ts.n_requests, int(ts.n_candidates), s.get("stages", {}),
        s.get("sources", {}), s.get("reasons", {}), s.get("unknown_sources", []), s.get("unknown_reasons", []),
        Missing(**s.get("missing_ads", {})), Missing(**s.get("missing_users", {})), s.get("extra_context", []),
        seconds=time.perf_counter() - t0, bytes=int(s.get("bytes", 0)))


def _candidates(tmp: Path, files, cand_src: Source, req_src: Source, requests, problems: Problems,
                warnings: list[str], progress: Progress | None, timings: dict) -> dict:
    """Pass 1: validate every chunk into request-range buckets; pass 2: sort each bucket, check
    duplicates, write the candidates file. Returns counts per request and value counts."""
    t = time.perf_counter()
    try:
        names = pq.ParquetFile(files.candidates).schema_arrow.names if files.candidates.suffix == ".parquet" else \
            list(pd.read_csv(files.candidates, nrows=0, dtype=str, encoding="utf-8-sig").columns)
    except pd.errors.EmptyDataError:
        problems.append(f"{cand_src.name}: the file is empty. Fix: write a header line with the column names "
                        "(see data/README.md).")
        return {}
    except Exception as exc:  # pyarrow raises several types for a damaged file
        problems.append(f"{cand_src.name}: cannot be read ({type(exc).__name__}: {str(exc)[:200]}). "
                        "Fix: CSV must be UTF-8 with a header line; Parquet must be a valid Parquet file.")
        return {}
    if not check_candidate_columns([str(c).strip().lower() for c in names], cand_src, problems, warnings):
        return {}
    # requests None: its problems are reported; the candidates are still checked (not matched)
    request_ids = None if requests is None else pa.array(requests.frame["request_id"].tolist(), pa.string())
    n_req = 0 if request_ids is None else len(request_ids)
    total = count_rows(files.candidates)
    log = CellLog(cand_src)
    buckets = Buckets(tmp, n_req, total)
    counts = np.zeros(n_req, np.int64)
    ads, sources, reasons, stages = [], [], [], []
    done = 0
    for offset, chunk in candidate_chunks(files.candidates, cand_src, problems):
        table = normalise_chunk(chunk, offset, request_ids, req_src.name, log)
        pos = table.column("pos").drop_null().to_numpy()
        counts += np.bincount(pos, minlength=n_req)
        vc = pc.value_counts(table.column("ad_id").combine_chunks())
        ads.append((vc.field("values"), vc.field("counts")))
        # value counts per chunk (a few names each), not the chunks' arrays: memory stays flat
        sources.append(pc.value_counts(pc.list_flatten(table.column("sources").combine_chunks())))
        reasons.append(pc.value_counts(pc.list_flatten(table.column("reasons").combine_chunks())))
        stages.append(pc.value_counts(table.column("stage_reached").combine_chunks()))
        if not log:
            buckets.add(table)
        done += chunk.num_rows
        report(progress, 0.05 + 0.55 * done / max(1, total), f"validate {cand_src.name}")
    buckets.close()
    timings["validate_candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    writer = None if (log or problems) else CandidateWriter(tmp / CANDIDATES_FILE)
    for i, table in enumerate(buckets.sorted_tables()):
        _duplicates(table, log)
        if writer is not None and not log:
            writer.write(table)
        report(progress, 0.6 + 0.3 * (i + 1) / buckets.n, "sort and write candidates")
    if writer is not None:
        writer.close()
    log.emit(problems)
    timings["sort_write_candidates"] = time.perf_counter() - t
    ad_counts: dict[str, int] = {}
    if ads:
        vals = pa.chunked_array([a for a, _ in ads], pa.string())
        cnt = np.concatenate([c.to_numpy() for _, c in ads]) if ads else np.zeros(0)
        s = pd.Series(cnt, index=vals.to_pylist()).groupby(level=0).sum()
        ad_counts = {str(k): int(v) for k, v in s.items() if k is not None}
    return {"counts": counts, "ads": ad_counts, "sources": _counts(sources), "reasons": _counts(reasons),
            "stages": _counts(stages)}


def _duplicates(table: pa.Table, log: CellLog) -> None:
    """(request_id, ad_id) twice, within one bucket (a request never spans buckets)."""
    codes = table.column("ad_id").combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
    key = (table.column("pos").to_numpy().astype(np.int64) << 32) | codes.astype(np.int64)
    ordered = np.sort(key)
    if not (ordered[1:] == ordered[:-1]).any():
        return
    dup = pd.Series(key).duplicated(keep=False).to_numpy()
    rows = table.column("row").to_numpy()
    order = np.argsort(rows[dup])
    shown = pc.binary_join_element_wise(table.column("request_id"), table.column("ad_id"), " / ")
    for p in np.flatnonzero(dup)[order]:
        log.add("ad_id", np.array([True]), pa.array([shown[int(p)].as_py()]), int(rows[p]),
                "duplicate candidate (the same request_id / ad_id twice)",
                "each ad appears once per request: remove or merge the duplicate rows")


def _register(settings: Settings, engine: Engine, tmp: Path, frame: pd.DataFrame, manifest: dict,
              rep: TraceImportReport, replace: bool, timings: dict, req_src: Source) -> TraceImportReport:
    """Rename the staged set into place and register it in one transaction; undo the rename if
    the transaction fails. With `replace`, earlier sets are unregistered there and removed after."""
    t = time.perf_counter()
    root = settings.traces_dir
    final = root / rep.set_id
    moved = False
    old: list[str] = []
    try:
        with write_transaction(engine, f"import traces {rep.directory}") as conn:
            stored = {s.set_id: s for s in conn.execute(select(TraceSet.__table__)).all()}
            if replace:
                old = [s for s in stored if s != rep.set_id]
                conn.execute(delete(LoggedRequest).where(LoggedRequest.set_id.in_(old)))
                conn.execute(delete(TraceSet).where(TraceSet.set_id.in_(old)))
            if rep.set_id in stored and final.is_dir():
                rep.status = "unchanged"  # the same content, maybe from other files (CSV, then Parquet)
            else:
                overlap = _existing(conn, frame["request_id"].tolist())
                if overlap:
                    raise ValidationError([_overlap_problem(req_src, overlap)])
                if final.exists():  # an unregistered leftover of the same content
                    shutil.rmtree(final)
                os.rename(tmp, final)
                moved = True
                fsync_dir(root)
                _insert(conn, frame, rep, manifest)
    except BaseException:
        if moved:
            shutil.rmtree(final, ignore_errors=True)
        raise
    for set_id in old:  # unregistered already: a failure here leaves only debris (adlens status --clean)
        path = root / set_id
        if path.is_dir():
            aside = root / f".deleting-{set_id}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            os.rename(path, aside)
            shutil.rmtree(aside, ignore_errors=True)
    rep.replaced_sets = old
    timings["register"] = time.perf_counter() - t
    return rep


def _insert(conn, frame: pd.DataFrame, rep: TraceImportReport, manifest: dict) -> None:
    conn.execute(insert(TraceSet).values(
        set_id=rep.set_id, created_at=_now(), path=f"traces/{rep.set_id}", fingerprint=manifest["fingerprint"],
        n_requests=rep.n_requests, n_candidates=rep.n_candidates, manifest=manifest))
    extra = rep.extra_context
    cols = {c: frame[c].tolist() for c in (*CONTEXT_FIELDS, *extra)}
    contexts = []
    for i in range(len(frame)):
        context = {c: cols[c][i] for c in CONTEXT_FIELDS}
        context["extra"] = {c: cols[c][i] for c in extra if cols[c][i] is not None}
        contexts.append(context)
    values = {"request_id": frame["request_id"].tolist(), "user_id": frame["user_id"].tolist(),
              "ts": frame["ts"].to_numpy().astype("datetime64[us]").tolist(), "context": contexts,
              "set_id": [rep.set_id] * len(frame), "row_offset": frame["row_offset"].tolist(),
              "n_candidates": frame["n_candidates"].tolist()}
    ready = set()
    if conn.dialect.name == "sqlite":
        ready = {"ts"}
        values["ts"] = sqlite_datetimes(frame["ts"])
    insert_columns(conn, LoggedRequest.__table__, values, lambda n: None, processed=ready)
