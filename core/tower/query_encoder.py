"""Query encoders: turn (user, context) requests into vectors in the ad index's space.

One interface, several implementations: the untrained `HistoryMeanEncoder` (mean of the user's
previously clicked ads' text embeddings), the learned user tower (core/tower/model.py), imported
query sides (core/tower/onnx_encoder.py, core/tower/request_encoder.py) and plugins from the
`adlens.query_encoders` entry-point group. A version stores its encoder in `<version>/encoder/`
(`config.json` names the kind) and loads it with `core.tower.registry.load_query_encoder`.

A plugin is a `QueryEncoder` subclass: `kind`, `encode_requests`, `config()` (JSON, with "kind")
and, unless `from_config(config)` suffices to rebuild it, `save`/`load` for extra files.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from core.data.features import FeatureStore
from core.data.request import RequestBatch, as_frame


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class QueryEncoder(ABC):
    """Maps a frame of requests (core.data.request.REQUEST_COLUMNS) to float32 query vectors
    (L2-normalised for AdLens's own encoders; imported ones return what the team's model returns).

    Callers use `encode` / `describe`, which also take a RequestBatch (a funnel run's single
    request, no DataFrame built): an encoder with `accepts_batch = True` reads it through
    core.data.request.request_arrays; the others (plugins) get it as a frame."""

    kind: ClassVar[str]
    accepts_batch: ClassVar[bool] = False

    def encode(self, requests: "pd.DataFrame | RequestBatch", features: FeatureStore) -> np.ndarray:
        """`encode_requests` of a requests frame or batch."""
        return self.encode_requests(requests if self.accepts_batch else as_frame(requests), features)

    def describe(self, requests: "pd.DataFrame | RequestBatch", features: FeatureStore) -> list[dict] | None:
        """`describe_requests` of a requests frame or batch."""
        return self.describe_requests(requests if self.accepts_batch else as_frame(requests), features)

    @abstractmethod
    def encode_requests(self, requests: pd.DataFrame, features: FeatureStore) -> np.ndarray:
        """(n, dim) float32 query vectors."""

    def describe_requests(self, requests: pd.DataFrame, features: FeatureStore) -> list[dict] | None:
        """Per request, what the encoder used to make its vector (e.g. which precomputed row),
        for the Trace; None when there is nothing to say beyond the encoder's config."""
        return None

    def transform_catalog(self, ad_text_vectors: np.ndarray, ad_ids: np.ndarray) -> np.ndarray:
        """The ad side for ads whose ids are known (row-aligned): an encoder with per-ad parameters
        (the user tower's id embeddings) uses them; by default `transform_ads`."""
        return self.transform_ads(ad_text_vectors)

    def transform_ads(self, ad_text_vectors: np.ndarray) -> np.ndarray:
        """The ad side of the two towers, applied to every ad before indexing (identity by default)."""
        return l2_normalize(ad_text_vectors)

    @abstractmethod
    def config(self) -> dict:
        """JSON-serialisable description; must include "kind"."""

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.config(), indent=2))

    @classmethod
    def from_config(cls, config: dict) -> "QueryEncoder":
        """Rebuild from `config()` (default: every key but "kind" is a constructor argument)."""
        return cls(**{k: v for k, v in config.items() if k != "kind"})

    @classmethod
    def load(cls, directory: Path) -> "QueryEncoder":
        return cls.from_config(json.loads((Path(directory) / "config.json").read_text()))


class UnitQueries(QueryEncoder):
    """Wraps an encoder so its query vectors are L2-normalised (versions built with the cosine
    metric); everything else is the wrapped encoder's, so it saves and describes as that one."""

    def __init__(self, inner: QueryEncoder):
        self.inner = inner
        self.kind = inner.kind
        self.accepts_batch = inner.accepts_batch

    def encode_requests(self, requests: pd.DataFrame, features: FeatureStore) -> np.ndarray:
        return l2_normalize(self.inner.encode_requests(requests, features))

    def describe_requests(self, requests: pd.DataFrame, features: FeatureStore) -> list[dict] | None:
        return self.inner.describe_requests(requests, features)

    def transform_ads(self, ad_text_vectors: np.ndarray) -> np.ndarray:
        return self.inner.transform_ads(ad_text_vectors)

    def transform_catalog(self, ad_text_vectors: np.ndarray, ad_ids: np.ndarray) -> np.ndarray:
        return self.inner.transform_catalog(ad_text_vectors, ad_ids)

    def config(self) -> dict:
        return self.inner.config()

    def save(self, directory: Path) -> None:
        self.inner.save(directory)


class HistoryMeanEncoder(QueryEncoder):
    """Untrained baseline: the mean text embedding of the user's last clicks before the request;
    users with no history get the popularity-weighted mean of all clicked ads."""

    kind = "history_mean"
    accepts_batch = True

    def __init__(self, history_limit: int = 50):
        self.history_limit = history_limit

    def encode_requests(self, requests: pd.DataFrame, features: FeatureStore) -> np.ndarray:
        means, counts = features.history_means(requests, self.history_limit)
        means[counts == 0] = features.global_mean
        return l2_normalize(means)

    def config(self) -> dict:
        return {"kind": self.kind, "history_limit": self.history_limit}

    @classmethod
    def load(cls, directory: Path) -> "HistoryMeanEncoder":
        cfg = json.loads((directory / "config.json").read_text())
        return cls(history_limit=int(cfg.get("history_limit", 50)))
