"""Shared fixtures: isolated workspaces and a database URL for SQLite and (when configured)
PostgreSQL. Expensive objects (the embedding model) are loaded once per session."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.store.db import make_engine
from core.store.models import Base
from core.store.settings import Settings, load_settings

PG_ENV = "ADLENS_TEST_PG_URL"
RAY_ENV = "ADLENS_TEST_RAY_ADDRESS"


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for a fresh workspace in a temporary folder (SQLite inside it)."""
    return load_settings(workspace=tmp_path / "ws")


def _pg_url_or_skip() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set in CI: .ci/run must start PostgreSQL and export it")
        pytest.skip(f"PostgreSQL variant: set {PG_ENV} (e.g. postgresql+psycopg://user@127.0.0.1/db)")
    return _database_of_this_worker(url)


def _database_of_this_worker(url: str) -> str:
    """Under pytest-xdist, worker gwN gets its own database `<db>_gwN` (created on first use): the
    PostgreSQL fixtures drop every table between tests, which would pull the schema from under a
    test running at the same moment in another worker."""
    from sqlalchemy import create_engine, make_url, text

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    base = make_url(url)
    name = f"{base.database}_{worker}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A database URL with an empty AdLens schema: SQLite in tmp_path, or the PostgreSQL test DB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    url = _pg_url_or_skip()
    engine = make_engine(url, create_tables=False)
    Base.metadata.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url) -> Engine:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


# ---- one small demo workspace for the dashboard tests (AppTest and browser) ------------------
DEMO_ADS, DEMO_USERS = 600, 300
HTML_TITLE = ('XSS <b>bold</b><script>window.__xss=1</script>'
              '<img src=x onerror="window.__xss=2">')
"""An ad title full of markup: the dashboard must show it as literal text and run nothing."""
WORKSPACE_ENV = ("ADLENS_HOME", "ADLENS_DB_URL", "ADLENS_MODEL")


@dataclass(frozen=True)
class DemoWorkspace:
    """A finished `adlens demo` workspace (SQLite inside it) with one ad retitled to HTML_TITLE."""

    path: Path
    users: list[str]  # every known user id, sorted (the dashboard's user list)
    versions: list[str]
    html_ad: str  # retrieved for users[0] by version "exact" in their usual context (ANN rank 1)
    demo_report: dict  # what `adlens demo --json` printed when it built the workspace
    html_title: str = HTML_TITLE  # html_ad's title

    def env(self) -> dict[str, str]:
        """The environment for a subprocess (`streamlit run dashboard`) using this workspace."""
        env = {k: v for k, v in os.environ.items() if k not in WORKSPACE_ENV}
        return {**env, "ADLENS_HOME": str(self.path), "HF_HUB_OFFLINE": "1"}


def _retitle(settings: Settings, ad_id: str, title: str, tmp: Path) -> None:
    """Change one ad's title through the ordinary import path (a one-row ads file updates it)."""
    import pandas as pd

    from core.data.ingest import ingest_directory

    ads = pd.read_parquet(settings.demo_data_dir / "ads.parquet")
    row = ads[ads["ad_id"] == ad_id].assign(title=title)
    tmp.mkdir(parents=True, exist_ok=True)
    row.to_parquet(tmp / "ads.parquet", index=False)
    eng = make_engine(settings.db_url)
    try:
        report = ingest_directory(eng, tmp)
    finally:
        eng.dispose()
    assert report.tables["ads"].updated == 1, report


def _built_once(tmp_path_factory, name: str, build):
    """`build(folder) -> dict` run once for the whole test run and its result (JSON) shared.

    Under pytest-xdist every worker is its own process with its own session fixtures; building the
    demo workspace in each would cost a minute of both cores per worker. The first worker to get
    the lock builds into the run's shared temporary folder, the others wait and read the result.
    Without xdist this is an ordinary session fixture. Users of the result must not write to it
    (tests that change a workspace copy it first: `copy_workspace`)."""
    from filelock import FileLock

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent  # common to every worker of this run
    done = shared / f"{name}.json"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            folder = shared / name
            shutil.rmtree(folder, ignore_errors=True)  # a worker whose build failed left it half-built
            folder.mkdir()
            done.write_text(json.dumps(build(folder)))
    return json.loads(done.read_text())


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory) -> DemoWorkspace:
    """ONE small demo workspace per test run (real embedding model, both towers, the three versions
    with their maps: ~1 min on 2 cores), one retrieved ad retitled to HTML; shared by xdist workers."""
    d = _built_once(tmp_path_factory, "dashboard", _build_demo_workspace)
    return DemoWorkspace(**{**d, "path": Path(d["path"])})


def _build_demo_workspace(root: Path) -> dict:
    from core.cli import main as cli_main
    from core.funnel.context import default_request, known_user_ids
    from core.funnel.engine import FunnelEngine
    from core.funnel.params import FunnelParams
    from core.index.versions import list_versions, load_version
    from core.store.catalog import load_catalog
    from core.store.settings import default_db_url

    os.environ["HF_HUB_OFFLINE"] = "1"
    ws = root / "ws"
    settings = load_settings(workspace=ws, db_url=default_db_url(ws.resolve()), model="default")
    # Built through the command line, as a user does (test_ingest.py checks its report): one demo
    # build serves the CLI test and every dashboard test.
    saved = {k: os.environ.pop(k) for k in WORKSPACE_ENV if k in os.environ}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = cli_main(["--workspace", str(ws), "demo", "--ads", str(DEMO_ADS), "--users", str(DEMO_USERS),
                             "--json"])
    finally:
        os.environ.update(saved)
    assert code == 0, out.getvalue()
    demo_report = json.loads(out.getvalue())
    eng = make_engine(settings.db_url)
    try:
        catalog = load_catalog(eng)
        users = sorted(map(str, known_user_ids(catalog)))
        versions = [v["name"] for v in list_versions(settings, engine=eng) if v["status"] == "ok"]
        trace = FunnelEngine(load_version(settings, "exact"), catalog).run(
            default_request(catalog, users[0]), FunnelParams())
    finally:
        eng.dispose()
    html_ad = str(trace.candidates.sort_values("ann_rank")["ad_id"].iloc[0])
    _retitle(settings, html_ad, HTML_TITLE, root / "retitle")
    return {"path": str(settings.workspace), "users": users, "versions": versions, "html_ad": html_ad,
            "demo_report": demo_report}


_streamlit_workspace: list[Path | None] = [None]  # the workspace Streamlit's caches were filled from


@pytest.fixture
def use_workspace(monkeypatch):
    """`use_workspace(path)` points ADLENS_HOME at `path` for an in-process dashboard (AppTest).

    Streamlit's caches are process-global (settings, engines, catalogs): they are cleared when a
    test switches to another workspace than the previous one, and kept otherwise (loading a
    version's index and towers once per session keeps the AppTest tests fast)."""

    def use(path: Path) -> Path:
        import streamlit as st

        for k in WORKSPACE_ENV:
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("ADLENS_HOME", str(path))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        if _streamlit_workspace[0] != Path(path):
            st.cache_data.clear()
            st.cache_resource.clear()
            _streamlit_workspace[0] = Path(path)
        return path

    return use


# ---- Ray: a real local cluster in this process, and (CI) a separately started head ---------------
@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray cluster started in the test process (shut down at the end of the session)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    # address="local": a new cluster even when `ray start` left one running on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def ray_head_address() -> str:
    """The address of the head `.ci/run` starts with `ray start --head --node-ip-address=127.0.0.1`."""
    addr = os.environ.get(RAY_ENV)
    if not addr:
        if os.environ.get("CI"):
            pytest.fail(f"{RAY_ENV} is not set in CI: .ci/run must start a Ray head and export its address")
        pytest.skip(f"separate Ray head: run `ray start --head --node-ip-address=127.0.0.1 --port=6389` "
                    f"and set {RAY_ENV}=127.0.0.1:6389 (then `ray stop`)")
    return addr


# ---- a copy of the demo workspace with hostile ids (escaping tests: AppTest and browser) -----
LEAK_HOST = "127.0.0.1:9"  # nothing listens there: a request to it is a leak, never a fetch
HOSTILE_USER = f"x`![i](http://{LEAK_HOST}/user.png)` **u** <b>b</b>"
HOSTILE_AD = f"<b>ad</b>![a](http://{LEAK_HOST}/ad.png)"
HOSTILE_VERSION = "hostile"
TERM_TITLE = "\x1b]0;pwned\x07\x1b[31mred title\x1b[0m"
"""A title that would retitle and recolour a terminal if printed raw."""


@dataclass(frozen=True)
class HostileWorkspace:
    """A copy of the demo workspace plus one user and one ad whose ids are markup payloads, and a
    Flat version `hostile` (with its map) built after they were imported, so both are in it."""

    path: Path
    user: str
    ad: str
    version: str
    term_ad: str  # a demo ad in the hostile user's slate of version `hostile`, retitled to TERM_TITLE

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in WORKSPACE_ENV}
        return {**env, "ADLENS_HOME": str(self.path), "HF_HUB_OFFLINE": "1"}


def copy_workspace(src: Path, dst: Path) -> Settings:
    """A copy of a workspace folder (its SQLite database included) and its settings."""
    from core.store.settings import default_db_url

    shutil.copytree(src, dst)
    return load_settings(workspace=dst, db_url=default_db_url(dst.resolve()), model="default")


@pytest.fixture(scope="session")
def hostile_workspace(demo_workspace, tmp_path_factory) -> HostileWorkspace:
    """The hostile user copies users[0]'s profile and impressions; the hostile ad copies the HTML-titled
    ad (same campaign) and is clicked by the hostile user, so it is retrieved and on the map."""
    d = _built_once(tmp_path_factory, "hostile", lambda root: _build_hostile_workspace(demo_workspace, root))
    return HostileWorkspace(**{**d, "path": Path(d["path"])})


def _build_hostile_workspace(demo_workspace: DemoWorkspace, root: Path) -> dict:
    import pandas as pd

    from core.data.ingest import ingest_directory
    from core.funnel.context import default_request
    from core.funnel.engine import FunnelEngine
    from core.funnel.params import FunnelParams
    from core.index.manifest import Manifest
    from core.index.versions import build_version, load_version
    from core.store.catalog import load_catalog

    settings = copy_workspace(demo_workspace.path, root / "ws")
    data = settings.demo_data_dir
    src_user = demo_workspace.users[0]
    users = pd.read_parquet(data / "users.parquet")
    ads = pd.read_parquet(data / "ads.parquet")
    imps = pd.read_parquet(data / "impressions.parquet")
    mine = imps[imps["user_id"] == src_user].copy()
    mine["user_id"] = HOSTILE_USER
    clicks = mine.head(3).assign(ad_id=HOSTILE_AD, clicked=True)
    new = pd.concat([mine, clicks], ignore_index=True)
    new["impression_id"] = [f"hostile_{i}" for i in range(len(new))]
    out = root / "import"
    out.mkdir()
    users[users["user_id"] == src_user].assign(user_id=HOSTILE_USER).to_parquet(out / "users.parquet", index=False)
    ads[ads["ad_id"] == demo_workspace.html_ad].assign(ad_id=HOSTILE_AD).to_parquet(out / "ads.parquet", index=False)
    new.to_parquet(out / "impressions.parquet", index=False)
    eng = make_engine(settings.db_url)
    try:
        ingest_directory(eng, out)
        tower = Manifest.from_dict(json.loads((settings.versions_dir / "exact" / "manifest.json").read_text())).tower
        build_version(settings, HOSTILE_VERSION, "Flat", tower=tower, engine=eng, with_map=True)
        catalog = load_catalog(eng)
        slate = FunnelEngine(load_version(settings, HOSTILE_VERSION), catalog).run(
            default_request(catalog, HOSTILE_USER), FunnelParams()).slate
    finally:
        eng.dispose()
    demo_ads = slate["ad_id"][slate["ad_id"] != HOSTILE_AD]  # _retitle edits a row of the demo's files
    assert len(demo_ads), "the hostile user's slate has no demo ad"
    term_ad = str(demo_ads.iloc[0])
    _retitle(settings, term_ad, TERM_TITLE, root / "retitle")
    return {"path": str(settings.workspace), "user": HOSTILE_USER, "ad": HOSTILE_AD, "version": HOSTILE_VERSION,
            "term_ad": term_ad}


# ---- pytest-xdist: how many workers, which tests share a worker, and which start first --------
@pytest.hookimpl(tryfirst=True)
def pytest_xdist_auto_num_workers(config) -> int | None:
    """`-n auto` (make test): one worker more than the usable cores. The browser and server tests
    spend much of their time waiting on a `streamlit run` or a Chromium process, so a third worker
    on 2 cores keeps both busy: 317 s of tests against 363 s with two (same commit, one run each;
    a fourth worker was slower). PYTEST_XDIST_AUTO_NUM_WORKERS still decides when set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    return len(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) + 1


RUN_FIRST = ("tests/test_dashboard_bench.py", "tests/test_e2e.py", "tests/test_cli_boundary.py",
             "tests/test_text_backends.py", "tests/test_byom.py")
"""The longest work units, handed out first so that no worker is left with a long one at the end."""


@pytest.hookimpl(tryfirst=True)  # before xdist appends the group names to the node ids
def pytest_collection_modifyitems(config, items):
    """Under `--dist loadgroup` a module's tests run on one worker (they share module fixtures,
    and test_ray.py's one in-process Ray cluster), except the slow tests named in RUN_FIRST that
    share nothing and so form a unit of their own; the RUN_FIRST units are collected first."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def unit(item) -> str:
        nodeid = item.nodeid
        return next((key for key in RUN_FIRST if "::" in key and nodeid.startswith(key)),
                    nodeid.split("::")[0])

    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(unit(item)))

    def rank(item) -> int:
        u = unit(item)
        return RUN_FIRST.index(u) if u in RUN_FIRST else len(RUN_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
