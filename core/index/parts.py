"""What a version is built from: its ad side (AdLens's text embeddings, or imported ad vectors
with their metric) and its query side (a trained tower, the history mean, or an imported one: an
ONNX model, a plugin, precomputed request vectors), with the checks that they fit together
(text-model fingerprints, one vector space). Used by core.index.versions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from core.common.errors import AdLensError, ArtifactError
from core.common.progress import Progress
from core.store.catalog import Catalog
from core.store.settings import Settings
from core.text.embedding_cache import embed_catalog
from core.text.onnx_backend import split_model_label
from core.tower.query_encoder import (
    HistoryMeanEncoder,
    QueryEncoder,
    UnitQueries,
    l2_normalize,
)
from core.tower.registry import load_query_encoder, resolve_tower
from core.vectors.ad_vectors import check_coverage, coverage, load_ad_vectors
from core.vectors.query_side import QuerySpec, resolve_query_encoder

FINGERPRINT_KEYS = ("embedding_fingerprint", "model_fingerprint")


def recorded_fingerprints(encoder_dir: Path | None, *configs: dict) -> dict[str, str | None]:
    """Text-model fingerprints a trained encoder records (its config, its registry row's config,
    or the metrics.json the tower trainer writes next to it), each with the text model's label
    (e.g. "default (onnx-int8)": core.text.onnx_backend.model_label) where one is recorded."""
    configs = list(configs)
    if encoder_dir is not None and (encoder_dir / "metrics.json").is_file():
        try:
            configs.append(json.loads((encoder_dir / "metrics.json").read_text()).get("training") or {})
        except ValueError:
            pass
    out: dict[str, str | None] = {}

    def add(fp, label) -> None:
        if isinstance(fp, str):
            out[fp] = out.get(fp) or (label if isinstance(label, str) else None)

    for cfg in configs:
        for key in FINGERPRINT_KEYS:
            add(cfg.get(key), cfg.get("embedding_model"))
        emb = cfg.get("embeddings")
        if isinstance(emb, dict):
            add(emb.get("fingerprint"), emb.get("model"))
    return out


def check_fingerprint(recorded: dict[str, str | None], fingerprint: str, *, where: str,
                      model: str | None = None) -> None:
    """A learned tower was trained on one text model's embeddings; the ads must use the same.
    `model` labels the ads' embeddings; the error names both sides' model and text backend and the
    flag that fixes it."""
    for fp, label in recorded.items():
        if fp == fingerprint:
            continue
        theirs = f"{label} ({fp[:12]}…)" if label else f"{fp[:12]}…"
        ours = f"{model} ({fingerprint[:12]}…)" if model else f"{fingerprint[:12]}…"
        fixes = []
        if label:
            t_model, t_backend = split_model_label(label)
            o_model, o_backend = split_model_label(model) if model else (None, None)
            if o_backend != t_backend:
                fixes.append(f"--text-backend {t_backend} (or ADLENS_TEXT_BACKEND, or \"text_backend\" in the "
                             "workspace's workspace.json)")
            if o_model != t_model:
                fixes.append(f"--model {t_model}")
        fix = " and ".join(fixes) if fixes else "the tower's --model and --text-backend"
        raise ArtifactError(
            f"{where}: the query encoder was trained on the ad embeddings of text model {theirs}, but these ad "
            f"embeddings come from {ours}; embed with the tower's model and backend: {fix}"
        )


@dataclass
class AdSide:
    """The ads of a build: ids, the per-ad vectors features use (text embeddings, or the imported
    vectors), the vectors indexed, and what the manifest says about them."""

    ad_ids: np.ndarray
    item_vectors: np.ndarray
    embedding: dict
    metric: str  # cosine (AdLens's own: normalised inner product), ip or l2
    imported: dict | None = None
    ad_vectors: np.ndarray | None = None  # set once the query side is known


@dataclass
class QuerySide:
    encoder: QueryEncoder
    tower_dir: Path | None = None
    tower_info: dict = field(default_factory=dict)
    description: dict = field(default_factory=dict)


def text_ad_side(settings: Settings, catalog: Catalog, progress: Progress | None, text_encoder) -> AdSide:
    emb = embed_catalog(settings, catalog, progress=progress, encoder=text_encoder)
    return AdSide(emb.ad_ids, emb.vectors, {"model": emb.model, "fingerprint": emb.fingerprint,
                                             "n_encoded": emb.n_encoded, "n_reused": emb.n_reused}, "cosine")


def imported_ad_side(settings: Settings, catalog: Catalog, name: str, allow_partial: bool) -> AdSide:
    """Imported ad vectors restricted to the catalog's ads (refused when partial unless allowed at
    import or build time)."""
    vs, ids, vectors = load_ad_vectors(settings, name)
    cov = coverage(catalog.ads["ad_id"], ids)
    check_coverage(cov, allow_partial or bool(vs.manifest.get("allow_partial")), f"imported ad vectors {name!r}")
    keep = np.isin(ids.astype(str), catalog.ads["ad_id"].to_numpy(dtype=str))
    ids, vectors = ids[keep], vectors[keep]
    metric = vs.manifest["metric"]
    sha = vs.manifest["source"]["sha256"]
    imported = {"name": name, "source": vs.manifest["source"], "metric": metric, "dim": vs.dim,
                "n_file": vs.manifest["n"], "n_used": len(ids), "coverage": cov}
    side = AdSide(ids, vectors, {"model": f"imported:{name}", "fingerprint": sha, "n_encoded": 0,
                                  "n_reused": len(ids)}, metric, imported)
    side.ad_vectors = l2_normalize(vectors) if metric == "cosine" else vectors
    return side


def query_side(settings: Settings, engine: Engine, ads: AdSide, tower: str | None, query: QuerySpec) -> QuerySide:
    """The version's query encoder: a tower, an imported one, or the history mean."""
    if tower and query:
        raise AdLensError("give either --tower or an imported query side (--query-encoder / --request-vectors)")
    if tower:
        if ads.imported:
            raise AdLensError(f"tower {tower!r} was trained on AdLens's text embeddings and cannot encode for "
                              f"imported ad vectors {ads.imported['name']!r}; use --query-encoder or --request-vectors")
        tower_dir, tower_info = resolve_tower(settings, engine, tower)
        encoder = load_query_encoder(tower_dir)
        check_fingerprint(recorded_fingerprints(tower_dir, encoder.config(), tower_info.get("config", {})),
                           ads.embedding["fingerprint"], where=f"tower {tower!r}", model=ads.embedding.get("model"))
        return QuerySide(encoder, tower_dir, tower_info, {"source": "tower", "tower": tower})
    resolved = resolve_query_encoder(settings, query)
    if resolved is None:
        return QuerySide(HistoryMeanEncoder(), description={"source": "history_mean"})
    encoder, description = resolved
    return QuerySide(UnitQueries(encoder) if ads.metric == "cosine" else encoder, description=description)


def check_dims(queries: np.ndarray, ads: AdSide, side: QuerySide) -> None:
    """The query side must produce vectors in the ad vectors' space."""
    d_ads, d_q = ads.ad_vectors.shape[1], queries.shape[1]
    if d_q != d_ads:
        what = side.description.get("source", "query encoder")
        ad_what = f"imported ad vectors {ads.imported['name']!r}" if ads.imported else f"ad embeddings ({ads.embedding['model']})"
        raise AdLensError(f"the query side ({what}) gives {d_q}-dimensional vectors but the {ad_what} are "
                          f"{d_ads}-dimensional; both towers must share one space (check the signature's "
                          "output dim or the request vectors file)")


def probe_requests(catalog: Catalog) -> pd.DataFrame:
    """One request to check the query side's dimension even without an impression log."""
    user = catalog.users["user_id"].iloc[0] if len(catalog.users) else "probe"
    return pd.DataFrame([{"user_id": user, "community_id": None, "placement": "home_feed", "device": "unknown",
                          "country": "unknown", "ts": pd.Timestamp.now().floor("s")}])
