"""The user protocol, as recommender libraries (RecBole, implicit, Elliot) evaluate: a seeded random
split of the (user, ad) interactions (core.tower.split, kind "user"), then ONE request per user
placed after all of that user's impressions, whose history is the user's training clicks only;
each model ranks every ad except the user's training ads, and the user's held-out ads are the
relevant ones (metrics: core.tower.metrics.user_protocol_metrics: HR@K per held-out interaction,
Recall@K and NDCG@K per user).

Models come in two shapes: full score rows (`full_score_ranks`: a function from a block of
users to a (users, ads) score matrix; ties are broken halfway, as in ranks_of_targets) and
top-k lists (`list_ranks`: a source or kNN returns at most k ads; an ad it does not return
ranks after every k). This module evaluates the encoder under test and the baselines that need
nothing above the tower stage (random, most-popular, history-mean); item-kNN, EASE and the
candidate sources are added by core.analysis.user_eval.

The request's context is the home feed with the user's profile country and device: the protocol
asks "what does this user want", not "in which community".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from core.common.errors import AdLensError
from core.data.features import FeatureStore
from core.data.request import REQUEST_COLUMNS
from core.store.catalog import Catalog
from core.tower.metrics import user_protocol_metrics
from core.tower.query_encoder import HistoryMeanEncoder, QueryEncoder, l2_normalize
from core.tower.split import Split, validation_split

DEFAULT_KS: tuple[int, ...] = (10, 50, 100, 500)
BASELINES: tuple[str, ...] = ("random", "most_popular", "history_mean")


@dataclass
class UserProtocolData:
    """Everything a model needs to be scored under the user protocol (see the module docstring)."""

    split: Split
    n_ads: int
    users: np.ndarray  # evaluated users (>= 1 held-out ad), sorted
    histories: list[np.ndarray]  # per evaluated user: distinct training ad positions
    test_rows: np.ndarray  # per held-out pair: row in `users` (sorted by row)
    test_pos: np.ndarray  # per held-out pair: ad position
    requests: pd.DataFrame  # one request per evaluated user (REQUEST_COLUMNS)
    features: FeatureStore  # built from the training impressions only
    train_user_idx: np.ndarray  # every training click (all users): user code ...
    train_ad_pos: np.ndarray  # ... and ad position (for click matrices)
    n_train_users: int
    n_skipped: int  # held-out pairs whose ad has no text vector
    train_users: np.ndarray | None = None  # user id of each training user code

    @property
    def train_counts(self) -> np.ndarray:
        """Distinct training users per ad (the most-popular score)."""
        pairs = np.unique(self.train_user_idx * np.int64(self.n_ads) + self.train_ad_pos)
        return np.bincount(pairs % self.n_ads, minlength=self.n_ads).astype(np.float64)


def build_user_protocol(catalog: Catalog, ad_ids: np.ndarray, ad_text_vectors: np.ndarray,
                        split: Split) -> UserProtocolData:
    """Split `catalog`'s impressions by `split` (kind "user") into training histories and held-out ads."""
    if split.kind != "user":
        raise AdLensError(f"the user protocol needs a user split; got {split.kind!r} (train with --split user)")
    imps = catalog.impressions
    test = split.test_side(imps)
    clicked = imps["clicked"].astype(bool).to_numpy() if len(imps) else np.zeros(0, bool)
    train_cat = replace(catalog, impressions=imps[~test].reset_index(drop=True))
    features = FeatureStore(train_cat, ad_ids, ad_text_vectors)
    n_ads = len(features.ad_ids)
    tc = imps[clicked & ~test]
    tpos = features.ad_positions(tc["ad_id"].to_numpy()) if len(tc) else np.empty(0, np.int64)
    tuser = tc["user_id"].astype(str).to_numpy()[tpos >= 0]
    tpos = tpos[tpos >= 0]
    held = imps[clicked & test].drop_duplicates(["user_id", "ad_id"])
    hpos = features.ad_positions(held["ad_id"].to_numpy()) if len(held) else np.empty(0, np.int64)
    skipped = int((hpos < 0).sum())
    held, hpos = held[hpos >= 0], hpos[hpos >= 0]
    if len(held) == 0:
        raise AdLensError(f"no held-out clicks on the user split {split.to_dict()}: nothing to evaluate")
    users, rows = np.unique(held["user_id"].astype(str).to_numpy(), return_inverse=True)
    order = np.argsort(rows, kind="stable")
    all_train_users, tcode = np.unique(tuser, return_inverse=True)
    ucode = pd.Index(all_train_users).get_indexer(users)
    histories = _histories(tcode, tpos, len(all_train_users), ucode)
    requests = protocol_requests(catalog, users)
    return UserProtocolData(split=split, n_ads=n_ads, users=users.astype(object), histories=histories,
                            test_rows=rows[order].astype(np.int64), test_pos=hpos[order].astype(np.int64),
                            requests=requests, features=features, train_user_idx=tcode.astype(np.int64),
                            train_ad_pos=tpos.astype(np.int64), n_train_users=len(all_train_users),
                            n_skipped=skipped, train_users=all_train_users.astype(object))


def protocol_requests(catalog: Catalog, users: np.ndarray) -> pd.DataFrame:
    """The protocol's request of each user in `users`: the home feed with the user's profile device
    and country, one second after the user's last impression (training or held out)."""
    imps = catalog.impressions
    last = imps.groupby("user_id")["ts"].max()
    ts = pd.to_datetime(last.reindex(users).to_numpy()) + pd.Timedelta(seconds=1)
    prof = catalog.users.set_index("user_id") if len(catalog.users) else pd.DataFrame(columns=["country", "device"])
    return pd.DataFrame({
        "user_id": np.asarray(users, dtype=object), "community_id": None, "placement": "home_feed",
        "device": prof["device"].reindex(users).fillna("unknown").to_numpy(dtype=object),
        "country": prof["country"].reindex(users).fillna("unknown").to_numpy(dtype=object),
        "ts": ts.to_numpy(),
    }, columns=list(REQUEST_COLUMNS))


def _histories(tcode: np.ndarray, tpos: np.ndarray, n_codes: int, want: np.ndarray) -> list[np.ndarray]:
    """Distinct training ad positions of each user code in `want` (-1: a user without training clicks)."""
    order = np.argsort(tcode, kind="stable")
    bounds = np.searchsorted(tcode[order], np.arange(n_codes + 1))
    sorted_pos = tpos[order]
    return [np.unique(sorted_pos[bounds[c]:bounds[c + 1]]) if c >= 0 else np.empty(0, np.int64) for c in want]


def _pair_slices(data: UserProtocolData) -> np.ndarray:
    return np.searchsorted(data.test_rows, np.arange(len(data.users) + 1))


def full_score_ranks(data: UserProtocolData, scores: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Rank of every held-out pair when `scores(rows)` -> (len(rows), n_ads) scores its users'
    rows; training ads are excluded, ties broken halfway."""
    bounds = _pair_slices(data)
    out = np.empty(len(data.test_pos), np.int64)
    block = max(1, 2**23 // max(data.n_ads, 1))
    for lo in range(0, len(data.users), block):
        rows = np.arange(lo, min(lo + block, len(data.users)))
        s = np.array(scores(rows), dtype=np.float64, copy=True)
        for i, r in enumerate(rows):
            row = s[i]
            row[data.histories[r]] = -np.inf
            a, b = bounds[r], bounds[r + 1]
            own = row[data.test_pos[a:b]]
            srt = np.sort(row)  # one sort per user, then binary searches (not an own x ads compare)
            right, left = np.searchsorted(srt, own, "right"), np.searchsorted(srt, own, "left")
            out[a:b] = (len(row) - right) + (right - left - 1) // 2
    return out


def list_ranks(data: UserProtocolData, lists: np.ndarray) -> np.ndarray:
    """Rank of every held-out pair in per-user top-k lists ((n_users, k) ad positions, -1 padded,
    best first); training ads are dropped from a list first; a pair not in it ranks n_ads."""
    if len(lists) != len(data.users):
        raise ValueError(f"lists has {len(lists)} rows for {len(data.users)} users")
    bounds = _pair_slices(data)
    out = np.full(len(data.test_pos), data.n_ads, np.int64)
    for r in range(len(data.users)):
        lst = lists[r][lists[r] >= 0]
        lst = lst[~np.isin(lst, data.histories[r])]
        a, b = bounds[r], bounds[r + 1]
        where = pd.Index(lst).get_indexer(data.test_pos[a:b])
        out[a:b] = np.where(where >= 0, where, data.n_ads)
    return out


@dataclass
class UserEvalReport:
    """The user-protocol table: metrics per model, plus notes (chosen parameters, skipped models)."""

    split: dict
    ks: list[int]
    n_ads: int
    n_users: int
    n_test_pairs: int
    n_train_clicks: int
    n_skipped: int
    models: dict[str, dict[str, float]]
    notes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    tower: str | None = None
    protocol: str = "user"

    def to_dict(self) -> dict:
        return asdict(self)


def baseline_ranks(data: UserProtocolData, seed: int = 0) -> dict[str, np.ndarray]:
    """Ranks of the held-out pairs under random, most-popular and history-mean."""
    rng = np.random.default_rng(seed)
    counts = data.train_counts
    text_ads = l2_normalize(data.features.ad_text_vectors)
    hm = HistoryMeanEncoder().encode_requests(data.requests, data.features)
    return {
        "random": full_score_ranks(data, lambda rows: rng.random((len(rows), data.n_ads))),
        "most_popular": full_score_ranks(data, lambda rows: np.broadcast_to(counts, (len(rows), data.n_ads))),
        "history_mean": full_score_ranks(data, lambda rows: hm[rows] @ text_ads.T),
    }


def encoder_ranks(encoder: QueryEncoder, data: UserProtocolData) -> np.ndarray:
    """Ranks of the held-out pairs under a query encoder (brute-force inner product)."""
    q = encoder.encode_requests(data.requests, data.features)
    ads = encoder.transform_catalog(data.features.ad_text_vectors, data.features.ad_ids)
    return full_score_ranks(data, lambda rows: q[rows] @ ads.T)


def user_report(data: UserProtocolData, ranks: dict[str, np.ndarray], ks: tuple[int, ...], *,
                notes: dict[str, str] | None = None, seconds: float = 0.0) -> UserEvalReport:
    """Metrics of every model's ranks on `data`."""
    users = data.users[data.test_rows]
    return UserEvalReport(split=data.split.to_dict(), ks=list(ks), n_ads=data.n_ads, n_users=len(data.users),
                          n_test_pairs=len(data.test_pos), n_train_clicks=len(data.train_ad_pos),
                          n_skipped=data.n_skipped,
                          models={m: user_protocol_metrics(r, users, ks) for m, r in ranks.items()},
                          notes=dict(notes or {}), seconds=round(seconds, 3))


def evaluate_encoder_user(encoder: QueryEncoder | None, catalog: Catalog, ad_ids: np.ndarray,
                          ad_text_vectors: np.ndarray, split: Split, ks: tuple[int, ...] = DEFAULT_KS, *,
                          seed: int = 0, name: str = "tower") -> UserEvalReport:
    """The user-protocol table of `encoder` (as `name`; None: baselines only) and the tower-stage baselines."""
    t0 = time.perf_counter()
    ks = tuple(sorted({int(k) for k in ks}))
    data = build_user_protocol(catalog, ad_ids, ad_text_vectors, split)
    ranks = {} if encoder is None else {name: encoder_ranks(encoder, data)}
    ranks.update(baseline_ranks(data, seed))
    return user_report(data, ranks, ks, seconds=time.perf_counter() - t0)


def validation_slice(data: UserProtocolData, fraction: float | None = None, seed: int | None = None) -> UserProtocolData:
    """The same protocol one level down, for choosing hyper-parameters without touching the test
    side: the training (user, ad) pairs that the validation split of `data.split`
    (core.tower.split.validation_split; `fraction` and `seed` override its) holds out, the rest
    fitting. Only the fields ranking needs are rebuilt (requests and features stay those of `data`)."""
    if data.train_users is None:
        raise ValueError("the protocol data has no training user ids (build it with build_user_protocol)")
    vsplit = validation_split(data.split)
    vsplit = Split("user", None, vsplit.seed if seed is None else int(seed),
                   vsplit.test_fraction if fraction is None else float(fraction))
    pairs = np.unique(np.c_[data.train_user_idx, data.train_ad_pos], axis=0)
    val = vsplit.held_pairs(np.asarray(data.train_users, dtype=object)[pairs[:, 0]],
                            np.asarray(data.features.ad_ids, dtype=object)[pairs[:, 1]])
    fit_u, fit_a = pairs[~val, 0], pairs[~val, 1]
    codes, rows = np.unique(pairs[val, 0], return_inverse=True)
    order = np.argsort(rows, kind="stable")
    histories = _histories(fit_u, fit_a, data.n_train_users, codes)
    return replace(data, users=codes.astype(object), histories=histories, test_rows=rows[order].astype(np.int64),
                   test_pos=pairs[val, 1][order].astype(np.int64), train_user_idx=fit_u.astype(np.int64),
                   train_ad_pos=fit_a.astype(np.int64), n_skipped=0)
