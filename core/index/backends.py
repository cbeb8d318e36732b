"""Serving backends behind `Version.search`: where a version's shards live and how a query reaches them.

- ``local`` (default): the shards are loaded in this process; a query searches each and merges
  the top-k with `faiss.ResultHeap` (`core.index.shards.ShardedIndex`). An unsharded version is
  its single `AnnIndex`.
- ``ray``: one Ray actor per shard holds its index read-only (loaded once, checksums verified
  by the actor); a query fans out to every actor and merges (`core.index.ray_backend`). The
  in-process index is then loaded only if something inspects it (health, why-not).

Every backend answers `search(queries, k, params, stats=None) -> list[Result]` (global
positions, best first) and fills `stats` with {shard: milliseconds} when given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from core.index.ann import AnnIndex, Result
from core.index.shards import UNSHARDED_FILE, ShardedIndex, ShardEntry


class SearchBackend(Protocol):
    name: str
    n_shards: int

    def search(self, queries: np.ndarray, k: int, params: dict | None = None,
               stats: dict | None = None) -> list[Result]: ...

    def close(self) -> None: ...


class LocalBackend:
    """The index in this process (an `AnnIndex`, or a `ShardedIndex` that merges its shards)."""

    name = "local"

    def __init__(self, index: AnnIndex | ShardedIndex):
        self.index = index
        self.n_shards = getattr(index, "n_shards", 1)

    def search(self, queries, k: int, params: dict | None = None, stats: dict | None = None) -> list[Result]:
        if isinstance(self.index, ShardedIndex):
            return self.index.search(queries, k, params, stats)
        t = time.perf_counter()
        out = self.index.search(queries, k, params)
        if stats is not None:
            stats[0] = (time.perf_counter() - t) * 1e3
        return out

    def close(self) -> None:
        pass


class LazyIndex:
    """Stands in for a version's in-process index when a remote backend serves the searches:
    kind, dim, ntotal, nlist and factory come from the manifest; anything else loads the index
    (checksums verified) on first use."""

    def __init__(self, loader: Callable[[], AnnIndex | ShardedIndex], *, kind: str, dim: int, ntotal: int,
                 nlist: int | None, factory: str, n_shards: int, metric: str = "ip"):
        self._loader, self._index = loader, None
        self.kind, self.dim, self.ntotal, self.nlist, self.factory = kind, dim, ntotal, nlist, factory
        self.n_shards, self.metric = n_shards, metric

    @property
    def loaded(self) -> AnnIndex | ShardedIndex:
        if self._index is None:
            self._index = self._loader()
        return self._index

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_loader", "_index"):
            raise AttributeError(name)
        return getattr(self.loaded, name)


def shard_entries(manifest: dict) -> list[ShardEntry]:
    """The manifest's shards; an unsharded version is one shard (index.faiss at position 0)."""
    block = manifest.get("shards")
    if block:
        return [ShardEntry.from_dict(e) for e in block["entries"]]
    return [ShardEntry(0, UNSHARDED_FILE, 0, int(manifest["n_ads"]), int(manifest.get("index_bytes") or 0),
                       manifest["files"][UNSHARDED_FILE])]


def load_local_index(path: Path, manifest: dict) -> AnnIndex | ShardedIndex:
    """The version's index in this process (files already verified against the manifest)."""
    factory = manifest["factory"]
    if manifest.get("shards"):
        return ShardedIndex.load(path, shard_entries(manifest), factory, verify=False)
    return AnnIndex.load(path / UNSHARDED_FILE, factory)


def open_backend(name: str, path: Path, manifest: dict, *, ray_address: str | None = None,
                 label: str = "") -> tuple[SearchBackend, AnnIndex | ShardedIndex | LazyIndex]:
    """(backend, in-process index) for the version at `path`. `local` loads the index now;
    `ray` starts one actor per shard and defers the in-process index until inspected."""
    if name == "local":
        index = load_local_index(path, manifest)
        return LocalBackend(index), index
    if name == "ray":
        from core.index.ray_backend import RayBackend

        entries = shard_entries(manifest)
        backend = RayBackend(path, entries, manifest["factory"], address=ray_address, label=label)
        lazy = LazyIndex(lambda: load_local_index(path, manifest), kind=manifest["index_kind"],
                         dim=int(manifest["dims"]["index"]), ntotal=int(manifest["n_ads"]),
                         nlist=manifest.get("nlist"), factory=manifest["factory"], n_shards=len(entries),
                         metric="l2" if manifest.get("metric") == "l2" else "ip")
        return backend, lazy
    raise ValueError(f"unknown backend {name!r}; valid: local, ray")
