"""Read-only workspaces (core/store/readonly.py, the read-only engine in core/store/db.py, the
CLI boundary's WRITES): a finished workspace on a read-only mount, or a PostgreSQL role that may
only SELECT, is browsed by every reading command and dashboard page; writing commands exit 2
naming what is read-only and how to fix it.

A read-only mount binds root too (permission bits do not), so each check runs in a subprocess
that bind-mounts the workspace read-only onto itself in a private mount namespace (`unshare -m`,
root; CI runs as root inside `unshare --net`, where this works as well). The workspace stays
writable for every other test.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from sqlalchemy import event, make_url, text

from core.cli import main
from core.store.db import make_engine

ROOT = Path(__file__).resolve().parent.parent
MOUNT_RO = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
READERS = ("versions", "status", "inspect", "why-not", "audience", "compare", "health", "import-vectors list")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ADLENS_HOME", "ADLENS_DB_URL", "ADLENS_MODEL")}
    return {**env, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def _read_only(folder: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run argv with `folder` read-only (a bind mount onto itself, private to the process)."""
    return subprocess.run(["unshare", "-m", "sh", "-c", MOUNT_RO, str(folder), *argv], capture_output=True,
                          text=True, timeout=timeout, env=_env(), cwd=ROOT)


@pytest.fixture(scope="session")
def ro(tmp_path_factory):
    """`ro(folder, python_code, *args)`: run Python with `folder` read-only and return its JSON
    output; skips (fails in CI) where this process cannot make a read-only mount."""
    probe = tmp_path_factory.mktemp("ro-probe")
    try:
        r = _read_only(probe, "sh", "-c", 'touch "$0/x" 2>/dev/null && exit 3; exit 0', str(probe), timeout=60)
        ok = r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        msg = "needs root and `unshare -m` (a read-only bind mount in a private mount namespace)"
        pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)

    def run(folder: Path, code: str, *args: str) -> dict:
        r = _read_only(folder, sys.executable, "-c", textwrap.dedent(code), *args)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    return run


CLI_DRIVER = """
    import contextlib, io, json, sys
    from core.cli import main
    out = {}
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = main(argv)
        out[" ".join(argv)] = [rc, err.getvalue()]
    print(json.dumps(out))
"""


def _cli(ro, ws: Path, *commands: str) -> dict[str, tuple[int, str]]:
    argvs = [["--workspace", str(ws), *c.split()] for c in commands]
    res = ro(ws, CLI_DRIVER, json.dumps(argvs))
    return {c: tuple(res[" ".join(a)]) for c, a in zip(commands, argvs, strict=True)}


def _tree(ws: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(ws)): (p.stat().st_size, p.stat().st_mtime_ns) for p in ws.rglob("*") if p.is_file()}


# ---- the read-only SQLite engine ------------------------------------------------------------
ENGINE_DRIVER = """
    import json, sys
    from sqlalchemy import text
    from core.common.errors import ReadOnlyError
    from core.store.db import database_read_only, make_engine, write_transaction
    from core.store.readonly import folder_read_only
    eng = make_engine(sys.argv[1])
    with eng.connect() as c:
        names = c.execute(text("SELECT name FROM communities ORDER BY name")).scalars().all()
    try:
        with write_transaction(eng, "add a community") as c:
            c.execute(text("INSERT INTO communities VALUES ('x', 'x', 't', 'safe')"))
        refused = None
    except ReadOnlyError as exc:
        refused = str(exc)
    print(json.dumps({"names": names, "refused": refused, "db": database_read_only(eng),
                      "folder": folder_read_only(sys.argv[2]), "fresh": folder_read_only(sys.argv[2] + "/new/x")}))
"""


def _community_db(folder: Path) -> str:
    url = f"sqlite:///{folder / 'adlens.db'}"
    eng = make_engine(url)
    with eng.begin() as c:
        c.execute(text("INSERT INTO communities VALUES ('c1', 'one', 't', 'safe')"))
    eng.dispose()
    return url


def test_a_read_only_folder_is_read_with_no_file_written(ro, tmp_path):
    url = _community_db(tmp_path)
    before = _tree(tmp_path)
    res = ro(tmp_path, ENGINE_DRIVER, url, str(tmp_path))
    assert res["names"] == ["one"]
    assert res["folder"] == res["fresh"] == res["db"] == "it is on a read-only mount"
    assert "read-only" in res["refused"] and str(tmp_path) in res["refused"]
    assert _tree(tmp_path) == before  # no lock file, no -wal, no -shm


def test_a_live_writers_last_commit_is_read_from_its_wal(ro, tmp_path):
    """A writer still holding the database open (its -wal and -shm beside it): the reader opens
    it mode=ro, not immutable, and sees the commit that is only in the WAL."""
    url = _community_db(tmp_path)
    writer = sqlite3.connect(tmp_path / "adlens.db")
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("INSERT INTO communities VALUES ('c2', 'two', 't', 'safe')")
        writer.commit()
        assert (tmp_path / "adlens.db-wal").stat().st_size > 0
        res = ro(tmp_path, ENGINE_DRIVER, url, str(tmp_path))
    finally:
        writer.close()
    assert res["names"] == ["one", "two"]


def test_a_writable_workspace_is_not_read_only(tmp_path):
    from core.store.db import database_read_only
    from core.store.readonly import folder_read_only

    eng = make_engine(_community_db(tmp_path))
    assert folder_read_only(tmp_path) is None and database_read_only(eng) is None
    eng.dispose()


def test_an_empty_read_only_folder_says_there_is_no_database(ro, tmp_path):
    code = """
        import json, sys
        from core.common.errors import StoreError
        from core.store.db import make_engine
        try:
            make_engine(sys.argv[1]); print(json.dumps(None))
        except StoreError as exc:
            print(json.dumps(str(exc)))
    """
    msg = ro(tmp_path, code, f"sqlite:///{tmp_path / 'ws' / 'adlens.db'}")
    assert "does not exist and cannot be created" in msg and "read-only mount" in msg


# ---- the CLI on a read-only workspace -------------------------------------------------------
@pytest.fixture(scope="module")
def small_workspace(tmp_path_factory) -> Path:
    """300 random ads, versions `flat` and `ivf` (fake text vectors, no model), no map."""
    from tests.funnel_data import random_workspace

    return random_workspace(tmp_path_factory.mktemp("ro-ws") / "ws",
                            {"flat": ("Flat", {}), "ivf": ("IVF8,Flat", {"nprobe": 2})}).workspace


WRITERS = ("status --clean", "ingest {ws}", "demo", "embed", "build-index --name v2", "versions --delete flat",
           "train --name t", "map --version flat", "import-vectors ads {ws}/x.parquet --name v", "bench")


def test_reading_commands_work_and_writing_commands_refuse(ro, small_workspace):
    ws = small_workspace
    before = _tree(ws)
    reads = ("versions", "status", "inspect --version flat --user u000", "why-not --version ivf --user u000 --ad ad0001",
             "audience --version flat --ad ad0001 --users 10", "compare flat ivf --users 5",
             "health --version ivf --requests 10", "import-vectors list", "demo --if-missing")
    writes = tuple(w.format(ws=ws) for w in WRITERS)
    res = _cli(ro, ws, *reads, *writes)
    for cmd in reads:
        assert res[cmd][0] == 0, (cmd, res[cmd][1])
    for cmd in writes:
        rc, err = res[cmd]
        assert rc == 2, (cmd, err)
        assert "read-only (it is on a read-only mount)" in err and str(ws) in err, (cmd, err)
        assert "Traceback" not in err
    assert "`adlens status --clean` writes to the workspace" in res["status --clean"][1]
    assert f"cp -a {ws} COPY" in res["versions --delete flat"][1]
    assert _tree(ws) == before


def test_the_same_commands_write_on_a_writable_workspace(small_workspace, tmp_path, capsys):
    """The refusals above come from read-only-ness, not from the commands (a writable copy)."""
    import shutil

    ws = tmp_path / "copy"
    shutil.copytree(small_workspace, ws)
    assert main(["--workspace", str(ws), "status", "--clean"]) == 0
    assert main(["--workspace", str(ws), "versions", "--delete", "flat"]) == 0
    assert not (ws / "versions" / "flat").exists()
