"""Merge per-source candidate lists: union, dedup, attribution.

Candidates are listed source by source in SOURCE_ORDER (two_tower first, in ANN order), each
source's new ads in its rank order; an ad found by several sources appears once, at its first
place, and keeps its rank and score in every source that found it. With two_tower alone the
merged list is exactly the ANN result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.sources.base import SOURCE_ORDER


@dataclass(frozen=True)
class MergedCandidates:
    """`positions` int64 [n] (version positions, merge order); per source that ran: `rank` int64
    [n] (1-based, 0 = not found by it) and `score` float64 [n] (NaN = not found)."""

    positions: np.ndarray
    ran: tuple[str, ...]
    rank: dict[str, np.ndarray]
    score: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.positions)

    def found(self, name: str) -> np.ndarray:
        r = self.rank.get(name)
        return r > 0 if r is not None else np.zeros(len(self.positions), bool)

    def source_sets(self) -> np.ndarray:
        """Object array [n]: the tuple of source names that found each candidate (SOURCE_ORDER)."""
        mask = np.zeros(len(self.positions), np.int64)
        for bit, name in enumerate(SOURCE_ORDER):
            mask |= self.found(name).astype(np.int64) << bit
        return _SOURCE_SETS[mask]


_SOURCE_SETS = np.empty(1 << len(SOURCE_ORDER), dtype=object)
for _m in range(len(_SOURCE_SETS)):
    _SOURCE_SETS[_m] = tuple(n for b, n in enumerate(SOURCE_ORDER) if _m >> b & 1)


def merge(results: dict[str, tuple[np.ndarray, np.ndarray]]) -> MergedCandidates:
    """Union of per-source (positions, scores) rows (1-D, padded with -1), deduplicated, with
    every source's rank and score kept (see the module docstring)."""
    unknown = set(results) - set(SOURCE_ORDER)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; known: {', '.join(SOURCE_ORDER)}")
    ran = tuple(n for n in SOURCE_ORDER if n in results)
    rows = {}
    for name in ran:
        p, s = results[name]
        p, s = np.asarray(p, np.int64).ravel(), np.asarray(s).ravel()
        ok = p >= 0
        rows[name] = (p[ok], s[ok])
    allpos = np.concatenate([rows[n][0] for n in ran]) if ran else np.empty(0, np.int64)
    uniq, first = np.unique(allpos, return_index=True)
    order = np.argsort(first, kind="stable")
    positions = uniq[order]
    where = np.empty(len(uniq), np.int64)
    where[order] = np.arange(len(uniq))
    rank, score = {}, {}
    for name in ran:
        p, s = rows[name]
        j = where[np.searchsorted(uniq, p)]
        r = np.zeros(len(positions), np.int64)
        v = np.full(len(positions), np.nan)
        r[j] = np.arange(1, len(p) + 1)
        v[j] = s
        rank[name], score[name] = r, v
    return MergedCandidates(positions, ran, rank, score)


def merge_at_budget(lists: dict[str, np.ndarray], weights: dict[str, float], k: int) -> np.ndarray:
    """The merged candidate set at a total budget of `k` distinct ads, for comparing sources at
    the same K: per request (rows of `lists`, best-first positions padded with -1) the sources
    take turns in proportion to `weights` (the funnel's quotas); an ad already taken is skipped
    without using the turn, and a source that runs out leaves its share to the others. The
    greedy order makes the first k' ads the merge at budget k'. Returns int64 [n, k], -1 padded."""
    names = [n for n in SOURCE_ORDER if n in lists and weights.get(n, 0) > 0]
    unknown = set(lists) - set(SOURCE_ORDER)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; known: {', '.join(SOURCE_ORDER)}")
    n = len(next(iter(lists.values()))) if lists else 0
    out = np.full((n, k), -1, np.int64)
    w = np.array([float(weights[s]) for s in names])
    for r in range(n):
        rows = [np.asarray(lists[s][r], np.int64) for s in names]
        rows = [row[row >= 0] for row in rows]
        ptr = np.zeros(len(names), np.int64)
        taken = np.zeros(len(names))
        seen: set[int] = set()
        m = 0
        while m < k:
            live = [i for i in range(len(names)) if ptr[i] < len(rows[i])]
            if not live:
                break
            i = min(live, key=lambda j: ((taken[j] + 1) / w[j], j))
            while ptr[i] < len(rows[i]) and int(rows[i][ptr[i]]) in seen:
                ptr[i] += 1
            if ptr[i] == len(rows[i]):
                continue
            ad = int(rows[i][ptr[i]])
            ptr[i] += 1
            seen.add(ad)
            out[r, m] = ad
            taken[i] += 1
            m += 1
    return out
