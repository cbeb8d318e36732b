"""The retrieval backend: one small interface (`AnnIndex`) over FAISS, plus the exact-search
oracle every approximate claim is checked against.

Metrics (`METRICS`): "ip" (inner product; AdLens's own versions use it on L2-normalised vectors,
i.e. cosine) and "l2" (FAISS METRIC_L2). Scores are always "higher is better": for l2 a score is
the *negative squared distance*, so ranking, pCTR calibration, recall and the map treat both alike.
`similarity` is the one place a score is computed outside FAISS.

Supported factory strings (any FAISS factory whose family is one of these):
- ``Flat``: exact search.
- ``IVF{nlist},Flat`` (also ``IVF{nlist},SQ8``): inverted lists; search param ``nprobe``.
- ``HNSW{M}``: graph; search param ``efSearch`` (FAISS uses max(efSearch, k)).
- ``IVF{nlist},PQ{m}``: compressed codes; add ``,RFlat`` (exact re-ranking of ``k * k_factor``
  candidates from the stored vectors) or ``,Refine(SQ8)`` (compact re-ranking) for recall.

Search parameters are passed per call as FAISS ``SearchParameters`` objects; the wrapped index
is shared (dashboard sessions, threads) and is never mutated after `build`/`load`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
from enum import StrEnum
from pathlib import Path

import faiss
import numpy as np

from core.common.errors import ArtifactError
from core.store.artifacts import write_via_temp

log = logging.getLogger(__name__)

SEARCH_PARAM_KEYS = ("nprobe", "efSearch", "k_factor")
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
MIN_POINTS_PER_LIST = 8  # below this k-means assigns lists from noise; FAISS itself warns < 39
FAISS_POINTS_PER_CENTROID = 39  # FAISS prints a raw warning below this many training points per centroid
PQ_MIN_TRAIN = 256  # a PQ sub-quantizer has 256 centroids (8 bits)
Result = tuple[np.ndarray, np.ndarray]


class IndexKind(StrEnum):
    """The FAISS index families AdLens builds."""

    FLAT = "flat"
    IVF = "ivf"
    IVFPQ = "ivfpq"
    HNSW = "hnsw"


def suggest_nlist(n: int) -> int:
    """A sensible IVF list count for `n` vectors: ≈ 4·√n rounded to a power of two, capped so
    each list gets ≥ 39 training points (FAISS's own threshold)."""
    if n < 39:
        return 1
    target = 2 ** round(math.log2(4 * math.sqrt(n)))
    cap = 2 ** int(math.log2(n // 39))
    return int(max(1, min(target, cap)))


def _unwrap(index: faiss.Index) -> list[faiss.Index]:
    """The chain of downcast indexes from the outermost wrapper to the base index."""
    chain = [faiss.downcast_index(index)]
    while True:
        cur = chain[-1]
        if isinstance(cur, faiss.IndexRefine):
            chain.append(faiss.downcast_index(cur.base_index))
        elif isinstance(cur, faiss.IndexPreTransform):
            chain.append(faiss.downcast_index(cur.index))
        else:
            return chain


def _kind_of(base: faiss.Index) -> IndexKind:
    if isinstance(base, faiss.IndexFlat):
        return IndexKind.FLAT
    if isinstance(base, faiss.IndexHNSW):
        return IndexKind.HNSW
    if isinstance(base, (faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan)):
        return IndexKind.IVFPQ
    if isinstance(base, faiss.IndexIVF):
        return IndexKind.IVF
    raise ValueError(
        f"unsupported index family {type(base).__name__}; use Flat, IVF{{n}},Flat, HNSW{{m}} "
        "or IVF{n},PQ{m}[,RFlat]"
    )


def _training_warnings(chain: list[faiss.Index], n: int, factory: str, n_total: int | None = None) -> list[str]:
    """FAISS's "please provide at least N training points" warnings, in plain words (`n` training
    vectors, sampled from `n_total` ads when that is larger)."""
    out = []
    for sub in chain:
        ivf = faiss.try_extract_index_ivf(sub) if isinstance(sub, faiss.IndexIVF) else None
        if ivf is not None and n < ivf.nlist * FAISS_POINTS_PER_CENTROID:
            best = max(1, n // FAISS_POINTS_PER_CENTROID)
            if n_total is not None and n_total > n:
                out.append(f"{ivf.nlist} lists trained on a sample of {n:,} of the {n_total:,} ads: k-means wants "
                           f"about {FAISS_POINTS_PER_CENTROID} per list ({ivf.nlist * FAISS_POINTS_PER_CENTROID:,}); "
                           f"the lists may be less balanced (factory {factory!r})")
                continue
            out.append(f"{ivf.nlist} lists for {n:,} ads is too many for stable k-means (about "
                       f"{FAISS_POINTS_PER_CENTROID} ads per list are needed); use IVF{best} or fewer, or Flat "
                       f"(factory {factory!r})")
        if isinstance(sub, (faiss.IndexPQ, faiss.IndexIVFPQ)) and n < 256 * FAISS_POINTS_PER_CENTROID:
            out.append(f"product quantization learns 256 codes per sub-vector from {n:,} ads (about "
                       f"{256 * FAISS_POINTS_PER_CENTROID:,} are needed for stable codes): expect lower recall, or "
                       "use IVF-Flat or Flat at this size")
    return out


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence C-level stderr (FAISS prints training warnings there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_int_param(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"search param {name} must be a positive integer; got {value!r}")
    return int(value)


def check_metric(metric: str) -> str:
    """`metric` if it is one FAISS metric AdLens serves ("ip" or "l2"); else ValueError."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    return metric


def train_empty(train: np.ndarray, factory: str, *, n_total: int | None = None, seed: int = 0,
                max_train: int | None = None, kmeans_iters: int | None = None, metric: str = "ip") -> faiss.Index:
    """A trained, empty FAISS index for `factory` and `metric`. `train` holds training rows
    (a sample is drawn when `max_train` is smaller); `n_total` is the number of vectors the index
    will hold (default len(train)), checked against the list count. Sharded versions clone this
    one trained index into every shard, so all shards share one coarse quantizer."""
    x = _as_matrix(train, None, "vectors")
    n, d = x.shape
    n_total = n if n_total is None else int(n_total)
    try:
        index = faiss.index_factory(d, factory, METRICS[check_metric(metric)])
    except RuntimeError as exc:
        raise ValueError(f"invalid FAISS factory string {factory!r}: {_first_line(exc)}") from exc
    chain = _unwrap(index)
    _kind_of(chain[-1])  # reject unsupported families before training
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        need = ivf.nlist * MIN_POINTS_PER_LIST
        if min(n, n_total) < need:
            raise ValueError(
                f"{factory!r}: {ivf.nlist} inverted lists need at least {need} vectors to train "
                f"({MIN_POINTS_PER_LIST} per list); got {min(n, n_total)}. Use IVF{suggest_nlist(n_total)} "
                f"for {n_total} ads"
            )
        ivf.cp.seed = seed
        if kmeans_iters is not None:
            ivf.cp.niter = int(kmeans_iters)
        if isinstance(ivf, faiss.IndexIVFPQ):
            ivf.pq.cp.seed = seed + 1
            # The factory turns on polysemous training (minutes of annealing on 2 cores);
            # AdLens never uses polysemous filtering, so skip it.
            ivf.do_polysemous_training = False
    for sub in chain:
        if isinstance(sub, (faiss.IndexPQ, faiss.IndexIVFPQ)) and n < PQ_MIN_TRAIN:
            raise ValueError(f"{factory!r}: product quantization needs at least {PQ_MIN_TRAIN} vectors; got {n}")
        if isinstance(sub, faiss.IndexHNSW):
            sub.hnsw.efConstruction = max(int(sub.hnsw.efConstruction), 80)
    if not index.is_trained:
        if max_train is not None and n > max_train:
            rows = np.sort(np.random.default_rng(seed).choice(n, size=max_train, replace=False))
            x = x[rows]
        for msg in _training_warnings(chain, len(x), factory, n_total):
            log.warning(msg)
        with _native_stderr_silenced():  # FAISS's own version of the warnings above
            index.train(x)
    return index


def similarity(vectors: np.ndarray, queries: np.ndarray, metric: str = "ip") -> np.ndarray:
    """(n_queries, n_vectors) scores, higher is better: inner product, or for "l2" the negative
    squared Euclidean distance (what `AnnIndex.search` returns for the same pair)."""
    x = np.asarray(vectors, dtype=np.float32)
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    s = q @ x.T
    if check_metric(metric) == "l2":
        s = 2.0 * s - (x * x).sum(1)[None, :] - (q * q).sum(1)[:, None]
    return s


def pair_similarity(vectors: np.ndarray, queries: np.ndarray, metric: str = "ip") -> np.ndarray:
    """Row-wise `similarity`: the score of query i against vector i, (n,)."""
    x = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(queries, dtype=np.float32)
    if check_metric(metric) == "l2":
        return -((q - x) ** 2).sum(1)
    return np.einsum("ij,ij->i", q, x)


class AnnIndex:
    """One small interface over a FAISS index (inner product or L2, see `METRICS`).

    Positions returned by `search` index the rows of the vectors the index was built from; scores
    are higher-is-better (negative squared distances for l2).
    """

    def __init__(self, faiss_index: faiss.Index, factory: str):
        self.faiss_index = faiss_index
        self.factory = factory
        chain = _unwrap(faiss_index)
        self._chain = chain
        self._base = chain[-1]
        self.kind = _kind_of(self._base)
        by_code = {code: name for name, code in METRICS.items()}
        if faiss_index.metric_type not in by_code:
            raise ValueError(f"index {factory!r} uses FAISS metric {faiss_index.metric_type}; "
                             f"AdLens serves {', '.join(METRICS)}")
        self.metric = by_code[faiss_index.metric_type]
        self.dim = int(faiss_index.d)
        self.ntotal = int(faiss_index.ntotal)
        self._ivf = faiss.extract_index_ivf(faiss_index) if self.kind in ("ivf", "ivfpq") else None
        self.nlist = int(self._ivf.nlist) if self._ivf is not None else None
        self._assignments: np.ndarray | None = None
        self._nbytes: int | None = None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, factory: str, *, seed: int = 0, metric: str = "ip",
              max_train: int | None = None, kmeans_iters: int | None = None) -> "AnnIndex":
        """Train (seeded k-means, on at most `max_train` sampled rows, FAISS's 25 iterations
        unless `kmeans_iters`) and add `vectors`."""
        x = _as_matrix(vectors, None, "vectors")
        index = train_empty(x, factory, n_total=len(x), seed=seed, max_train=max_train, kmeans_iters=kmeans_iters,
                            metric=metric)
        index.add(x)
        return cls(index, factory)

    def save(self, path: Path) -> None:
        """Write the index atomically (temp file, fsync, rename)."""
        write_via_temp(Path(path), lambda p: faiss.write_index(self.faiss_index, str(p)))

    @classmethod
    def load(cls, path: Path, factory: str) -> "AnnIndex":
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: missing FAISS index file")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ArtifactError(
                f"{path}: cannot read FAISS index ({_first_line(exc)}); the file is truncated or corrupted"
            ) from exc
        try:
            out = cls(index, factory)
        except ValueError as exc:
            raise ArtifactError(f"{path}: {exc}") from exc
        out._nbytes = path.stat().st_size
        return out

    def nbytes(self) -> int:
        """Serialized size in bytes (for bytes per ad)."""
        if self._nbytes is None:
            self._nbytes = int(faiss.serialize_index(self.faiss_index).nbytes)
        return self._nbytes

    # ---- search -------------------------------------------------------------------------
    def _search_params(self, params: dict | None) -> tuple[faiss.SearchParameters | None, list]:
        """FAISS SearchParameters for this index from {"nprobe", "efSearch", "k_factor"}, and the
        list of every object in the chain (SWIG holds raw pointers: the caller keeps it alive).
        Keys that do not apply to this index kind are ignored; unknown keys are refused."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(SEARCH_PARAM_KEYS))
        if unknown:
            raise ValueError(f"unknown search params {unknown}; valid: {', '.join(SEARCH_PARAM_KEYS)}")
        inner: faiss.SearchParameters | None = None
        if self._ivf is not None and params.get("nprobe") is not None:
            inner = faiss.SearchParametersIVF()
            inner.nprobe = min(_check_int_param("nprobe", params["nprobe"]), self.nlist)
        elif self.kind == "hnsw" and params.get("efSearch") is not None:
            inner = faiss.SearchParametersHNSW()
            inner.efSearch = _check_int_param("efSearch", params["efSearch"])
        keep = [inner]  # SWIG holds raw pointers: keep every wrapped object referenced
        cur = inner
        for wrapper in reversed(self._chain[:-1]):
            if isinstance(wrapper, faiss.IndexPreTransform):
                if cur is None:
                    continue
                p = faiss.SearchParametersPreTransform()
                p.index_params = cur
            else:  # IndexRefine
                kf = params.get("k_factor")
                if cur is None and kf is None:
                    continue
                p = faiss.IndexRefineSearchParameters()
                p.k_factor = float(_check_int_param("k_factor", kf)) if kf is not None else float(wrapper.k_factor)
                p.base_index_params = cur
            keep.append(p)
            cur = p
        return cur, keep

    def search(self, queries: np.ndarray, k: int, params: dict | None = None) -> list[Result]:
        """Top-`k` (scores, positions) per query, best first, FAISS padding removed."""
        q = _as_matrix(queries, self.dim, "queries")
        k = _check_int_param("k", k)
        sp, keep = self._search_params(params)
        if self.ntotal == 0 or len(q) == 0:
            return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in range(len(q))]
        D, I = self.faiss_index.search(q, min(k, self.ntotal), params=sp)
        del keep
        return _strip(-D if self.metric == "l2" else D, I)

    # ---- IVF introspection --------------------------------------------------------------
    def list_assignments(self) -> np.ndarray | None:
        """IVF kinds: the inverted-list id of every position (len ntotal); else None."""
        if self._ivf is None:
            return None
        if self._assignments is None:
            from faiss.contrib.inspect_tools import get_invlist

            out = np.full(self.ntotal, -1, np.int64)
            invlists = self._ivf.invlists
            for lst in range(self.nlist):
                if invlists.list_size(lst):
                    ids, _codes = get_invlist(invlists, lst)
                    out[ids] = lst
            out.setflags(write=False)
            self._assignments = out
        return self._assignments

    def coarse_ranking(self, query: np.ndarray) -> np.ndarray | None:
        """IVF kinds: all list ids ordered by centroid similarity to `query` (best first)."""
        if self._ivf is None:
            return None
        q = _as_matrix(query, self.dim, "query")[:1]
        for wrapper in self._chain[:-1]:
            if isinstance(wrapper, faiss.IndexPreTransform):
                for i in range(wrapper.chain.size()):
                    q = np.ascontiguousarray(wrapper.chain.at(i).apply_py(q), dtype=np.float32)
        _, lists = self._ivf.quantizer.search(q, self.nlist)
        return lists[0][lists[0] >= 0].astype(np.int64)

    def __repr__(self) -> str:
        return (f"AnnIndex({self.factory!r}, kind={self.kind}, metric={self.metric}, dim={self.dim}, "
                f"ntotal={self.ntotal})")


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip") -> list[Result]:
    """Brute-force top-`k` by `similarity` in numpy (the oracle): same return shape as
    `AnnIndex.search`; ties broken by lower position."""
    x = _as_matrix(vectors, None, "vectors")
    q = _as_matrix(queries, x.shape[1], "queries")
    k = min(_check_int_param("k", k), len(x))
    out: list[Result] = []
    step = max(1, int(2e7 // max(len(x), 1)))  # bound the score matrix to ~80 MB
    for a in range(0, len(q), step):
        scores = similarity(x, q[a:a + step], metric)
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            order = np.lexsort((top, -row[top]))
            pos = top[order].astype(np.int64)
            out.append((row[pos].astype(np.float32), pos))
    return out


def recall_at(approx: list[Result], exact: list[Result], k: int, *, vectors: np.ndarray | None = None,
              queries: np.ndarray | None = None, tol: float = 1e-5, metric: str = "ip") -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k|.

    With `vectors` and `queries`, ties count: an approximate hit outside the exact list still
    counts if its true score is within `tol` of the exact k-th score (duplicate ads)."""
    vals = []
    for i, ((_, a), (es, e)) in enumerate(zip(approx, exact)):
        e_k, a_k = e[:k], a[:k]
        if not len(e_k):
            continue
        hit = np.isin(a_k, e_k)
        if vectors is not None and queries is not None and not hit.all():
            q = np.asarray(queries, np.float32).reshape(len(exact), -1)[i]
            true = similarity(vectors[a_k[~hit]], q, metric)[0]
            hit[~hit] = true >= es[len(e_k) - 1] - tol
        vals.append(min(int(hit.sum()), len(e_k)) / len(e_k))
    return float(np.mean(vals)) if vals else float("nan")


def _as_matrix(x, dim: int | None, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        want = f"(n, {dim}) or ({dim},)" if dim is not None else "(n, d)"
        raise ValueError(f"{what} must have shape {want}; got {np.shape(x)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(arr)


def _strip(D: np.ndarray, I: np.ndarray) -> list[Result]:
    out = []
    for d, i in zip(D, I):
        keep = (i >= 0) & np.isfinite(d)
        out.append((d[keep].astype(np.float32), i[keep].astype(np.int64)))
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    msg = next((ln for ln in text if "Error" in ln or "error" in ln), text[0] if text else "")
    msg = re.sub(r"^Error in .*? at \S+:\d+: ", "", msg.strip())  # drop the C++ location
    return re.sub(r"\s+", " ", msg)[:300]


REFINE_K_FACTORS: tuple[int, ...] = (4, 8, 16)
"""k_factor steps the tuning ladder tries at every nprobe of a refined index."""


def param_ladder(index: AnnIndex, k: int = 10) -> list[dict]:
    """Search params from cheapest to most expensive, for tuning (empty dict for exact)."""
    if index.kind == "hnsw":  # FAISS searches with max(efSearch, k): start the ladder at k
        return [{"efSearch": ef} for ef in sorted({max(k, e) for e in (64, 128, 256, 512, 1024, 2048)})]
    if index.nlist is None:
        return [{}]
    ladder = sorted({min(2 ** i, index.nlist) for i in range(int(math.log2(index.nlist)) + 2)})
    if not any(isinstance(c, faiss.IndexRefine) for c in index._chain):
        return [{"nprobe": p} for p in ladder]
    # A refined index's recall is capped by how many PQ candidates are re-ranked, whatever nprobe:
    # at 10M ads, nprobe = nlist with k_factor 4 stopped at recall@500 0.88.
    return [{"nprobe": p, "k_factor": f} for p in ladder for f in REFINE_K_FACTORS]


def tune_search_params(index: AnnIndex, queries: np.ndarray, exact: list[Result], *,
                       k: int = 500, target: float = 0.95, vectors: np.ndarray | None = None) -> tuple[dict, float]:
    """The cheapest params on `param_ladder` whose recall@k vs `exact` reaches `target`
    (else the most expensive one), with the recall it measured."""
    best: tuple[dict, float] = ({}, float("nan"))
    for params in param_ladder(index, k):
        r = recall_at(index.search(queries, k, params), exact, k, vectors=vectors, queries=queries,
                      metric=index.metric)
        best = (params, r)
        if not r < target:  # NaN (no queries) stops at the cheapest
            break
    return best
