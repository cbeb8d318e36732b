"""`adlens demo` as a list of named, timed steps: generate -> write files -> ingest -> embed ->
train towers -> build versions (each with its UMAP map) -> production logs (a "production" funnel
with planted differences and its logged traces: core.demo.production) -> warm caches.

Each step is `DemoStep(name, run, weight)`; `run(ctx, tick)` does its work, may read or add to
`ctx.results`, calls `tick(fraction_of_this_step)` and returns a small dict of details for the
report. `progress(fraction, step_name)` (core.common.progress) receives the fraction of the whole
build (0..1), weighted by the steps' `weight`, so a dashboard can show one progress bar.

Where the time goes (10k ads, 2 cores, 112-120 s at load 1-2): building the versions (45-47 s:
UMAP maps, single-threaded with a seed, and EASE's dense solve), embedding the ad texts (32-40 s;
83 s with torch), warming the caches (12-13 s) and training the towers (12-13 s). So the texts
are embedded with the int8 ONNX text backend (DEMO_TEXT_BACKEND: about twice torch's texts/s,
plus ~6 s to export and quantise the model once into the workspace's cache; recorded in the
workspace, so every later command embeds the same way) in batches of DEMO_EMBED_BATCH; the
candidate sources are built once per tower split and saved into every version that shares it
(the demo's towers share one split: EASE is solved once, with a limit that covers the demo's
catalog), and the `ivf` version reuses the `exact` version's map fit (same tower, same ad
vectors: core.index.maps).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from core.common.errors import AdLensError
from core.common.progress import Progress
from core.data.ingest import IngestReport, ingest_directory
from core.data.schema import TABLES
from core.store.artifacts import atomic_write_json, sha256_bytes
from core.store.catalog import table_counts
from core.store.db import make_engine
from core.store.settings import Settings, record_text_backend

MARKER = "demo.json"  # in the workspace: parameters and status of the last demo build


@dataclass
class DemoContext:
    """What the steps share: parameters, the engine, and each step's results by name."""

    settings: Settings
    engine: Engine
    n_ads: int
    n_users: int
    seed: int
    replace: bool = False  # delete existing data rows in the ingest transaction
    results: dict[str, Any] = field(default_factory=dict)
    on_version: Callable[[str], None] | None = None  # called as each version is ready (built or found)


@dataclass(frozen=True)
class DemoStep:
    name: str
    run: Callable[[DemoContext, Callable[[float], None]], dict[str, Any]]
    weight: float = 1.0  # share of the progress bar (roughly its share of the time)


@dataclass
class StepTiming:
    name: str
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # this process's CPU time (all threads): comparable on a busy machine


@dataclass
class DemoReport:
    workspace: str
    data_dir: str
    n_ads: int
    n_users: int
    seed: int
    steps: list[StepTiming]
    counts: dict[str, int]  # rows per table after the build
    seconds: float
    ingest: IngestReport | None = None
    text_backend: str = "torch"  # the one the workspace now records (core.store.settings)


def _generate(ctx: DemoContext, tick: Callable[[float], None]) -> dict[str, Any]:
    from core.demo.generate import (
        generate_dataset,  # imported here: the generator is only needed by `demo`
    )

    frames = generate_dataset(n_ads=ctx.n_ads, n_users=ctx.n_users, seed=ctx.seed,
                              progress=lambda f, _step: tick(f))
    ctx.results["frames"] = frames
    return {name: len(df) for name, df in frames.items()}


def _write_files(ctx: DemoContext, tick: Callable[[float], None]) -> dict[str, Any]:
    from core.demo.generate import write_dataset

    directory = ctx.settings.demo_data_dir
    directory.mkdir(parents=True, exist_ok=True)
    for t in TABLES:  # a previous demo in the other format would make "both formats" an error
        for ext in ("csv", "parquet"):
            (directory / f"{t.name}.{ext}").unlink(missing_ok=True)
    paths = write_dataset(ctx.results.pop("frames"), directory, "parquet")
    return {"directory": str(directory), "files": [Path(p).name for p in paths]}


def _ingest(ctx: DemoContext, tick: Callable[[float], None]) -> dict[str, Any]:
    report = ingest_directory(ctx.engine, ctx.settings.demo_data_dir, lambda f, step: tick(f),
                              replace=ctx.replace)
    ctx.results["ingest"] = report
    return {name: {"inserted": c.inserted, "updated": c.updated, "unchanged": c.unchanged}
            for name, c in report.tables.items()}


# Towers and versions the demo builds: the main tower, a context-free tower trained for fewer
# epochs (a model change to compare), an exact and an IVF version of the main tower (an index
# change) and an IVF version of the second tower.
DEMO_TOWERS: dict[str, dict[str, Any]] = {
    "tower": {},
    "tower-noctx": {"use_context": False, "epochs": 6},
}
DEMO_VERSIONS: tuple[tuple[str, str, str, str | None], ...] = (
    # name, factory ("IVF" gets a list count for the catalog size), tower, parent
    # (the dashboard opens on the newest version, so the main IVF version is built last)
    ("exact", "Flat", "tower", None),
    ("ivf-noctx", "IVF", "tower-noctx", "exact"),
    ("ivf", "IVF", "tower", "exact"),
)


DEMO_EMBED_BATCH = 64
"""Texts per forward pass when the demo embeds its catalog (texts are sorted by length first, so
little padding at any size). Measured on 1,024 of the demo's texts, one process, 2 shared cores,
best of the runs at load ~3: onnx-int8 345 / 403 / 305 / 250 texts/s at batch 32 / 64 / 128 / 256;
torch 197 at 64 and 116 at 256 (it was tuned to 256 on CPU-seconds before the demo used int8)."""


DEMO_TEXT_BACKEND = "onnx-int8"
"""The demo's text backend: twice torch's throughput on 2 cores at mean cosine ~0.992 to torch's
vectors (core.text.onnx_backend), and the demo's planted structure is recovered as well."""


def demo_text_backend(settings: Settings, *, had_demo: bool) -> Settings:
    """The settings the demo builds with, its text backend recorded in the workspace (before
    anything is embedded) so that every later command on it embeds in the same space.

    An explicit --text-backend or ADLENS_TEXT_BACKEND wins, then the backend the workspace already
    records; otherwise DEMO_TEXT_BACKEND, except in a workspace an earlier demo (or a tower) was
    built in before workspaces recorded their backend: it was embedded with torch, so it stays torch."""
    if settings.text_backend_from == "default":
        older = had_demo or (settings.towers_dir.is_dir() and any(settings.towers_dir.iterdir()))
        backend = settings.text_backend if older else DEMO_TEXT_BACKEND
    else:
        backend = settings.text_backend
    return record_text_backend(settings, backend)


def _embed(ctx: DemoContext, tick: Callable[[float], None]) -> dict[str, Any]:
    from core.store.catalog import load_catalog
    from core.text.embedding_cache import embed_catalog

    res = embed_catalog(ctx.settings, load_catalog(ctx.engine, with_impressions=False),
                        progress=lambda f, _step: tick(f), batch_size=DEMO_EMBED_BATCH)
    return {"encoded": res.n_encoded, "reused": res.n_reused, "model": res.model}


def _train(ctx: DemoContext, tick: Callable[[float], None]) -> dict[str, Any]:
    from core.tower.registry import list_towers
    from core.tower.train import train_tower

    have = {t["name"] for t in list_towers(ctx.settings, ctx.engine)}
    out: dict[str, Any] = {}
    for i, (name, kwargs) in enumerate(DEMO_TOWERS.items()):
        tick(i / len(DEMO_TOWERS))
        if name in have:
            out[name] = "exists"
            continue
        res = train_tower(ctx.settings, name, engine=ctx.engine, seed=ctx.seed,
                          progress=lambda f, _step, i=i: tick((i + f) / len(DEMO_TOWERS)), **kwargs)
        models = res.report.models if res.report is not None else {}
        mine = models.get(name) or models.get("tower") or {}
        out[name] = {"train_s": round(res.train_seconds, 1), "recall@100": mine.get("recall@100"),
                     "baselines_recall@100": {m: v.get("recall@100") for m, v in models.items() if v is not mine}}
    return out


def demo_source_params(n_ads: int) -> dict[str, dict[str, Any]]:
    """Source parameters of the demo's versions: EASE's limit covers the catalog (up to EASE_MAX_ADS),
    so the default demo builds every source (10k ads: one ~40 CPU-s solve, 191 MB per version)."""
    from core.sources.ease import EASE_MAX_ADS, EASE_SOURCE_MAX_ADS

    return {"ease": {"max_ads": max(EASE_SOURCE_MAX_ADS, min(n_ads, EASE_MAX_ADS))}}


def shared_sources_builder(params: dict | None = None):
    """A version build hook like core.sources.registry.sources_builder, except that the sources
    are built once per (tower split, ads) and saved into every version sharing them: the demo's
    versions differ in tower and index, not in the training side the sources learn from."""
    from core.sources.registry import build_context, build_sources, save_sources, tower_split

    built_by_key: dict[str, tuple] = {}

    def sources_artifact_builder(ctx, directory: Path) -> dict:
        split = tower_split(Path(directory) / "encoder")
        key = sha256_bytes(json.dumps(split.to_dict() if split else None, sort_keys=True).encode()
                           + "\x1f".join(np.asarray(ctx.ad_ids, dtype=str).tolist()).encode())
        seconds: dict[str, float] = {}
        if key not in built_by_key:
            sctx = build_context(ctx.catalog, ctx.ad_ids, split)
            skipped: dict[str, str] = {}
            built = build_sources(sctx, params=params, seconds=seconds, skipped=skipped)
            built_by_key[key] = (sctx.split, built, skipped)
        split_d, built, skipped = built_by_key[key]  # reused: build_s 0 in this version's manifest
        return {"sources": save_sources(built, directory, split_d, seconds, skipped)}

    return sources_artifact_builder


def _build(ctx: DemoContext, tick: Callable[[float], None]) -> dict[str, Any]:
    from core.index.ann import suggest_nlist
    from core.index.versions import build_version, list_versions

    have = {v["name"] for v in list_versions(ctx.settings, engine=ctx.engine)}
    n_ads = table_counts(ctx.engine)["ads"]
    sources = shared_sources_builder(demo_source_params(n_ads))
    out: dict[str, Any] = {}
    for i, (name, factory, tower, parent) in enumerate(DEMO_VERSIONS):
        tick(i / len(DEMO_VERSIONS))
        if name in have:
            out[name] = "exists"
            _ready(ctx, name)
            continue
        if factory == "IVF":
            factory = f"IVF{suggest_nlist(n_ads)},Flat"
        v = build_version(ctx.settings, name, factory, tower=tower, parent=parent, engine=ctx.engine,
                          with_map=True, extra_builders=(sources,),
                          progress=lambda f, _step, i=i: tick((i + f) / len(DEMO_VERSIONS)))
        built = (v.manifest.get("sources") or {}).get("built") or {}
        out[name] = {"factory": factory, "recall": v.manifest.recall, "build_s": v.manifest.total_build_s,
                     "sources": sorted(built), "map_reused": bool((v.manifest.get("map") or {}).get("fit_reused"))}
        _ready(ctx, name)
    return out


def _ready(ctx: DemoContext, name: str) -> None:
    """Tell `build_demo`'s caller that version `name` is registered and servable (`adlens demo
    --serve` starts the dashboard on the first, while the others build)."""
    if ctx.on_version is not None:
        ctx.on_version(name)


def _warm(ctx: DemoContext, tick: Callable[[float], None]) -> dict[str, Any]:
    """Open each version's engine once, so the workspace's cache holds the impressions snapshot and
    every version's fitted pCTR model (core/funnel/pctr_cache.py): the dashboard's first view after
    `make run` reads them instead of building them (2-3 s of each page's cold first view at 10k ads);
    then the Health and Parity reports of the version it opens on (core.demo.warm_reports)."""
    from core.demo.warm_reports import warm_reports
    from core.funnel.engine import open_engine

    out: dict[str, Any] = {}
    engines = {}
    for i, (name, *_rest) in enumerate(DEMO_VERSIONS):
        tick(0.3 * i / len(DEMO_VERSIONS))
        t = time.perf_counter()
        engines[name] = open_engine(ctx.settings, name)
        out[name] = round(time.perf_counter() - t, 2)
    out["reports"] = warm_reports(ctx.settings, ctx.engine, engines, progress=lambda f, _s: tick(0.3 + 0.7 * f))
    return out


def _production_logs(ctx: DemoContext, tick: Callable[[float], None]) -> dict[str, Any]:
    """The "production" funnel's files and logged traces (core.demo.production), imported."""
    from core.demo.production import build_production_logs

    return build_production_logs(ctx.settings, ctx.engine, replace=ctx.replace,
                                 progress=lambda f, _step: tick(f))


DEMO_STEPS: list[DemoStep] = [
    DemoStep("generate", _generate, weight=0.05),
    DemoStep("write files", _write_files, weight=0.01),
    DemoStep("ingest", _ingest, weight=0.08),
    DemoStep("embed", _embed, weight=0.25),
    DemoStep("train towers", _train, weight=0.2),
    DemoStep("build versions", _build, weight=0.38),
    DemoStep("production logs", _production_logs, weight=0.04),
    DemoStep("warm caches", _warm, weight=0.03),
]


def _marker_path(settings: Settings) -> Path:
    return settings.workspace / MARKER


def read_marker(settings: Settings) -> dict[str, Any] | None:
    """The last demo build's parameters and status ("started" or "complete"), if any."""
    path = _marker_path(settings)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_marker(settings: Settings, data: dict[str, Any]) -> None:
    atomic_write_json(_marker_path(settings), data)


@dataclass
class WorkspaceState:
    """What `adlens demo --if-missing` needs to know about a workspace."""

    n_ads: int  # ads in the database
    marker: dict[str, Any] | None  # the last demo build's parameters and status

    @property
    def has_demo(self) -> bool:
        """A finished build that ran every step of today's DEMO_STEPS (a workspace built before
        a step was added counts as unfinished, so `--if-missing` completes it)."""
        m = self.marker or {}
        return (self.n_ads > 0 and m.get("status") == "complete"
                and all(s.name in m.get("steps", {}) for s in DEMO_STEPS))

    @property
    def interrupted_demo(self) -> bool:
        return bool(self.marker) and not self.has_demo

    @property
    def has_other_data(self) -> bool:
        """Ads in the database that no demo build put there (an import)."""
        return self.n_ads > 0 and not self.marker


def workspace_state(settings: Settings) -> WorkspaceState:
    engine = make_engine(settings.db_url)
    try:
        return WorkspaceState(table_counts(engine)["ads"], read_marker(settings))
    finally:
        engine.dispose()


def workspace_has_demo(settings: Settings) -> bool:
    """True when a demo build finished in this workspace and its database holds ads."""
    return workspace_state(settings).has_demo


def build_demo(settings: Settings, n_ads: int = 10_000, n_users: int = 5_000, seed: int = 0,
               progress: Progress | None = None, *, replace: bool = False,
               on_version: Callable[[str], None] | None = None) -> DemoReport:
    """Run every step of DEMO_STEPS and report their timings and the final table counts;
    `on_version(name)` is called as each version becomes servable (registered, in the database).

    Refuses (AdLensError) when the database already holds data that is not a demo with the same
    parameters, unless `replace=True` (the ingest then deletes every data row first, in its one
    transaction). Re-running with the same parameters is idempotent."""
    if n_ads < 1 or n_users < 1:
        raise AdLensError(f"--ads and --users must be at least 1 (got {n_ads}, {n_users})")
    params = {"n_ads": n_ads, "n_users": n_users, "seed": seed}
    engine = make_engine(settings.db_url)
    try:
        counts = table_counts(engine)
        marker = read_marker(settings) or {}
        same = {k: marker.get(k) for k in params} == params
        if counts["ads"] and not same and not replace:
            raise AdLensError(
                f"the database already holds {counts['ads']:,} ads that are not a demo built with "
                f"--ads {n_ads} --users {n_users} --seed {seed}. Fix: use a fresh --workspace (or "
                "ADLENS_DB_URL), or pass --replace to delete the existing data first."
            )
        settings = demo_text_backend(settings, had_demo=bool(marker))
        _write_marker(settings, {**params, "status": "started"})
        ctx = DemoContext(settings, engine, n_ads, n_users, seed, replace=replace, on_version=on_version)
        report_progress = progress or (lambda frac, step: None)
        total = sum(s.weight for s in DEMO_STEPS) or 1.0
        steps: list[StepTiming] = []
        done = 0.0
        t0 = time.perf_counter()
        for step in DEMO_STEPS:
            start = done

            def tick(f: float, name: str = step.name, start: float = start, w: float = step.weight) -> None:
                report_progress(min(1.0, (start + w * max(0.0, min(1.0, f))) / total), name)

            tick(0.0)
            ts, cs = time.perf_counter(), time.process_time()
            detail = step.run(ctx, tick) or {}
            steps.append(StepTiming(step.name, time.perf_counter() - ts, detail, time.process_time() - cs))
            done += step.weight
        report_progress(1.0, "done")
        counts = table_counts(engine)
        _write_marker(settings, {**params, "status": "complete", "counts": counts,
                                 "steps": {s.name: round(s.seconds, 3) for s in steps}})
        return DemoReport(str(settings.workspace), str(settings.demo_data_dir), n_ads, n_users, seed, steps,
                          counts, time.perf_counter() - t0, ctx.results.get("ingest"), settings.text_backend)
    finally:
        engine.dispose()
