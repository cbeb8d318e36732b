"""The user tower's constants, parameter shapes and the strict check of saved weights, torch-free:
what `core.tower.tower_net.TowerNet` (torch, for training) and a tower loaded for serving (NumPy,
core.tower.model) agree on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.common.errors import ArtifactError

FORMAT_VERSION = 1
UNK = 0  # the unknown / out-of-vocabulary slot of every categorical vocabulary
PAD, COMM_UNK, COMM_NONE = 0, 1, 2  # community vocabulary: padding, unknown, "no community"
VOCABS = ("country", "age_bucket", "device", "placement", "community", "ad")
DEFAULTS: dict[str, Any] = {
    "use_context": True, "ad_adapter": True, "history_limit": 50, "recent_limit": 5,
    "max_subscriptions": 32, "cat_dim": 16, "community_dim": 32, "hidden": 256, "dropout": 0.1,
    "id_embeddings": False,
}
ID_HISTORY = 256  # most recent clicks whose id vectors the query side pools (bounds the input array)


def param_shapes(cfg: dict, sizes: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Every parameter of `TowerNet(cfg, sizes)` by state-dict name, with its shape (a saved
    tower's file must hold exactly these; tests/test_tower.py checks them against TowerNet)."""
    d, c, cd, hidden = cfg["text_dim"], cfg["cat_dim"], cfg["community_dim"], cfg["hidden"]
    shapes: dict[str, tuple[int, ...]] = {
        "country.weight": (sizes["country"], c), "age_bucket.weight": (sizes["age_bucket"], c // 2),
        "user_device.weight": (sizes["device"], c // 2), "subscriptions.weight": (sizes["community"], cd),
    }
    in_dim = c + c // 2 + c // 2 + cd + 2 * d + 2
    if cfg["use_context"]:
        shapes.update({"community.weight": (sizes["community"], cd), "placement.weight": (sizes["placement"], c // 2),
                       "request_device.weight": (sizes["device"], c // 2), "hour.weight": (24, c // 2)})
        in_dim += cd + 3 * (c // 2)
    shapes.update({"no_history": (d,), "history_gate": (), "mlp.0.weight": (hidden, in_dim), "mlp.0.bias": (hidden,),
                   "mlp.3.weight": (d, hidden), "mlp.3.bias": (d,)})
    if cfg["ad_adapter"]:
        shapes.update({"ad_adapter.weight": (d, d), "ad_adapter.bias": (d,)})
    if cfg.get("id_embeddings"):
        shapes["ad_id.weight"] = (sizes["ad"], d)
    return shapes


def check_state(path: Path, expected: dict[str, tuple[int, ...]], got: dict[str, np.ndarray]) -> None:
    """Every parameter present with its shape and finite, nothing extra (`expected`: tower_spec.param_shapes)."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(f"{k}: file {tuple(got[k].shape)} != expected {tuple(expected[k])}"
                    for k in set(expected) & set(got) if tuple(got[k].shape) != tuple(expected[k]))
    bad = sorted(k for k in set(expected) & set(got)
                 if tuple(got[k].shape) == tuple(expected[k]) and not np.isfinite(got[k]).all())
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if shapes:
        problems.append(f"shape mismatches [{'; '.join(shapes)}]")
    if bad:
        problems.append(f"non-finite values in {bad}")
    if problems:
        raise ArtifactError(f"{path}: weights do not match config.json/vocab.json: " + ", ".join(problems))
