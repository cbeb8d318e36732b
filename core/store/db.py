"""One engine factory for every database AdLens talks to (SQLite by default, any SQLAlchemy URL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.store.models import Base


def redact_url(url: str) -> str:
    """The URL with its password hidden, for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def _set_sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL: the dashboard reads while the CLI writes, without "database is locked" on readers.
    cur.execute("PRAGMA journal_mode=WAL")
    # Wait for a concurrent writer instead of failing at once.
    cur.execute("PRAGMA busy_timeout=10000")
    # SQLite ignores foreign keys unless asked, per connection.
    cur.execute("PRAGMA foreign_keys=ON")
    # Safe with WAL (a crash may lose the last commit, never corrupt) and much faster than FULL.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, *, create_tables: bool = True) -> Engine:
    """Create an engine for `url`; for SQLite, create the parent folder and set pragmas."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _set_sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if create_tables:
        Base.metadata.create_all(engine)
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose work is one transaction: committed on success, rolled back on error."""
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory() as session, session.begin():
        yield session
