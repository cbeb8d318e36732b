"""The user tower's network (PyTorch): the trainable parameters of core/tower/model.py's
`UserTowerEncoder`. Imported only to train a tower or to run a big batch in torch; serving loads
the saved arrays without it (core.tower.numpy_forward)."""

from __future__ import annotations

import torch
from torch import nn

from core.tower.tower_spec import PAD, UNK


class TowerNet(nn.Module):
    """The trainable parameters: query tower and ad adapter."""

    def __init__(self, cfg: dict, sizes: dict[str, int]):
        super().__init__()
        d, c, cd = cfg["text_dim"], cfg["cat_dim"], cfg["community_dim"]
        self.use_context = cfg["use_context"]
        self.country = nn.Embedding(sizes["country"], c)
        self.age_bucket = nn.Embedding(sizes["age_bucket"], c // 2)
        self.user_device = nn.Embedding(sizes["device"], c // 2)
        self.subscriptions = nn.EmbeddingBag(sizes["community"], cd, mode="mean", padding_idx=PAD)
        in_dim = c + c // 2 + c // 2 + cd + 2 * d + 2
        if self.use_context:
            self.community = nn.Embedding(sizes["community"], cd)
            self.placement = nn.Embedding(sizes["placement"], c // 2)
            self.request_device = nn.Embedding(sizes["device"], c // 2)
            self.hour = nn.Embedding(24, c // 2)
            in_dim += cd + 3 * (c // 2)
        self.no_history = nn.Parameter(torch.zeros(d))
        self.history_gate = nn.Parameter(torch.ones(()))
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg["hidden"]), nn.ReLU(), nn.Dropout(cfg["dropout"]),
            nn.Linear(cfg["hidden"], d),
        )
        self.ad_adapter = nn.Linear(d, d) if cfg["ad_adapter"] else None
        self.ad_id = nn.Embedding(sizes["ad"], d, padding_idx=UNK) if cfg.get("id_embeddings") else None
        for m in self.modules():
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
                nn.init.normal_(m.weight, std=0.05)
        if self.ad_adapter is not None:
            nn.init.zeros_(self.ad_adapter.weight)
            nn.init.zeros_(self.ad_adapter.bias)
        if self.ad_id is not None:
            nn.init.zeros_(self.ad_id.weight)

    def forward(self, t: dict[str, torch.Tensor]) -> torch.Tensor:
        has = (t["history_count"] > 0).unsqueeze(1)
        hist = torch.where(has, t["history"], self.no_history)
        recent = torch.where(has, t["recent"], self.no_history)
        parts = [
            self.country(t["country"]), self.age_bucket(t["age_bucket"]),
            self.user_device(t["user_device"]), self.subscriptions(t["subscriptions"]),
            hist, recent, torch.log1p(t["history_count"].float()).unsqueeze(1), has.float(),
        ]
        if self.use_context:
            parts += [self.community(t["community"]), self.placement(t["placement"]),
                      self.request_device(t["request_device"]), self.hour(t["hour"])]
        out = self.mlp(torch.cat(parts, 1)) + self.history_gate * hist
        if self.ad_id is not None and t["history_ids"].shape[1]:
            out = out + nn.functional.embedding_bag(t["history_ids"], self.ad_id.weight, mode="mean",
                                                    padding_idx=UNK)
        return nn.functional.normalize(out, dim=1)

    def ads(self, text_vectors: torch.Tensor, id_rows: torch.Tensor | None = None) -> torch.Tensor:
        x = text_vectors if self.ad_adapter is None else text_vectors + self.ad_adapter(text_vectors)
        if self.ad_id is not None and id_rows is not None:
            x = x + self.ad_id(id_rows)
        return nn.functional.normalize(x, dim=1)
