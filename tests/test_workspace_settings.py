"""A workspace remembers its text backend (core/store/settings.py: `<workspace>/workspace.json`):
flag > ADLENS_TEXT_BACKEND > the workspace's file > torch; a bad file is an error naming it; the
demo records its backend before it embeds (core/demo/pipeline.py `demo_text_backend`); a tower's
fingerprint mismatch names the backend it was trained with (core/index/parts.py).
The read-only case is in test_readonly.py; the real demo's int8 workspace in test_demo_int8.py."""

from __future__ import annotations

import json

import pytest

from core.cli import main
from core.common.errors import AdLensError, ArtifactError, StoreError
from core.store.settings import WORKSPACE_FILE, load_settings, read_workspace_file, record_text_backend


@pytest.fixture(autouse=True)
def _no_env_backend(monkeypatch):
    monkeypatch.delenv("ADLENS_TEXT_BACKEND", raising=False)


def test_a_workspace_without_the_file_uses_torch(tmp_path):
    s = load_settings(workspace=tmp_path / "ws")
    assert (s.text_backend, s.text_backend_from) == ("torch", "default")
    assert not (tmp_path / "ws").exists()  # reading settings creates nothing


def test_the_recorded_backend_is_used_and_flag_and_env_still_win(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / WORKSPACE_FILE).write_text(json.dumps({"text_backend": "onnx", "other": 1}))
    s = record_text_backend(load_settings(workspace=ws), "onnx-int8")
    assert (s.text_backend, s.text_backend_from) == ("onnx-int8", "workspace")
    assert json.loads((ws / WORKSPACE_FILE).read_text()) == {"text_backend": "onnx-int8", "other": 1}
    again = load_settings(workspace=ws)
    assert (again.text_backend, again.text_backend_from) == ("onnx-int8", "workspace")
    monkeypatch.setenv("ADLENS_TEXT_BACKEND", "torch")
    assert (load_settings(workspace=ws).text_backend, load_settings(workspace=ws).text_backend_from) == ("torch", "env")
    s = load_settings(workspace=ws, text_backend="onnx")
    assert (s.text_backend, s.text_backend_from) == ("onnx", "flag")
    assert read_workspace_file(ws)["text_backend"] == "onnx-int8"  # overriding never rewrites the file


def test_recording_an_unknown_backend_refuses(tmp_path):
    with pytest.raises(AdLensError, match="unknown text backend 'tensorrt'; valid: torch, onnx, onnx-int8"):
        record_text_backend(load_settings(workspace=tmp_path), "tensorrt")
    assert not (tmp_path / WORKSPACE_FILE).exists()


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ('["onnx-int8"]', "expected a JSON object"),
    ('{"text_backend": "tensorrt"}', "unknown text_backend 'tensorrt'; valid: torch, onnx, onnx-int8"),
])
def test_a_bad_workspace_file_exits_2_naming_the_file(tmp_path, capsys, content, expected):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / WORKSPACE_FILE).write_text(content)
    with pytest.raises(StoreError, match=expected):
        load_settings(workspace=ws)
    assert main(["--workspace", str(ws), "versions"]) == 2
    err = capsys.readouterr().err
    assert f"{ws / WORKSPACE_FILE}: " in err and expected in err and "Traceback" not in err
    (ws / WORKSPACE_FILE).write_text('{"text_backend": "onnx"}')
    assert main(["--workspace", str(ws), "versions"]) == 0


def test_an_unknown_env_backend_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ADLENS_TEXT_BACKEND", "tensorrt")
    assert main(["--workspace", str(tmp_path / "ws"), "versions"]) == 2
    err = capsys.readouterr().err
    assert "ADLENS_TEXT_BACKEND: unknown text backend 'tensorrt'; valid: torch, onnx, onnx-int8" in err


# ---- the demo's choice --------------------------------------------------------------------
def test_the_demo_records_int8_unless_told_otherwise(tmp_path, monkeypatch):
    from core.demo.pipeline import DEMO_TEXT_BACKEND, demo_text_backend

    assert DEMO_TEXT_BACKEND == "onnx-int8"
    fresh = demo_text_backend(load_settings(workspace=tmp_path / "a"), had_demo=False)
    assert fresh.text_backend == "onnx-int8" and read_workspace_file(tmp_path / "a") == {"text_backend": "onnx-int8"}
    flag = demo_text_backend(load_settings(workspace=tmp_path / "b", text_backend="torch"), had_demo=False)
    assert flag.text_backend == "torch" and read_workspace_file(tmp_path / "b") == {"text_backend": "torch"}
    monkeypatch.setenv("ADLENS_TEXT_BACKEND", "onnx")
    env = demo_text_backend(load_settings(workspace=tmp_path / "c"), had_demo=False)
    assert env.text_backend == "onnx" and read_workspace_file(tmp_path / "c") == {"text_backend": "onnx"}
    monkeypatch.delenv("ADLENS_TEXT_BACKEND")
    # A workspace an earlier demo built before workspaces recorded their backend was embedded with torch.
    old = demo_text_backend(load_settings(workspace=tmp_path / "d"), had_demo=True)
    assert old.text_backend == "torch" and read_workspace_file(tmp_path / "d") == {"text_backend": "torch"}
    (tmp_path / "e" / "towers" / "t").mkdir(parents=True)
    assert demo_text_backend(load_settings(workspace=tmp_path / "e"), had_demo=False).text_backend == "torch"
    # ... and a workspace that records one keeps it.
    assert demo_text_backend(load_settings(workspace=tmp_path / "c"), had_demo=True).text_backend == "onnx"


def test_the_demo_records_its_backend_before_its_first_step(tmp_path, monkeypatch):
    import core.demo.pipeline as pl

    seen = []

    def step(ctx, tick):
        seen.append((ctx.settings.text_backend, read_workspace_file(ctx.settings.workspace)))
        return {}

    monkeypatch.setattr(pl, "DEMO_STEPS", [pl.DemoStep("generate", step)])
    report = pl.build_demo(load_settings(workspace=tmp_path / "ws"), n_ads=3, n_users=2)
    assert seen == [("onnx-int8", {"text_backend": "onnx-int8"})] and report.text_backend == "onnx-int8"
    assert load_settings(workspace=tmp_path / "ws").text_backend == "onnx-int8"


# ---- a tower trained with another backend ---------------------------------------------------
def test_a_tower_of_another_backend_is_refused_naming_its_backend_and_the_flag():
    from core.index.parts import check_fingerprint, recorded_fingerprints

    recorded = recorded_fingerprints(None, {"embedding_fingerprint": "a" * 64,
                                            "embedding_model": "default (onnx-int8)"})
    assert recorded == {"a" * 64: "default (onnx-int8)"}
    check_fingerprint(recorded, "a" * 64, where="tower 't'", model="default (onnx-int8)")  # same: fine
    with pytest.raises(ArtifactError) as err:
        check_fingerprint(recorded, "b" * 64, where="tower 't'", model="default")
    msg = str(err.value)
    assert "tower 't'" in msg and "text model default (onnx-int8) (aaaaaaaaaaaa…)" in msg
    assert "come from default (bbbbbbbbbbbb…)" in msg and "--text-backend onnx-int8" in msg
    assert "--model" not in msg
    with pytest.raises(ArtifactError, match="--text-backend torch .* and --model mine"):
        check_fingerprint({"a" * 64: "mine"}, "b" * 64, where="tower 't'", model="default (onnx)")
    with pytest.raises(ArtifactError, match="the tower's --model and --text-backend"):
        check_fingerprint({"a" * 64: None}, "b" * 64, where="tower 't'")


def test_embed_on_ray_loads_the_workspace_s_backend_in_its_actors(tmp_path, monkeypatch):
    """Regression: the actors loaded the torch model whatever the backend, so `adlens embed --ray`
    on an int8 workspace cached torch vectors under the int8 fingerprint."""
    import core.text.embedding_cache as ec
    from core.text.ray_embed import _default_encoder_factory

    ws = tmp_path / "ws"
    record_text_backend(load_settings(workspace=ws), "onnx-int8")
    monkeypatch.setattr(ec, "load_encoder", lambda s: (s.embedding_model, s.text_backend, s.cache_dir))
    assert _default_encoder_factory(load_settings(workspace=ws))() == ("default", "onnx-int8", ws.resolve() / "cache")


def test_status_says_which_text_backend_and_where_from(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "status"]) == 0
    assert "text backend: torch (the default)" in capsys.readouterr().out
    record_text_backend(load_settings(workspace=ws), "onnx-int8")
    assert main(["--workspace", str(ws), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text_backend"] == {"backend": "onnx-int8", "from": "workspace"}
    assert main(["--workspace", str(ws), "status"]) == 0
    assert "text backend: onnx-int8 (recorded in workspace.json)" in capsys.readouterr().out
