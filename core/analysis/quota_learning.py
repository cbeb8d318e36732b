"""`adlens build-index --learn-quotas`: the version's source quotas, learned on the validation slice.

The funnel's default quotas (core.funnel.params.SOURCE_QUOTAS) suit ads in general; on a given
log one source may find held-out clicks far more often than the others, and interleaving the
rest in at the default proportions dilutes it. This build hook (run after the sources are built)
learns each source's share of a fixed budget of `LEARN_K` candidates by HR@K on the validation
slice of the tower's user split (core.tower.user_protocol.validation_slice, the slice that
chooses EASE's λ), with core.analysis.merge_learning.learn_allocation (which starts from the
default quotas and from every source alone, so the learned merge is at least as good on the
slice as each of them):

- the built sources are rebuilt on the slice's fitting side (`rebuild_on_slice`);
- two_tower is weighed honestly: a tower with the version's tower's settings is retrained on the
  fitting side (the version's own tower saw the validation pairs) and its exact top-K is
  two_tower's list on the slice.

The manifest's `quotas` holds the shares (what `adlens evaluate --protocol user --version V`
merges at), the funnel counts they imply and the validation scores. Counts: each source's share
of the funnel's default total (the default quotas of the version's sources, two_tower's K
included), 0 for a source with no share, which the funnel then leaves off for this version unless
a quota is given for it (core.funnel.params.FunnelParams.over_version_quotas). two_tower keeps
quota K in the funnel whatever its share: the funnel keeps every source's candidates and ranks
them together, so its K takes no slot from the others (the shares matter where the budget is
fixed, as in the evaluation's merge).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core.analysis.merge_learning import allocation_label, learn_allocation, normalise_shares, rebuild_on_slice
from core.analysis.user_eval import source_lists
from core.common.errors import AdLensError
from core.common.progress import Progress
from core.common.progress import report as report_progress
from core.funnel.params import DEFAULT_PARAMS
from core.sources.base import SOURCE_ORDER
from core.sources.registry import tower_split
from core.tower.split import Split, validation_split
from core.tower.user_protocol import UserProtocolData, build_user_protocol, validation_slice

LEARN_K = 100
"""The fixed budget the shares are learned at (HR@100, the user protocol's headline metric)."""
FIT_KEYS = ("epochs", "batch_size", "lr", "temperature", "seed", "hard_negatives", "use_context", "ad_adapter",
            "logq", "history_limit", "hidden", "id_embeddings")


def check_learnable(tower_training: dict | None, tower: str | None) -> Split:
    """The user split quotas are learned on, from the tower's training record; a clear error for a
    build that cannot learn them (no learned tower, or a tower trained on another split)."""
    if tower is None or not tower_training:
        raise AdLensError("--learn-quotas needs a learned tower trained with `adlens train --split user` "
                          "(pass --tower NAME): the quotas are learned on the validation slice of its user split")
    split = tower_training.get("split") or {}
    if split.get("kind") != "user":
        raise AdLensError(f"--learn-quotas: tower {tower!r} was trained on the {split.get('kind')} split; the quotas "
                          f"are learned on the validation slice of a user split: train one with `adlens train --name "
                          f"NAME --split user` and build over it (or drop --learn-quotas)")
    return Split.from_dict(split)


def top_lists(scores, data: UserProtocolData, k: int, block: int = 512) -> np.ndarray:
    """Each evaluated user's top-`k` ad positions ((n_users, k), best first) under `scores(rows)`
    -> (len(rows), n_ads), the user's training ads excluded."""
    k = min(k, data.n_ads)
    out = np.full((len(data.users), k), -1, np.int64)
    for lo in range(0, len(data.users), block):
        rows = np.arange(lo, min(lo + block, len(data.users)))
        s = np.array(scores(rows), dtype=np.float64, copy=True)
        for i, r in enumerate(rows):
            s[i, data.histories[r]] = -np.inf
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        out[rows] = np.where(np.isfinite(np.take_along_axis(s, top, 1)), top, -1)
    return out


def _two_tower_lists(ctx, split: Split, training: dict, vdata: UserProtocolData, k: int) -> np.ndarray:
    """two_tower's list on the slice: a tower with the version's tower's settings retrained on
    the fitting side, exact top-k."""
    from core.tower.train import fit_tower
    from core.tower.tune import validation_catalog

    inner, vsplit = validation_catalog(ctx.catalog, split)
    kw = {key: training[key] for key in FIT_KEYS if key in training}
    enc, _, _ = fit_tower(inner, ctx.ad_ids, ctx.ad_text_vectors, vsplit, **kw)
    q = enc.encode_requests(vdata.requests, vdata.features)
    ads = enc.transform_catalog(vdata.features.ad_text_vectors, vdata.features.ad_ids)
    return top_lists(lambda rows: q[rows] @ ads.T, vdata, k)


def learn_quotas(ctx, directory: Path, training: dict, k: int = LEARN_K, progress: Progress | None = None) -> dict:
    """The manifest's `quotas` entry for the version being built in `directory` (see the module
    docstring); `training` is its tower's training record (metrics.json "training")."""
    t0 = time.perf_counter()
    split = check_learnable(training, ctx.manifest.tower)
    if tower_split(Path(directory) / "encoder") != split:
        raise AdLensError("--learn-quotas: the version's sources were not built on its tower's user split")
    built = (ctx.manifest.extras.get("sources") or {}).get("built") or {}
    report_progress(progress, 0.0, "Learning quotas: the validation slice")
    data = build_user_protocol(ctx.catalog, ctx.ad_ids, ctx.ad_text_vectors, split)
    val = validation_slice(data)
    vdata, vsources = rebuild_on_slice(ctx, {n: b.get("params") or {} for n, b in built.items()}, data, val,
                                       ctx.catalog)
    k = min(int(k), data.n_ads)
    report_progress(progress, 0.2, "Learning quotas: the sources' lists on the slice")
    lists = source_lists(vsources, vdata, k)
    report_progress(progress, 0.4, "Learning quotas: retraining the tower on the slice's fitting side")
    lists = {"two_tower": _two_tower_lists(ctx, split, training, vdata, k), **lists}
    report_progress(progress, 0.9, "Learning quotas: the allocation")
    names = [n for n in SOURCE_ORDER if n in lists]
    default = {n: DEFAULT_PARAMS.quota(n) for n in names}
    shares, tried = learn_allocation(lists, vdata, k, default)
    total = sum(default.values())
    counts = {n: int(round(shares.get(n, 0.0) * total)) for n in names if n != "two_tower"}
    default_label = allocation_label(normalise_shares({n: default[n] for n in names if (lists[n] >= 0).any()}))
    metric = f"hr@{k}"
    report_progress(progress, 1.0, "Learning quotas: done")
    return {"shares": {n: round(float(s), 6) for n, s in shares.items()}, "counts": counts, "k": k,
            "metric": metric, "learned_on": "validation slice of the tower's user split",
            "validation": {"split": validation_split(split).to_dict(), "n_pairs": int(len(val.test_pos)),
                           "n_users": int(len(val.users)), metric: tried[allocation_label(shares)],
                           "default_quotas": tried.get(default_label),
                           "alone": {n: tried[allocation_label({n: 1.0})] for n in names
                                     if allocation_label({n: 1.0}) in tried},
                           "n_tried": len(tried)},
            "seconds": round(time.perf_counter() - t0, 2)}


def quotas_builder(training: dict, k: int = LEARN_K):
    """A version build hook (after the sources builder): the manifest's learned `quotas` at budget `k`."""
    def quotas(ctx, directory: Path) -> dict:
        return {"quotas": learn_quotas(ctx, directory, training, k)}

    return quotas
