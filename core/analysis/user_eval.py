"""`adlens evaluate --protocol user`: the user-protocol table (core.tower.user_protocol) of a tower
next to every baseline a recommender-systems reader expects on the same split:

- random, most-popular, history-mean (core.tower.user_protocol.baseline_ranks);
- item-kNN: shrunk cosine item neighbours summed over the user's training ads
  (core.sources.cooccurrence, the functions the co_engagement source uses), shrinkage chosen
  on a validation slice of the training side;
- EASE (core.sources.ease), λ chosen on the same validation slice; skipped with a note above
  EASE_MAX_ADS.

Hyper-parameters are chosen by HR@K (K = the largest reported k up to 100) on
`validation_slice`: 20% of the training pairs held out, the rest fitting; the chosen value is
refitted on the whole training side. The test side is never looked at until the final ranking.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from core.common.errors import AdLensError
from core.sources.cooccurrence import click_matrix, item_neighbours, score_histories
from core.sources.ease import DEFAULT_LAMBDAS, ease_scores, ease_skip_reason, fit_ease
from core.store.catalog import Catalog
from core.tower.metrics import user_protocol_metrics
from core.tower.query_encoder import QueryEncoder
from core.tower.split import Split
from core.tower.user_protocol import (
    DEFAULT_KS,
    UserEvalReport,
    UserProtocolData,
    baseline_ranks,
    build_user_protocol,
    encoder_ranks,
    full_score_ranks,
    list_ranks,
    user_report,
    validation_slice,
)

KNN_TOP_M = 100
KNN_SHRINKAGES: tuple[float, ...] = (0.0, 10.0, 100.0)


def _train_matrix(data: UserProtocolData):
    return click_matrix(data.train_user_idx, data.train_ad_pos, data.n_train_users, data.n_ads)


def knn_ranks(data: UserProtocolData, shrinkage: float, top_m: int = KNN_TOP_M, k: int = 500) -> np.ndarray:
    """Item-kNN: each user's top-k ads by summed neighbour similarity to their training ads."""
    neigh, sims = item_neighbours(_train_matrix(data), top_m, shrinkage)
    lists, _ = score_histories(neigh, sims, data.histories, data.n_ads, k, exclude_history=True)
    return list_ranks(data, lists)


def ease_ranks(data: UserProtocolData, lam: float) -> np.ndarray:
    """EASE fitted on the training side with weight `lam`, scoring every ad."""
    B = fit_ease(_train_matrix(data), lam)
    return full_score_ranks(data, lambda rows: ease_scores(B, [data.histories[r] for r in rows]))


def choose(val: UserProtocolData, ranks: Callable[[float], np.ndarray], grid: tuple[float, ...], k: int) -> tuple[float, dict]:
    """The value of `grid` with the best HR@k on the validation slice, and every value's HR@k."""
    users = val.users[val.test_rows]
    scores = {g: user_protocol_metrics(ranks(g), users, (k,))[f"hr@{k}"] for g in grid}
    return max(grid, key=lambda g: (scores[g], -grid.index(g))), scores


def evaluate_models(data: UserProtocolData, ks: tuple[int, ...] = DEFAULT_KS, *,
                    encoders: dict[str, QueryEncoder] | None = None, seed: int = 0,
                    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
                    shrinkages: tuple[float, ...] = KNN_SHRINKAGES) -> UserEvalReport:
    """The user-protocol table on `data`: `encoders` (name -> encoder), the baselines, item-kNN, EASE."""
    t0 = time.perf_counter()
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] <= 0:
        raise AdLensError(f"ks must be positive integers; got {ks}")
    k_sel = max([k for k in ks if k <= 100] or [ks[0]])
    ranks = {name: encoder_ranks(enc, data) for name, enc in (encoders or {}).items()}
    ranks.update(baseline_ranks(data, seed))
    notes: dict[str, str] = {}
    val = validation_slice(data, seed=seed + 1)
    kmax = max(ks)
    shrink, tried = choose(val, lambda s: knn_ranks(val, s, k=kmax), shrinkages, k_sel)
    ranks["item_knn"] = knn_ranks(data, shrink, k=kmax)
    notes["item_knn"] = (f"top {KNN_TOP_M} neighbours per ad, shrinkage {shrink:g} (validation hr@{k_sel}: "
                         + ", ".join(f"{g:g} -> {v:.3f}" for g, v in tried.items()) + ")")
    skip = ease_skip_reason(data.n_ads)
    if skip:
        notes["ease"] = skip
    else:
        lam, tried = choose(val, lambda g: ease_ranks(val, g), lambdas, k_sel)
        ranks["ease"] = ease_ranks(data, lam)
        notes["ease"] = (f"lambda {lam:g} (validation hr@{k_sel}: "
                         + ", ".join(f"{g:g} -> {v:.3f}" for g, v in tried.items()) + ")")
    return user_report(data, ranks, ks, notes=notes, seconds=time.perf_counter() - t0)


def evaluate_user_protocol(catalog: Catalog, ad_ids: np.ndarray, ad_text_vectors: np.ndarray, split: Split,
                           ks: tuple[int, ...] = DEFAULT_KS, *, encoders: dict[str, QueryEncoder] | None = None,
                           seed: int = 0) -> UserEvalReport:
    """Build the protocol's data for `split` (kind "user") and evaluate every model on it."""
    return evaluate_models(build_user_protocol(catalog, ad_ids, ad_text_vectors, split), ks,
                           encoders=encoders, seed=seed)


def evaluate_workspace(settings, tower: str | None = None, ks: tuple[int, ...] = DEFAULT_KS, *, seed: int = 0,
                       engine=None, ad_ids: np.ndarray | None = None,
                       ad_text_vectors: np.ndarray | None = None) -> UserEvalReport:
    """The user-protocol table for the workspace: on `tower`'s own user split (refused for a tower
    trained on another split: its training clicks would be tested), or without a tower on the
    user split of `seed`."""
    from core.store.catalog import load_catalog
    from core.store.db import make_engine
    from core.tower.registry import catalog_embeddings, load_tower, read_tower_metrics
    from core.tower.split import make_split

    engine = engine or make_engine(settings.db_url)
    catalog = load_catalog(engine)
    encoders: dict[str, QueryEncoder] = {}
    if tower is not None:
        encoders["tower"] = load_tower(settings, tower)
        split = Split.from_dict(read_tower_metrics(settings, tower)["training"]["split"])
        if split.kind != "user":
            raise AdLensError(f"tower {tower!r} was trained on the {split.kind} split, so the user protocol's "
                              f"held-out pairs overlap its training clicks; train one with `adlens train --name NAME "
                              f"--split user` (or evaluate it with --protocol time)")
    else:
        split = make_split(catalog.impressions, "user", seed=seed)
    if (ad_ids is None) != (ad_text_vectors is None):
        raise AdLensError("pass both ad_ids and ad_text_vectors, or neither")
    if ad_ids is None:
        ad_ids, ad_text_vectors, _ = catalog_embeddings(settings, catalog)
    report = evaluate_user_protocol(catalog, ad_ids, ad_text_vectors, split, ks, encoders=encoders, seed=split.seed)
    report.tower = tower
    return report
