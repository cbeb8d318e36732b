"""The merge allocation learned on a validation slice: each source's share of a candidate budget.

The funnel's quotas (core.funnel.params.SOURCE_QUOTAS) are defaults for ads in general; on a
given log some sources find held-out clicks far more often than others. `learn_allocation`
chooses the shares of the merge at budget K (core.sources.merge.merge_at_budget) by HR@K on the
validation slice of the training side (core.tower.user_protocol.validation_slice, the slice that
also chooses EASE's λ and item-kNN's shrinkage), starting from the funnel's quotas and from
every source alone, then moving one source's share at a time while HR@K rises.

`slice_sources` rebuilds the version's sources on the slice's fitting side, so neither the test
pairs nor the validation pairs are seen by the sources being weighed. two_tower cannot be
rebuilt that way: its tower was trained on the whole training side, validation pairs included
(retraining it per slice would take as long as `adlens train`), so its validation HR would be
optimistic and pull the shares towards it. It is left out of the learned merge, and the note
says so.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from core.data.features import FeatureStore
from core.sources.base import SOURCE_ORDER, CandidateSource, SourceRuntime
from core.sources.merge import merge_at_budget
from core.sources.registry import BUILT_SOURCES, SOURCE_TYPES, build_context
from core.store.catalog import Catalog
from core.tower.metrics import user_protocol_metrics
from core.tower.user_protocol import UserProtocolData, list_ranks, protocol_requests

SHARES: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)
"""Shares of the budget one move gives a source (the others keep their proportions)."""
MAX_ROUNDS = 4


def slice_sources(version, sources: dict[str, CandidateSource], data: UserProtocolData, val: UserProtocolData,
                  catalog: Catalog) -> tuple[UserProtocolData, dict[str, CandidateSource]]:
    """`val` with one protocol request per validation user, and the built sources of `sources`
    (`version`'s, loaded; two_tower is left out, see the module docstring) rebuilt with their own
    parameters on the training impressions minus the validation pairs."""
    return rebuild_on_slice(version, {n: src.params for n, src in sources.items()}, data, val, catalog)


def rebuild_on_slice(version, params: dict[str, dict], data: UserProtocolData, val: UserProtocolData,
                     catalog: Catalog) -> tuple[UserProtocolData, dict[str, CandidateSource]]:
    """`slice_sources` from the sources' parameters ({name: params}, e.g. a manifest's "sources"
    entry); `version` is what the rebuilt sources bind to (anything Version-shaped)."""
    if data.train_users is None:
        raise ValueError("the protocol data has no training user ids (build it with build_user_protocol)")
    users = np.asarray(data.train_users, dtype=object)
    ad_ids = np.asarray(data.features.ad_ids, dtype=object)
    imps = catalog.impressions
    train = imps[~data.split.test_side(imps)]
    held = pd.Index(users[val.users[val.test_rows].astype(np.int64)].astype(str)
                    + "\x1f" + ad_ids[val.test_pos].astype(str))
    keys = train["user_id"].astype(str) + "\x1f" + train["ad_id"].astype(str)
    fit_cat = replace(catalog, impressions=train[~keys.isin(held).to_numpy()].reset_index(drop=True))
    features = FeatureStore(fit_cat, data.features.ad_ids, data.features.ad_text_vectors)
    ctx = build_context(fit_cat, ad_ids, None)
    # no skip_reason check: the version built these sources for this very catalog
    built = {n: SOURCE_TYPES[n].build(ctx, **params[n]) for n in params if n in BUILT_SOURCES}
    runtime = SourceRuntime(version, features)
    out = {name: built[name].bind(runtime) for name in SOURCE_ORDER if name in built}
    val_users = users[val.users.astype(np.int64)]
    return replace(val, requests=protocol_requests(catalog, val_users), features=features), out


def normalise_shares(weights: dict[str, float]) -> dict[str, float]:
    """The positive weights as shares summing to 1 (zero and negative weights dropped)."""
    total = sum(w for w in weights.values() if w > 0)
    return {n: w / total for n, w in weights.items() if w > 0}


def _move(weights: dict[str, float], name: str, share: float) -> dict[str, float] | None:
    """`weights` with `name` at `share` of the total, the others scaled to keep their proportions."""
    rest = {n: w for n, w in weights.items() if n != name}
    if sum(rest.values()) <= 0:
        return None
    scale = (1.0 - share) / sum(rest.values())
    return normalise_shares({**{n: w * scale for n, w in rest.items()}, name: share})


def learn_allocation(lists: dict[str, np.ndarray], val: UserProtocolData, k: int,
                     start: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """The shares (summing to 1, SOURCE_ORDER) with the best validation HR@k of the merge at budget
    k, and the HR@k of every allocation tried (keyed by its label); ties keep the earlier one."""
    users = val.users[val.test_rows]
    tried: dict[str, float] = {}

    def score(w: dict[str, float]) -> float:
        label = allocation_label(w)
        if label not in tried:
            ranks = list_ranks(val, merge_at_budget(lists, w, k))
            tried[label] = user_protocol_metrics(ranks, users, (k,))[f"hr@{k}"]
        return tried[label]

    names = [n for n in SOURCE_ORDER if n in lists and (lists[n] >= 0).any()]  # a source with no ads gets no share
    starts = [normalise_shares({n: start.get(n, 0.0) for n in names})] + [{n: 1.0} for n in names]
    best = max((w for w in starts if w), key=score)  # max keeps the first of equals
    for _ in range(MAX_ROUNDS):
        moves = [m for n in names for s in SHARES if (m := _move(best, n, s)) is not None and m]
        top = max(moves, key=score, default=best)
        if score(top) <= score(best):
            break
        best = top
    return {n: best[n] for n in names if n in best}, tried


def allocation_label(weights: dict[str, float]) -> str:
    """'two_tower 10.0%, ease 90.0%'-style label of shares (SOURCE_ORDER)."""
    return ", ".join(f"{n} {weights[n]:.1%}" for n in SOURCE_ORDER if weights.get(n, 0) > 0)
