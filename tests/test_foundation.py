"""Settings, engine pragmas, the schema/model contract and the CLI entry point."""

from __future__ import annotations

from sqlalchemy import text

from core.cli import main
from core.data.schema import TABLES
from core.funnel.reasons import ELIGIBILITY_REASONS, Reason
from core.store.db import make_engine, redact_url
from core.store.models import Base
from core.store.settings import load_settings


def test_settings_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("ADLENS_HOME", str(tmp_path / "env_ws"))
    monkeypatch.delenv("ADLENS_DB_URL", raising=False)
    s = load_settings()
    assert s.workspace == (tmp_path / "env_ws").resolve()
    assert s.db_url.endswith("env_ws/adlens.db")
    s2 = load_settings(workspace=tmp_path / "flag_ws")
    assert s2.workspace == (tmp_path / "flag_ws").resolve()
    monkeypatch.setenv("ADLENS_DB_URL", "postgresql+psycopg://u:secret@h/db")
    assert load_settings().db_url == "postgresql+psycopg://u:secret@h/db"
    assert "secret" not in redact_url(load_settings().db_url)


def test_sqlite_pragmas(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with eng.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert c.execute(text("PRAGMA busy_timeout")).scalar() == 10000
        assert c.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def test_schema_matches_models():
    for t in TABLES:
        model_cols = {c.name for c in Base.metadata.tables[t.name].columns}
        spec_cols = {c.name for c in t.columns}
        assert spec_cols == model_cols, t.name


def test_reason_order_is_the_documented_pipeline_order():
    assert ELIGIBILITY_REASONS[0] is Reason.POLICY_REJECTED
    assert ELIGIBILITY_REASONS[-1] is Reason.FREQUENCY_CAP
    assert Reason.BELOW_CUTOFF not in ELIGIBILITY_REASONS


def test_engine_creates_tables(engine):
    with engine.connect() as c:
        for t in TABLES:
            assert c.execute(text(f"SELECT COUNT(*) FROM {t.name}")).scalar() == 0


def test_cli_status_json(tmp_path, capsys):
    assert main(["--workspace", str(tmp_path / "ws"), "status", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"impressions": 0' in out
