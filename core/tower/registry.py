"""The tower registry: towers live in `<workspace>/towers/<name>/` and are listed in the towers
table; saved query encoders are loaded by the "kind" in their config.json: AdLens's own kinds, the
imported ones (onnx, request_vectors) and plugins registered in the `adlens.query_encoders`
entry-point group (name = kind, value = a QueryEncoder subclass)."""

from __future__ import annotations

import json
import logging
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select

from core.common.errors import AdLensError, ArtifactError, NotFoundError
from core.common.jsonio import to_jsonable
from core.common.names import validate_name
from core.store.artifacts import atomic_write_json, hash_tree, sha256_file, verify_files
from core.store.catalog import Catalog
from core.store.db import make_engine, session_scope
from core.store.models import Tower
from core.store.settings import Settings
from core.tower.query_encoder import HistoryMeanEncoder, QueryEncoder

log = logging.getLogger(__name__)


TOWER_MANIFEST = "manifest.json"
MUTABLE_FILES = ("metrics.json", TOWER_MANIFEST)
"""metrics.json is rewritten by `adlens evaluate`; every other file of a tower is checksummed."""


def tower_path(settings: Settings, name: str) -> Path:
    """Where tower `name` lives: always inside this workspace (the database's path column is only
    informative, so a copied or moved workspace never reads another one's towers)."""
    return settings.towers_dir / validate_name(name, "tower")


def write_tower_manifest(folder: Path, name: str) -> str:
    """Checksum a tower folder being saved (before it is renamed into place); returns the sha256
    of the manifest, which the towers row records."""
    atomic_write_json(folder / TOWER_MANIFEST, {"tower": name, "files": hash_tree(folder, exclude=MUTABLE_FILES)})
    return sha256_file(folder / TOWER_MANIFEST)


def verify_tower(settings: Settings, name: str, engine: Engine | None = None) -> Path:
    """The tower's folder after checking every file against its manifest and the manifest against
    the registry; ArtifactError names the file and the fix. Towers saved before checksums existed
    (no manifest.json) load with a warning."""
    folder = tower_path(settings, name)
    mpath = folder / TOWER_MANIFEST
    if not mpath.is_file():
        log.warning("tower %s has no %s (saved by an older AdLens): its files cannot be verified", name, TOWER_MANIFEST)
        return folder
    try:
        files = json.loads(mpath.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{mpath}: not a valid tower manifest ({exc}); retrain the tower under a new name") from exc
    verify_files(folder, files)
    engine = engine or make_engine(settings.db_url)
    with session_scope(engine) as s:
        row = s.get(Tower, name)
        recorded = (row.config or {}).get("manifest_sha256") if row is not None else None
    if recorded and recorded != sha256_file(mpath):
        raise ArtifactError(f"{mpath}: does not match the checksum registered for tower {name!r} (the tower was "
                            "modified after training); retrain it under a new name")
    return folder


def list_towers(settings: Settings, engine: Engine | None = None) -> list[dict]:
    """Registered towers: name, created_at, path, training config and headline metrics."""
    engine = engine or make_engine(settings.db_url)
    with session_scope(engine) as s:
        rows = s.execute(select(Tower).order_by(Tower.created_at)).scalars().all()
        return [{"name": r.name, "created_at": r.created_at, "path": str(tower_path(settings, r.name)), "config": r.config,
                 "recall@100": ((r.metrics or {}).get("models", {}).get("tower", {}) or {}).get("recall@100")}
                for r in rows]


def load_tower(settings: Settings, name: str) -> QueryEncoder:
    """Load tower `name` from the workspace (NotFoundError lists the existing ones)."""
    path = tower_path(settings, name)
    if not (path / "config.json").is_file():
        existing = sorted(p.name for p in settings.towers_dir.glob("*") if (p / "config.json").is_file()) \
            if settings.towers_dir.is_dir() else []
        raise NotFoundError(f"no tower {name!r} in {settings.towers_dir}; existing: {', '.join(existing) or 'none'} "
                            "(train one with `adlens train --name NAME`)")
    from core.tower.model import (
        UserTowerEncoder,  # imports torch: only when a tower is used
    )

    return UserTowerEncoder.load(verify_tower(settings, name))


def resolve_tower(settings: Settings, engine: Engine, name: str) -> tuple[Path, dict]:
    """(verified folder, {"metrics": evaluation, "config": training config}) of tower `name`, for
    building a version; NotFoundError lists the towers that exist."""
    folder = tower_path(settings, name)
    with session_scope(engine) as s:
        row = s.get(Tower, name)
        info = {"metrics": dict(row.metrics or {}), "config": dict(row.config or {})} if row else None
        names = set(s.scalars(select(Tower.name)).all())
    if folder.is_dir():
        verify_tower(settings, name, engine)
        if info is None:  # an unregistered tower folder: its metrics.json (if any) still describes it
            try:
                info = {"metrics": json.loads((folder / "metrics.json").read_text()).get("evaluation") or {}}
            except (OSError, ValueError, AttributeError):
                info = {"metrics": {}}
        return folder, info
    if info is not None:
        raise ArtifactError(f"tower {name!r} is registered but {folder} does not exist; retrain it or copy the "
                            "whole workspace")
    if settings.towers_dir.is_dir():
        names |= {p.name for p in settings.towers_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    have = ", ".join(sorted(names)) or "none; train one with `adlens train --name T`"
    raise NotFoundError(f"tower {name!r} not found; existing towers: {have}")


def read_tower_metrics(settings: Settings, name: str) -> dict:
    path = tower_path(settings, name) / "metrics.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing (the tower folder is incomplete; retrain it)") from exc
    except ValueError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc


def save_tower_metrics(settings: Settings, name: str, report, engine: Engine | None = None) -> None:
    """Replace the evaluation in the tower's metrics.json (atomically) and its towers row."""
    metrics = read_tower_metrics(settings, name)
    metrics["evaluation"] = to_jsonable(report)
    atomic_write_json(tower_path(settings, name) / "metrics.json", metrics)
    engine = engine or make_engine(settings.db_url)
    with session_scope(engine, write="update tower metrics") as s:
        row = s.get(Tower, name)
        if row is not None:
            row.metrics = metrics["evaluation"]


def catalog_embeddings(settings: Settings, catalog: Catalog) -> tuple[np.ndarray, np.ndarray, dict]:
    """(ad_ids, text vectors, model info) for the catalog, from the embedding cache."""
    from core.text.embedding_cache import embed_catalog  # imports the text model lazily

    res = embed_catalog(settings, catalog)
    info = {k: getattr(res, k) for k in ("model", "fingerprint", "model_name") if hasattr(res, k)}
    return np.asarray(res.ad_ids, dtype=object), np.asarray(res.vectors, dtype=np.float32), to_jsonable(info)


ENTRY_POINT_GROUP = "adlens.query_encoders"


def plugin_encoders() -> dict[str, type[QueryEncoder]]:
    """Query encoder classes registered by installed packages under ENTRY_POINT_GROUP."""
    out: dict[str, type[QueryEncoder]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must say which one
            raise AdLensError(f"query encoder plugin {ep.name!r} ({ep.value}) failed to import: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, QueryEncoder)):
            raise AdLensError(f"query encoder plugin {ep.name!r} ({ep.value}) is not a QueryEncoder subclass")
        out[ep.name] = cls
    return out


def _registry() -> dict[str, type[QueryEncoder]]:
    from core.tower.onnx_encoder import OnnxQueryEncoder
    from core.tower.request_encoder import RequestVectorsEncoder

    reg: dict[str, type[QueryEncoder]] = {HistoryMeanEncoder.kind: HistoryMeanEncoder,
                                          OnnxQueryEncoder.kind: OnnxQueryEncoder,
                                          RequestVectorsEncoder.kind: RequestVectorsEncoder}
    try:  # the learned tower imports torch; only needed when a tower is used
        from core.tower.model import UserTowerEncoder

        reg[UserTowerEncoder.kind] = UserTowerEncoder
    except ImportError:
        pass
    return {**plugin_encoders(), **reg}  # a plugin cannot shadow a built-in kind


def make_plugin_encoder(name: str, config: dict | None = None) -> QueryEncoder:
    """Instantiate plugin `name` from `config` (its `from_config`); lists the installed plugins."""
    plugins = plugin_encoders()
    if name not in plugins:
        raise NotFoundError(f"no query encoder plugin {name!r} in entry-point group {ENTRY_POINT_GROUP}; "
                            f"installed: {', '.join(sorted(plugins)) or 'none'}")
    try:
        return plugins[name].from_config({**(config or {}), "kind": name})
    except (TypeError, ValueError) as exc:
        raise AdLensError(f"query encoder plugin {name!r} rejected its config {config!r}: {exc}") from exc


def load_query_encoder(directory: Path) -> QueryEncoder:
    """Load the encoder saved in `directory` (dispatching on config.json's "kind")."""
    cfg_path = Path(directory) / "config.json"
    if not cfg_path.is_file():
        raise ArtifactError(f"{cfg_path}: missing; this folder holds no saved query encoder")
    try:
        kind = json.loads(cfg_path.read_text())["kind"]
    except (ValueError, KeyError) as exc:
        raise ArtifactError(f"{cfg_path}: not a valid encoder config ({exc})") from exc
    reg = _registry()
    if kind not in reg:
        raise ArtifactError(f"{cfg_path}: unknown encoder kind {kind!r}; known: {', '.join(sorted(reg))}")
    return reg[kind].load(Path(directory))
