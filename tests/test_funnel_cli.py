"""A funnel definition end to end through the CLI: build-index --funnel records it in the version
(manifest section with its sha256, the file copied and checksummed); inspect and why-not show
the definition's own reason code; a bad definition exits 2 and builds nothing; a tampered copy
fails to load; the workspace's funnel.toml is the default."""

from __future__ import annotations

import hashlib
import json

import pytest
from funnel_data import hashing_workspace

from core.cli import main

OWN = '''
[[rule]]
code = "DE_BLOCK"
description = "campaigns do not serve in Germany"
expr = 'campaign.exists and request.country == "DE"'
'''


@pytest.fixture
def ws(tmp_path, monkeypatch):
    return hashing_workspace(tmp_path / "ws", monkeypatch)


def test_build_index_records_the_definition_and_inspect_why_not_show_its_codes(ws, tmp_path, capsys):
    path = tmp_path / "mine.toml"
    path.write_text(OWN)
    w = str(ws)
    assert main(["--workspace", w, "build-index", "--name", "f1", "--funnel", str(path), "--no-map"]) == 0
    out = capsys.readouterr().out
    assert "funnel mine.toml" in out and "own codes DE_BLOCK" in out
    m = json.loads((ws / "versions" / "f1" / "manifest.json").read_text())
    assert m["funnel"]["sha256"] == hashlib.sha256(OWN.encode()).hexdigest() == \
        hashlib.sha256((ws / "versions" / "f1" / "funnel.toml").read_bytes()).hexdigest()
    assert m["funnel"]["custom"] == ["DE_BLOCK"] and "funnel.toml" in m["files"]
    assert m["funnel"]["eligibility"][-1] == "DE_BLOCK"
    assert main(["--workspace", w, "inspect", "--version", "f1", "--user", "u000", "--country", "DE"]) == 0
    out = capsys.readouterr().out
    assert "[expression, eligibility: campaigns do not serve in Germany]" in out  # the own code says what it is
    assert main(["--workspace", w, "inspect", "--version", "f1", "--user", "u000", "--country", "DE",
                 "--disable-rule", "DE_BLOCK"]) == 0
    out = capsys.readouterr().out
    assert "What-if: rules switched off: DE_BLOCK" in out and "  DE_BLOCK " not in out
    assert main(["--workspace", w, "inspect", "--version", "f1", "--user", "u000", "--country", "DE", "--json"]) == 0
    cands = json.loads(capsys.readouterr().out)["candidates"]
    blocked = [c for c in cands if c["primary_reason"] == "DE_BLOCK"]
    assert blocked and all(c["campaign_id"] is not None for c in blocked)
    ad = blocked[0]["ad_id"]
    assert main(["--workspace", w, "why-not", "--version", "f1", "--user", "u000", "--ad", ad, "--country", "DE"]) == 0
    out = capsys.readouterr().out
    assert "filtered: DE_BLOCK — campaigns do not serve in Germany" in out
    assert "request.country = 'DE'" in out and "campaign.exists = True" in out
    assert main(["--workspace", w, "inspect", "--version", "f1", "--user", "u000", "--country", "US",
                 "--disable", "DE_BLOCK", "--json"]) == 0
    assert not [c for c in json.loads(capsys.readouterr().out)["candidates"] if c["primary_reason"] == "DE_BLOCK"]
    assert main(["--workspace", w, "inspect", "--version", "f1", "--user", "u000", "--disable", "NOPE"]) == 2
    err = capsys.readouterr().err
    assert "unknown rule 'NOPE' to switch off" in err and "DE_BLOCK" in err and "GEO_MISMATCH" in err
    # the copy is checksummed: editing it is caught on load
    (ws / "versions" / "f1" / "funnel.toml").write_text(OWN.replace("DE", "FR"))
    assert main(["--workspace", w, "inspect", "--version", "f1", "--user", "u000"]) == 2
    assert "funnel.toml" in capsys.readouterr().err


@pytest.mark.parametrize("text, part", [
    ("[[rule]]\ncode = 'A'\nexpr = 'ad.vertical == 3'", "type mismatch"),
    ("[[rule]]\ncode = 'A'\nexpr = 'ad.nope == \"x\"'", "unknown field 'ad.nope'"),
    ("[[rule]\n", "TOML syntax error"),
])
def test_a_bad_definition_exits_2_and_builds_nothing(ws, tmp_path, capsys, text, part):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["--workspace", str(ws), "build-index", "--name", "f2", "--funnel", str(path), "--no-map"]) == 2
    err = capsys.readouterr().err
    assert part in err and "Traceback" not in err
    assert not (ws / "versions" / "f2").exists()
    assert main(["--workspace", str(ws), "versions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_the_workspace_funnel_toml_is_the_default_and_builtin_forces_adlens_rules(ws, capsys):
    (ws / "funnel.toml").write_text(OWN)
    assert main(["--workspace", str(ws), "build-index", "--name", "w1", "--no-map", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["funnel"]["custom"] == ["DE_BLOCK"]
    assert main(["--workspace", str(ws), "build-index", "--name", "w2", "--no-map", "--funnel", "builtin", "--json"]) == 0
    assert "funnel" not in json.loads(capsys.readouterr().out)
