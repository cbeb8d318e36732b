"""`adlens embed --ray`: batch embedding on Ray Data for catalogs in the millions.

Only the texts missing from the embedding cache are sent (the same keys as `embed_catalog`:
model fingerprint + text sha256). They flow through `map_batches` into a pool of actors that
each load the text model once and encode their batches; the driver writes every chunk of
results into the cache as it arrives (one cache shard per chunk), so an interrupted run keeps
what was finished and the next run encodes only the rest, and an unchanged catalog encodes 0.
The vectors are the ones `embed` computes (same model, same normalisation), in any order:
results are re-aligned by key.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from core.common.progress import Progress, report
from core.store.catalog import Catalog
from core.store.ray_cluster import connect
from core.store.settings import Settings
from core.text.embedding_cache import EmbeddingCache, EmbedResult, embed_catalog

CHUNK = 20_000  # rows per cache shard written by the driver
BATCH = 256  # texts per map_batches call


class _EncodeBatch:
    """Ray Data actor: one text model per actor, loaded once."""

    def __init__(self, make_encoder: Callable[[], object]):
        self.encoder = make_encoder()

    def __call__(self, batch: dict) -> dict:
        vecs = self.encoder.encode([str(t) for t in batch["text"]], batch_size=64)
        return {"key": batch["key"], "vector": np.asarray(vecs, np.float32)}


def _default_encoder_factory(settings: Settings) -> Callable[[], object]:
    """Each actor loads the configured model with the configured text backend (the vectors go
    under that backend's fingerprint, so they must come from it)."""
    def make():
        from core.text.embedding_cache import load_encoder

        return load_encoder(settings)

    return make


def ray_runner(make_encoder: Callable[[], object], *, concurrency: int = 2, batch_size: int = BATCH,
               chunk: int = CHUNK, progress: Progress | None = None):
    """An `embed_catalog` runner encoding on a Ray Data actor pool of `concurrency` actors;
    `progress(fraction, step)` after each chunk written into the cache."""

    def run(keys: list[str], texts: list[str], cache: EmbeddingCache, encoder) -> np.ndarray:
        import ray

        connect(None)  # no-op when Ray is already initialised
        blocks = max(1, min(-(-len(keys) // batch_size), concurrency * 8))  # enough to keep every actor busy
        frame = pd.DataFrame({"key": keys, "text": texts})
        bounds = np.linspace(0, len(frame), blocks + 1).round().astype(int)
        ds = ray.data.from_pandas([frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
        out = ds.map_batches(_EncodeBatch, fn_constructor_args=(make_encoder,), batch_size=batch_size,
                             concurrency=min(concurrency, blocks), batch_format="numpy")
        got_keys: list[np.ndarray] = []
        got_vecs: list[np.ndarray] = []
        done = 0
        for batch in out.iter_batches(batch_size=chunk, batch_format="numpy"):
            k = np.asarray(batch["key"], dtype=object)
            v = np.ascontiguousarray(np.stack(batch["vector"]) if batch["vector"].dtype == object
                                     else batch["vector"], dtype=np.float32)
            cache.add(list(k), v, model=getattr(encoder, "name", "model"), dim=v.shape[1])
            got_keys.append(k)
            got_vecs.append(v)
            done += len(k)
            report(progress, done / max(len(keys), 1), f"Embedding ad texts on Ray ({done:,} of {len(keys):,})")
        vecs = np.concatenate(got_vecs) if got_vecs else np.zeros((0, encoder.dim), np.float32)
        order = pd.Index(np.concatenate(got_keys) if got_keys else [], dtype=object).get_indexer(
            pd.Index(keys, dtype=object))
        if (order < 0).any():
            raise RuntimeError(f"Ray Data returned {len(vecs)} of {len(keys)} embeddings")
        return vecs[order]

    return run


def embed_catalog_ray(settings: Settings, catalog: Catalog, *, concurrency: int = 2, progress: Progress | None = None,
                      encoder=None, make_encoder: Callable[[], object] | None = None,
                      ray_address: str | None = None) -> EmbedResult:
    """`embed_catalog` with the missing texts encoded on Ray Data (see the module docstring).
    `encoder`/`make_encoder` override the model (tests pass a fake and its factory)."""
    connect(ray_address or settings.ray_address)
    make = make_encoder or _default_encoder_factory(settings)
    return embed_catalog(settings, catalog, progress=progress, encoder=encoder,
                         runner=ray_runner(make, concurrency=concurrency, progress=progress))
