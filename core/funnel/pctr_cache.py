"""The fitted pCTR model kept on disk, so a cold dashboard or CLI does not refit it.

Fitting replays 5,000 logged impressions through every candidate source (2-3 s of a cold
dashboard's first view at 10k ads on 2 cores). The fit is a pure function of the version (its
manifest checksum), the catalog (the database and its `catalog_stamp`), the sample size and
seed, the sources' default quotas and the model's features: that is the cache key, stored in the
file and compared in full on reading (the file name is only its hash). A file that is unreadable,
of another key or malformed is ignored and refitted; a folder that cannot be written (a read-only
workspace) means fitting every time, as before. Tests: tests/test_caches.py.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from core.funnel.pctr import PctrModel
from core.store.artifacts import atomic_write_json, sha256_bytes

log = logging.getLogger(__name__)
FORMAT = 1  # bump when the fit's inputs or procedure change (its results would differ)


@dataclass(frozen=True)
class PctrCache:
    """pCTR models of one version on one catalog, in `directory` (the workspace's cache)."""

    directory: Path
    version_checksum: str
    catalog_key: str  # the database (password hidden) and its catalog_stamp

    def _path(self, key: dict) -> Path:
        digest = sha256_bytes(json.dumps(key, sort_keys=True).encode())[:16]
        return Path(self.directory) / f"pctr-{self.version_checksum[:12]}-{digest}.json"

    def key(self, **fit: object) -> dict:
        return {"format": FORMAT, "version": self.version_checksum, "catalog": self.catalog_key, **fit}

    def load(self, key: dict) -> PctrModel | None:
        """The model stored under `key`, or None (missing, another key, unreadable)."""
        path = self._path(key)
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") != json.loads(json.dumps(key)):  # the key as JSON reads it back
                return None
            return model_from_dict(stored["model"], tuple(key.get("features") or ()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the cached pCTR model %s: %s", path, exc)
            return None

    def save(self, key: dict, model: PctrModel) -> None:
        """Store `model` under `key` (replacing this version's models for other keys)."""
        path = self._path(key)
        try:
            atomic_write_json(path, {"key": key, "model": model_to_dict(model)})
            for old in Path(self.directory).glob(f"pctr-{self.version_checksum[:12]}-*.json"):
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError as exc:  # e.g. a read-only workspace
            log.info("pCTR model not cached in %s: %s", self.directory, exc)


def pctr_cache(cache_dir: Path, version, db_url: str, stamp: str) -> PctrCache:
    """The cache of `version`'s models on the catalog of database `db_url` at `stamp`
    (core.store.catalog.catalog_stamp, read when that catalog was loaded)."""
    from core.store.db import redact_url

    return PctrCache(Path(cache_dir), version.checksum, f"{redact_url(db_url)}|{stamp}")


def model_to_dict(model: PctrModel) -> dict:
    return {"features": list(model.features), "coef": list(model.coef), "intercept": model.intercept,
            "n": model.n, "positives": model.positives, "method": model.method}


def model_from_dict(d: dict, features: tuple[str, ...]) -> PctrModel:
    """The model `model_to_dict` wrote; ValueError unless its features are `features` and every
    number is finite."""
    got = tuple(d["features"])
    coef = tuple(float(c) for c in d["coef"])
    intercept = float(d["intercept"])
    if got != features or len(coef) != len(features):
        raise ValueError(f"features {got} differ from the version's {features}")
    if not all(math.isfinite(v) for v in (*coef, intercept)):
        raise ValueError("a coefficient is not finite")
    return PctrModel(got, coef, intercept, int(d["n"]), int(d["positives"]), str(d["method"]))
