"""Sharded indexes: one version's ads split over N FAISS shards by position.

Shard ``i`` holds the contiguous position range ``[start_i, start_i + count_i)`` of the version's
ads (sizes differ by at most one). Every shard is a clone of ONE trained, empty index (FAISS
`clone_index` of `ann.train_empty`), so for the IVF family all shards share the same coarse
quantizer (and PQ codebooks): a list id means the same centroid in every shard, and probing
`nprobe` lists per shard probes exactly the lists the unsharded index would. Flat and HNSW have
nothing to train and are simply split by position.

Global ids: a shard stores local ids ``0..count_i-1``; a shard's hit ``j`` is the global position
``start_i + j``. (FAISS `add_with_ids` would store global ids, but `IndexRefine` implements no
`add_with_ids` and `IndexIDMap` rejects refine search parameters, so the id map is the start
offset recorded in the manifest, which also makes `shard_of(position)` a binary search.)

Files: ``shards/shard-00000.faiss`` …, each listed in the manifest's ``shards`` block with its
range, size in bytes and sha256 (besides the manifest's ``files``), verified on every load —
in-process by `ShardedIndex.load`, and by each Ray actor (core/index/ray_backend.py) that loads
its own shard. The unsharded ``index.faiss`` is described by the same block as one shard, so
both backends serve sharded and unsharded versions alike.

`ShardedIndex` has `AnnIndex`'s interface (kind, dim, ntotal, nlist, search, list_assignments,
coarse_ranking, nbytes), so health and why-not work on sharded versions unchanged; its `search`
is the `local` backend: every shard in-process, top-k merged (`merge_topk`: `faiss.ResultHeap`
for batches, numpy for single requests).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from core.common.errors import ArtifactError
from core.index.ann import AnnIndex, Result, _as_matrix, _check_int_param, train_empty
from core.store.artifacts import sha256_file

SHARD_DIR = "shards"
UNSHARDED_FILE = "index.faiss"


@dataclass(frozen=True)
class ShardEntry:
    """One shard as listed in the manifest: file (relative to the version), position range, size."""

    shard: int
    file: str
    start: int
    count: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict:
        return {"shard": self.shard, "file": self.file, "start": self.start, "count": self.count,
                "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: dict) -> "ShardEntry":
        try:
            return cls(int(d["shard"]), str(d["file"]), int(d["start"]), int(d["count"]), int(d["bytes"]),
                       str(d["sha256"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"manifest shard entry {d!r} is incomplete ({exc})") from exc


def shard_ranges(n: int, n_shards: int) -> list[tuple[int, int]]:
    """(start, count) of each shard: contiguous, sizes differing by at most one."""
    n_shards = _check_int_param("shards", n_shards)
    if n_shards > max(n, 1):
        raise ValueError(f"{n_shards} shards for {n} ads: every shard needs at least one ad")
    bounds = np.linspace(0, n, n_shards + 1).round().astype(np.int64)
    return [(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]


def shard_file(i: int) -> str:
    return f"{SHARD_DIR}/shard-{i:05d}.faiss"


def build_shards(vectors: np.ndarray, factory: str, n_shards: int, *, seed: int = 0,
                 max_train: int | None = None, kmeans_iters: int | None = None, metric: str = "ip") -> "ShardedIndex":
    """Train once on `vectors`, then add each position range to its own clone of the trained index."""
    x = _as_matrix(vectors, None, "vectors")
    ranges = shard_ranges(len(x), n_shards)
    template = train_empty(x, factory, n_total=len(x), seed=seed, max_train=max_train, kmeans_iters=kmeans_iters,
                           metric=metric)
    return build_shards_streaming(template, factory, ranges, ((s, x[s:s + c]) for s, c in ranges))


def build_shards_streaming(template: faiss.Index, factory: str, ranges: list[tuple[int, int]],
                           chunks: Iterable[tuple[int, np.ndarray]]) -> "ShardedIndex":
    """Shards from a trained empty `template` and `(start, vectors)` chunks in position order
    (chunks may cross shard boundaries), so a catalog larger than memory streams through."""
    shards = [faiss.clone_index(template) for _ in ranges]
    ends = np.array([s + c for s, c in ranges], np.int64)
    expect = 0
    for start, chunk in chunks:
        if start != expect:
            raise ValueError(f"chunks must arrive in position order: expected start {expect}, got {start}")
        chunk = _as_matrix(chunk, template.d, "vectors")
        a = 0
        while a < len(chunk):
            i = int(np.searchsorted(ends, start + a, side="right"))
            b = min(len(chunk), int(ends[i]) - start)
            shards[i].add(chunk[a:b])
            a = b
        expect = start + len(chunk)
    if expect != (ends[-1] if len(ends) else 0):
        raise ValueError(f"chunks covered {expect} positions; the shards expect {int(ends[-1])}")
    return ShardedIndex([AnnIndex(s, factory) for s in shards], [s for s, _ in ranges], factory)


def save_shards(index: "ShardedIndex", directory: Path) -> list[ShardEntry]:
    """Write every shard into `directory/shards/` atomically; their manifest entries."""
    out = []
    for i, (shard, start) in enumerate(zip(index.shards, index.starts)):
        rel = shard_file(i)
        shard.save(Path(directory) / rel)
        p = Path(directory) / rel
        out.append(ShardEntry(i, rel, int(start), int(shard.ntotal), p.stat().st_size, sha256_file(p)))
    return out


def load_shard(version_dir: Path, entry: ShardEntry, factory: str, *, verify: bool = True) -> AnnIndex:
    """Load one shard after checking its size and sha256 against the manifest entry (`verify=False`
    when the caller has just verified the version's files)."""
    path = Path(version_dir) / entry.file
    if not path.is_file():
        raise ArtifactError(f"{path}: shard {entry.shard} is missing (listed in the version's manifest)")
    if verify and ((entry.bytes and path.stat().st_size != entry.bytes) or sha256_file(path) != entry.sha256):
        raise ArtifactError(
            f"{path}: shard {entry.shard} fails its checksum (manifest sha256 {entry.sha256[:12]}…, "
            f"{entry.bytes} bytes): the file was modified or truncated; rebuild the version under a new name"
        )
    shard = AnnIndex.load(path, factory)
    if shard.ntotal != entry.count:
        raise ArtifactError(f"{path}: shard {entry.shard} holds {shard.ntotal} ads; the manifest says {entry.count}")
    return shard


HEAP_MIN_QUERIES = 32
"""Batches of at least this many queries merge in `faiss.ResultHeap` (parallel over queries);
smaller ones in numpy: the heap's OpenMP regions cost 10-100 ms of thread wake-ups per call on
a busy machine (measured: 1.4 ms with one thread, 17-107 ms with two on a loaded 2-core box),
which would dominate a single request's retrieve time."""


def merge_topk(parts: list[list[Result]], starts: list[int], k: int) -> list[Result]:
    """Merge per-shard results (local ids) into the global top-`k` per query (largest inner
    product first; ties keep the lower global position)."""
    nq = len(parts[0]) if parts else 0
    if nq >= HEAP_MIN_QUERIES:
        return _merge_heap(parts, starts, k, nq)
    out = []
    for qi in range(nq):
        d = np.concatenate([res[qi][0] for res in parts]).astype(np.float32, copy=False)
        i = np.concatenate([res[qi][1] + start for res, start in zip(parts, starts)]).astype(np.int64, copy=False)
        order = np.lexsort((i, -d))[:k]
        out.append((d[order], i[order]))
    return out


def _merge_heap(parts: list[list[Result]], starts: list[int], k: int, nq: int) -> list[Result]:
    heap = faiss.ResultHeap(nq, k, keep_max=True)
    for res, start in zip(parts, starts):
        width = max((len(p) for _, p in res), default=0)
        if width == 0:
            continue
        D = np.full((nq, width), -np.inf, np.float32)
        I = np.full((nq, width), -1, np.int64)
        for qi, (s, p) in enumerate(res):
            D[qi, :len(s)] = s
            I[qi, :len(p)] = p + start
        heap.add_result(D, I)
    heap.finalize()
    out = []
    for d, i in zip(heap.D, heap.I):
        keep = i >= 0
        d, i = d[keep], i[keep]
        order = np.lexsort((i, -d))  # the heap's tie order is arbitrary: lower position first
        out.append((d[order].astype(np.float32), i[order].astype(np.int64)))
    return out


class ShardedIndex:
    """N shards with `AnnIndex`'s interface; `search` fans out in-process and merges (the local backend)."""

    def __init__(self, shards: list[AnnIndex], starts: list[int], factory: str):
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        self.shards, self.starts, self.factory = shards, [int(s) for s in starts], factory
        first = shards[0]
        self.kind, self.dim, self.nlist, self.metric = first.kind, first.dim, first.nlist, first.metric
        self.ntotal = int(sum(s.ntotal for s in shards))
        self.faiss_index = first.faiss_index  # default search params (nprobe, efSearch) are shared
        self._assignments: np.ndarray | None = None
        self._chain = first._chain  # every shard has the same wrapper chain (param_ladder reads it)

    @classmethod
    def load(cls, version_dir: Path, entries: list[ShardEntry], factory: str, *,
             verify: bool = True) -> "ShardedIndex":
        return cls([load_shard(version_dir, e, factory, verify=verify) for e in entries],
                   [e.start for e in entries], factory)

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    def shard_of(self, positions) -> np.ndarray:
        """The shard holding each global position."""
        return np.searchsorted(np.asarray(self.starts), np.asarray(positions, np.int64), side="right") - 1

    def search(self, queries: np.ndarray, k: int, params: dict | None = None,
               stats: dict | None = None) -> list[Result]:
        """Top-`k` over every shard; `stats` (if given) receives {shard: milliseconds}."""
        q = _as_matrix(queries, self.dim, "queries")
        k = _check_int_param("k", k)
        parts = []
        for i, shard in enumerate(self.shards):
            t = time.perf_counter()
            parts.append(shard.search(q, k, params))
            if stats is not None:
                stats[i] = (time.perf_counter() - t) * 1e3
        return merge_topk(parts, self.starts, min(k, self.ntotal))

    def nbytes(self) -> int:
        return int(sum(s.nbytes() for s in self.shards))

    def list_assignments(self) -> np.ndarray | None:
        """IVF kinds: the inverted-list id of every global position (lists are shared by all shards)."""
        if self.nlist is None:
            return None
        if self._assignments is None:
            out = np.concatenate([s.list_assignments() for s in self.shards])
            out.setflags(write=False)
            self._assignments = out
        return self._assignments

    def coarse_ranking(self, query: np.ndarray) -> np.ndarray | None:
        return self.shards[0].coarse_ranking(query)  # one shared quantizer

    def quantizer_fingerprints(self) -> list[str | None]:
        """sha256 of each shard's coarse centroids (equal across shards by construction)."""
        import hashlib

        out = []
        for s in self.shards:
            ivf = faiss.extract_index_ivf(s.faiss_index) if s.nlist is not None else None
            if ivf is None:
                out.append(None)
                continue
            cent = ivf.quantizer.reconstruct_n(0, ivf.nlist)
            out.append(hashlib.sha256(np.ascontiguousarray(cent).tobytes()).hexdigest())
        return out

    def __repr__(self) -> str:
        return f"ShardedIndex({self.factory!r}, kind={self.kind}, shards={self.n_shards}, ntotal={self.ntotal})"
