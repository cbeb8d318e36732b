"""The user tower's constants and parameter shapes, torch-free: what `core.tower.tower_net.TowerNet`
(torch, for training) and a tower loaded for serving (numpy, core.tower.model) agree on."""

from __future__ import annotations

from typing import Any

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
