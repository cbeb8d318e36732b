"""The user tower's query forward pass in numpy, for a handful of requests at a time.

At batch size 1 (one funnel request) PyTorch spends most of the time in per-module dispatch, not
in arithmetic: the same forward in numpy takes a fraction of it. `forward(net, inputs)` computes
exactly `TowerNet.forward` in eval mode (dropout off) from numpy views of the net's parameters
(views share the tensors' memory, so in-place training steps and `load_state_dict` show through;
they are taken again when a parameter is replaced or moved); results equal torch's to float32
rounding (tests/test_tower.py checks both paths on trained, cold-start and id-embedding towers).
`UserTowerEncoder.encode_inputs` uses it up to NUMPY_MAX_BATCH requests and torch above that; a
tower loaded for serving (no torch imported: a dashboard's first view saves torch's import) uses
`forward_weights` and `ads_forward` on the saved arrays for every batch.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

NUMPY_MAX_BATCH = 16
"""Batches up to this size run in numpy; larger ones in torch (where its batched kernels win)."""


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _weights(net: Any) -> dict[str, np.ndarray]:
    """Numpy views of the net's parameters by name, cached while every parameter is the same
    tensor at the same address (walking the modules costs more than the arithmetic)."""
    with _LOCK:
        hit = _VIEWS.get(net)
        if hit is not None and all((net if m is None else m)._parameters.get(local) is p and p.data_ptr() == ptr
                                   for m, local, p, ptr in hit[0]):
            return hit[1]
        slots, views = [], {}
        for mname, m in net.named_modules():
            for local, p in m.named_parameters(recurse=False):  # the net itself as None: no cycle
                slots.append((m if m is not net else None, local, p, p.data_ptr()))
                views[f"{mname}.{local}" if mname else local] = p.detach().numpy()
        _VIEWS[net] = (slots, views)
        return views


def _bag_mean(weight: np.ndarray, rows: np.ndarray, padding: int) -> np.ndarray:
    """torch's EmbeddingBag(mode="mean", padding_idx=padding): the mean over the non-padding rows
    of each bag (zeros for a bag of padding only). Only the non-padding entries are gathered: the
    id bags are mostly padding (a 4,096 x 256 bag of 384-d ids gathered whole is 1.6 GB)."""
    keep = rows != padding
    n = keep.sum(1)
    out = np.zeros((rows.shape[0], weight.shape[1]), np.float32)
    r, c = np.nonzero(keep)  # row-major: each bag's entries are contiguous, bags in order
    if len(r):
        full = np.flatnonzero(n)
        starts = (np.cumsum(n) - n)[full]
        out[full] = np.add.reduceat(weight[rows[r, c]].astype(np.float32, copy=False), starts, axis=0)
        out[full] /= n[full, None].astype(np.float32)
    return out


def forward(net: Any, inputs: Any) -> np.ndarray:
    """(n, d) float32: `net.forward(inputs.tensors())` in eval mode, computed in numpy, for a
    `core.tower.tower_net.TowerNet` and its `TowerInputs` (not imported here: torch-free)."""
    return forward_weights(_weights(net), inputs, use_context=net.use_context,
                           subscriptions_padding=_padding(net.subscriptions),
                           ad_id_padding=None if net.ad_id is None else _padding(net.ad_id))


def forward_weights(w: dict[str, np.ndarray], inputs: Any, *, use_context: bool, subscriptions_padding: int,
                    ad_id_padding: int | None) -> np.ndarray:
    """The same forward pass from the parameters as numpy arrays by state-dict name (a tower loaded
    without torch: core.tower.model); `ad_id_padding` None: no id embeddings."""
    count = np.asarray(inputs.history_count, np.float32)
    has = (count > 0)[:, None]
    hist = np.where(has, inputs.history, w["no_history"]).astype(np.float32)
    recent = np.where(has, inputs.recent, w["no_history"]).astype(np.float32)
    parts = [w["country.weight"][inputs.country], w["age_bucket.weight"][inputs.age_bucket],
             w["user_device.weight"][inputs.user_device],
             _bag_mean(w["subscriptions.weight"], inputs.subscriptions, subscriptions_padding),
             hist, recent, np.log1p(count)[:, None], has.astype(np.float32)]
    if use_context:
        parts += [w["community.weight"][inputs.community], w["placement.weight"][inputs.placement],
                  w["request_device.weight"][inputs.request_device], w["hour.weight"][inputs.hour]]
    x = np.concatenate(parts, 1)
    h = np.maximum(x @ w["mlp.0.weight"].T + w["mlp.0.bias"], np.float32(0.0))
    out = h @ w["mlp.3.weight"].T + w["mlp.3.bias"] + w["history_gate"] * hist
    if ad_id_padding is not None and inputs.history_ids.shape[1]:
        out = out + _bag_mean(w["ad_id.weight"], inputs.history_ids, ad_id_padding)
    norm = np.sqrt((out * out).sum(1, keepdims=True))
    return (out / np.maximum(norm, np.float32(1e-12))).astype(np.float32)


def ads_forward(w: dict[str, np.ndarray], text_vectors: np.ndarray, id_rows: np.ndarray | None = None) -> np.ndarray:
    """`TowerNet.ads` in numpy: the text vector plus the residual adapter (when the tower has one)
    and the ad's id vector (when it has id embeddings and `id_rows` is given), L2-normalised."""
    x = np.asarray(text_vectors, np.float32)
    if "ad_adapter.weight" in w:
        x = x + (x @ w["ad_adapter.weight"].T + w["ad_adapter.bias"])
    if "ad_id.weight" in w and id_rows is not None:
        x = x + w["ad_id.weight"][id_rows]
    norm = np.sqrt((x * x).sum(1, keepdims=True))
    return (x / np.maximum(norm, np.float32(1e-12))).astype(np.float32)


def _padding(module) -> int:
    return int(module.padding_idx)
