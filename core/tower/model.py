"""The learned user tower: a small PyTorch (CPU) model mapping a request into the ad embedding space.

Query side, per request:
- profile: country (of the request), age bucket and device of the user (embeddings);
- subscribed communities: mean of community embeddings (EmbeddingBag);
- engagement history: the text embeddings of the ads the user clicked strictly before the
  request, mean-pooled over the last `history_limit` and the last `recent_limit` clicks, plus
  log(1 + count); users without history get a learned "no history" vector instead;
- context (unless `use_context` is off): community (or "none" on the home feed), placement,
  request device, hour of day.
These go through a 2-layer MLP whose output is added to the pooled history (a learned gate on a
skip connection), then L2-normalised: the tower starts from "what the user clicked" and learns
the corrections.

Ad side: the frozen sentence-transformer text vector plus an optional residual linear adapter
(`a + W a + b`, W and b start at zero), L2-normalised (`transform_ads`).

Ad id embeddings (`id_embeddings`, off by default): a learned vector per ad clicked in training
(zero-initialised) is added on the ad side, and the mean of the history's id vectors (the same
table, last `history_limit` clicks) on the query side, so the tower can learn collaborative
structure that titles do not carry. Ads unseen in training keep the text-only vector (their id
row is the fixed zero "unknown" slot), so new ads are still served.

Cold start never fails: unknown users, countries, devices or communities map to an
"unknown" slot (trained by randomly masking ids during training), no history uses the learned
vector. Saved as `config.json` + `model.safetensors` + `vocab.json`; loaded strictly.

Torch only where it is needed: the network (core/tower/tower_net.py) is built to train, or on
first use of `net`; a tower loaded from its files serves from the saved arrays in numpy
(core/tower/numpy_forward.py, equal to torch's output to float32 rounding), so opening a version
never imports torch (2-3 s of a dashboard page's first view).
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.common.errors import ArtifactError
from core.data.features import FeatureStore
from core.data.request import request_arrays
from core.data.vocab import AGE_BUCKETS, UNKNOWN, Device, Placement, values
from core.tower.numpy_forward import NUMPY_MAX_BATCH, ads_forward, forward_weights
from core.tower.numpy_forward import forward as numpy_forward
from core.tower.query_encoder import QueryEncoder, l2_normalize
from core.tower.tower_spec import (  # noqa: F401 (re-exported: the tower's constants)
    COMM_NONE,
    COMM_UNK,
    DEFAULTS,
    FORMAT_VERSION,
    ID_HISTORY,
    PAD,
    UNK,
    VOCABS,
    check_state,
    param_shapes,
)

if TYPE_CHECKING:
    import torch

    from core.tower.tower_net import TowerNet


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v == "" or v == UNKNOWN


class Lookup:
    """Maps values to embedding rows: `offset + position in values`, anything else -> `unk`."""

    def __init__(self, values_: list[str], offset: int, unk: int):
        self.values = list(values_)
        self.offset, self.unk = offset, unk
        self._map = {v: i + offset for i, v in enumerate(self.values)}

    @property
    def size(self) -> int:
        return self.offset + len(self.values)

    def codes(self, vals) -> np.ndarray:
        get, unk = self._map.get, self.unk
        return np.fromiter((get(v, unk) if isinstance(v, str) else unk for v in vals), dtype=np.int64)


def build_vocab(users: pd.DataFrame, communities: pd.DataFrame, impressions: pd.DataFrame,
                with_ads: bool = False) -> dict[str, list[str]]:
    """Vocabularies from the profile tables and the (training) impressions; sorted, deterministic.
    "unknown" and empty values are never entries: they use the unknown slot. `with_ads` adds the
    ads clicked in `impressions` (for id embeddings)."""

    def col(frame: pd.DataFrame, name: str) -> list:
        if not len(frame) or name not in frame:
            return []
        return list(pd.unique(frame[name].to_numpy(dtype=object))) if name != "communities" else frame[name].tolist()

    subs = [c for lst in col(users, "communities") if isinstance(lst, (list, tuple)) for c in lst]
    raw = {
        "country": col(users, "country"),
        "age_bucket": [*AGE_BUCKETS, *col(users, "age_bucket")],
        "device": [*values(Device), *col(users, "device"), *col(impressions, "device")],
        "placement": [*values(Placement), *col(impressions, "placement")],
        "community": [*col(communities, "community_id"), *subs, *col(impressions, "community_id")],
        "ad": col(impressions[impressions["clicked"].astype(bool)], "ad_id") if with_ads and len(impressions) else [],
    }
    return {k: sorted({str(v) for v in vs if not _is_missing(v)}) for k, vs in raw.items()}


@dataclass
class TowerInputs:
    """Featurised requests (numpy), row i = request i. Categorical fields are embedding rows."""

    country: np.ndarray
    age_bucket: np.ndarray
    user_device: np.ndarray
    subscriptions: np.ndarray  # (n, max_subscriptions), PAD-padded
    community: np.ndarray
    placement: np.ndarray
    request_device: np.ndarray
    hour: np.ndarray
    history: np.ndarray  # (n, d) mean text vector of the last history_limit clicks (0 if none)
    recent: np.ndarray  # (n, d) same over the last recent_limit clicks
    history_count: np.ndarray  # (n,) clicks in the long window
    history_ids: np.ndarray  # (n, L) ad-vocabulary rows of the last clicks, 0-padded (L = 0 without id embeddings)

    def __len__(self) -> int:
        return len(self.country)

    def tensors(self, idx: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        import torch

        out = {}
        for f in fields(self):
            a = getattr(self, f.name)
            a = a if idx is None else a[idx]
            out[f.name] = torch.from_numpy(np.ascontiguousarray(a))
        return out


class _ProfileCodes:
    """Embedding rows of every user's profile fields; row -1 (unknown user) takes the last row,
    an all-unknown profile."""

    def __init__(self, users: pd.DataFrame, lookups: dict[str, Lookup], max_subs: int):
        n = len(users)
        self.index = pd.Index(users["user_id"].to_numpy(dtype=object) if n else [], dtype=object)

        def col(name: str, lookup: Lookup) -> np.ndarray:
            vals = users[name].to_numpy(dtype=object) if n and name in users else np.full(n, None, object)
            return np.r_[lookup.codes(vals), lookup.unk].astype(np.int64)

        self.country = col("country", lookups["country"])
        self.age_bucket = col("age_bucket", lookups["age_bucket"])
        self.device = col("device", lookups["device"])
        self.subscriptions = np.full((n + 1, max_subs), PAD, np.int64)
        lists = users["communities"].tolist() if n and "communities" in users else []
        for i, lst in enumerate(lists):
            if isinstance(lst, (list, tuple, np.ndarray)) and len(lst):
                codes = lookups["community"].codes([str(c) for c in lst[:max_subs]])
                self.subscriptions[i, : len(codes)] = codes

    def rows(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user in the code tables; -1 (the trailing all-unknown row) if unknown."""
        if len(user_ids) <= 16:  # a funnel run's request: the index's hash table, no new Index
            return np.fromiter((self.index.get_loc(u) if u in self.index else -1 for u in user_ids),
                               dtype=np.int64, count=len(user_ids))
        return self.index.get_indexer(pd.Index(user_ids, dtype=object))


class UserTowerEncoder(QueryEncoder):
    """The learned query encoder of a version (kind "user_tower")."""

    kind = "user_tower"
    accepts_batch = True

    def __init__(self, cfg: dict, vocab: dict[str, list[str]], net: TowerNet | None = None,
                 weights: dict[str, np.ndarray] | None = None):
        """`weights` (arrays by state-dict name, as `load` reads them): serve in numpy, build the
        torch network only if `net` is used. Neither `net` nor `weights`: a new network (training)."""
        if "text_dim" not in cfg:
            raise ValueError("tower config lacks 'text_dim'")
        self.cfg = {**DEFAULTS, **cfg, "kind": self.kind, "format_version": FORMAT_VERSION}
        self.vocab = {k: list(vocab.get(k, [])) for k in VOCABS}
        self.lookups = {k: Lookup(self.vocab[k], 1, UNK) for k in VOCABS if k != "community"}
        self.lookups["community"] = Lookup(self.vocab["community"], 3, COMM_UNK)
        self.sizes = {k: lk.size for k, lk in self.lookups.items()}
        self._profile_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._weights = weights if net is None else None
        self._net = net
        if net is None and weights is None:
            self._net = self._new_net()
        if self._net is not None:
            self._net.eval()

    def _new_net(self) -> TowerNet:
        from core.tower.tower_net import TowerNet  # imports torch

        return TowerNet(self.cfg, self.sizes)

    @property
    def net(self) -> TowerNet:
        """The torch network (built from the loaded arrays on first use: imports torch)."""
        if self._net is None:
            import torch

            with self._lock:
                if self._net is None:
                    net = self._new_net()
                    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self._weights.items()},
                                        strict=True)
                    net.eval()
                    self._net, self._weights = net, None
        return self._net

    def _numpy_weights(self) -> dict[str, np.ndarray] | None:
        """The loaded arrays while no torch network exists (then every batch runs in numpy)."""
        return self._weights if self._net is None else None

    @property
    def dim(self) -> int:
        return int(self.cfg["text_dim"])

    # -- features --------------------------------------------------------------------------
    def _profiles(self, features: FeatureStore) -> "_ProfileCodes":
        """Every profile's codes, computed once per FeatureStore (requests then just index them)."""
        with self._lock:
            codes = self._profile_cache.get(features)
            if codes is None:
                codes = _ProfileCodes(features.users, self.lookups, int(self.cfg["max_subscriptions"]))
                self._profile_cache[features] = codes
            return codes

    def featurize(self, requests: pd.DataFrame, features: FeatureStore) -> TowerInputs:
        """Turn a requests frame (core.data.request.REQUEST_COLUMNS) into model inputs."""
        if features.dim != self.dim:
            raise ArtifactError(
                f"this user tower was trained on {self.dim}-d ad text vectors but the catalog's "
                f"vectors are {features.dim}-d (embedding model changed?): retrain the tower"
            )
        b = request_arrays(requests)
        lk = self.lookups
        prof = self._profiles(features)
        uid = b.user_id
        rows = prof.rows(uid)
        country = b.country
        own = np.array([not _is_missing(c) for c in country], dtype=bool)
        ts = b.ts
        comm = b.community_id
        none = np.array([_is_missing(c) for c in comm], dtype=bool)
        hist, recent, count, hist_ids = self._history(features, uid, ts)
        return TowerInputs(
            country=np.where(own, lk["country"].codes(country), prof.country[rows]),
            age_bucket=prof.age_bucket[rows],
            user_device=prof.device[rows],
            subscriptions=prof.subscriptions[rows],
            community=np.where(none, COMM_NONE, lk["community"].codes(comm)).astype(np.int64),
            placement=lk["placement"].codes(b.placement),
            request_device=lk["device"].codes(b.device),
            hour=np.where(np.isnat(ts), 0, (ts.astype(np.int64) // 3_600_000_000_000) % 24).astype(np.int64),
            history=hist, recent=recent, history_count=count, history_ids=hist_ids,
        )

    def _history(self, features: FeatureStore, uid: np.ndarray, ts: np.ndarray):
        n, d = len(uid), self.dim
        long_l, short_l = int(self.cfg["history_limit"]), int(self.cfg["recent_limit"])
        hist = np.zeros((n, d), np.float32)
        recent = np.zeros((n, d), np.float32)
        count = np.zeros(n, np.float32)
        width = min(long_l, ID_HISTORY) if self.cfg.get("id_embeddings") else 0
        ids = np.zeros((n, width), np.int64)
        # only the ids a request shows the tower are mapped: mapping every ad of the catalog per
        # call (ad_rows) cost ~11 ms per request at 100k ads
        ad_ids, vocab = np.asarray(features.ad_ids, dtype=object), self.lookups["ad"] if width else None
        vecs = features.ad_text_vectors
        for i, rows in enumerate(features.click_histories(uid, ts, long_l)):
            if len(rows):
                v = vecs[rows]
                hist[i] = v.mean(0)
                recent[i] = v[-short_l:].mean(0)
                count[i] = len(rows)
                if width:
                    last = vocab.codes(ad_ids[rows[-width:]])
                    ids[i, :len(last)] = last
        return hist, recent, count, ids

    def ad_rows(self, features: FeatureStore) -> np.ndarray:
        """Ad-vocabulary row of every ad of `features` (0 = unknown: no id vector)."""
        return self.lookups["ad"].codes(np.asarray(features.ad_ids, dtype=object))

    # -- QueryEncoder ----------------------------------------------------------------------
    def encode_inputs(self, inputs: TowerInputs, batch_size: int = 4096) -> np.ndarray:
        """(n, d) float32 L2-normalised query vectors for featurised requests."""
        if len(inputs) == 0:
            return np.zeros((0, self.dim), np.float32)
        w = self._numpy_weights()
        if w is not None:  # served without torch
            ad_pad = UNK if self.cfg.get("id_embeddings") else None
            return l2_normalize(np.concatenate([
                forward_weights(w, _rows(inputs, np.arange(s, min(s + batch_size, len(inputs)))),
                                use_context=bool(self.cfg["use_context"]), subscriptions_padding=PAD,
                                ad_id_padding=ad_pad)
                for s in range(0, len(inputs), batch_size)]))
        import torch

        if self.net.training:
            self.net.eval()
        if len(inputs) <= NUMPY_MAX_BATCH:  # a request or a few: numpy (torch's per-call overhead dominates)
            return l2_normalize(numpy_forward(self.net, inputs))
        out = []
        with torch.inference_mode():
            for s in range(0, len(inputs), batch_size):
                idx = np.arange(s, min(s + batch_size, len(inputs)))
                out.append(self.net(inputs.tensors(idx)).numpy())
        return l2_normalize(np.concatenate(out))

    def encode_requests(self, requests: pd.DataFrame, features: FeatureStore) -> np.ndarray:
        return self.encode_inputs(self.featurize(requests, features))

    def transform_catalog(self, ad_text_vectors: np.ndarray, ad_ids: np.ndarray) -> np.ndarray:
        return self.transform_ads(ad_text_vectors, ad_ids)

    def transform_ads(self, ad_text_vectors: np.ndarray, ad_ids: np.ndarray | None = None) -> np.ndarray:
        x = np.ascontiguousarray(ad_text_vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ad text vectors must be (n, {self.dim}); got {x.shape}")
        if ad_ids is not None and len(ad_ids) != len(x):
            raise ValueError(f"ad_ids ({len(ad_ids)}) and ad text vectors ({len(x)}) differ in length")
        rows = None
        if ad_ids is not None and self.cfg.get("id_embeddings"):
            rows = self.lookups["ad"].codes(np.asarray(ad_ids, dtype=object))
        w = self._numpy_weights()
        if w is not None:  # served without torch
            return l2_normalize(ads_forward(w, x, rows))
        import torch

        rows = None if rows is None else torch.from_numpy(rows)
        self.net.eval()
        with torch.inference_mode():
            return l2_normalize(self.net.ads(torch.from_numpy(x), rows).numpy())

    def config(self) -> dict:
        return dict(self.cfg)

    def save(self, directory: Path) -> None:
        """Write config.json, vocab.json and model.safetensors into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.config(), indent=2, sort_keys=True))
        (directory / "vocab.json").write_text(json.dumps(self.vocab, indent=1, sort_keys=True))
        from safetensors.torch import save

        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        (directory / "model.safetensors").write_bytes(save(state, metadata={"kind": self.kind}))

    @classmethod
    def load(cls, directory: Path) -> "UserTowerEncoder":
        """Load strictly: every tensor present with the shape the config implies, nothing extra."""
        directory = Path(directory)
        cfg = _read_json(directory / "config.json")
        vocab = _read_json(directory / "vocab.json")
        if cfg.get("kind") != cls.kind:
            raise ArtifactError(f"{directory / 'config.json'}: kind is {cfg.get('kind')!r}, expected {cls.kind!r}")
        if cfg.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ArtifactError(f"{directory / 'config.json'}: format_version {cfg['format_version']} is newer "
                                f"than this AdLens supports ({FORMAT_VERSION}); upgrade AdLens")
        try:
            if "text_dim" not in cfg:
                raise ValueError("tower config lacks 'text_dim'")
            sizes = {k: Lookup(list(vocab.get(k, [])), 3 if k == "community" else 1, UNK).size for k in VOCABS}
            expected = param_shapes({**DEFAULTS, **cfg}, sizes)
        except (ValueError, TypeError, KeyError) as exc:
            raise ArtifactError(f"{directory / 'config.json'}: invalid tower config ({exc})") from exc
        weights = directory / "model.safetensors"
        if not weights.is_file():
            raise ArtifactError(f"{weights}: missing")
        try:
            from safetensors.numpy import load_file  # torch-free

            state = load_file(str(weights))
        except Exception as exc:  # safetensors raises its own error types for corrupt headers/data
            raise ArtifactError(f"{weights}: unreadable or corrupted safetensors file ({exc})") from exc
        check_state(weights, expected, state)
        try:
            return cls(cfg, vocab, weights={k: np.ascontiguousarray(v, np.float32) for k, v in state.items()})
        except (ValueError, TypeError, KeyError) as exc:
            raise ArtifactError(f"{directory / 'config.json'}: invalid tower config ({exc})") from exc


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing")
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return obj


def _rows(inputs: TowerInputs, idx: np.ndarray) -> TowerInputs:
    if len(idx) == len(inputs):
        return inputs
    return TowerInputs(**{f.name: getattr(inputs, f.name)[idx] for f in fields(inputs)})
