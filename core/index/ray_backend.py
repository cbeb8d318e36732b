"""The ``ray`` serving backend: one Ray actor per shard, a query fans out to all and is merged.

Each `ShardServer` actor loads its shard once (size and sha256 checked against the manifest by
the actor itself, so a tampered file fails on whichever machine reads it) and only searches it
afterwards. Actors reserve no CPU (`num_cpus=0`, so N shards fit a small cluster), are spread
over the cluster's nodes, and are restarted by Ray if their process dies (`max_restarts`). A
request whose shard call fails is retried once (on the restarted actor); a second failure raises
an `AdLensError` naming the shard. The version folder must be readable at the same path on
every node (a shared workspace, as in ARCHITECTURE.md).

Connecting: an already-initialised Ray (tests, notebooks) is used as is; otherwise `address`
(``ADLENS_RAY_ADDRESS``: ``auto`` or ``host:port``, default ``auto``). An address that does not
answer fails fast with how to start a cluster.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np

from core.common.errors import AdLensError
from core.index.ann import Result
from core.index.shards import ShardEntry, merge_topk
from core.store.ray_cluster import connect

MAX_RESTARTS = 3
CALL_TIMEOUT_S = 120.0
RESTART_WAIT_S = 60.0  # a restarted actor reloads (and re-verifies) its shard before answering


class ShardServer:
    """A Ray actor body: one shard, loaded and verified once, searched read-only."""

    def __init__(self, version_dir: str, entry: dict, factory: str, threads: int = 1):
        import faiss

        from core.index.shards import load_shard

        faiss.omp_set_num_threads(max(1, int(threads)))  # N actors share the node's cores
        self.entry = ShardEntry.from_dict(entry)
        self.error: AdLensError | None = None
        try:
            self.index = load_shard(Path(version_dir), self.entry, factory)
        except AdLensError as exc:  # reported by every call (a failed constructor reads as a crash)
            self.error, self.index = exc, None

    def search(self, queries: np.ndarray, k: int, params: dict | None) -> list[Result]:
        if self.error is not None:
            raise self.error
        return self.index.search(queries, k, params)

    def info(self) -> dict:
        import resource

        if self.error is not None:
            raise self.error
        return {"shard": self.entry.shard, "pid": os.getpid(), "node": socket.gethostname(),
                "ntotal": self.index.ntotal, "index_bytes": self.index.nbytes(),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


class RayBackend:
    """Serves a version's shards from Ray actors (see the module docstring)."""

    name = "ray"

    def __init__(self, version_dir: Path, entries: list[ShardEntry], factory: str, *,
                 address: str | None = None, label: str = "", threads: int = 1):
        connect(address)  # before importing ray: it may set the auth mode Ray reads at import
        import ray

        self.entries, self.label = list(entries), label or Path(version_dir).name
        self.starts = [e.start for e in self.entries]
        self.n_shards = len(self.entries)
        self.ntotal = int(sum(e.count for e in self.entries))
        actor = ray.remote(ShardServer).options(
            num_cpus=0, max_restarts=MAX_RESTARTS, max_task_retries=0, scheduling_strategy="SPREAD")
        self.actors = [actor.remote(str(Path(version_dir).resolve()), e.to_dict(), factory, threads)
                       for e in self.entries]
        # Wait for every actor to load (and verify) its shard, so errors surface now, by shard.
        try:
            self.actor_info = [self._call(i, "info") for i in range(self.n_shards)]
        except BaseException:
            self.close()
            raise

    def _describe(self, i: int) -> str:
        e = self.entries[i]
        return f"shard {e.shard} ({e.file}, ads {e.start}..{e.start + e.count - 1}) of version {self.label!r}"

    def _call(self, i: int, method: str, *args, ref=None):
        """Result of actor `i`'s `method`, retried once after a failure (Ray restarts dead actors)."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        for attempt in (1, 2):
            try:
                if ref is None or attempt == 2:
                    if attempt == 2:
                        self._await_restart(i)
                    ref = getattr(self.actors[i], method).remote(*args)
                return ray.get(ref, timeout=CALL_TIMEOUT_S)
            except RayTaskError as exc:  # the shard's own code raised: a checksum failure, bad params
                cause = getattr(exc, "cause", None)
                if isinstance(cause, AdLensError):
                    raise AdLensError(f"{self._describe(i)}: {cause}") from exc
                if isinstance(cause, ValueError):
                    raise ValueError(str(cause)) from exc
                raise AdLensError(f"{self._describe(i)} raised {str(exc).splitlines()[0][:300]}") from exc
            except (RayActorError, GetTimeoutError) as exc:
                last = exc
        raise AdLensError(f"{self._describe(i)} failed twice ({type(last).__name__}: "
                          f"{str(last).splitlines()[0][:300]}); its actor could not be restarted: check "
                          f"`ray status` and the Ray logs, or serve with `--backend local`") from last

    def _await_restart(self, i: int) -> None:
        """Wait (up to RESTART_WAIT_S) until actor `i` answers again after Ray restarted it; an
        actor that died for good returns at once (the retry then reports it)."""
        import ray
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            GetTimeoutError,
        )

        deadline = time.monotonic() + RESTART_WAIT_S
        while time.monotonic() < deadline:
            try:
                ray.get(self.actors[i].info.remote(), timeout=max(0.1, deadline - time.monotonic()))
                return
            except (ActorUnavailableError, GetTimeoutError):
                time.sleep(0.2)
            except ActorDiedError:
                return

    def search(self, queries, k: int, params: dict | None = None, stats: dict | None = None) -> list[Result]:
        """Fan out to every shard, merge the top-k; `stats` gets each shard's round trip in ms."""
        import ray

        q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, np.float32)))
        t0 = time.perf_counter()
        refs = [a.search.remote(q, k, params) for a in self.actors]
        pending = dict(zip(refs, range(len(refs))))
        while pending and stats is not None:  # arrival time of each shard's answer
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=CALL_TIMEOUT_S)
            if not ready:
                break
            stats[pending.pop(ready[0])] = (time.perf_counter() - t0) * 1e3
        parts = [self._call(i, "search", q, k, params, ref=ref) for i, ref in enumerate(refs)]
        return merge_topk(parts, self.starts, min(int(k), self.ntotal))

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        self.actors = []
