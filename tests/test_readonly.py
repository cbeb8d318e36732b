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
    output; skips where this process cannot make a read-only mount (fails inside .ci/run's
    namespace, which needs the same privileges)."""
    probe = tmp_path_factory.mktemp("ro-probe")
    try:
        r = _read_only(probe, "sh", "-c", 'touch "$0/x" 2>/dev/null && exit 3; exit 0', str(probe), timeout=60)
        ok = r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        msg = "needs root and `unshare -m` (a read-only bind mount in a private mount namespace)"
        # .ci/run's own namespace (ADLENS_CI_NETNS=1) proves CI has the privileges: fail there.
        pytest.fail(msg) if os.environ.get("ADLENS_CI_NETNS") == "1" else pytest.skip(msg)

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
        err, std = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(std), contextlib.redirect_stderr(err):
            rc = main(argv)
        out[" ".join(argv)] = [rc, err.getvalue(), std.getvalue()]
    print(json.dumps(out))
"""


def _cli(ro, ws: Path, *commands: str) -> dict[str, tuple[int, str, str]]:
    """{command: (exit code, stderr, stdout)} of each command run in one read-only process."""
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
    from core.store.db import make_engine, write_transaction
    from core.store.readonly import database_read_only, folder_read_only
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
    from core.store.readonly import database_read_only, folder_read_only

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
    assert "workspace: " + f"{ws} (read-only: it is on a read-only mount)" in res["status"][2]
    for cmd in writes:
        rc, err, _ = res[cmd]
        assert rc == 2, (cmd, err)
        assert "read-only (it is on a read-only mount)" in err and str(ws) in err, (cmd, err)
        assert "Traceback" not in err
    assert "`adlens status --clean` writes to the workspace" in res["status --clean"][1]
    assert f"cp -a {ws} COPY" in res["versions --delete flat"][1]
    assert _tree(ws) == before


EMBED_DRIVER = """
    import json, sys
    from core.store.catalog import load_catalog
    from core.store.db import make_engine
    from core.store.settings import load_settings
    from core.text.embedding_cache import embed_catalog
    from tests.funnel_data import FakeTextEncoder
    class Other(FakeTextEncoder):  # a model the workspace's cache has never seen
        fingerprint = "e" * 64
    s = load_settings(workspace=sys.argv[1])
    res = embed_catalog(s, load_catalog(make_engine(s.db_url), with_impressions=False), encoder=Other())
    print(json.dumps({"n_encoded": res.n_encoded, "shape": list(res.vectors.shape)}))
"""


def test_ads_missing_from_the_embedding_cache_are_encoded_in_memory(ro, small_workspace):
    before = _tree(small_workspace)
    assert ro(small_workspace, EMBED_DRIVER, str(small_workspace)) == {"n_encoded": 300, "shape": [300, 16]}
    assert _tree(small_workspace) == before


SETTINGS_DRIVER = """
    import json, sys
    from core.store.settings import load_settings
    s = load_settings(workspace=sys.argv[1])
    print(json.dumps([s.text_backend, s.text_backend_from]))
"""


def test_a_read_only_workspace_s_recorded_text_backend_is_read(ro, small_workspace, tmp_path):
    """workspace.json (core/store/settings.py) is only read: a read-only workspace that records
    its text backend uses it, and reading commands still work and write nothing."""
    import shutil

    ws = tmp_path / "copy"
    shutil.copytree(small_workspace, ws)
    (ws / "workspace.json").write_text('{"text_backend": "onnx-int8"}')
    before = _tree(ws)
    assert ro(ws, SETTINGS_DRIVER, str(ws)) == ["onnx-int8", "workspace"]
    res = _cli(ro, ws, "versions", "status")
    assert res["versions"][0] == 0 and res["status"][0] == 0, res
    assert _tree(ws) == before


def test_the_same_commands_write_on_a_writable_workspace(small_workspace, tmp_path, capsys):
    """The refusals above come from read-only-ness, not from the commands (a writable copy)."""
    import shutil

    ws = tmp_path / "copy"
    shutil.copytree(small_workspace, ws)
    assert main(["--workspace", str(ws), "status", "--clean"]) == 0
    assert main(["--workspace", str(ws), "versions", "--delete", "flat"]) == 0
    assert not (ws / "versions" / "flat").exists()


# ---- the demo workspace: evaluate and every dashboard page ----------------------------------
PAGES_DRIVER = """
    import json, os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    from test_dashboard import APP, PAGES, TIMEOUT, _goto
    from streamlit.testing.v1 import AppTest

    os.environ["ADLENS_HOME"] = sys.argv[1]
    problems = {}
    def check(name, at):
        bad = [e.value for e in at.exception] + [e.value for e in at.error]
        if bad:
            problems[name] = bad
        return at
    at = check("home", AppTest.from_file(str(APP), default_timeout=TIMEOUT).run())
    titles = {}
    if problems:  # the workspace did not open: no page to go to
        print(json.dumps({"problems": problems, "titles": titles, "expected": PAGES}))
        sys.exit(0)
    for url_path in PAGES:
        check(url_path, _goto(at, url_path).run())
        titles[url_path] = at.title[0].value if at.title else None
    check("compare", _goto(at, "compare").run())
    check("compare view", at.button_group(key="cmp_view").set_value("Aggregate").run())
    check("compare users", at.number_input(key="cmp_users").set_value(5).run())
    check("compare run", at.button(key="cmp_go").click().run())
    check("compare map", at.button_group(key="cmp_view").set_value("Map movement").run())
    check("health", _goto(at, "health").run())
    check("health run", at.number_input(key="health_n").set_value(10).run())
    print(json.dumps({"problems": problems, "titles": titles, "expected": PAGES}))
"""


@pytest.mark.slow
def test_every_dashboard_page_renders_on_a_read_only_workspace(ro, demo_workspace):
    res = ro(demo_workspace.path, PAGES_DRIVER, str(demo_workspace.path))
    assert res["problems"] == {}
    assert res["titles"] == res["expected"]


@pytest.mark.slow
def test_evaluate_reads_a_read_only_workspace_and_says_it_did_not_save(ro, demo_workspace):
    ws = demo_workspace.path
    res = _cli(ro, ws, "evaluate --tower tower", "evaluate --protocol user", "health --version ivf --requests 10")
    for cmd, (rc, err, _) in res.items():
        assert rc == 0, (cmd, err)
    assert "printed but not saved" in res["evaluate --tower tower"][1]


# ---- PostgreSQL through a role that may only SELECT -----------------------------------------
WRITE_SQL = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE", "TRUNCATE")


@pytest.fixture
def pg_read_only_role(tmp_path):
    """A workspace whose database is the PostgreSQL test database (120 random ads, version `flat`)
    and a fresh LOGIN role with only SELECT on its tables; yields (settings, role URL, admin
    engine, role); the role (and what was granted to it) is dropped afterwards."""
    from tests.conftest import _pg_url_or_skip
    from tests.funnel_data import FakeTextEncoder, fill_random_db

    from core.index.versions import build_version
    from core.store.models import Base
    from core.store.settings import load_settings

    url = _pg_url_or_skip()
    admin = make_engine(url, create_tables=False)
    Base.metadata.drop_all(admin)
    Base.metadata.create_all(admin)
    fill_random_db(admin, n_ads=120)
    settings = load_settings(workspace=tmp_path / "ws", db_url=url)
    build_version(settings, "flat", "Flat", text_encoder=FakeTextEncoder(), engine=admin)
    role = f"adlens_ro_{uuid.uuid4().hex[:8]}"
    with admin.begin() as c:
        c.execute(text(f"CREATE ROLE {role} LOGIN"))
        c.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        c.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    role_url = make_url(url).set(username=role, password=None).render_as_string(hide_password=False)
    try:
        yield settings, role_url, admin, role
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP OWNED BY {role}"))
            c.execute(text(f"DROP SCHEMA IF EXISTS {role}_empty"))
            c.execute(text(f"DROP ROLE {role}"))
        Base.metadata.drop_all(admin)
        admin.dispose()


@pytest.mark.postgres
def test_a_select_only_role_reads_and_writing_commands_refuse(pg_read_only_role, monkeypatch, capsys):
    from sqlalchemy import Engine

    settings, role_url, admin, role = pg_read_only_role
    ws = str(settings.workspace)
    monkeypatch.setenv("ADLENS_DB_URL", role_url)
    written: list[str] = []
    seen = [0]

    def spy(conn, cursor, statement, *args):
        seen[0] += 1
        if statement.lstrip().upper().startswith(WRITE_SQL):
            written.append(statement)

    event.listen(Engine, "before_cursor_execute", spy)
    try:
        for argv in (["versions"], ["status"], ["inspect", "--version", "flat", "--user", "u000"],
                     ["why-not", "--version", "flat", "--user", "u000", "--ad", "ad0001"],
                     ["health", "--version", "flat", "--requests", "10"]):
            assert main(["--workspace", ws, *argv]) == 0, (argv, capsys.readouterr().err)
        capsys.readouterr()
        for argv in (["ingest", ws], ["versions", "--delete", "flat"], ["train", "--name", "t"]):
            assert main(["--workspace", ws, *argv]) == 2, argv
            err = capsys.readouterr().err
            assert f"role '{role}' may not INSERT, UPDATE and DELETE on" in err, err
            assert "ADLENS_DB_URL to a role that may write" in err and "Traceback" not in err
    finally:
        event.remove(Engine, "before_cursor_execute", spy)
    assert seen[0] > 0 and written == []  # make_engine did not try CREATE TABLE, nothing tried to write
    assert (settings.versions_dir / "flat").is_dir()


@pytest.mark.postgres
def test_a_read_only_role_is_told_why_it_cannot_write_or_create(pg_read_only_role):
    from core.common.errors import StoreError
    from core.store.readonly import database_read_only

    settings, role_url, admin, role = pg_read_only_role
    with admin.begin() as c:  # every privilege, but read-only transactions by default
        c.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
        c.execute(text(f"ALTER ROLE {role} SET default_transaction_read_only = on"))
    eng = make_engine(role_url)
    assert "runs read-only transactions" in database_read_only(eng)
    eng.dispose()
    with admin.begin() as c:  # an empty schema it may not create tables in
        c.execute(text(f"ALTER ROLE {role} RESET default_transaction_read_only"))
        c.execute(text(f"CREATE SCHEMA {role}_empty"))
        c.execute(text(f"GRANT USAGE ON SCHEMA {role}_empty TO {role}"))
        c.execute(text(f"ALTER ROLE {role} SET search_path = {role}_empty"))
    with pytest.raises(StoreError, match="lacks AdLens's tables .* and cannot create them"):
        make_engine(role_url)


@pytest.mark.postgres
def test_the_dashboard_reads_through_a_select_only_role(pg_read_only_role, use_workspace, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_dashboard import APP, TIMEOUT, _goto

    settings, role_url, admin, role = pg_read_only_role
    use_workspace(settings.workspace)
    monkeypatch.setenv("ADLENS_DB_URL", role_url)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    for page in ("home", "why-not", "compare", "health"):
        _goto(at, page).run()
        assert not at.exception and not at.error, (page, [e.value for e in (*at.exception, *at.error)])
    assert at.title[0].value == "Index health"
