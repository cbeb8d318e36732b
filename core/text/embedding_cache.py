"""Embedding cache: ad text vectors keyed by (model fingerprint, sha256 of the composed text).

Layout: ``<workspace>/cache/embeddings/<model fingerprint>/`` (the fingerprint includes the text
backend for the ONNX ones, so vectors of different backends never share an entry)

- ``model.json``: the model name, folder and dimension (informational)
- ``shard-<stamp>.npy``: (n, dim) float32 vectors (np.save, no pickle)
- ``shard-<stamp>.keys.parquet``: one ``text_sha256`` per row of the matching .npy

Each `embed_catalog` run that encodes something appends one shard (vectors first, keys last,
each written atomically, so a shard counts only once complete). Many shards are compacted into
one. A folder belongs to exactly one model fingerprint, so entries of another model are never
read. The cache is derived data: a damaged shard is skipped with a warning and re-encoded.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.common.errors import AdLensError, ArtifactError
from core.common.progress import Progress, report
from core.store.artifacts import (
    atomic_write_json,
    load_npy,
    load_parquet,
    save_npy,
    save_parquet,
)
from core.store.catalog import Catalog
from core.store.settings import Settings
from core.store.readonly import folder_read_only
from core.text.embeddings import (
    AdEncoder,
    compose_ad_text,
    model_fingerprint,
    text_hash,
)
from core.text.onnx_backend import backend_fingerprint, model_label

KEY_COLUMN = "text_sha256"
MAX_SHARDS = 8


class EmbeddingCache:
    """The cache folder of one model fingerprint."""

    def __init__(self, cache_dir: Path, fingerprint: str):
        if not fingerprint or any(c not in "0123456789abcdef" for c in fingerprint):
            raise ValueError(f"model fingerprint must be a hex digest; got {fingerprint!r}")
        self.fingerprint = fingerprint
        self.dir = Path(cache_dir) / "embeddings" / fingerprint

    def _shards(self) -> list[tuple[Path, Path]]:
        if not self.dir.is_dir():
            return []
        out = []
        for keys in sorted(self.dir.glob("shard-*.keys.parquet")):
            out.append((keys, keys.with_name(keys.name.replace(".keys.parquet", ".npy"))))
        return out

    def load(self) -> tuple[pd.Index, np.ndarray | None]:
        """All cached (keys, vectors); duplicate keys keep their first vector."""
        keys: list[np.ndarray] = []
        vecs: list[np.ndarray] = []
        dim = None
        for kpath, vpath in self._shards():
            try:
                k = load_parquet(kpath)[KEY_COLUMN].to_numpy(dtype=object)
                v = load_npy(vpath)
            except (ArtifactError, KeyError) as exc:
                warnings.warn(f"embedding cache: skipping damaged shard {kpath.name}: {exc}", stacklevel=2)
                continue
            if v.ndim != 2 or len(v) != len(k) or (dim is not None and v.shape[1] != dim):
                warnings.warn(f"embedding cache: skipping inconsistent shard {vpath.name} {v.shape}", stacklevel=2)
                continue
            dim = v.shape[1]
            keys.append(k)
            vecs.append(v.astype(np.float32, copy=False))
        if not keys:
            return pd.Index([], dtype=object), None
        all_keys = np.concatenate(keys)
        all_vecs = np.concatenate(vecs)
        first = ~pd.Index(all_keys).duplicated()
        return pd.Index(all_keys[first]), all_vecs[first]

    def add(self, keys: list[str], vectors: np.ndarray, *, model: str, dim: int) -> None:
        """Append one shard (vectors then keys, each atomically); compact when there are many."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), dim):
            raise ValueError(f"cache add: {len(keys)} keys but vectors of shape {vectors.shape} (dim {dim})")
        if not len(keys) or folder_read_only(self.dir):
            return  # a read-only workspace keeps the cache it has; the caller uses the vectors in memory
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "model.json"
        if not meta.exists():
            atomic_write_json(meta, {"model": model, "fingerprint": self.fingerprint, "dim": dim})
        self._write_shard(np.asarray(keys, dtype=object), vectors)
        if len(self._shards()) > MAX_SHARDS:
            self.compact()

    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        stem = f"shard-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        save_npy(self.dir / f"{stem}.npy", vectors)
        save_parquet(self.dir / f"{stem}.keys.parquet", pd.DataFrame({KEY_COLUMN: keys.astype(str)}))

    def compact(self) -> None:
        """Merge every shard into one (written before the old ones are removed)."""
        old = self._shards()
        keys, vecs = self.load()
        if vecs is None:
            return
        self._write_shard(keys.to_numpy(dtype=object), vecs)
        for kpath, vpath in old:
            kpath.unlink(missing_ok=True)  # keys first: a shard without keys is ignored
            vpath.unlink(missing_ok=True)


def load_encoder(settings: Settings) -> AdEncoder:
    """The configured text model with the configured backend (ONNX files cached in the workspace)."""
    if settings.text_backend == "torch":
        return AdEncoder.load(settings.embedding_model)
    return AdEncoder.load(settings.embedding_model, settings.text_backend, settings.cache_dir)


@dataclass
class EmbedResult:
    """Text vectors for every ad of a catalog, aligned with `ad_ids` (sorted as Catalog.ads)."""

    ad_ids: np.ndarray
    vectors: np.ndarray
    n_encoded: int  # ads whose text was not in the cache (new or changed)
    n_reused: int  # ads served from the cache
    fingerprint: str
    model: str
    seconds: float
    n_texts_encoded: int = 0  # distinct texts actually sent to the model


EncodeRunner = Callable[[list[str], list[str], "EmbeddingCache", object], np.ndarray]
"""(keys, texts, cache, encoder) -> vectors aligned with keys, already added to `cache`."""


def embed_catalog(settings: Settings, catalog: Catalog, *, progress: Progress | None = None,
                  encoder: AdEncoder | None = None, batch_size: int = 64,
                  runner: EncodeRunner | None = None) -> EmbedResult:
    """Embed every ad of `catalog` with the configured model, encoding only texts not cached.

    `encoder` overrides the model (any object with name, fingerprint, dim and
    encode(texts, batch_size=, progress=); tests pass a fake). Without one the model is loaded
    only if something must be encoded. `progress(fraction, step)` (core.common.progress) follows
    the encoding and ends at 1.0. `runner` encodes the missing texts elsewhere
    (core/text/ray_embed.py: a Ray Data actor pool, which reports its own progress) and writes
    them into the cache as it goes, so an interrupted run resumes."""
    t0 = time.perf_counter()
    report(progress, 0.0, "Reading the embedding cache")
    ads = catalog.ads
    ad_ids = ads["ad_id"].to_numpy(dtype=object)
    texts = compose_ad_text(ads)
    keys = [text_hash(t) for t in texts]
    backend = settings.text_backend
    fp = encoder.fingerprint if encoder is not None else \
        backend_fingerprint(model_fingerprint(settings.embedding_model), backend)
    model = encoder.name if encoder is not None else model_label(settings.embedding_model, backend)
    cache = EmbeddingCache(settings.cache_dir, fp)
    cached_keys, cached_vecs = cache.load()
    pos = cached_keys.get_indexer(pd.Index(keys, dtype=object)) if len(keys) else np.empty(0, np.int64)
    missing = np.flatnonzero(pos < 0)
    n_texts = 0
    dim = cached_vecs.shape[1] if cached_vecs is not None else None
    new_vecs = None
    new_pos = pd.Index([], dtype=object)
    if len(missing):
        if encoder is None:
            encoder = load_encoder(settings)
            if encoder.fingerprint != fp:
                raise AdLensError(f"embedding model {model!r} changed on disk while embedding; run again")
        if dim is not None and encoder.dim != dim:
            raise ArtifactError(f"{cache.dir}: cached vectors have dim {dim} but the model gives {encoder.dim}")
        dim = encoder.dim
        uniq: dict[str, str] = {}
        for i in missing:
            uniq.setdefault(keys[i], texts[i])
        n_texts = len(uniq)
        if runner is not None:
            new_vecs = runner(list(uniq), list(uniq.values()), cache, encoder)
        else:
            new_vecs = encoder.encode(list(uniq.values()), batch_size=batch_size, progress=progress)
            cache.add(list(uniq), new_vecs, model=model, dim=dim)
        new_pos = pd.Index(list(uniq), dtype=object)
    if dim is None:  # empty catalog, empty cache
        dim = encoder.dim if encoder is not None else load_encoder(settings).dim
    out = np.zeros((len(keys), dim), np.float32)
    hit = pos >= 0
    if hit.any():
        out[hit] = cached_vecs[pos[hit]]
    if len(missing):
        out[missing] = new_vecs[new_pos.get_indexer(pd.Index([keys[i] for i in missing], dtype=object))]
    report(progress, 1.0, "done")
    return EmbedResult(
        ad_ids=ad_ids, vectors=out, n_encoded=int(len(missing)), n_reused=int(hit.sum()),
        fingerprint=fp, model=model, seconds=time.perf_counter() - t0, n_texts_encoded=n_texts,
    )
