"""Build, save and load a version's candidate sources.

`sources_artifact_builder` is a version artifact builder (core.index.versions `extra_builders`):
it builds every source in BUILT_SOURCES from the training side of the version's tower split,
writes each into `sources/<name>/` inside the version's staging folder (checksummed with the
version's other files) and returns the manifest's "sources" entry: per source its parameters,
files and build statistics. `load_sources(version, features)` reads them back; a version built
before sources existed has none in its manifest and gets two_tower only.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.common.errors import ArtifactError
from core.data.features import FeatureStore
from core.data.request import requests_from_impressions
from core.sources.base import (
    SOURCE_ORDER,
    CandidateSource,
    SourceBuildContext,
    SourceRuntime,
)
from core.sources.co_engagement import CoEngagementSource
from core.sources.ease import EaseSource
from core.sources.popular import PopularSource
from core.sources.targeting import TargetingSource
from core.sources.two_tower import TwoTowerSource
from core.tower.split import Split

SOURCE_TYPES: dict[str, type[CandidateSource]] = {
    c.name: c for c in (TwoTowerSource, CoEngagementSource, PopularSource, TargetingSource, EaseSource)}
assert tuple(SOURCE_TYPES) == SOURCE_ORDER
BUILT_SOURCES = ("co_engagement", "popular_in_context", "targeting", "ease")
"""Sources with artifacts (two_tower is the version's own index); one whose `skip_reason` is set
for the catalog (ease above its max_ads) is skipped, the reason kept in the manifest."""
SOURCES_DIR = "sources"
log = logging.getLogger(__name__)


def tower_split(encoder_dir: Path) -> Split | None:
    """The split the version's tower was trained on (its metrics.json), or None (no learned tower,
    or a tower trained on every impression)."""
    path = Path(encoder_dir) / "metrics.json"
    if not path.is_file():
        return None
    try:
        d = (json.loads(path.read_text()).get("training") or {}).get("split")
        # "none" (a final tower trained on every impression) holds nothing out
        return Split.from_dict(d) if isinstance(d, dict) and d.get("kind") not in (None, "none") else None
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: its training split is unreadable ({exc})") from exc


def build_context(catalog, ad_ids, split: Split | None) -> SourceBuildContext:
    """The sources' inputs: the training side of `split` (all impressions when None)."""
    imps = catalog.impressions
    if split is not None and len(imps):
        imps = imps[~split.test_side(imps)]
    imps = imps.reset_index(drop=True)
    reqs = requests_from_impressions(imps, catalog.users) if len(imps) else pd.DataFrame(
        columns=["user_id", "community_id", "placement", "device", "country", "ts"])
    latest = pd.Timestamp(catalog.impressions["ts"].max()).to_pydatetime() if len(catalog.impressions) \
        else datetime(1970, 1, 1)
    return SourceBuildContext(ad_ids, catalog, imps, reqs, latest, split.to_dict() if split else None)


def build_sources(sctx: SourceBuildContext, names=BUILT_SOURCES, params: dict | None = None,
                  seconds: dict | None = None, skipped: dict | None = None) -> dict[str, CandidateSource]:
    """Build the named sources (in memory) with optional per-source parameter overrides; a source
    that cannot be built for this catalog is left out, its reason put in `skipped` and logged."""
    params = params or {}
    out = {}
    for n in names:
        reason = SOURCE_TYPES[n].skip_reason(sctx, **params.get(n, {}))
        if reason:
            log.warning("%s", reason)
            if skipped is not None:
                skipped[n] = reason
            continue
        t = time.perf_counter()
        out[n] = SOURCE_TYPES[n].build(sctx, **params.get(n, {}))
        if seconds is not None:
            seconds[n] = time.perf_counter() - t
    return out


def save_sources(sources: dict[str, CandidateSource], directory: Path, split: dict | None,
                 seconds: dict | None = None, skipped: dict | None = None) -> dict:
    """Write each source under `directory/sources/<name>/`; return the manifest entry."""
    out = {"split": split, "built": {}, "skipped": dict(skipped or {})}
    for name, src in sources.items():
        folder = Path(directory) / SOURCES_DIR / name
        folder.mkdir(parents=True, exist_ok=True)
        src.save(folder)
        out["built"][name] = {"params": src.params, "files": [f"{SOURCES_DIR}/{name}/{f}" for f in src.files],
                              "stats": src.stats(), "build_s": round((seconds or {}).get(name, 0.0), 3)}
    return out


def sources_builder(params: dict | None = None):
    """A version build hook (core.index.versions.BuildContext -> files + manifest fields) building
    every source with `params` ({source: {param: value}}) over the defaults."""
    def build(ctx, directory: Path) -> dict:
        split = tower_split(Path(directory) / "encoder")
        sctx = build_context(ctx.catalog, ctx.ad_ids, split)
        seconds, skipped = {}, {}
        built = build_sources(sctx, params=params, seconds=seconds, skipped=skipped)
        return {"sources": save_sources(built, directory, sctx.split, seconds, skipped)}

    return build


sources_artifact_builder = sources_builder()
"""The build hook with every source at its defaults."""


def source_names(manifest) -> tuple[str, ...]:
    """The sources a version with this manifest serves, in SOURCE_ORDER (two_tower always first):
    what `load_sources` loads, read without loading anything."""
    built = ((manifest or {}).get("sources") or {}).get("built") or {}
    return ("two_tower", *(name for name in SOURCE_ORDER if name in built and name != "two_tower"))


def load_sources(version, features: FeatureStore) -> dict[str, CandidateSource]:
    """The version's sources bound to `features`, in SOURCE_ORDER (two_tower always first)."""
    runtime = SourceRuntime(version, features)
    n = len(version.ad_ids)
    out: dict[str, CandidateSource] = {"two_tower": TwoTowerSource({}, n).bind(runtime)}
    manifest = getattr(version, "manifest", None) or {}
    built = (manifest.get("sources") or {}).get("built") or {}
    for name in source_names(manifest):
        if name != "two_tower":
            if name not in SOURCE_TYPES:
                raise ArtifactError(f"{version.path}: unknown source {name!r} in the manifest")
            folder = Path(version.path) / SOURCES_DIR / name
            out[name] = SOURCE_TYPES[name].load(folder, built[name].get("params") or {}, n).bind(runtime)
    return out
