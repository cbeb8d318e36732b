"""Honest offline evaluation of query encoders on held-out clicks, next to simple baselines.

Split (`make_split`), shared with training so both sides agree on what is held out:
- **time** (default): cutoff = the 80th percentile of all impression timestamps (or an explicit
  cutoff). Training uses impressions with ts < cutoff; the test set is every click at or after it.
- **random** (datasets without meaningful time): each impression goes to the test side with
  probability `test_fraction`, by a seeded hash of its impression_id (stable across runs and
  row order). Histories still include every click strictly before a request, so a held-out click
  can appear in the history of a later training click: a mild leak the time split does not have.

Every test click is one request (user, community, placement, device, country from the profile,
ts) whose one relevant ad is the clicked ad. Each model scores ALL ads exactly (brute force
matrix product) and the clicked ad's rank feeds core.tower.metrics (Recall/HitRate/NDCG@K, averaged
per user then over users; see there). Models: the encoder under test, and on the same split:
- `random`: uniform random scores (seeded);
- `most_popular`: click counts in the training side (ties share the middle rank);
- `history_mean`: core.tower.query_encoder.HistoryMeanEncoder (mean text vector of prior clicks), with
  its cold-start fallback rebuilt from training clicks only.
Segments: country, request device, history length (cold = 0 prior clicks, warm = 1-4, hot = 5+).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from core.common.errors import AdLensError
from core.data.features import FeatureStore
from core.data.request import requests_from_impressions
from core.store.catalog import Catalog
from core.tower.metrics import metric_table, ranks_of_targets
from core.tower.query_encoder import HistoryMeanEncoder, QueryEncoder, l2_normalize
from core.tower.registry import (
    catalog_embeddings,
    load_tower,
    read_tower_metrics,
    save_tower_metrics,
)
from core.tower.split import Split

DEFAULT_KS: tuple[int, ...] = (10, 50, 100, 500)
BASELINES: tuple[str, ...] = ("random", "most_popular", "history_mean")
HISTORY_SEGMENTS: tuple[tuple[str, int, int], ...] = (("cold", 0, 0), ("warm", 1, 4), ("hot", 5, 10**9))


@dataclass
class EvalReport:
    """Metrics of one encoder and the baselines on one split (JSON-ready via core.cli.output)."""

    split: dict
    ks: list[int]
    n_ads: int
    n_test_clicks: int
    n_test_users: int
    n_skipped: int  # test clicks whose ad has no text vector (not in the catalog embedding)
    models: dict[str, dict[str, float]]  # model name -> {"recall@100": ...}
    segments: list[dict] = field(default_factory=list)  # {"by", "value", "n_clicks", "n_users", "models"}
    seconds: float = 0.0
    tower: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EvalReport":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _test_set(catalog: Catalog, features: FeatureStore, split: Split):
    imps = catalog.impressions
    clicked = imps["clicked"].astype(bool).to_numpy() if len(imps) else np.zeros(0, bool)
    test = imps[clicked & split.test_side(imps)]
    pos = features.ad_positions(test["ad_id"].to_numpy()) if len(test) else np.empty(0, np.int64)
    keep = pos >= 0
    return requests_from_impressions(test[keep], catalog.users), pos[keep], int((~keep).sum())


def train_click_counts(catalog: Catalog, features: FeatureStore, split: Split) -> np.ndarray:
    """Clicks per ad (rows of features.ad_ids) on the training side of `split`."""
    imps = catalog.impressions
    if len(imps) == 0:
        return np.zeros(len(features.ad_ids))
    train = imps[imps["clicked"].astype(bool).to_numpy() & ~split.test_side(imps)]
    pos = features.ad_positions(train["ad_id"].to_numpy())
    return np.bincount(pos[pos >= 0], minlength=len(features.ad_ids)).astype(np.float64)


def _chunk(n_ads: int) -> int:
    return max(1, 2**24 // max(n_ads, 1))  # rows per block: a (rows, n_ads) float32 block is <= 64 MB


def _ranks(queries: np.ndarray, ads: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Exact ranks of `targets` under inner-product scores, in blocks of requests."""
    c = _chunk(len(ads))
    out = [ranks_of_targets(queries[s:s + c] @ ads.T, targets[s:s + c]) for s in range(0, len(targets), c)]
    return np.concatenate(out) if out else np.empty(0, np.int64)


def _random_ranks(rng: np.random.Generator, n_ads: int, targets: np.ndarray) -> np.ndarray:
    c = _chunk(n_ads)
    out = [ranks_of_targets(rng.random((len(targets[s:s + c]), n_ads), dtype=np.float32), targets[s:s + c])
           for s in range(0, len(targets), c)]
    return np.concatenate(out) if out else np.empty(0, np.int64)


def _prior_clicks(features: FeatureStore, requests: pd.DataFrame) -> np.ndarray:
    rows = features.click_histories(requests["user_id"].to_numpy(dtype=object), requests["ts"])
    return np.array([len(r) for r in rows], np.int64)


def evaluate_encoder(encoder: QueryEncoder, catalog: Catalog, ad_ids: np.ndarray, ad_text_vectors: np.ndarray,
                     split: Split, ks: tuple[int, ...] = DEFAULT_KS, *, seed: int = 0,
                     features: FeatureStore | None = None, name: str = "tower") -> EvalReport:
    """Rank every held-out click among all ads for `encoder` (reported as `name`) and baselines."""
    t0 = time.perf_counter()
    if name in BASELINES:
        raise ValueError(f"name {name!r} is taken by a baseline ({', '.join(BASELINES)})")
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] <= 0:
        raise AdLensError(f"ks must be positive integers; got {ks}")
    features = features or FeatureStore(catalog, ad_ids, ad_text_vectors)
    requests, targets, skipped = _test_set(catalog, features, split)
    if len(targets) == 0:
        raise AdLensError(f"no test clicks on the {split.kind} split {split.to_dict()}: nothing to evaluate "
                          "(is there data after the cutoff?)")
    n_ads = len(features.ad_ids)
    counts = train_click_counts(catalog, features, split)
    # History-mean's cold-start fallback from training clicks only (the store's uses all clicks).
    w = counts if counts.sum() > 0 else np.ones(n_ads)
    hm_features = _with_global_mean(features, l2_normalize((w[:, None] * features.ad_text_vectors).sum(0)))
    text_ads = l2_normalize(features.ad_text_vectors)
    ranks = {
        name: _ranks(encoder.encode_requests(requests, features),
                     encoder.transform_catalog(features.ad_text_vectors, features.ad_ids), targets),
        "random": _random_ranks(np.random.default_rng(seed), n_ads, targets),
        "most_popular": popularity_ranks(counts, targets),
        "history_mean": _ranks(HistoryMeanEncoder().encode_requests(requests, hm_features), text_ads, targets),
    }
    users = requests["user_id"].to_numpy(dtype=object)
    models = {m: metric_table(r, ks, users) for m, r in ranks.items()}
    segments = _segments(requests, _prior_clicks(features, requests), ranks, ks)
    return EvalReport(split=split.to_dict(), ks=list(ks), n_ads=n_ads, n_test_clicks=len(targets),
                      n_test_users=int(len(set(users))), n_skipped=skipped, models=models, segments=segments,
                      seconds=round(time.perf_counter() - t0, 3))


def _segments(requests: pd.DataFrame, prior: np.ndarray, ranks: dict[str, np.ndarray], ks: tuple[int, ...]) -> list[dict]:
    """Metrics of every model per country, request device and history length."""
    users = requests["user_id"].to_numpy(dtype=object)
    hist = np.empty(len(prior), dtype=object)
    for label, lo, hi in HISTORY_SEGMENTS:
        hist[(prior >= lo) & (prior <= hi)] = label
    groups = [("country", requests["country"].astype(str).to_numpy(dtype=object), None),
              ("device", requests["device"].astype(str).to_numpy(dtype=object), None),
              ("history", hist, [h[0] for h in HISTORY_SEGMENTS])]
    out = []
    for by, vals, order in groups:
        for v in order or sorted(set(vals)):
            m = vals == v
            if m.any():
                out.append({"by": by, "value": v, "n_clicks": int(m.sum()), "n_users": int(len(set(users[m]))),
                            "models": {k: metric_table(r[m], ks, users[m]) for k, r in ranks.items()}})
    return out


def popularity_ranks(counts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Ranks under one shared score vector without materialising (n, n_ads): same tie rule."""
    s = np.sort(counts)
    own = counts[targets]
    greater = len(s) - np.searchsorted(s, own, side="right")
    ties = np.searchsorted(s, own, side="right") - np.searchsorted(s, own, side="left") - 1
    return (greater + ties // 2).astype(np.int64)


class _with_global_mean(FeatureStore):
    """A view of a FeatureStore with another cold-start mean (shares every array, copies nothing)."""

    def __init__(self, base: FeatureStore, global_mean: np.ndarray):  # noqa: D107 - no super().__init__
        self.__dict__.update(base.__dict__)
        self.global_mean = np.asarray(global_mean, np.float32)


def evaluate_tower(settings, name: str, split: str | None = None, ks: tuple[int, ...] = DEFAULT_KS, *,
                   engine=None, ad_ids: np.ndarray | None = None, ad_text_vectors: np.ndarray | None = None,
                   write: bool = True) -> EvalReport:
    """Evaluate the registered tower `name` on the split it was trained with (the same cutoff or
    seed); the result replaces the evaluation in its metrics.json and towers row (`write`).

    Asking for the other split kind is refused: its test clicks overlap the tower's training data."""
    from core.store.catalog import load_catalog
    from core.store.db import make_engine

    encoder = load_tower(settings, name)
    trained = Split.from_dict(read_tower_metrics(settings, name)["training"]["split"])
    if trained.kind == "none":
        raise AdLensError(f"tower {name!r} was trained on every impression (--holdout none): no click was held "
                          "out, so any evaluation would test on training data. Train another tower with a split")
    if trained.kind == "user":
        raise AdLensError(f"tower {name!r} was trained on the user split: evaluate it with --protocol user")
    if split is not None and split != trained.kind:
        raise AdLensError(f"tower {name!r} was trained on the {trained.kind} split; evaluating it on a {split} split "
                          f"would test on its training clicks. Use --split {trained.kind}, or train a tower with "
                          f"--split {split}")
    engine = engine or make_engine(settings.db_url)
    catalog = load_catalog(engine)
    if (ad_ids is None) != (ad_text_vectors is None):
        raise AdLensError("pass both ad_ids and ad_text_vectors, or neither")
    if ad_ids is None:
        ad_ids, ad_text_vectors, _ = catalog_embeddings(settings, catalog)
    report = evaluate_encoder(encoder, catalog, ad_ids, ad_text_vectors, trained, ks, seed=trained.seed)
    report.tower = name
    if write:
        save_tower_metrics(settings, name, report, engine)
    return report
