"""Default training settings of the user tower: the one place `core.tower.train` and the CLI read
them from (this module imports nothing heavy, so `adlens --help` stays fast).

epochs, logq, history_limit and id_embeddings were chosen by `adlens train --tune` on the
validation split of the training side of MovieLens ml-latest-small (user split, seed 0; the test
side never looked at): validation HR@100 0.259 against most-popular's 0.202 there, where the
earlier defaults (12 epochs, logQ 1, last 50 clicks, text only) scored below most-popular (README,
"Offline evaluation on public data"). Tune them on your own data with `adlens train --tune`.
"""

from __future__ import annotations

# history_limit: clicks pooled into the history vector (0 = the whole click history);
# logq: weight of the logQ popularity correction (1 = unbiased sampled softmax, 0 = none; 2
# over-corrects, i.e. scores popular ads up); hidden: width of the tower's MLP; id_embeddings: a
# learned vector per training ad on both sides (new ads keep the text-only vector).
TRAIN_DEFAULTS: dict = {"epochs": 2, "batch_size": 512, "lr": 3e-3, "temperature": 0.15, "weight_decay": 1e-5,
                        "oov_dropout": 0.05, "logq": 2.0, "history_limit": 0, "hidden": 256,
                        "id_embeddings": True}
