"""Default training settings of the user tower: the one place `core.tower.train` and the CLI read
them from (this module imports nothing heavy, so `adlens --help` stays fast)."""

from __future__ import annotations

# history_limit: clicks pooled into the history vector (0 = the whole click history);
# logq: weight of the logQ popularity correction (1 = unbiased sampled softmax, 0 = none);
# hidden: width of the tower's MLP; id_embeddings: a learned vector per training ad on both sides.
TRAIN_DEFAULTS: dict = {"epochs": 12, "batch_size": 512, "lr": 3e-3, "temperature": 0.15, "weight_decay": 1e-5,
                        "oov_dropout": 0.05, "logq": 1.0, "history_limit": 50, "hidden": 256,
                        "id_embeddings": False}
