"""Train a user tower on the impression log and register it in the workspace.

Data: every clicked impression on the training side of the split (core.tower.split.make_split:
by default before the 80th percentile of impression timestamps; `none` trains on every
impression and evaluates nothing) is one (request, clicked ad) pair; the request's history is
the user's training clicks strictly before that impression (the last `history_limit`, or all).

Loss: sampled softmax over in-batch negatives. logits[i, j] = <q_i, a_j> / temperature
- logq * log(B * Q(ad_j)), where Q is the ad's share of training clicks and B the batch size (logQ
correction: popular ads appear as in-batch negatives more often, and without it the tower learns
to push them down; B * Q is the ad's expected count in a batch, so the corrected logits estimate
the full softmax over all ads). In-batch copies of a row's own positive ad are masked. With
`hard_negatives`, each row also brings the user's nearest-in-time shown-but-not-clicked training
impression as an extra column for every row of the batch, corrected the same way by its share
among the hard negatives (they were sampled by exposure, not by clicks).

Deterministic for a seed: seeded init, shuffles and dropout, deterministic algorithms, and one
intra-op thread while training (restored afterwards).
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sqlalchemy import Engine

from core.common.errors import AdLensError
from core.common.jsonio import to_jsonable
from core.common.names import validate_name
from core.common.progress import Progress, scaled
from core.common.progress import report as report_progress
from core.data.features import FeatureStore
from core.data.request import requests_from_impressions
from core.store.artifacts import atomic_write_json, fsync_tree, staging_dir
from core.store.catalog import Catalog, load_catalog
from core.store.db import make_engine, session_scope
from core.store.debris import clean_debris
from core.store.models import Tower
from core.store.settings import Settings
from core.tower.defaults import TRAIN_DEFAULTS as DEFAULTS
from core.tower.evaluate import DEFAULT_KS, EvalReport, evaluate_encoder
from core.tower.model import (
    COMM_UNK,
    PAD,
    UNK,
    TowerInputs,
    UserTowerEncoder,
    build_vocab,
)
from core.tower.registry import catalog_embeddings, tower_path, write_tower_manifest
from core.tower.split import Split, make_split
from core.tower.tune import tune_tower
from core.tower.user_protocol import UserEvalReport, evaluate_encoder_user

NOT_EVALUATED = "trained on every impression (--holdout none): nothing held out, so this tower is not evaluated"


@dataclass
class TrainResult:
    """What `train_tower` produced: where, with which settings, how it trained and evaluated."""

    name: str
    path: Path
    config: dict  # training settings, split and data counts (also in metrics.json "training")
    losses: list[float]  # mean loss per epoch
    train_seconds: float
    report: EvalReport | UserEvalReport | None  # None with --holdout none


@contextmanager
def _deterministic():
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def nearest_unclicked(clicks: pd.DataFrame, shown: pd.DataFrame, shown_pos: np.ndarray) -> np.ndarray:
    """For each click, the ad row of the same user's shown-but-not-clicked impression nearest in
    time (earlier on ties); -1 where the user has none. `shown_pos` are the ad rows of `shown`."""
    if len(clicks) == 0 or len(shown) == 0:
        return np.full(len(clicks), -1, np.int64)
    users = np.unique(np.concatenate([clicks["user_id"].to_numpy(dtype=object), shown["user_id"].to_numpy(dtype=object)]).astype(str))
    cu = np.searchsorted(users, clicks["user_id"].astype(str).to_numpy(dtype=object).astype(str))
    su = np.searchsorted(users, shown["user_id"].astype(str).to_numpy(dtype=object).astype(str))
    ct = pd.to_datetime(clicks["ts"]).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    st = pd.to_datetime(shown["ts"]).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    order = np.lexsort((st, su))
    su, st, spos = su[order], st[order], np.asarray(shown_pos)[order]
    # Search each click in the shown list by its (user, ts) key packed into one int64.
    ts_all = np.unique(np.r_[st, ct])
    width = len(ts_all) + 1
    skey = su.astype(np.int64) * width + np.searchsorted(ts_all, st)
    ckey = cu.astype(np.int64) * width + np.searchsorted(ts_all, ct)
    right = np.searchsorted(skey, ckey, side="left")
    left = right - 1
    out = np.full(len(ct), -1, np.int64)
    best = np.full(len(ct), np.iinfo(np.int64).max)
    for cand in (left, right):  # left first so it wins ties
        ok = (cand >= 0) & (cand < len(skey))
        c = np.clip(cand, 0, len(skey) - 1)
        ok &= su[c] == cu
        dist = np.abs(st[c] - ct)
        better = ok & (dist < best)
        out[better], best[better] = spos[c][better], dist[better]
    return out


def _mask_oov(t: dict[str, torch.Tensor], p: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Replace a random share `p` of categorical ids by the unknown slot, so it learns a generic
    vector for cold start (the vocabulary covers training data, so it is never seen otherwise)."""
    if p <= 0:
        return t
    t = dict(t)
    for key, unk in (("country", UNK), ("age_bucket", UNK), ("user_device", UNK), ("request_device", UNK),
                     ("placement", UNK), ("community", COMM_UNK)):
        m = torch.rand(t[key].shape, generator=gen) < p
        t[key] = torch.where(m, torch.full_like(t[key], unk), t[key])
    s = t["subscriptions"]
    m = (torch.rand(s.shape, generator=gen) < p) & (s != PAD)
    t["subscriptions"] = torch.where(m, torch.full_like(s, COMM_UNK), s)
    return t


def _batch_loss(net, q: torch.Tensor, text: torch.Tensor, id_rows: torch.Tensor | None, pos: torch.Tensor,
                log_q: torch.Tensor, temperature: float, hard: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Sampled softmax of row i's positive among the batch's positives (logQ-corrected, copies of
    the own positive masked) and, with `hard` = (ad rows or -1, their log Q), the hard negatives."""
    def ads(rows: torch.Tensor) -> torch.Tensor:
        return net.ads(text[rows], None if id_rows is None else id_rows[rows])

    logits = (q @ ads(pos).T) / temperature - log_q[None, :]
    same = (pos[:, None] == pos[None, :]) & ~torch.eye(len(pos), dtype=torch.bool)
    logits = logits.masked_fill(same, float("-inf"))
    if hard is not None:
        neg, log_qn = hard
        h = (q @ ads(neg.clamp(min=0)).T) / temperature - log_qn[None, :]
        h = h.masked_fill((neg[None, :] < 0) | (neg[None, :] == pos[:, None]), float("-inf"))
        logits = torch.cat([logits, h], 1)
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(pos)))


def _training_clicks(catalog: Catalog, features: FeatureStore, split: Split):
    """(training impressions, their clicks, their unclicked impressions, clicked ad positions)."""
    imps = catalog.impressions
    train = imps[~split.test_side(imps)] if len(imps) else imps
    clicked = train["clicked"].astype(bool).to_numpy() if len(train) else np.zeros(0, bool)
    clicks, shown = train[clicked], train[~clicked]
    pos = features.ad_positions(clicks["ad_id"].to_numpy()) if len(clicks) else np.empty(0, np.int64)
    clicks, pos = clicks[pos >= 0], pos[pos >= 0]
    if len(clicks) < 2:
        raise AdLensError(f"only {len(clicks)} clicked impression(s) on the training side of the {split.kind} "
                          f"split ({split.to_dict()}): ingest impressions with clicks (adlens ingest / adlens demo)")
    return train, clicks, shown, pos


def _corrections(features: FeatureStore, clicks: pd.DataFrame, shown: pd.DataFrame, pos: np.ndarray,
                 batch_size: int, logq: float, hard_negatives: bool):
    """logQ terms of the positives, and the hard negatives with theirs (see the module docstring)."""
    counts = np.bincount(pos, minlength=len(features.ad_ids)).astype(np.float64)
    log_q = torch.from_numpy(logq * np.log(batch_size * counts[pos] / counts.sum()).astype(np.float32))
    neg = np.full(len(pos), -1, np.int64)
    log_qn = torch.zeros(len(pos))
    if hard_negatives:
        spos = features.ad_positions(shown["ad_id"].to_numpy()) if len(shown) else np.empty(0, np.int64)
        neg = nearest_unclicked(clicks, shown[spos >= 0], spos[spos >= 0])
        ncounts = np.bincount(neg[neg >= 0], minlength=len(features.ad_ids)).astype(np.float64)
        share = ncounts[np.maximum(neg, 0)] / max(ncounts.sum(), 1.0)
        log_qn = torch.from_numpy(np.log(batch_size * np.maximum(share, 1e-12)).astype(np.float32))
    return log_q, neg, log_qn


def fit_tower(catalog: Catalog, ad_ids: np.ndarray, ad_text_vectors: np.ndarray, split: Split, *,
              epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"],
              temperature: float = DEFAULTS["temperature"], seed: int = 0, hard_negatives: bool = False,
              use_context: bool = True, ad_adapter: bool = True, weight_decay: float = DEFAULTS["weight_decay"],
              oov_dropout: float = DEFAULTS["oov_dropout"], logq: float = DEFAULTS["logq"],
              history_limit: int = DEFAULTS["history_limit"], hidden: int = DEFAULTS["hidden"],
              id_embeddings: bool = DEFAULTS["id_embeddings"], progress: Progress | None = None,
              features: FeatureStore | None = None) -> tuple[UserTowerEncoder, dict, list[float]]:
    """Train a tower in memory on the training side of `split`: (encoder, data stats, epoch losses).

    `temperature` divides the dot products; `logq` scales the logQ correction (1 = the unbiased
    sampled softmax, 0 = none); `oov_dropout` is the share of categorical ids replaced by the
    unknown slot per batch (cold start); `ad_adapter` trains the residual linear ad adapter;
    `use_context` feeds community, placement, request device and hour; `history_limit` is the
    number of last clicks pooled into the history (0: all); `hidden` the MLP width. One-cycle LR
    schedule with AdamW; see the module docstring for the loss. Histories are built from the
    training side only (`features`, when given, must be `training_features(...)`).
    `progress(fraction, step)` (core.common.progress) after every batch, ending at 1.0."""
    if epochs < 1 or batch_size < 2 or lr <= 0 or temperature <= 0 or history_limit < 0 or hidden < 1:
        raise AdLensError(f"need epochs >= 1, batch_size >= 2, lr > 0, temperature > 0, history_limit >= 0, "
                          f"hidden >= 1; got {epochs}, {batch_size}, {lr}, {temperature}, {history_limit}, {hidden}")
    features = features or training_features(catalog, ad_ids, ad_text_vectors, split)
    train, clicks, shown, pos = _training_clicks(catalog, features, split)
    torch.manual_seed(seed)
    enc = UserTowerEncoder({"text_dim": features.dim, "use_context": use_context, "ad_adapter": ad_adapter,
                            "history_limit": int(history_limit) or 10**9, "hidden": int(hidden),
                            "id_embeddings": bool(id_embeddings)},
                           build_vocab(catalog.users, catalog.communities, train, with_ads=id_embeddings))
    inputs: TowerInputs = enc.featurize(requests_from_impressions(clicks, catalog.users), features)
    log_q, neg, log_qn = _corrections(features, clicks, shown, pos, batch_size, logq, hard_negatives)
    text = torch.from_numpy(features.ad_text_vectors)
    id_rows = torch.from_numpy(enc.ad_rows(features)) if id_embeddings else None
    pos_t, neg_t = torch.from_numpy(pos), torch.from_numpy(neg)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    net = enc.net
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, int(np.ceil(len(pos) / batch_size))) * epochs
    # OneCycleLR divides by (pct_start * steps - 1), zero at exactly 10 steps: nudge it there only
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1 if steps != 10 else 0.11)
    losses: list[float] = []
    done = 0
    with _deterministic():
        net.train()
        for epoch in range(epochs):
            perm = rng.permutation(len(pos))
            total, n = 0.0, 0
            for s in range(0, len(perm), batch_size):
                idx = np.sort(perm[s:s + batch_size])
                if len(idx) < 2:
                    continue
                it = torch.from_numpy(idx)
                q = net(_mask_oov(inputs.tensors(idx), oov_dropout, gen))
                loss = _batch_loss(net, q, text, id_rows, pos_t[it], log_q[it], temperature,
                                   (neg_t[it], log_qn[it]) if hard_negatives else None)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                lv = float(loss.detach())
                total, n = total + lv * len(idx), n + len(idx)
                done += 1
                report_progress(progress, done / steps, f"Training the tower, epoch {epoch + 1} of {epochs}")
            losses.append(round(total / max(n, 1), 5))
        net.eval()
    report_progress(progress, 1.0, f"Training the tower, epoch {epochs} of {epochs}")
    stats = {"n_train_clicks": int(len(pos)), "n_hard_negatives": int((neg >= 0).sum()) if hard_negatives else 0,
             "n_train_users": int(clicks["user_id"].nunique()), "n_ads": int(len(features.ad_ids))}
    return enc, stats, losses


def training_features(catalog: Catalog, ad_ids: np.ndarray, ad_text_vectors: np.ndarray, split: Split) -> FeatureStore:
    """The FeatureStore training sees: built from the training side only, so no held-out click is
    ever in a training history (for the time split that is every click before the request anyway)."""
    imps = catalog.impressions
    if split.kind in ("time", "none") or len(imps) == 0:
        return FeatureStore(catalog, ad_ids, ad_text_vectors)
    return FeatureStore(replace(catalog, impressions=imps[~split.test_side(imps)].reset_index(drop=True)),
                        ad_ids, ad_text_vectors)


def train_tower(settings: Settings, name: str, *, epochs: int = DEFAULTS["epochs"],
                batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"],
                temperature: float = DEFAULTS["temperature"], seed: int = 0, hard_negatives: bool = False,
                use_context: bool = True, ad_adapter: bool = True, cutoff=None, split: str = "time",
                logq: float = DEFAULTS["logq"], history_limit: int = DEFAULTS["history_limit"],
                hidden: int = DEFAULTS["hidden"], id_embeddings: bool = DEFAULTS["id_embeddings"],
                engine: Engine | None = None, progress: Progress | None = None,
                ad_ids: np.ndarray | None = None, ad_text_vectors: np.ndarray | None = None,
                ks: tuple[int, ...] = DEFAULT_KS, tune: bool = False, tune_options: dict | None = None) -> TrainResult:
    """Train tower `name` on the workspace's impressions, evaluate it on the held-out clicks (the
    user protocol for a user split; nothing for `split="none"`), save it to
    `<towers_dir>/<name>/` atomically and register it. The split is checked before anything is
    embedded or trained. Ad vectors default to the embedding cache (pass `ad_ids` +
    `ad_text_vectors`, sorted by id, to use others). `progress(fraction, step)`
    (core.common.progress) follows loading, training, evaluating and saving, ending at 1.0.

    With `tune`, epochs, logq, history_limit and id_embeddings are first chosen on the validation
    split of the training side (core.tower.tune.tune_tower, `tune_options` its keyword arguments),
    overriding the values passed; the report of what was tried is `config["tuning"]`."""
    engine = engine or make_engine(settings.db_url)
    _check_new_tower(settings, engine, name)
    report_progress(progress, 0.0, "Loading the catalog and the ad embeddings")
    catalog = load_catalog(engine)
    if (ad_ids is None) != (ad_text_vectors is None):
        raise AdLensError("pass both ad_ids and ad_text_vectors, or neither")
    the_split = make_split(catalog.impressions, split, cutoff=cutoff, seed=seed)  # fails fast on a bad cutoff
    emb_info = {"source": "arguments"}
    if ad_ids is None:
        ad_ids, ad_text_vectors, emb_info = catalog_embeddings(settings, catalog)
        emb_info = {"source": "embedding_cache", "embedding_model": settings.embedding_model, **emb_info}
    features = training_features(catalog, ad_ids, ad_text_vectors, the_split)
    params = {"epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr), "temperature": float(temperature),
              "seed": int(seed), "hard_negatives": bool(hard_negatives), "use_context": bool(use_context),
              "ad_adapter": bool(ad_adapter), "logq": float(logq), "history_limit": int(history_limit),
              "hidden": int(hidden), "id_embeddings": bool(id_embeddings)}
    tuning = None
    start = 0.05
    if tune:
        tuning = tune_tower(catalog, ad_ids, ad_text_vectors, the_split, params, fit=fit_tower, seed=int(seed),
                            progress=scaled(progress, 0.05, 0.6), **(tune_options or {}))
        params.update(tuning.chosen)
        start = 0.6
    t0 = time.perf_counter()
    enc, stats, losses = fit_tower(catalog, ad_ids, ad_text_vectors, the_split,
                                   progress=scaled(progress, start, 0.85), features=features, **params)
    train_seconds = round(time.perf_counter() - t0, 2)
    # Which text space the tower was trained in, so a version can refuse a mismatched model.
    enc.cfg["embedding_model"] = emb_info.get("model", emb_info.get("embedding_model"))
    enc.cfg["embedding_fingerprint"] = emb_info.get("fingerprint")
    report_progress(progress, 0.85, "Evaluating on the held-out clicks")
    report = _evaluate_trained(name, enc, catalog, ad_ids, ad_text_vectors, the_split, ks, seed, features)
    # A tower trained on everything still records its split (compare and sources read it from here).
    evaluation = report if report is not None else {"split": the_split.to_dict(), "not_evaluated": NOT_EVALUATED}
    config = {**params, "split": the_split.to_dict(), **stats, "embeddings": emb_info, "losses": losses,
              "train_seconds": train_seconds, **({"evaluation": NOT_EVALUATED} if report is None else {}),
              **({"tuning": tuning.to_dict()} if tuning is not None else {})}
    report_progress(progress, 0.95, "Saving and registering the tower")
    final = _save_and_register(settings, engine, name, enc, config, evaluation)
    report_progress(progress, 1.0, "done")
    return TrainResult(name=name, path=final, config=config, losses=losses, train_seconds=train_seconds, report=report)


def _check_new_tower(settings: Settings, engine: Engine, name: str) -> None:
    """A valid name that no tower (folder or registry row) has yet: towers are immutable."""
    validate_name(name, "tower")
    final = tower_path(settings, name)
    with session_scope(engine) as s:
        taken = s.get(Tower, name) is not None
    if taken or final.exists():
        raise AdLensError(f"tower {name!r} already exists ({final}); towers are immutable: pick a new name")


def _evaluate_trained(name: str, enc: UserTowerEncoder, catalog: Catalog, ad_ids: np.ndarray,
                      ad_text_vectors: np.ndarray, split: Split, ks: tuple[int, ...], seed: int,
                      features: FeatureStore) -> EvalReport | UserEvalReport | None:
    """The held-out evaluation the split calls for: the user protocol for a user split, none for
    `none`, the time-split evaluation otherwise (reusing the training features for `time`)."""
    if split.kind == "none":
        return None
    if split.kind == "user":
        report = evaluate_encoder_user(enc, catalog, ad_ids, ad_text_vectors, split, ks, seed=seed)
    else:
        report = evaluate_encoder(enc, catalog, ad_ids, ad_text_vectors, split, ks, seed=seed,
                                  features=features if split.kind == "time" else None)
    report.tower = name
    return report


def _save_and_register(settings: Settings, engine: Engine, name: str, enc: UserTowerEncoder, config: dict,
                       evaluation) -> Path:
    """Write the tower into a staging folder, rename it into place (never over an existing one)
    and register it; the folder is removed again if registering fails. Returns its folder."""
    final = tower_path(settings, name)
    created = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    clean_debris(settings, under=settings.towers_dir)
    with staging_dir(settings.towers_dir, name) as tmp:
        enc.save(tmp)
        manifest_sha = write_tower_manifest(tmp, name)
        atomic_write_json(tmp / "metrics.json", {"tower": name, "created_at": created, "training": config,
                                                  "evaluation": evaluation})
        fsync_tree(tmp)
        os.rename(tmp, final)  # fails if `final` appeared meanwhile: never overwrite a tower
    try:
        with session_scope(engine, write="register a tower") as s:
            s.add(Tower(name=name, created_at=created, path=f"towers/{name}",
                        config=to_jsonable({**config, "manifest_sha256": manifest_sha}),
                        metrics=to_jsonable(evaluation)))
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)  # registered only when complete: undo the folder
        raise
    return final
