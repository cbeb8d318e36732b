"""Shared fixtures: isolated workspaces and a database URL for SQLite and (when configured)
PostgreSQL. Expensive objects (the embedding model) are loaded once per session."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import Engine

from core.db import make_engine
from core.models import Base
from core.settings import Settings, load_settings

PG_ENV = "ADLENS_TEST_PG_URL"


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
    return url


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
