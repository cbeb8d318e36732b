"""Opt-in ONNX backends for AdLens's own text encoder: "onnx" (fp32) and "onnx-int8" (dynamic
int8 quantisation of the MatMul weights, per channel), run with onnxruntime on the CPU.

Both are produced locally from the loaded sentence-transformers model (its transformer exported
with torch.onnx, mean or CLS pooling done here; the int8 file quantised from the fp32 one with
onnxruntime.quantization) and cached in ``<workspace>/cache/onnx/<model fingerprint>/``; nothing
is downloaded. (sentence-transformers' own `backend="onnx"` needs optimum-onnx, whose pins would
downgrade the installed transformers.) A backend has its own fingerprint, so its vectors never
share an embedding-cache entry, a version or a tower with another backend's.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from core.common.errors import AdLensError
from core.store.artifacts import sha256_bytes, write_via_temp
from core.store.readonly import folder_read_only
from core.store.settings import TEXT_BACKENDS

BACKENDS = TEXT_BACKENDS  # the one list: core.store.settings
EXPORT_VERSION = 1  # bump when the export or quantisation changes: new fingerprints, new cache entries
FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_lock = threading.Lock()


def check_backend(backend: str | None) -> str:
    backend = backend or "torch"
    if backend not in BACKENDS:
        raise AdLensError(f"unknown text backend {backend!r}; valid: {', '.join(BACKENDS)}")
    return backend


def backend_fingerprint(model_fingerprint: str, backend: str) -> str:
    """The torch backend keeps the model's fingerprint (existing caches stay valid); ONNX backends
    get their own."""
    if check_backend(backend) == "torch":
        return model_fingerprint
    return sha256_bytes(f"{model_fingerprint}:{backend}:v{EXPORT_VERSION}".encode())


def model_label(model: str, backend: str) -> str:
    """How a text model and backend are named in reports, towers and manifests: "default" (torch),
    "default (onnx-int8)"."""
    return model if check_backend(backend) == "torch" else f"{model} ({backend})"


def split_model_label(label: str) -> tuple[str, str]:
    """(model, backend) of a `model_label` (an unsuffixed label is torch's)."""
    for backend in BACKENDS:
        if backend != "torch" and label.endswith(f" ({backend})"):
            return label[: -len(backend) - 3], backend
    return label, "torch"


def _pooling(st_model) -> str:
    cfg = st_model[1].get_config_dict() if len(st_model) > 1 and hasattr(st_model[1], "get_config_dict") else {}
    mode = cfg.get("pooling_mode") or ("mean" if cfg.get("pooling_mode_mean_tokens") else
                                       "cls" if cfg.get("pooling_mode_cls_token") else None)
    if mode not in ("mean", "cls"):
        raise AdLensError(f"the ONNX text backends support mean or CLS pooling; this model pools with {mode!r}: "
                          "use --text-backend torch")
    return mode


def _export_fp32(st_model, path: Path) -> None:
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).last_hidden_state

    tok = st_model.tokenizer(["an example ad", "a longer example ad text for the export"], padding=True,
                             return_tensors="pt")
    if "token_type_ids" not in tok:
        tok["token_type_ids"] = torch.zeros_like(tok["input_ids"])
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "token_embeddings")}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings are expected here
        torch.onnx.export(Encoder(st_model[0].auto_model).eval(), tuple(tok[k] for k in INPUTS), str(path),
                          input_names=list(INPUTS), output_names=["token_embeddings"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights on MatMul only: mean cosine to torch ~0.992 on ad texts (per-tensor ~0.96).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs a "consider pre-processing" hint on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)


def onnx_model_file(st_model, model_fingerprint: str, backend: str, cache_dir: Path) -> Path:
    """The backend's .onnx file for this model, exported (and quantised) once into the cache."""
    folder = Path(cache_dir) / "onnx" / model_fingerprint / f"v{EXPORT_VERSION}"
    if not all((folder / FILES[b]).is_file() for b in ("onnx", backend)) and folder_read_only(folder):
        # A read-only workspace without this export: export it for this process only.
        folder = Path(tempfile.mkdtemp(prefix="adlens-onnx-"))
    folder.mkdir(parents=True, exist_ok=True)
    fp32, target = folder / FILES["onnx"], folder / FILES[backend]
    with _lock:
        if not fp32.is_file():
            write_via_temp(fp32, lambda p: _export_fp32(st_model, p))
        if not target.is_file():
            write_via_temp(target, lambda p: _quantize(fp32, p))
    return target


class OnnxSentenceModel:
    """The subset of SentenceTransformer that AdEncoder uses, over an onnxruntime session."""

    def __init__(self, st_model, path: Path):
        import onnxruntime as ort

        self.tokenizer = st_model.tokenizer
        self.max_seq_length = int(st_model.max_seq_length)
        self.pooling = _pooling(st_model)
        get_dim = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types
            raise AdLensError(f"{path}: onnxruntime cannot load the exported text model ({exc}); delete the "
                              "file to export it again") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, sentences: list[str], batch_size: int = 64, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, normalize_embeddings: bool = True) -> np.ndarray:
        out = np.zeros((len(sentences), self.dim), np.float32)
        for a in range(0, len(sentences), batch_size):
            tok = self.tokenizer(list(sentences[a:a + batch_size]), padding=True, truncation=True,
                                 max_length=self.max_seq_length, return_tensors="np")
            feeds = {k: np.asarray(tok[k], np.int64) if k in tok else np.zeros_like(tok["input_ids"], np.int64)
                     for k in self.input_names}
            (hidden,) = self.session.run(None, feeds)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = np.asarray(tok["attention_mask"])[:, :, None].astype(np.float32)
                pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            out[a:a + len(pooled)] = pooled
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
