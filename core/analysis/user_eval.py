"""`adlens evaluate --protocol user`: the user-protocol table (core.tower.user_protocol) of a tower
next to every baseline a recommender-systems reader expects on the same split:

- random, most-popular, history-mean (core.tower.user_protocol.baseline_ranks);
- item-kNN: shrunk cosine item neighbours summed over the user's training ads
  (core.sources.cooccurrence, the functions the co_engagement source uses), shrinkage chosen
  on a validation slice of the training side;
- EASE (core.sources.ease), λ chosen on the same validation slice; skipped with a note above
  EASE_MAX_ADS;
- with a version: each of its candidate sources alone (`source:NAME`, its top K for the user's
  request, training ads removed) and the merged candidate set at the same total K
  (`merged_sources`, core.sources.merge.merge_at_budget with the funnel's quotas as weights),
  and the merge with each source's share learned on the validation slice (`merged_learned`,
  core.analysis.merge_learning).
  The sources must have been built on the training side of this very split (the version of a
  tower trained with --split user), and they read the user's history from the training
  impressions only.

Hyper-parameters are chosen by HR@K (K = the largest reported k up to 100) on
`validation_slice`: 20% of the training pairs held out, the rest fitting; the chosen value is
refitted on the whole training side. The test side is never looked at until the final ranking.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from core.analysis.merge_learning import allocation_label, learn_allocation, normalise_shares, slice_sources
from core.common.errors import AdLensError
from core.sources.cooccurrence import click_matrix, item_neighbours, score_histories
from core.sources.base import CandidateSource, RetrieveOptions
from core.sources.ease import DEFAULT_LAMBDAS, ease_scores, ease_skip_reason, fit_ease
from core.sources.merge import merge_at_budget
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


def source_lists(sources: dict[str, CandidateSource], data: UserProtocolData, k: int,
                 batch: int = 256) -> dict[str, np.ndarray]:
    """Per source: each evaluated user's top-`k` ads ((n_users, k), -1 padded) for the user's
    protocol request, the user's training ads removed (a source is asked for k plus the longest
    history of the batch, so removing them still leaves k where the source has that many)."""
    out = {name: np.full((len(data.users), k), -1, np.int64) for name in sources}
    for lo in range(0, len(data.users), batch):
        hi = min(lo + batch, len(data.users))
        part = data.requests.iloc[lo:hi].reset_index(drop=True)
        ask = min(data.n_ads, k + max(len(h) for h in data.histories[lo:hi]))
        queries = None
        for name, src in sources.items():
            if name == "two_tower" and queries is None:
                queries = src.queries(part, None)
            pos, _ = src.retrieve(part, ask, RetrieveOptions(queries=queries))
            for i, row in enumerate(pos):
                row = row[(row >= 0) & ~np.isin(row, data.histories[lo + i])][:k]
                out[name][lo + i, :len(row)] = row
    return out


def source_ranks(lists: dict[str, np.ndarray], data: UserProtocolData, k: int, quotas: dict[str, float],
                 quotas_label: str = "the funnel's quotas") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Ranks of the held-out pairs under each source's list alone (`source:NAME`, from
    `source_lists`) and under the merged set at the same budget `k` with the funnel's `quotas` as
    weights (`merged_sources`), with a note on how the merge weighs the sources."""
    ranks = {f"source:{name}": list_ranks(data, lst) for name, lst in lists.items()}
    weights = {name: quotas.get(name, 0) for name in lists}
    ranks["merged_sources"] = list_ranks(data, merge_at_budget(lists, weights, k))
    notes = {"merged_sources": "union of " + allocation_label(normalise_shares(weights))
             + f" of the same K ({quotas_label} as weights; ads found twice counted once)"}
    empty = [n for n, lst in lists.items() if not (lst >= 0).any()]
    if empty:
        notes["sources"] = f"returned nothing for any user: {', '.join(empty)}"
    return ranks, notes


def learned_merge_ranks(lists: dict[str, np.ndarray], data: UserProtocolData, k: int, val_lists: dict[str, np.ndarray],
                        val: UserProtocolData, k_sel: int, quotas: dict[str, int]) -> tuple[np.ndarray, str]:
    """Ranks of the held-out pairs under the merge at budget `k` with the shares learned on the
    validation slice (core.analysis.merge_learning), and the note saying what was chosen."""
    shares, tried = learn_allocation(val_lists, val, k_sel, quotas)
    best = sorted(tried.items(), key=lambda kv: -kv[1])[:4]
    note = (f"union of {allocation_label(shares)} of the same K, the shares chosen by hr@{k_sel} on the validation "
            f"slice with the sources rebuilt on its fitting side ({len(tried)} allocations tried; best: "
            + "; ".join(f"{label} -> {v:.3f}" for label, v in best) + ")"
            + ("; two_tower not weighed: its tower was trained on the validation pairs"
               if "two_tower" in lists and "two_tower" not in val_lists else ""))
    return list_ranks(data, merge_at_budget(lists, shares, k)), note


def _learned_label(q: dict) -> str:
    val = q.get("validation") or {}
    metric = q.get("metric", "hr")
    return (f"the version's quotas, learned by `build-index --learn-quotas` on the validation slice ({metric} "
            f"{val.get(metric, float('nan')):.3f} there, default quotas {val.get('default_quotas') or float('nan'):.3f})")


def choose(val: UserProtocolData, ranks: Callable[[float], np.ndarray], grid: tuple[float, ...], k: int) -> tuple[float, dict]:
    """The value of `grid` with the best HR@k on the validation slice, and every value's HR@k."""
    users = val.users[val.test_rows]
    scores = {g: user_protocol_metrics(ranks(g), users, (k,))[f"hr@{k}"] for g in grid}
    return max(grid, key=lambda g: (scores[g], -grid.index(g))), scores


def evaluate_models(data: UserProtocolData, ks: tuple[int, ...] = DEFAULT_KS, *,
                    encoders: dict[str, QueryEncoder] | None = None, seed: int = 0,
                    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
                    shrinkages: tuple[float, ...] = KNN_SHRINKAGES,
                    sources: dict[str, CandidateSource] | None = None,
                    quotas: dict[str, int] | None = None, version_quotas: dict | None = None,
                    on_slice: Callable[[UserProtocolData], tuple[UserProtocolData, dict]] | None = None,
                    ) -> UserEvalReport:
    """The user-protocol table on `data`: `encoders` (name -> encoder), the baselines, item-kNN, EASE,
    and with `sources` (bound to `data.features`) each source alone and merged at K = max(ks)
    with `quotas` as the merge weights (default: the funnel's); with `on_slice` (the
    validation slice -> it with requests, and the sources rebuilt on its fitting side) also
    merged with the shares learned on that slice (`merged_learned`)."""
    t0 = time.perf_counter()
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] <= 0:
        raise AdLensError(f"ks must be positive integers; got {ks}")
    k_sel = max([k for k in ks if k <= 100] or [ks[0]])
    ranks = {name: encoder_ranks(enc, data) for name, enc in (encoders or {}).items()}
    ranks.update(baseline_ranks(data, seed))
    notes: dict[str, str] = {}
    val = validation_slice(data)  # core.tower.split.validation_split of data.split
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
    if sources:
        from core.funnel.params import DEFAULT_PARAMS

        quotas = quotas or {n: DEFAULT_PARAMS.quota(n) for n in sources}
        lists = source_lists(sources, data, kmax)
        if version_quotas:  # merged at the version's learned quotas, and at the defaults for comparison
            more, more_notes = source_ranks(lists, data, kmax, version_quotas["shares"], _learned_label(version_quotas))
            default = merge_at_budget(lists, {n: quotas.get(n, 0) for n in lists}, kmax)
            more["merged_default_quotas"] = list_ranks(data, default)
            more_notes["merged_default_quotas"] = ("union of " + allocation_label(normalise_shares(
                {n: quotas.get(n, 0) for n in lists})) + " of the same K (the funnel's default quotas as weights)")
        else:
            more, more_notes = source_ranks(lists, data, kmax, quotas)
        ranks.update(more)
        notes.update(more_notes)
        if on_slice is not None:
            vdata, vsources = on_slice(val)
            ranks["merged_learned"], notes["merged_learned"] = learned_merge_ranks(
                lists, data, kmax, source_lists(vsources, vdata, k_sel), vdata, k_sel, quotas)
    return user_report(data, ranks, ks, notes=notes, seconds=time.perf_counter() - t0)


def evaluate_user_protocol(catalog: Catalog, ad_ids: np.ndarray, ad_text_vectors: np.ndarray, split: Split,
                           ks: tuple[int, ...] = DEFAULT_KS, *, encoders: dict[str, QueryEncoder] | None = None,
                           seed: int = 0) -> UserEvalReport:
    """Build the protocol's data for `split` (kind "user") and evaluate every model on it."""
    return evaluate_models(build_user_protocol(catalog, ad_ids, ad_text_vectors, split), ks,
                           encoders=encoders, seed=seed)


def evaluate_workspace(settings, tower: str | None = None, ks: tuple[int, ...] = DEFAULT_KS, *, seed: int = 0,
                       engine=None, ad_ids: np.ndarray | None = None,
                       ad_text_vectors: np.ndarray | None = None, version: str | None = None) -> UserEvalReport:
    """The user-protocol table for the workspace: on `tower`'s own user split (refused for a tower
    trained on another split: its training clicks would be tested), or without a tower on the
    user split of `seed`. With `version`, its tower is the one evaluated and its candidate
    sources are added, alone and merged."""
    from core.store.catalog import load_catalog
    from core.store.db import make_engine
    from core.tower.registry import catalog_embeddings, load_tower, read_tower_metrics
    from core.tower.split import make_split

    engine = engine or make_engine(settings.db_url)
    loaded = None
    if version is not None:
        loaded = _load_source_version(settings, version, tower, engine)
        tower = loaded.manifest.tower
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
    if loaded is not None:  # the sources return the version's ad positions
        ad_ids, ad_text_vectors = loaded.ad_ids, loaded.ad_text_vectors
    elif ad_ids is None:
        ad_ids, ad_text_vectors, _ = catalog_embeddings(settings, catalog)
    if loaded is None:
        report = evaluate_user_protocol(catalog, ad_ids, ad_text_vectors, split, ks, encoders=encoders,
                                        seed=split.seed)
    else:
        report = _evaluate_with_sources(loaded, catalog, ad_ids, ad_text_vectors, split, ks, encoders)
    report.tower = tower
    return report


def _load_source_version(settings, name: str, tower: str | None, engine):
    """The version `name`, checked to be usable for the user protocol: a learned tower (matching
    `tower` when given) whose sources were built on the training side of the tower's split."""
    from core.index.versions import load_version

    v = load_version(settings, name, engine=engine)
    if v.manifest.tower is None:
        v.close()
        raise AdLensError(f"version {name!r} has no learned tower; the user protocol evaluates the version of a tower "
                          "trained with `adlens train --split user`")
    if tower is not None and tower != v.manifest.tower:
        v.close()
        raise AdLensError(f"version {name!r} is built over tower {v.manifest.tower!r}, not {tower!r}; "
                          "pass one of --tower or --version")
    built = (v.manifest.get("sources") or {})
    if not built.get("built"):
        v.close()
        raise AdLensError(f"version {name!r} has no candidate sources besides two_tower (built before sources "
                          f"existed); rebuild it: `adlens build-index --name NEW --tower {v.manifest.tower}`")
    return v


def _evaluate_with_sources(v, catalog, ad_ids, ad_text_vectors, split: Split, ks, encoders) -> UserEvalReport:
    from core.sources.registry import load_sources

    built_split = (v.manifest.get("sources") or {}).get("split")
    if built_split != split.to_dict():
        v.close()
        raise AdLensError(f"version {v.name!r}: its sources were built on the split {built_split}, not on the "
                          f"tower's user split {split.to_dict()}; the held-out pairs would leak into them. "
                          f"Rebuild the version: `adlens build-index --name NEW --tower {v.manifest.tower}`")
    try:
        data = build_user_protocol(catalog, ad_ids, ad_text_vectors, split)
        sources = load_sources(v, data.features)  # bound to the training-side history only
        return evaluate_models(data, ks, encoders=encoders, seed=split.seed, sources=sources,
                               version_quotas=v.manifest.quotas, on_slice=lambda val: slice_sources(v, sources, data, val, catalog))
    finally:
        v.close()
