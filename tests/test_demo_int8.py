"""The demo embeds with the int8 ONNX text backend and its workspace remembers it
(core/demo/pipeline.py `demo_text_backend`, core/store/settings.py): later commands without
--text-backend embed in the space the demo's towers were trained in, so they reuse the cache and
accept the towers; a command forced onto another backend is refused with the flag that fixes it."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from conftest import DEMO_ADS, copy_workspace

from core.cli import main
from core.index.versions import load_version
from core.store.settings import load_settings, read_workspace_file

pytestmark = pytest.mark.slow


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ws(demo_workspace, tmp_path, monkeypatch):
    for k in ("ADLENS_TEXT_BACKEND", "ADLENS_HOME", "ADLENS_DB_URL", "ADLENS_MODEL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return copy_workspace(demo_workspace.path, tmp_path / "ws").workspace


def test_the_demo_workspace_records_and_used_onnx_int8(demo_workspace):
    assert read_workspace_file(demo_workspace.path) == {"text_backend": "onnx-int8"}
    report = demo_workspace.demo_report
    assert report["text_backend"] == "onnx-int8"
    embed = next(s for s in report["steps"] if s["name"] == "embed")["detail"]
    assert embed == {"encoded": DEMO_ADS, "reused": 0, "model": "default (onnx-int8)"}
    settings = load_settings(workspace=demo_workspace.path)
    assert settings.text_backend == "onnx-int8"
    for name in demo_workspace.versions:
        assert load_version(settings, name).manifest.embedding["model"] == "default (onnx-int8)", name


def test_later_commands_without_flags_reuse_the_cache_and_accept_the_demo_tower(ws):
    # conftest retitled one ad after the demo: `adlens embed` encodes that one, with the demo's backend
    code, out, err = _cli("--workspace", str(ws), "embed", "--json")
    assert code == 0, err
    emb = json.loads(out)
    assert (emb["model"], emb["n_encoded"], emb["n_reused"]) == ("default (onnx-int8)", 1, DEMO_ADS - 1)
    code, out, err = _cli("--workspace", str(ws), "build-index", "--name", "again", "--tower", "tower",
                          "--no-map", "--no-sources", "--json")
    assert code == 0, err
    m = json.loads(out)["embedding"]
    assert (m["model"], m["n_encoded"], m["n_reused"]) == ("default (onnx-int8)", 0, DEMO_ADS)
    assert m["fingerprint"] == emb["fingerprint"]


def test_a_build_forced_onto_torch_is_refused_naming_the_demo_s_backend(ws, monkeypatch):
    """The trap the workspace's record closes: ads embedded with torch, the demo's tower trained on
    int8 vectors. (The torch model is stood in for by random vectors under torch's fingerprint:
    the refusal depends on the fingerprints only, and loading torch costs ~15 s.)"""
    import numpy as np

    import core.text.embedding_cache as ec
    from core.text.embeddings import model_fingerprint

    class TorchStandIn:
        name, dim, fingerprint = "default", 384, model_fingerprint("default")

        def encode(self, texts, batch_size=64, progress=None):
            v = np.random.default_rng(0).normal(size=(len(texts), self.dim)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    monkeypatch.setattr(ec, "load_encoder", lambda settings: TorchStandIn())
    code, _, err = _cli("--workspace", str(ws), "build-index", "--name", "t", "--tower", "tower",
                        "--no-map", "--no-sources", "--text-backend", "torch")
    assert code == 2 and "Traceback" not in err
    assert "tower 'tower'" in err and "text model default (onnx-int8)" in err
    assert "these ad embeddings come from default (" in err
    assert "--text-backend onnx-int8" in err and "--model" not in err
