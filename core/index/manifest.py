"""`Manifest`: what a version's manifest.json holds, read and written here only.

Core fields are typed attributes. Sections contributed by build-time artifact builders (the map,
candidate sources, shards, imported parts, ...) live in `extras` and are written at the top level
of manifest.json, next to the core fields, so every manifest stays one flat JSON object. Old
manifests load: missing optional fields take their defaults, and a tower evaluation stored in
either historical shape is normalised to the evaluation report itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from core.common.errors import ArtifactError
from core.common.jsonio import to_jsonable

FORMAT = 1


def _tower_evaluation(tm: Any) -> dict:
    """The evaluation report from either stored shape: the report itself ({"models": ...}) or a
    tower metrics.json ({"evaluation": {...}, "training": ...})."""
    if not isinstance(tm, dict):
        return {}
    if "models" in tm or "evaluation" not in tm:
        return dict(tm)
    return dict(tm.get("evaluation") or {})


@dataclass
class Manifest:
    """A version's manifest (see core/index/versions.py for the folder it describes)."""

    name: str
    created_at: str
    factory: str
    index_kind: str
    n_ads: int
    dims: dict[str, int]
    embedding: dict[str, Any]
    encoder: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT
    parent: str | None = None
    tower: str | None = None
    nlist: int | None = None
    search_params: dict[str, int] = field(default_factory=dict)
    search_params_source: str = "given"
    recall: dict[str, float | None] = field(default_factory=dict)
    recall_queries: dict[str, Any] = field(default_factory=dict)
    tower_metrics: dict[str, Any] = field(default_factory=dict)
    bytes_per_ad: float | None = None
    index_bytes: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # Bring your own model: the similarity the ads were indexed for (cosine = AdLens's own), the
    # imported ad vectors (name, file sha256, metric, dim, coverage; None for AdLens's text
    # embeddings), the query side (source: tower / history_mean / onnx / request_vectors / plugin,
    # with file sha256s and the ONNX signature) and whether queries are L2-normalised on load.
    metric: str = "cosine"
    ad_vectors: dict[str, Any] | None = None
    query_side: dict[str, Any] = field(default_factory=dict)
    normalize_queries: bool = False
    # Source quotas learned on the validation slice (`build-index --learn-quotas`,
    # core.analysis.quota_learning): {"shares": {source: share of a fixed budget}, "counts":
    # {source: funnel quota, 0 = off}, "k", "metric", "validation": {...}}; None: the funnel's defaults.
    quotas: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    REQUIRED = ("name", "created_at", "factory", "n_ads", "dims", "embedding")

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "manifest.json") -> "Manifest":
        """Parse a manifest (old ones included); ArtifactError names the missing or bad field."""
        if not isinstance(d, dict):
            raise ArtifactError(f"{where}: not a JSON object")
        missing = [k for k in cls.REQUIRED if k not in d]
        if missing:
            raise ArtifactError(f"{where}: not a valid manifest (missing {', '.join(missing)})")
        known = {f.name for f in fields(cls)} - {"extras"}
        core = {k: v for k, v in d.items() if k in known}
        try:
            fp = d["embedding"]["fingerprint"]
            dims = {"text": int(d["dims"]["text"]), "index": int(d["dims"]["index"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: not a valid manifest (bad embedding or dims: {exc})") from exc
        if not isinstance(fp, str):
            raise ArtifactError(f"{where}: not a valid manifest (embedding.fingerprint is not text)")
        quotas = d.get("quotas")
        if quotas is not None and not (isinstance(quotas, dict) and isinstance(quotas.get("counts"), dict)
                                       and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                               for c in quotas["counts"].values())):
            raise ArtifactError(f"{where}: not a valid manifest (quotas must hold counts: source -> integer >= 0)")
        core.update(dims=dims, n_ads=int(d["n_ads"]), index_kind=str(d.get("index_kind") or ""),
                    encoder=dict(d.get("encoder") or {}), search_params=dict(d.get("search_params") or {}),
                    files=dict(d.get("files") or {}), tower_metrics=_tower_evaluation(d.get("tower_metrics")))
        return cls(**core, extras={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict:
        """The JSON object written to manifest.json (extras at the top level)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extras"}
        out.update(self.extras)
        return to_jsonable(out)

    # Read access by key, for builder sections and for callers that print the whole manifest.
    # Only the asked field is converted (what `to_dict()[key]` holds): the whole manifest, with
    # its per-file checksums, takes milliseconds to convert, and why-not reads a key per request.
    def get(self, key: str, default: Any = None) -> Any:
        if key in self.extras:
            return self.extras[key]
        return to_jsonable(getattr(self, key)) if key in _FIELDS else default

    def __getitem__(self, key: str) -> Any:
        if key in self.extras:
            return to_jsonable(self.extras[key])
        if key not in _FIELDS:
            raise KeyError(key)
        return to_jsonable(getattr(self, key))

    @property
    def quota_counts(self) -> dict[str, int] | None:
        """The funnel quotas learned for this version (source -> count, 0 = off), or None."""
        q = self.extras.get("quotas", self.quotas)
        return {str(n): int(c) for n, c in q["counts"].items()} if q else None

    @property
    def fingerprint(self) -> str:
        return str(self.embedding["fingerprint"])

    @property
    def total_build_s(self) -> float | None:
        return self.timings.get("total_s")


_FIELDS = frozenset(f.name for f in fields(Manifest)) - {"extras"}
"""The typed fields (what `Manifest.to_dict` writes besides the extras)."""
