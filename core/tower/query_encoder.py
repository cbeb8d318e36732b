"""Query encoders: turn (user, context) requests into vectors in the ad index's space.

One interface, several implementations: the untrained `HistoryMeanEncoder` (mean of the user's
previously clicked ads' text embeddings) and the learned user tower (core/tower.py). A version
stores its encoder in `<version>/encoder/` (`config.json` names the kind) and loads it with
`load_query_encoder`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from core.data.features import FeatureStore


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class QueryEncoder(ABC):
    """Maps a frame of requests (core.data.request.REQUEST_COLUMNS) to L2-normalised float32 vectors."""

    kind: ClassVar[str]

    @abstractmethod
    def encode_requests(self, requests: pd.DataFrame, features: FeatureStore) -> np.ndarray:
        """(n, dim) float32, each row L2-normalised."""

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
    def load(cls, directory: Path) -> "QueryEncoder":
        raise NotImplementedError


class HistoryMeanEncoder(QueryEncoder):
    """Untrained baseline: the mean text embedding of the user's last clicks before the request;
    users with no history get the popularity-weighted mean of all clicked ads."""

    kind = "history_mean"

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
