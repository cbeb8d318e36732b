"""The team's own early ranker: an ONNX model fed by a signature, or an `adlens.rankers` entry point.

The interface (`EarlyRanker`): `features` (the candidate features it reads, in the order of its
input columns; the vocabulary of core.funnel.ranker_features), `output` ("probability": the
candidate's pCTR, eCPM by the bid formula; "score": the ranking value itself), `score(X)` for a
float32 matrix (n, len(features)) -> (n,), `describe()`, `fingerprint`.

The ONNX ranker's signature (a JSON file; data/README.md, 'Your own early ranker')::

    {"format": 1,
     "inputs": [{"name": "features", "features": ["candidate.score", "campaign.bid", "request.placement=home_feed"]}],
     "output": {"name": "pctr", "kind": "probability"}}

Each input is a float32 tensor (batch, len(features)); the output is (batch,) or (batch, 1). The
model and the signature must agree (input names and widths, the output's name and shape); the
session is created once (CPU) and is safe to run from several threads.

A plugin package registers a class or factory under `[project.entry-points."adlens.rankers"]`;
it is called with the build's `params` and returns an object with the interface above.

A version records its ranker in the manifest's "ranker" section (core.funnel.ranker_build);
`version_ranker(version)` opens it again (the files' sha256 checked), or returns None when the
version ranks with AdLens's own pCTR model.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from core.common.errors import AdLensError, ArtifactError
from core.store.artifacts import sha256_file

ENTRY_POINT_GROUP = "adlens.rankers"
KINDS = ("probability", "score")
FORMAT = 1
RANKER_DIR, MODEL_FILE, SIGNATURE_FILE = "ranker", "ranker.onnx", "signature.json"


class EarlyRanker:
    """What the funnel's early ranking stage calls (see the module docstring)."""

    kind: str = "ranker"
    features: tuple[str, ...] = ()
    output: str = "probability"
    fingerprint: str = ""

    def score(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind} ranker"

    def info(self) -> dict:
        """What a Trace and the manifest say about it."""
        return {"kind": self.kind, "output": self.output, "fingerprint": self.fingerprint,
                "features": list(self.features), "describe": self.describe()}


def check_output(y, n: int, kind: str, where: str) -> np.ndarray:
    """`y` as a float64 (n,) array, or AdLensError naming `where`: wrong shape, non-finite values,
    a probability outside [0, 1]."""
    y = np.asarray(y)
    if y.shape not in ((n,), (n, 1)) or y.dtype.kind not in "fiub":
        raise AdLensError(f"{where}: returned a {y.dtype} array of shape {y.shape} for {n} candidates; "
                          f"the output must be ({n},) or ({n}, 1) numbers")
    y = y.reshape(n).astype(np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        raise AdLensError(f"{where}: {int(bad.sum())} of {n} outputs are not finite (e.g. {y[bad][0]}); "
                          "a ranker must give a finite value for every candidate")
    if kind == "probability" and n and (y.min() < 0 or y.max() > 1):
        raise AdLensError(f"{where}: output kind \"probability\" but values range over [{y.min():.4g}, {y.max():.4g}]; "
                          "apply a sigmoid in the model or declare \"kind\": \"score\"")
    return y


# ---- the ONNX ranker and its signature ---------------------------------------------------------
def check_signature(sig, where: str) -> dict:
    """The signature dict if well formed; else AdLensError naming `where` and what to fix."""
    example = ('{"format": 1, "inputs": [{"name": "features", "features": ["candidate.score", "campaign.bid"]}], '
               '"output": {"name": "pctr", "kind": "probability"}}')
    if not isinstance(sig, dict):
        raise AdLensError(f"{where}: a ranker signature is a JSON object like {example}")
    extra = sorted(set(sig) - {"format", "inputs", "output", "description"})
    if extra:
        raise AdLensError(f"{where}: unknown key(s) {', '.join(extra)}; a signature has format, inputs, output")
    if sig.get("format", FORMAT) != FORMAT:
        raise AdLensError(f"{where}: format {sig.get('format')!r} is not supported (this AdLens reads format {FORMAT})")
    inputs = sig.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise AdLensError(f"{where}: \"inputs\" must be a non-empty list of {{\"name\": ..., \"features\": [...]}}; "
                          f"e.g. {example}")
    names = []
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict) or not isinstance(inp.get("name"), str) or not inp["name"]:
            raise AdLensError(f"{where}: input {i + 1} needs a \"name\" (the ONNX model's input name)")
        feats = inp.get("features")
        if not isinstance(feats, list) or not feats or not all(isinstance(f, str) and f for f in feats):
            raise AdLensError(f"{where}: input {inp['name']!r} needs \"features\": a non-empty list of feature names")
        names.append(inp["name"])
    if len(set(names)) != len(names):
        raise AdLensError(f"{where}: input names must differ; got {names}")
    out = sig.get("output")
    if not isinstance(out, dict) or not isinstance(out.get("name"), str) or out.get("kind") not in KINDS:
        raise AdLensError(f"{where}: \"output\" must be {{\"name\": OUTPUT NAME, \"kind\": \"probability\" or \"score\"}}")
    return sig


def read_signature(path: Path) -> dict:
    path = Path(path)
    try:
        sig = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdLensError(f"{path}: ranker signature file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AdLensError(f"{path}: cannot be read ({exc})") from None
    except ValueError as exc:
        raise AdLensError(f"{path}: not valid JSON ({exc})") from None
    return check_signature(sig, str(path))


def _width(shape) -> int | str | None:
    return shape[1] if len(shape) == 2 else None


class OnnxRanker(EarlyRanker):
    """An ONNX model run on the features its signature names (CPU onnxruntime, thread-safe)."""

    kind = "onnx"

    def __init__(self, model_path: Path, signature: dict, *, name: str | None = None):
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.name = name or self.model_path.name
        where = str(self.model_path)
        self.signature = check_signature(signature, where)
        if not self.model_path.is_file():
            raise AdLensError(f"{where}: ranker model file not found")
        try:
            opts = ort.SessionOptions()
            # one request's candidates are a small batch: one thread, no spinning (threads would only
            # contend with the other requests and dashboard sessions running at the same time)
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(str(self.model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise AdLensError(f"{where}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from exc
        self.inputs = [(i["name"], tuple(i["features"])) for i in self.signature["inputs"]]
        self.features = tuple(f for _, feats in self.inputs for f in feats)
        self.output = self.signature["output"]["kind"]
        self.out_name = self.signature["output"]["name"]
        self._check_model(where)
        self.sha256 = sha256_file(self.model_path)
        canon = json.dumps(self.signature, sort_keys=True, separators=(",", ":"))
        self.fingerprint = hashlib.sha256(f"{self.sha256}:{canon}".encode()).hexdigest()

    def _check_model(self, where: str) -> None:
        model = {i.name: i for i in self.session.get_inputs()}
        want, have = [n for n, _ in self.inputs], set(model)
        if set(want) != have:
            raise AdLensError(
                f"{where}: the signature's inputs do not match the model's: model has {sorted(have)}, signature "
                f"names {sorted(want)} (missing from the signature: {sorted(have - set(want))}; not in the model: "
                f"{sorted(set(want) - have)}); edit the signature's \"inputs\"")
        for name, feats in self.inputs:
            meta = model[name]
            if meta.type != "tensor(float)":
                raise AdLensError(f"{where}: model input {name!r} is {meta.type}; a ranker input is float32 "
                                  "(batch, number of features)")
            shape = list(meta.shape)
            w = _width(shape)
            if not (len(shape) == 2 or (len(shape) == 1 and len(feats) == 1)) or (isinstance(w, int) and w != len(feats)):
                raise AdLensError(f"{where}: model input {name!r} has shape {shape} but the signature gives it "
                                  f"{len(feats)} feature(s) (shape [batch, {len(feats)}]); make both agree")
        outs = {o.name: o for o in self.session.get_outputs()}
        if self.out_name not in outs:
            raise AdLensError(f"{where}: the model has no output {self.out_name!r} (signature \"output\"); "
                              f"its outputs: {sorted(outs)}")
        shape = list(outs[self.out_name].shape)
        if len(shape) not in (1, 2) or (len(shape) == 2 and isinstance(shape[1], int) and shape[1] != 1):
            raise AdLensError(f"{where}: output {self.out_name!r} has shape {shape}; a ranker's output is "
                              "(batch,) or (batch, 1): one value per candidate")
        self._rank1 = {name for name, _ in self.inputs if len(model[name].shape) == 1}

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        n = len(X)
        if n == 0:
            return np.zeros(0)
        feeds, j = {}, 0
        for name, feats in self.inputs:
            part = X[:, j:j + len(feats)]
            feeds[name] = np.ascontiguousarray(part[:, 0] if name in self._rank1 else part)
            j += len(feats)
        try:
            (y,) = self.session.run([self.out_name], feeds)
        except Exception as exc:  # onnxruntime's own exception types
            raise AdLensError(f"{self.model_path}: the ranker failed on AdLens's inputs "
                              f"({str(exc).splitlines()[0][:300]}); check the signature's inputs") from exc
        return check_output(y, n, self.output, f"ranker {self.name}")

    def describe(self) -> str:
        return f"your ranker ({self.name})"

    def info(self) -> dict:
        return {**super().info(), "file": self.name, "sha256": self.sha256}


# ---- entry-point rankers ------------------------------------------------------------------------
def installed() -> dict[str, object]:
    """Entry points of the group by name (not imported yet)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


class PluginRanker(EarlyRanker):
    """An entry-point ranker, its interface and every output checked."""

    kind = "plugin"

    def __init__(self, name: str, params: dict | None = None):
        eps = installed()
        ep = eps.get(name)
        if ep is None:
            raise AdLensError(f"no ranker {name!r} in entry-point group {ENTRY_POINT_GROUP}; installed: "
                              f"{', '.join(sorted(eps)) or 'none'} (or give an ONNX file: --ranker model.onnx "
                              "--ranker-signature sig.json)")
        self.name, self.source, self.params = name, str(ep.value), dict(params or {})
        label = f"ranker plugin {name!r} ({self.source})"
        try:
            obj = ep.load()
        except Exception as exc:
            raise AdLensError(f"{label} failed to import: {exc}") from exc
        try:
            self.impl = obj(**self.params) if callable(obj) else obj
        except Exception as exc:
            raise AdLensError(f"{label} could not be made with params {self.params}: {type(exc).__name__}: {exc}") from exc
        feats = getattr(self.impl, "features", None)
        if not isinstance(feats, (tuple, list)) or not feats or not all(isinstance(f, str) for f in feats) \
                or not callable(getattr(self.impl, "score", None)):
            raise AdLensError(f"{label} is not a ranker: it needs features (a tuple of feature names) and "
                              "score(X) (core.funnel.rankers.EarlyRanker)")
        self.features = tuple(feats)
        self.output = getattr(self.impl, "output", "probability")
        if self.output not in KINDS:
            raise AdLensError(f"{label}: output must be \"probability\" or \"score\"; got {self.output!r}")
        own = getattr(self.impl, "fingerprint", None)
        canon = json.dumps(self.params, sort_keys=True, default=str)
        self.fingerprint = own if isinstance(own, str) and own else \
            hashlib.sha256(f"{self.source}:{canon}:{self.features}".encode()).hexdigest()
        self._label = label

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        try:
            y = self.impl.score(X)
        except AdLensError:
            raise
        except Exception as exc:  # a broken plugin must say which one
            raise AdLensError(f"{self._label} failed: {type(exc).__name__}: {exc}") from exc
        return check_output(y, len(X), self.output, self._label)

    def describe(self) -> str:
        try:
            own = self.impl.describe() if callable(getattr(self.impl, "describe", None)) else ""
        except Exception:
            own = ""
        return f"your ranker ({self.name})" + (f": {own}" if own else "")

    def info(self) -> dict:
        return {**super().info(), "file": self.name, "entry_point": self.source, "params": self.params}


# ---- a version's ranker -------------------------------------------------------------------------
def version_ranker(version) -> EarlyRanker | None:
    """The ranker a version was built with (None: AdLens's pCTR model); files checked against the
    manifest's sha256, a plugin's features against those it was built with."""
    manifest = getattr(version, "manifest", None)
    section = manifest.get("ranker") if manifest is not None else None
    if not section:
        return None
    root = Path(version.path)
    if section.get("kind") == "onnx":
        model, sig = root / section["file"], root / section["signature"]
        for path, key in ((model, "sha256"), (sig, "signature_sha256")):
            if not path.is_file():
                raise ArtifactError(f"{path}: the version's ranker file is missing")
            if sha256_file(path) != section.get(key):
                raise ArtifactError(f"{path}: sha256 does not match the manifest's; the version was modified")
        return OnnxRanker(model, read_signature(sig), name=section.get("source") or MODEL_FILE)
    ranker = PluginRanker(section["plugin"], section.get("params") or {})
    if list(ranker.features) != list(section.get("features") or []):
        raise ArtifactError(f"{root}: ranker plugin {section['plugin']!r} now reads {list(ranker.features)} but the "
                            f"version was built with {section.get('features')}; rebuild the version")
    return ranker
