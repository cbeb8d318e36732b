"""The opt-in ONNX backends of AdLens's own text encoder (onnx, onnx-int8): produced locally from
the packaged MiniLM, cached by model fingerprint + backend, agreeing with torch (cosine), and never
sharing an embedding-cache entry with another backend."""

from __future__ import annotations

import numpy as np
import pytest

from core.common.errors import AdLensError
from core.store.settings import load_settings
from core.text.embeddings import AdEncoder, compose_ad_text, model_fingerprint
from core.text.onnx_backend import backend_fingerprint, check_backend


def test_backend_fingerprints_are_distinct_and_torch_keeps_the_models():
    fp = "a" * 64
    fps = {b: backend_fingerprint(fp, b) for b in ("torch", "onnx", "onnx-int8")}
    assert fps["torch"] == fp and len(set(fps.values())) == 3
    with pytest.raises(AdLensError, match="unknown text backend 'tensorrt'; valid: torch, onnx, onnx-int8"):
        check_backend("tensorrt")


def test_text_backend_setting_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ADLENS_TEXT_BACKEND", "onnx-int8")
    assert load_settings(workspace=tmp_path).text_backend == "onnx-int8"
    assert load_settings(workspace=tmp_path, text_backend="onnx").text_backend == "onnx"


@pytest.fixture(scope="module")
def demo_texts() -> list[str]:
    """Real ad copy: the demo generator's ads, composed as AdLens embeds them."""
    from core.demo.generate import generate_dataset

    ads = generate_dataset(n_ads=400, n_users=50, seed=3)["ads"]
    return compose_ad_text(ads.head(200))


@pytest.mark.slow
def test_onnx_int8_agrees_with_torch_on_real_ad_texts(tmp_path, demo_texts):
    torch_enc = AdEncoder.load("default")
    ref = torch_enc.encode(demo_texts)
    for backend, mean_min, floor in (("onnx", 0.9999, 0.999), ("onnx-int8", 0.99, 0.97)):
        enc = AdEncoder.load("default", backend, tmp_path / "cache")
        assert enc.fingerprint == backend_fingerprint(model_fingerprint("default"), backend) != torch_enc.fingerprint
        v = enc.encode(demo_texts, batch_size=32)
        assert v.shape == ref.shape and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        cos = (v * ref).sum(1)
        assert cos.mean() >= mean_min and cos.min() >= floor, (backend, cos.mean(), cos.min())
    exported = sorted(p.name for p in (tmp_path / "cache" / "onnx").rglob("*.onnx"))
    assert exported == ["model-int8.onnx", "model.onnx"]
    mtime = next((tmp_path / "cache" / "onnx").rglob("model-int8.onnx")).stat().st_mtime_ns
    AdEncoder.load("default", "onnx-int8", tmp_path / "cache")  # cached: not exported again
    assert next((tmp_path / "cache" / "onnx").rglob("model-int8.onnx")).stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_backends_never_share_an_embedding_cache_entry(tmp_path):
    from test_embeddings import make_catalog

    from core.text.embedding_cache import embed_catalog

    ws = tmp_path / "ws"
    a = embed_catalog(load_settings(workspace=ws), make_catalog())
    b = embed_catalog(load_settings(workspace=ws, text_backend="onnx-int8"), make_catalog())
    assert (b.n_encoded, b.n_reused) == (5, 0)  # torch's vectors were not reused
    assert a.fingerprint != b.fingerprint and b.model == "default (onnx-int8)"
    assert 0.97 < float((a.vectors * b.vectors).sum(1).min()) < 1.0
    again = embed_catalog(load_settings(workspace=ws, text_backend="onnx-int8"), make_catalog())
    assert (again.n_encoded, again.n_reused) == (0, 5) and np.array_equal(again.vectors, b.vectors)
    dirs = sorted(p.name for p in (ws / "cache" / "embeddings").iterdir())
    assert dirs == sorted([a.fingerprint, b.fingerprint])
