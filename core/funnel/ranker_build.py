"""Building a version with the team's own early ranker (core.funnel.rankers).

`ranker_choice(...)` turns `build-index --ranker model.onnx --ranker-signature sig.json` (or
`--ranker NAME`, an `adlens.rankers` entry point) or a funnel definition's `[ranker]` table into a
`RankerChoice` and opens it at once, so a malformed signature, a model that does not match it or a
missing plugin fails before anything is built. `ranker_builder(choice)` is the build-time artifact
builder: it checks the features against the version's fields and sources, runs the ranker on the
candidates of a seeded sample of the catalog's logged requests (finite values; a probability in
[0, 1]), copies the model and signature into `<version>/ranker/` (checksummed with every file)
and records the "ranker" manifest section that `version_ranker` reads back. Any failure raises
inside the build's staging folder, so nothing is published.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.common.errors import AdLensError
from core.data.request import Request, parse_request_time, sample_requests
from core.funnel.rankers import (
    MODEL_FILE,
    RANKER_DIR,
    SIGNATURE_FILE,
    EarlyRanker,
    OnnxRanker,
    PluginRanker,
    read_signature,
)
from core.sources.base import SOURCE_ORDER
from core.store.artifacts import sha256_file

SAMPLE_REQUESTS = 32
TABLE_KEYS = frozenset({"onnx", "signature", "plugin", "params"})


@dataclass(frozen=True)
class RankerChoice:
    """An ONNX file with its signature, or an entry-point name with its params."""

    onnx: Path | None = None
    signature: Path | None = None
    plugin: str | None = None
    params: dict = field(default_factory=dict)

    def open(self) -> EarlyRanker:
        if self.plugin is not None:
            return PluginRanker(self.plugin, self.params)
        return OnnxRanker(self.onnx, read_signature(self.signature))


def ranker_choice(ranker: str | None, signature: Path | str | None, table: dict | None = None,
                  base: Path | None = None, where: str = "funnel.toml") -> RankerChoice | None:
    """The build's ranker: the flags (`ranker` a .onnx file or an entry-point name) win over a
    funnel definition's `[ranker]` table (paths relative to `base`, the TOML file's folder);
    None when neither names one."""
    if ranker:
        looks_onnx = ranker.endswith(".onnx") or Path(ranker).is_file()
        if looks_onnx and signature is None:
            raise AdLensError(f"--ranker {ranker}: an ONNX ranker needs --ranker-signature sig.json "
                              "(data/README.md, 'Your own early ranker')")
        if not looks_onnx and signature is not None:
            raise AdLensError(f"--ranker {ranker} names an entry-point ranker (no such .onnx file); "
                              "--ranker-signature goes with an ONNX model")
        return RankerChoice(Path(ranker), Path(signature)) if looks_onnx else RankerChoice(plugin=ranker)
    if signature is not None:
        raise AdLensError("--ranker-signature needs --ranker model.onnx")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise AdLensError(f"{where}: [ranker] must be a table")
    bad = sorted(set(table) - TABLE_KEYS)
    if bad:
        raise AdLensError(f"{where}: [ranker] has unknown key(s) {', '.join(bad)}; allowed: {', '.join(sorted(TABLE_KEYS))}")
    base = Path(base or ".")
    if "plugin" in table:
        if "onnx" in table or "signature" in table:
            raise AdLensError(f"{where}: [ranker] takes plugin = \"NAME\" or onnx = \"FILE\" + signature = \"FILE\", not both")
        params = table.get("params", {})
        if not isinstance(params, dict):
            raise AdLensError(f"{where}: [ranker] params must be a table, e.g. params = {{ weight = 2.0 }}")
        return RankerChoice(plugin=str(table["plugin"]), params=params)
    if not isinstance(table.get("onnx"), str) or not isinstance(table.get("signature"), str):
        raise AdLensError(f"{where}: [ranker] needs onnx = \"ranker.onnx\" and signature = \"ranker.json\" "
                          "(relative to the TOML file), or plugin = \"NAME\"")
    return RankerChoice(base / table["onnx"], base / table["signature"])


def precheck_features(settings, ranker: EarlyRanker, sources: tuple[str, ...]) -> None:
    """The ranker's feature names against the workspace's fields and the sources a build may
    have, before the (possibly long) build starts; the builder checks again against the version."""
    from core.funnel.ad_facts import AdFacts
    from core.funnel.fields import FieldTable
    from core.funnel.ranker_features import RankerInputs
    from core.store.catalog import load_catalog
    from core.store.db import make_engine

    db = make_engine(settings.db_url)
    try:
        catalog = load_catalog(db, with_impressions=False)
    finally:
        db.dispose()
    fields = FieldTable.build(AdFacts.build(catalog, catalog.ads["ad_id"].to_numpy(dtype=object)), catalog)
    RankerInputs(ranker.features, fields, sources, where=f"ranker {ranker.describe()}")


def _sample_requests(catalog, n: int, seed: int) -> list[Request]:
    frame = sample_requests(catalog.impressions, catalog.users, n, seed=seed)
    out = []
    for r in frame.to_dict("records"):
        comm = r["community_id"]
        out.append(Request(str(r["user_id"]), None if comm is None or comm != comm else str(comm),
                           str(r["placement"]), str(r["device"]), str(r["country"]),
                           parse_request_time(r["ts"])))
    return out


def check_on_sample(engine, n: int = SAMPLE_REQUESTS, seed: int = 0) -> dict:
    """Run `engine` (with its ranker) on `n` sampled logged requests; AdLensError names the
    request when the ranker's output is wrong (core.funnel.rankers.check_output)."""
    reqs = _sample_requests(engine.catalog, n, seed) or [engine.default_request(u) for u in engine.user_ids[:n]]
    lo, hi, cands = np.inf, -np.inf, 0
    for req in reqs:
        try:
            t = engine.run(req)
        except AdLensError as exc:
            raise AdLensError(f"checking the ranker on logged request (user {req.user_id}, {req.ts}): {exc}") from exc
        raw = t.candidates["ranker_score"].to_numpy(np.float64) if "ranker_score" in t.candidates else np.zeros(0)
        if len(raw):
            lo, hi, cands = min(lo, raw.min()), max(hi, raw.max()), cands + len(raw)
    if not cands:
        raise AdLensError("cannot check the ranker: no candidates on the catalog's logged requests "
                          "(the catalog needs impressions)")
    return {"n_requests": len(reqs), "n_candidates": int(cands), "min": float(lo), "max": float(hi)}


def _staged_version(ctx, tmp: Path):
    from core.index.versions import Version

    return Version(name=ctx.name, path=tmp, manifest=ctx.manifest, checksum="staging", ad_ids=ctx.ad_ids,
                   ad_text_vectors=ctx.ad_text_vectors, ad_vectors=ctx.ad_vectors, index=ctx.index,
                   encoder=ctx.encoder, search_params=dict(ctx.search_params))


def ranker_builder(choice: RankerChoice, settings=None, sources: tuple[str, ...] = SOURCE_ORDER):
    """The build-time artifact builder for `choice` (see the module docstring); the ranker is
    opened now (and with `settings` its feature names checked against the workspace's fields and
    `sources`), so a bad file, plugin or feature fails before anything is built."""
    ranker = choice.open()
    if settings is not None:
        precheck_features(settings, ranker, tuple(sources))

    def ranker_artifact_builder(ctx, tmp: Path) -> dict:
        from core.funnel.engine import FunnelEngine

        engine = FunnelEngine(_staged_version(ctx, tmp), ctx.catalog, calibration_samples=0, ranker=ranker)
        sample = check_on_sample(engine)
        section = {"kind": ranker.kind, "output": ranker.output, "features": list(ranker.features),
                   "fingerprint": ranker.fingerprint, "describe": ranker.describe(), "sample": sample}
        if isinstance(ranker, OnnxRanker):
            folder = tmp / RANKER_DIR
            folder.mkdir()
            shutil.copyfile(ranker.model_path, folder / MODEL_FILE)
            (folder / SIGNATURE_FILE).write_text(json.dumps(ranker.signature, indent=2), encoding="utf-8")
            section.update(file=f"{RANKER_DIR}/{MODEL_FILE}", signature=f"{RANKER_DIR}/{SIGNATURE_FILE}",
                           source=ranker.name, sha256=sha256_file(folder / MODEL_FILE),
                           signature_sha256=sha256_file(folder / SIGNATURE_FILE),
                           output_name=ranker.out_name)
        else:
            section.update(plugin=ranker.name, entry_point=ranker.source, params=ranker.params)
        return {"ranker": section}
    return ranker_artifact_builder
