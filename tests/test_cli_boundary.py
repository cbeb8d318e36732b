"""The CLI's error boundary: every probe from issue 12 exits 2 with a message naming the setting
or input and the fix (never a traceback); a closed pipe exits quietly; limits clamp with a notice."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def adlens(*args: str, env: dict | None = None, ws: Path | None = None) -> subprocess.CompletedProcess:
    full = {**{k: v for k, v in os.environ.items() if k not in ("ADLENS_HOME", "ADLENS_DB_URL")},
            "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "core.cli", *(["--workspace", str(ws)] if ws else []), *args]
    return subprocess.run(cmd, cwd=REPO, env=full, capture_output=True, text=True, timeout=300)


def assert_clean_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    for n in needles:
        assert n in res.stderr, res.stderr


@pytest.mark.parametrize("url, needles", [
    ("notaurl", ["'notaurl' is not valid", "ADLENS_DB_URL"]),
    ("mysql://u@127.0.0.1/x", ["driver is not installed", "ADLENS_DB_URL"]),
    ("postgresql+psycopg://postgres@127.0.0.1:9/nodb", ["is unreachable", "start the server"]),
])
def test_bad_database_urls(tmp_path, url, needles):
    assert_clean_error(adlens("status", ws=tmp_path / "ws", env={"ADLENS_DB_URL": url}), *needles)


def test_workspace_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    assert_clean_error(adlens("status", ws=f), "is not a folder", "--workspace")


def test_read_only_workspace(tmp_path):
    ws = tmp_path / "ws"
    assert adlens("ingest", str(REPO / "data" / "sample"), ws=ws).returncode == 0
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "--bind", str(ws), str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("needs a read-only bind mount (root in a sandbox that allows mount)")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        for args in (["status"], ["versions"]):  # reading commands read it (tests/test_readonly.py)
            assert adlens(*args, ws=mnt).returncode == 0
        assert_clean_error(adlens("ingest", str(REPO / "data" / "sample"), ws=mnt), "read-only", "--workspace")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_nonsense_counts_are_rejected_by_the_parser(tmp_path):
    for args in (["audience", "--version", "v", "--ad", "a", "--users", "-3"],
                 ["audience", "--version", "v", "--ad", "a", "--users", "0"],
                 ["inspect", "--version", "v", "--user", "u", "--k", "0"],
                 ["bench", "--ads", "0"]):
        res = adlens(*args, ws=tmp_path / "ws")
        assert res.returncode == 2 and "must be at least 1" in res.stderr and "Traceback" not in res.stderr


def test_bench_with_too_few_ads_is_a_clean_error(tmp_path):
    assert_clean_error(adlens("bench", "--ads", "10", ws=tmp_path / "ws"), "--ads must be at least 1000")


@pytest.fixture(scope="module")
def small_ws(tmp_path_factory, demo_workspace):
    ws = tmp_path_factory.mktemp("boundary") / "ws"
    shutil.copytree(demo_workspace.path, ws)
    return ws, demo_workspace


@pytest.mark.slow
def test_time_out_of_range_k_clamp_and_closed_pipe(small_ws):
    ws, demo = small_ws
    user = demo.users[0]
    assert_clean_error(adlens("inspect", "--version", "exact", "--user", user, "--time", "9999-12-31T23:59:59",
                              ws=ws), "outside the supported range")
    res = adlens("inspect", "--version", "exact", "--user", user, "--k", "1000000000", "--json", ws=ws)
    assert res.returncode == 0, res.stderr
    assert "note: K (candidates retrieved) 1,000,000,000 is more than the 600 ads" in res.stderr
    import json

    assert json.loads(res.stdout)["stage_counts"]["retrieved"] == 600
    for args in (["versions"], ["inspect", "--version", "exact", "--user", user]):
        full = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        p = subprocess.run(f"{sys.executable} -m core.cli --workspace {ws} {' '.join(args)} | head -1",
                           shell=True, cwd=REPO, env=full, capture_output=True, text=True, timeout=300)
        assert p.stdout.count("\n") == 1 and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_a_repeated_warning_reaches_the_user_once():
    import logging

    from core.cli import OnceFilter

    f = OnceFilter()
    rec = lambda msg, level=logging.WARNING: logging.LogRecord("core.x", level, __file__, 1, msg, None, None)  # noqa: E731
    assert f.filter(rec("EASE skipped: 10,000 ads")) is True
    assert f.filter(rec("EASE skipped: 10,000 ads")) is False  # the second version of the same catalog
    assert f.filter(rec("EASE skipped: 20,000 ads")) is True
    assert f.filter(rec("debug detail", logging.DEBUG)) and f.filter(rec("debug detail", logging.DEBUG))
