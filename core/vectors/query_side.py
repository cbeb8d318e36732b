"""The query side of a version built from imported parts: `--query-encoder model.onnx --signature
sig.json`, `--query-encoder PLUGIN [--encoder-config cfg.json]` (entry-point group
`adlens.query_encoders`) or `--request-vectors NAME` (imported with `adlens import-vectors requests`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from core.common.errors import AdLensError
from core.store.artifacts import sha256_file
from core.store.settings import Settings
from core.tower.onnx_encoder import OnnxQueryEncoder, read_signature
from core.tower.query_encoder import QueryEncoder
from core.tower.registry import make_plugin_encoder
from core.vectors.request_vectors import request_vectors_encoder


def read_encoder_config(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        cfg = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise AdLensError(f"{path}: encoder config file not found") from exc
    except ValueError as exc:
        raise AdLensError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise AdLensError(f"{path}: the encoder config must be a JSON object")
    return cfg


@dataclass(frozen=True)
class QuerySpec:
    """What the user asked for on the query side (the CLI flags of the same names)."""

    query_encoder: str | None = None  # MODEL.onnx or a plugin name
    signature: Path | None = None
    request_vectors: str | None = None
    encoder_config: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.query_encoder or self.request_vectors or self.signature)


def resolve_query_encoder(settings: Settings, spec: QuerySpec) -> tuple[QueryEncoder, dict] | None:
    """(encoder, manifest description) for the imported query side asked for; None if none was."""
    query_encoder, signature, request_vectors = spec.query_encoder, spec.signature, spec.request_vectors
    if query_encoder and request_vectors:
        raise AdLensError("give either --query-encoder or --request-vectors, not both")
    if signature is not None and not (query_encoder or "").endswith(".onnx"):
        raise AdLensError("--signature describes an ONNX model: use it with --query-encoder MODEL.onnx")
    if request_vectors:
        enc = request_vectors_encoder(settings, request_vectors)
        return enc, {"source": "request_vectors", **enc.config()}
    if not query_encoder:
        return None
    if query_encoder.endswith(".onnx"):
        model = Path(query_encoder)
        if not model.is_file():
            raise AdLensError(f"{model}: ONNX model not found")
        if signature is None:
            raise AdLensError(f"{model}: an ONNX query encoder needs --signature SIG.json mapping AdLens request "
                              "features to the model's inputs (format: data/README.md, 'Your own model')")
        enc = OnnxQueryEncoder(model, read_signature(signature), where=f"{model} with {signature}")
        return enc, {"source": "onnx", "file": model.name, "sha256": enc.sha256,
                     "signature_file": Path(signature).name, "signature_sha256": sha256_file(Path(signature)),
                     "signature": enc.signature, "dim": enc.dim}
    enc = make_plugin_encoder(query_encoder, spec.encoder_config)
    return enc, {"source": "plugin", "name": query_encoder, "config": enc.config()}
