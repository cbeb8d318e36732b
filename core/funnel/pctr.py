"""The early ranker's pCTR model: logistic regression on per-source features, fitted on logged
impressions (no hand-set weights).

Features of a candidate (`feature_names`): `score`, the tower similarity (defined for every
ad); and when the version has sources besides two_tower, for each source s a found-by flag
`found:s` (the source returned the ad within its quota) and, for the sources other than
two_tower, its score `score:s` (0 when not found; popular_in_context's click count enters as
log1p). With two_tower alone the model is exactly the Platt scaling of core.funnel.ranking
(`fit_calibration`: pCTR = sigmoid(a * score + b)).

Fitting: a seeded sample of logged impressions; each is replayed as its logged request through
every source (batch retrieval at the default quotas) to get the shown ad's features; then
Newton's method with backtracking on standardised features with a ridge (rare found-by flags
can separate the classes on a small sample; the ridge keeps their weights finite), coefficients
reported on the raw features (what `pctr` multiplies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.funnel.ranking import fit_calibration

RIDGE = 1e-3


def expit(z: np.ndarray) -> np.ndarray:
    """The logistic function, overflow-free (scipy.special's import costs 0.3 s of a cold page)."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))


def feature_names(sources: tuple[str, ...]) -> tuple[str, ...]:
    """The model's features for a version with these sources (SOURCE_ORDER, two_tower first)."""
    if tuple(sources) in ((), ("two_tower",)):
        return ("score",)
    names = ["score"]
    for s in sources:
        names.append(f"found:{s}")
        if s != "two_tower":
            names.append(f"score:{s}")
    return tuple(names)


def transform_score(source: str, score: np.ndarray) -> np.ndarray:
    s = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=0.0)
    return np.log1p(np.maximum(s, 0.0)) if source == "popular_in_context" else s


def feature_matrix(names: tuple[str, ...], tower_score: np.ndarray, found: dict[str, np.ndarray],
                   scores: dict[str, np.ndarray]) -> np.ndarray:
    """(n, len(names)) features; `found`/`scores` per source (missing sources count as not found)."""
    n = len(tower_score)
    X = np.zeros((n, len(names)))
    for j, name in enumerate(names):
        if name == "score":
            X[:, j] = tower_score
        else:
            kind, src = name.split(":", 1)
            if src in found:
                f = np.asarray(found[src], bool)
                X[:, j] = f if kind == "found" else np.where(f, transform_score(src, scores[src]), 0.0)
    return X


@dataclass(frozen=True)
class PctrModel:
    """pCTR = sigmoid(X @ coef + intercept) over `features`."""

    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    n: int = 0
    positives: int = 0
    method: str = "platt"

    @property
    def a(self) -> float:
        """Weight of the tower similarity (Platt's slope)."""
        return self.coef[self.features.index("score")]

    @property
    def b(self) -> float:
        return self.intercept

    def pctr(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        z = X @ np.asarray(self.coef, dtype=np.float64) + self.intercept
        return expit(z)

    def to_dict(self) -> dict:
        d = {"method": self.method, "n": self.n, "positives": self.positives, "intercept": self.intercept,
             "coefficients": dict(zip(self.features, self.coef))}
        if self.features == ("score",):
            d.update(a=self.a, b=self.b)
        return d


def fit_pctr(X: np.ndarray, clicked: np.ndarray, features: tuple[str, ...], l2: float = RIDGE,
             iters: int = 50) -> PctrModel:
    """Logistic regression of `clicked` on X (see the module docstring)."""
    X = np.asarray(X, dtype=np.float64).reshape(len(clicked), len(features))
    y = np.asarray(clicked, dtype=np.float64)
    if features == ("score",):
        cal = fit_calibration(X[:, 0], y)
        return PctrModel(features, (cal.a,), cal.b, cal.n, cal.positives, cal.method)
    n, pos = len(y), int(y.sum())
    if n == 0 or pos in (0, n):
        base = fit_calibration(np.zeros(n), y)  # no data / one class: a constant rate
        return PctrModel(features, (0.0,) * len(features), base.b, n, pos, base.method)
    mu, sd = X.mean(0), X.std(0)
    live = sd > 1e-12
    Z = np.where(live, (X - mu) / np.where(live, sd, 1.0), 0.0)
    A = np.column_stack([Z, np.ones(n)])
    w = np.zeros(A.shape[1])
    w[-1] = np.log(pos / (n - pos))
    reg = np.diag([l2 * n] * Z.shape[1] + [0.0])

    def objective(v: np.ndarray) -> float:  # penalised negative log-likelihood (overflow-free)
        z = A @ v
        return float(np.logaddexp(0.0, z).sum() - y @ z + 0.5 * v @ reg @ v)

    loss = objective(w)
    for _ in range(iters):
        p = expit(A @ w)
        grad = A.T @ (p - y) + reg @ w
        hess = (A * (p * (1 - p))[:, None]).T @ A + reg + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        t = 1.0  # backtracking: a full Newton step can overshoot on (nearly) separable features
        while t > 1e-6 and objective(w - t * step) > loss:
            t /= 2
        w -= t * step
        new_loss = objective(w)
        if np.abs(t * step).max() < 1e-10 or loss - new_loss < 1e-12 * max(1.0, abs(loss)):
            break
        loss = new_loss
    coef = np.where(live, w[:-1] / np.where(live, sd, 1.0), 0.0)
    intercept = float(w[-1] - (coef * mu).sum())
    return PctrModel(features, tuple(float(c) for c in coef), intercept, n, pos, "logistic")
