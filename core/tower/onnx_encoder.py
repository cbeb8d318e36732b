"""A team's own user tower exported to ONNX, run with onnxruntime, as a query encoder.

The signature (a JSON file) maps AdLens request features to the model's named inputs and
declares its output::

    {"inputs": {
        "user":    {"feature": "user_id", "vocab": ["u_1", "u_2"]},     # int: 1 + position, 0 unknown
        "country": {"feature": "country", "hash_buckets": 64},           # int: md5 bucket
        "place":   {"feature": "placement"},                             # string input: raw value
        "hour":    {"feature": "hour"},                                  # 0-23 (int or float input)
        "clicks":  {"feature": "click_history_ids", "max_len": 20, "vocab": ["ad_1", "ad_2"]},
        "mean":    {"feature": "click_history_mean", "max_len": 50}},   # mean of clicked ads' vectors
     "output": {"name": "query", "dim": 64}}

Categorical features (FEATURES) feed an integer input through `vocab` (1 + position, 0 for
unknown or missing) or `hash_buckets`, or a string input as is. `click_history_ids` is the last
`max_len` clicked ads before the request, oldest first, left-padded with 0; `click_history_mean`
is the mean of their ad vectors (zeros without clicks); `click_count` their number. A scalar
feature fills an input of shape [n] or [n, 1]. Inputs the signature and the model disagree on,
and an output of another dimension, are refused with the names on both sides.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from core.common.errors import AdLensError
from core.data.features import FeatureStore
from core.store.artifacts import sha256_file
from core.tower.query_encoder import QueryEncoder

MODEL_FILE, SIGNATURE_FILE = "model.onnx", "signature.json"
CATEGORICAL = ("user_id", "country", "age_bucket", "profile_device", "community_id", "placement", "device")
NUMERIC = ("hour", "weekday", "click_count")
HISTORY = ("click_history_ids", "click_history_mean")
FEATURES = CATEGORICAL + NUMERIC + HISTORY
_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
           "tensor(double)": np.float64, "tensor(string)": object}


def _bucket(value, n: int) -> int:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return 0
    return int.from_bytes(hashlib.md5(str(value).encode()).digest()[:8], "little") % n


def check_signature(sig, where: str) -> dict:
    """The signature dict if well formed; else AdLensError naming `where` and the field."""
    if not isinstance(sig, dict) or not isinstance(sig.get("inputs"), dict) or not sig["inputs"]:
        raise AdLensError(f"{where}: a signature needs \"inputs\": {{model input name: {{\"feature\": ...}}}}")
    out = sig.get("output")
    if not isinstance(out, dict) or not isinstance(out.get("name"), str) \
            or isinstance(out.get("dim"), bool) or not isinstance(out.get("dim"), int) or out["dim"] < 1:
        raise AdLensError(f"{where}: a signature needs \"output\": {{\"name\": OUTPUT NAME, \"dim\": D}}")
    for name, spec in sig["inputs"].items():
        feature = spec.get("feature") if isinstance(spec, dict) else None
        if feature not in FEATURES:
            raise AdLensError(f"{where}: input {name!r} maps to feature {feature!r}; valid: {', '.join(FEATURES)}")
        if "vocab" in spec and not (isinstance(spec["vocab"], list) and all(isinstance(v, str) for v in spec["vocab"])):
            raise AdLensError(f"{where}: input {name!r}: \"vocab\" must be a list of strings")
        if "hash_buckets" in spec and not (isinstance(spec["hash_buckets"], int) and spec["hash_buckets"] > 0):
            raise AdLensError(f"{where}: input {name!r}: \"hash_buckets\" must be a positive integer")
        if feature in HISTORY and not (isinstance(spec.get("max_len"), int) and spec["max_len"] > 0):
            raise AdLensError(f"{where}: input {name!r} ({feature}) needs \"max_len\": a positive integer")
    return sig


def read_signature(path: Path) -> dict:
    path = Path(path)
    try:
        sig = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise AdLensError(f"{path}: signature file not found") from exc
    except ValueError as exc:
        raise AdLensError(f"{path}: not valid JSON ({exc})") from exc
    return check_signature(sig, str(path))


class OnnxQueryEncoder(QueryEncoder):
    """Runs `model.onnx` on the features the signature names (CPU onnxruntime, thread-safe)."""

    kind = "onnx"

    def __init__(self, model_path: Path, signature: dict, *, where: str | None = None):
        import onnxruntime as ort

        self.model_path = Path(model_path)
        where = where or str(self.model_path)
        self.signature = check_signature(signature, where)
        try:
            self.session = ort.InferenceSession(str(self.model_path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise AdLensError(f"{self.model_path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from exc
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.dim = int(self.signature["output"]["dim"])
        self._check_model(where)
        # vocab lookups built once (a vocab can hold every user or ad id), shared by every request
        self._vocab = {name: {v: i + 1 for i, v in enumerate(spec["vocab"])}
                       for name, spec in self.signature["inputs"].items() if "vocab" in spec}
        self.sha256 = sha256_file(self.model_path)

    def _check_model(self, where: str) -> None:
        want, have = set(self.signature["inputs"]), set(self.inputs)
        if want != have:
            raise AdLensError(
                f"{where}: the signature's inputs do not match the model's: model has {sorted(have)}, "
                f"signature maps {sorted(want)} (missing from the signature: {sorted(have - want)}; "
                f"not in the model: {sorted(want - have)}); edit the signature's \"inputs\"")
        for name, spec in self.signature["inputs"].items():
            t = self.inputs[name].type
            if t not in _DTYPES:
                raise AdLensError(f"{where}: model input {name!r} has type {t}; supported: {', '.join(_DTYPES)}")
            if spec["feature"] in CATEGORICAL + ("click_history_ids",) and t != "tensor(string)" \
                    and "vocab" not in spec and "hash_buckets" not in spec:
                raise AdLensError(f"{where}: input {name!r} is {t}; give {spec['feature']} a \"vocab\" or "
                                  "\"hash_buckets\" to turn its values into integers")
        outs = {o.name: o for o in self.session.get_outputs()}
        out = self.signature["output"]["name"]
        if out not in outs:
            raise AdLensError(f"{where}: the model has no output {out!r}; its outputs: {sorted(outs)}")
        last = outs[out].shape[-1] if outs[out].shape else None
        if isinstance(last, int) and last != self.dim:
            raise AdLensError(f"{where}: output {out!r} has dimension {last} but the signature declares {self.dim}")

    # ---- features -------------------------------------------------------------------------
    def _categorical(self, name: str, values: np.ndarray, spec: dict, dtype) -> np.ndarray:
        if dtype is object:
            return np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values],
                            dtype=object)
        if name in self._vocab:
            lookup = self._vocab[name]
            return np.array([lookup.get(v, 0) for v in values], dtype=dtype)
        return np.array([_bucket(v, spec["hash_buckets"]) for v in values], dtype=dtype)

    def _feature(self, name: str, requests: pd.DataFrame, features: FeatureStore, dtype) -> np.ndarray:
        spec = self.signature["inputs"][name]
        f = spec["feature"]
        if f in ("user_id", "community_id", "placement", "device"):
            return self._categorical(name, requests[f].to_numpy(dtype=object), spec, dtype)
        if f in ("country", "age_bucket", "profile_device"):
            key = "device" if f == "profile_device" else f
            users = features.users
            if not len(users) or key not in users:
                vals = np.full(len(requests), None, dtype=object)
            else:  # users without a profile get None (vocab 0, hashed like any missing value)
                col = users[key].reindex(pd.Index(requests["user_id"].to_numpy(dtype=object)))
                vals = col.astype(object).where(col.notna(), None).to_numpy(dtype=object)
            return self._categorical(name, vals, spec, dtype)
        ts = pd.to_datetime(requests["ts"])
        if f == "hour":
            return ts.dt.hour.to_numpy().astype(dtype)
        if f == "weekday":
            return ts.dt.weekday.to_numpy().astype(dtype)
        hist = features.click_histories(requests["user_id"].to_numpy(dtype=object), requests["ts"],
                                        spec.get("max_len"))
        if f == "click_count":
            return np.array([len(h) for h in hist]).astype(dtype)
        if f == "click_history_mean":
            out = np.zeros((len(hist), features.dim), np.float32)
            for i, rows in enumerate(hist):
                if len(rows):
                    out[i] = features.ad_text_vectors[rows].mean(0)
            return out.astype(dtype)
        n = spec["max_len"]  # click_history_ids, left-padded
        pad = "" if dtype is object else 0
        out = np.full((len(hist), n), pad, dtype=dtype)
        for i, rows in enumerate(hist):
            if len(rows):
                ids = self._categorical(name, features.ad_ids[rows], spec, dtype)
                out[i, n - len(ids):] = ids
        return out

    def feeds(self, requests: pd.DataFrame, features: FeatureStore) -> dict[str, np.ndarray]:
        """The model's input arrays for a requests frame."""
        out = {}
        for name, spec in self.signature["inputs"].items():
            meta = self.inputs[name]
            x = self._feature(name, requests, features, _DTYPES[meta.type])
            if x.ndim == 1 and len(meta.shape) == 2:
                x = x[:, None]
            width = meta.shape[-1] if len(meta.shape) == 2 else None
            if x.ndim != len(meta.shape) or (isinstance(width, int) and width != x.shape[1]):
                have = f"{x.shape[1]} values" if x.ndim == 2 else "one value"
                raise AdLensError(f"{self.model_path}: input {name!r} takes {width if isinstance(width, int) else '?'} "
                                  f"values per request (shape {meta.shape}) but {spec['feature']} has {have}; "
                                  "map it to a feature of that size (max_len, or ad vectors of that dimension)")
            out[name] = x
        return out

    def encode_requests(self, requests: pd.DataFrame, features: FeatureStore) -> np.ndarray:
        if not len(requests):
            return np.zeros((0, self.dim), np.float32)
        out_name = self.signature["output"]["name"]
        feeds = self.feeds(requests, features)
        try:
            (y,) = self.session.run([out_name], feeds)
        except Exception as exc:  # onnxruntime's own exception types
            raise AdLensError(f"{self.model_path}: the model failed on AdLens's inputs "
                              f"({str(exc).splitlines()[0][:300]}); check the signature's inputs") from exc
        y = np.asarray(y, dtype=np.float32).reshape(len(requests), -1)
        if y.shape[1] != self.dim:
            raise AdLensError(f"{self.model_path}: output {out_name!r} has dimension {y.shape[1]} but the "
                              f"signature declares {self.dim}")
        return y

    def config(self) -> dict:
        return {"kind": self.kind, "model_sha256": self.sha256, "dim": self.dim, "signature": self.signature}

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.model_path, directory / MODEL_FILE)
        (directory / SIGNATURE_FILE).write_text(json.dumps(self.signature, indent=2))
        (directory / "config.json").write_text(json.dumps(self.config(), indent=2))

    @classmethod
    def load(cls, directory: Path) -> "OnnxQueryEncoder":
        directory = Path(directory)
        return cls(directory / MODEL_FILE, read_signature(directory / SIGNATURE_FILE))
