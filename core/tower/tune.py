"""`adlens train --tune`: choose the tower's settings on the validation split of the training side.

Every try trains a tower in memory on the *fitting side* (the training side minus the pairs
`core.tower.split.validation_split` holds out; for a time split, the training side before its
own 80th-percentile cutoff) and scores it on the validation side with the protocol of the
tower's split (the user protocol's HR@K for a user split, the time protocol's Recall@K
otherwise), next to most-popular on the same slice. The test side is never looked at.

The search is small and bounded (at most `MAX_TRIES` trainings):
1. a grid over id embeddings x history limit x logQ weight (`GRID`) at `START_EPOCHS` epochs;
2. epochs for the best of those: a climb along `EPOCHS` from `START_EPOCHS`, one step at a
   time in the direction that improves, stopping at the first step that does not (early stop).
Ties keep the earlier (cheaper) try. The chosen settings are then trained on the whole training
side by `core.tower.train.train_tower`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from itertools import product

import numpy as np

from core.common.errors import AdLensError
from core.common.progress import Progress, scaled
from core.common.progress import report as report_progress
from core.store.catalog import Catalog
from core.tower.metrics import user_protocol_metrics
from core.tower.split import Split, make_split, validation_split

GRID: dict[str, tuple] = {"id_embeddings": (False, True), "history_limit": (50, 0), "logq": (1.0, 2.0)}
"""The settings tried in step 1 (every combination)."""
EPOCHS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12)
"""Epoch counts step 2 climbs along."""
START_EPOCHS = 2
MAX_TRIES = 14
TUNED_KEYS: tuple[str, ...] = ("epochs", *GRID)


@dataclass
class TuneTry:
    """One training on the fitting side and its validation score."""

    params: dict  # the tuned settings of this try (TUNED_KEYS)
    score: float  # validation metric
    seconds: float
    step: str  # "grid" or "epochs"


@dataclass
class TuneReport:
    """What `--tune` tried and chose (`metric` on the validation slice, higher is better)."""

    metric: str
    validation: dict  # the validation split and its size
    baselines: dict[str, float]  # most-popular's metric on the same slice
    tries: list[TuneTry] = field(default_factory=list)
    chosen: dict = field(default_factory=dict)
    chosen_score: float = float("nan")
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def validation_catalog(catalog: Catalog, split: Split) -> tuple[Catalog, Split]:
    """(the catalog restricted to `split`'s training side, the split of it that validates):
    the validation split for a user (or `none`) split, the same kind one level down otherwise."""
    imps = catalog.impressions
    train = imps[~split.test_side(imps)].reset_index(drop=True)
    inner = replace(catalog, impressions=train)
    try:
        if split.kind in ("user", "none"):
            vsplit = validation_split(split if split.kind == "user" else Split("user", None, split.seed))
            return inner, make_split(train, "user", seed=vsplit.seed, test_fraction=vsplit.test_fraction)
        if split.kind == "random":
            return inner, make_split(train, "random", seed=split.seed + 1, test_fraction=split.test_fraction)
        return inner, make_split(train, "time")
    except AdLensError as exc:
        raise AdLensError(f"--tune holds a validation slice out of the training side of the {split.kind} split, "
                          f"and cannot here: {exc}. Train without --tune, or with more clicks") from exc


class _Scorer:
    """Scores an in-memory encoder on the validation side (built once, reused by every try)."""

    def __init__(self, catalog: Catalog, ad_ids: np.ndarray, ad_text_vectors: np.ndarray, split: Split,
                 k: int, seed: int):
        self.catalog, self.split, self.k, self.seed = catalog, split, k, seed
        self.ad_ids, self.ad_text_vectors = ad_ids, ad_text_vectors
        if split.kind == "user":
            from core.tower.user_protocol import baseline_ranks, build_user_protocol

            self.data = build_user_protocol(catalog, ad_ids, ad_text_vectors, split)
            self.metric = f"hr@{k}"
            self.users = self.data.users[self.data.test_rows]
            pop = baseline_ranks(self.data, seed)["most_popular"]
            self.baselines = {"most_popular": self._metric(pop)}
            self.size = {"n_pairs": int(len(self.data.test_pos)), "n_users": int(len(self.data.users))}
        else:
            self.data = None
            self.metric = f"recall@{k}"
            rep = self._time_report(None)
            self.baselines = {"most_popular": float(rep.models["most_popular"][self.metric])}
            self.size = {"n_clicks": int(rep.n_test_clicks), "n_users": int(rep.n_test_users)}

    def _metric(self, ranks: np.ndarray) -> float:
        return float(user_protocol_metrics(ranks, self.users, (self.k,))[self.metric])

    def _time_report(self, encoder):
        from core.tower.evaluate import evaluate_encoder
        from core.tower.query_encoder import HistoryMeanEncoder

        return evaluate_encoder(encoder or HistoryMeanEncoder(), self.catalog, self.ad_ids, self.ad_text_vectors,
                                self.split, (self.k,), seed=self.seed)

    def __call__(self, encoder) -> float:
        if self.data is not None:
            from core.tower.user_protocol import encoder_ranks

            return self._metric(encoder_ranks(encoder, self.data))
        return float(self._time_report(encoder).models["tower"][self.metric])


def tune_tower(catalog: Catalog, ad_ids: np.ndarray, ad_text_vectors: np.ndarray, split: Split,
               base: dict, *, fit: Callable, k: int = 100, seed: int = 0, grid: dict[str, tuple] | None = None,
               epochs: tuple[int, ...] = EPOCHS, start_epochs: int = START_EPOCHS, max_tries: int = MAX_TRIES,
               progress: Progress | None = None) -> TuneReport:
    """Search the tuned settings (see the module docstring) for a tower trained with `base`
    (`fit`'s keyword arguments; the tuned keys in it are overridden) on `split`'s training side;
    `fit` is core.tower.train.fit_tower (passed in: train calls this module, not the reverse).
    `progress(fraction, step)` after every batch of every try, ending at 1.0."""
    grid = dict(GRID if grid is None else grid)
    if start_epochs not in epochs:
        raise AdLensError(f"start_epochs {start_epochs} is not one of the epoch counts {epochs}")
    t0 = time.perf_counter()
    report_progress(progress, 0.0, "Tuning: preparing the validation slice")
    inner, vsplit = validation_catalog(catalog, split)
    scorer = _Scorer(inner, ad_ids, ad_text_vectors, vsplit, k, seed)
    combos = [dict(zip(grid, values)) for values in product(*grid.values())] or [{}]
    budget = min(max_tries, len(combos) + len(epochs))
    report = TuneReport(metric=scorer.metric, baselines=scorer.baselines,
                        validation={"split": vsplit.to_dict(), **scorer.size})
    seen: dict[tuple, TuneTry] = {}

    def run(params: dict, step: str) -> TuneTry | None:
        key = tuple(sorted(params.items()))
        if key in seen:
            return seen[key]
        if len(seen) >= max_tries:
            return None
        i = len(seen)
        label = ", ".join(f"{n} {v}" for n, v in params.items())
        t1 = time.perf_counter()
        sub = scaled(progress, i / budget, (i + 1) / budget)
        enc, _, _ = fit(inner, ad_ids, ad_text_vectors, vsplit, **{**base, **params, "seed": seed},
                        progress=None if sub is None else lambda f, step: sub(f, f"Tuning, try {i + 1} ({label}): {step}"))
        seen[key] = TuneTry(params=dict(params), score=round(scorer(enc), 5),
                            seconds=round(time.perf_counter() - t1, 2), step=step)
        report.tries.append(seen[key])
        return seen[key]

    def better(a: TuneTry | None, b: TuneTry) -> bool:
        return a is not None and a.score > b.score

    best = None
    for combo in combos:  # step 1: the grid
        t = run({"epochs": start_epochs, **combo}, "grid")
        if t is not None and (best is None or better(t, best)):
            best = t
    assert best is not None
    at = epochs.index(start_epochs)
    for direction in (1, -1):  # step 2: climb the epochs while it improves
        i = at + direction
        moved = False
        while 0 <= i < len(epochs):
            t = run({**best.params, "epochs": epochs[i]}, "epochs")
            if not better(t, best):
                break
            best, moved, i = t, True, i + direction
        if moved:
            break
    report.chosen, report.chosen_score = dict(best.params), best.score
    report.seconds = round(time.perf_counter() - t0, 2)
    report_progress(progress, 1.0, "Tuning done")
    return report
