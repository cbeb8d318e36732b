"""One engine factory for every database AdLens talks to (SQLite by default, any SQLAlchemy URL)."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.common.errors import ReadOnlyError, StoreError
from core.store.models import Base
from core.store.readonly import (
    BOTH,
    DATABASE,
    READ_ONLY_OPTION,
    WORKSPACE,
    Needs,
    database_read_only,
    file_read_only,
    folder_read_only,
    read_only_message,
)
from core.store.settings import Settings

log = logging.getLogger(__name__)
ENV_HINT = "set ADLENS_DB_URL to a SQLAlchemy URL such as postgresql+psycopg://user@host/db, or unset it for SQLite"


def redact_url(url: str) -> str:
    """The URL with its password hidden, for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "<not a URL>"


def describe_db_error(exc: BaseException, url: str) -> StoreError:
    """A database failure as a StoreError naming the database and the fix."""
    where = redact_url(url)
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = first.lower()
    sqlite = not url or url.startswith("sqlite")  # "": the URL is unknown (settings failed)
    if isinstance(exc, sa_exc.NoSuchModuleError):
        return StoreError(f"database {where}: no driver installed for this URL ({first}); {ENV_HINT}")
    if isinstance(exc, sa_exc.ArgumentError):
        return StoreError(f"database URL {url!r} is not valid ({first}); {ENV_HINT}")
    if not sqlite and ("read-only" in low or "permission denied" in low or "insufficient privilege" in low):
        return StoreError(f"database {where} refused a write ({first}): this role may only read; reading commands "
                          "and the dashboard work with it, writing commands need a role that may INSERT, UPDATE "
                          "and DELETE (and CREATE in a new database): set ADLENS_DB_URL to one")
    if "readonly" in low or "read-only" in low or "unable to open database" in low:
        return StoreError(f"database {where} cannot be written ({first}): the workspace folder or database file "
                          "is read-only or missing; make it writable (chmod u+w), or copy the workspace somewhere "
                          "writable and pass --workspace DIR")
    if "database is locked" in low:
        return StoreError(f"database {where} is locked by another AdLens process that is still writing; wait for it "
                          "to finish and run the command again")
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return StoreError(f"database {where} is unreachable ({first}); start the server or fix the URL; {ENV_HINT}")
    return StoreError(f"database {where} failed: {first}")


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


def _set_sqlite_read_pragmas(dbapi_conn, _record) -> None:
    # Read-only: journal_mode and synchronous would write (or fail); only the reading ones.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_read_only_engine(url: str, path: Path, why: str) -> Engine:
    """An engine that opens `path` read-only (mode=ro) and creates nothing beside it. In a folder
    that cannot be written, SQLite cannot create the -shm file a WAL database needs to be read, so
    the database is opened immutable (no locks, no -shm) unless a writer's -wal and -shm are
    there (then they hold its last commits and mode=ro reads them)."""
    if not path.is_file():
        raise StoreError(f"database {path} does not exist and cannot be created here: its folder {path.parent} "
                         f"is read-only ({why}); point --workspace at a finished workspace, or at a writable folder")
    live_wal = Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    immutable = folder_read_only(path.parent) is not None and not live_wal
    uri = f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    engine = create_engine(url, creator=connect, execution_options={READ_ONLY_OPTION: why})
    event.listen(engine, "connect", _set_sqlite_read_pragmas)
    return engine


def _create_missing_tables(engine: Engine) -> None:
    missing = set(Base.metadata.tables) - set(inspect(engine).get_table_names())
    if not missing:
        return  # nothing to create: a read-only role reads without ever attempting DDL
    if engine.dialect.name == "postgresql" and (why := database_read_only(engine)):
        raise StoreError(f"database {redact_url(str(engine.url))} lacks AdLens's tables {', '.join(sorted(missing))} "
                         f"and cannot create them ({why}): run one AdLens command (e.g. `adlens status`) with a role "
                         "that may create tables, then read with this one")
    Base.metadata.create_all(engine)


def make_engine(url: str, *, create_tables: bool = True) -> Engine:
    """Create an engine for `url`; for SQLite, create the parent folder and set pragmas.
    StoreError (with the fix) for a bad URL, a missing driver, an unreachable server, or a folder
    that cannot hold the database."""
    try:
        u = make_url(url)
        if u.get_backend_name() == "sqlite":
            if u.database and u.database != ":memory:" and not u.query.get("uri") and (
                    why := file_read_only(u.database)):
                engine = _sqlite_read_only_engine(url, Path(u.database).resolve(), why)
                log.debug("database %s (read-only: %s)", redact_url(url), why)
                return engine
            if u.database and u.database != ":memory:":
                folder = Path(u.database).parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError) as exc:
                    raise StoreError(f"workspace {folder} is not a folder ({exc.strerror}): pass --workspace DIR "
                                     "(or ADLENS_HOME) naming a folder") from exc
                except PermissionError as exc:
                    raise StoreError(f"cannot create the workspace {folder} (permission denied): make its parent "
                                     "writable or pass --workspace DIR") from exc
            engine = create_engine(url)
            event.listen(engine, "connect", _set_sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        log.debug("database %s", redact_url(url))
        if create_tables:
            _create_missing_tables(engine)
    except sa_exc.SQLAlchemyError as exc:
        raise describe_db_error(exc, url) from exc
    except ImportError as exc:  # the URL's DBAPI driver is not installed
        raise StoreError(f"database {redact_url(url)}: its driver is not installed ({exc}); install it "
                         f"(e.g. pip install mysqlclient) or {ENV_HINT}") from exc
    return engine


WRITE_LOCK_KEY = 0x4AD1E5  # pg_advisory_xact_lock key shared by every AdLens writer
WAIT_NOTICE_S = 1.0


def _notice_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sqlite_lock_path(engine: Engine) -> Path | None:
    db = engine.url.database
    return Path(f"{db}.write-lock") if db and db != ":memory:" else None


@contextmanager
def _sqlite_write_lock(engine: Engine, what: str, notice: Callable[[str], None]) -> Iterator[None]:
    # SQLite takes its write lock at the first write, after a writer has already read what it
    # compares against: two imports would both plan the same inserts. A lock file held for the
    # whole transaction serialises writers from the start (readers are never blocked).
    path = _sqlite_lock_path(engine)
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            t0 = time.monotonic()
            while True:
                time.sleep(0.05)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if t0 is not None and time.monotonic() - t0 >= WAIT_NOTICE_S:
                        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                        notice(f"waiting for another AdLens writer to finish ({holder}) before: {what}")
                        t0 = None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {what}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _pg_write_lock(conn: Connection, what: str, notice: Callable[[str], None]) -> None:
    if conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_KEY}).scalar():
        return
    notice(f"waiting for another AdLens writer to finish before: {what}")
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_KEY})


@contextmanager
def write_transaction(engine: Engine, what: str, notice: Callable[[str], None] = _notice_stderr
                      ) -> Iterator[Connection]:
    """One transaction that holds AdLens's database write lock from its first statement, so
    concurrent writers (two imports, a build registering while an import runs) run one after
    the other; a waiting writer gets one `notice` after a second. SQLite: a lock file beside the
    database; PostgreSQL: a transaction-scoped advisory lock. ReadOnlyError (nothing written, no
    lock file) on an engine that may only read."""
    if why := engine.get_execution_options().get(READ_ONLY_OPTION):
        raise ReadOnlyError(read_only_message(f"AdLens ({what})", f"the database {redact_url(str(engine.url))}", why,
                                              database=engine.dialect.name != "sqlite"))
    with _sqlite_write_lock(engine, what, notice) if engine.dialect.name == "sqlite" else _nullcontext():
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                _pg_write_lock(conn, what, notice)
            yield conn


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


@contextmanager
def session_scope(engine: Engine, *, write: str | None = None) -> Iterator[Session]:
    """A session whose work is one transaction: committed on success, rolled back on error.
    `write="what it does"` takes the write lock first (see `write_transaction`)."""
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    if write is None:
        with factory() as session, session.begin():
            yield session
        return
    with write_transaction(engine, write) as conn, factory(bind=conn) as session:
        yield session
        session.flush()


def require_writable(settings: Settings, command: str, needs: Needs, engine: Engine | None = None) -> None:
    """Raise ReadOnlyError (exit 2, nothing written) when `command` needs to write the workspace
    folder or the database and cannot. `engine`: an open engine on settings.db_url (made if needed)."""
    if WORKSPACE in needs:
        why = folder_read_only(settings.workspace)
        if why:
            raise ReadOnlyError(read_only_message(f"`adlens {command}`", f"the workspace {settings.workspace}", why,
                                                  settings.workspace))
    if DATABASE in needs:
        eng = engine or make_engine(settings.db_url, create_tables=False)
        try:
            why = database_read_only(eng)
        finally:
            if engine is None:
                eng.dispose()
        if why:
            raise ReadOnlyError(read_only_message(f"`adlens {command}`", f"the database {redact_url(settings.db_url)}", why,
                                                  settings.workspace, database=eng.dialect.name != "sqlite"))


def writable(settings: Settings, needs: Needs = BOTH) -> bool:
    """Whether `require_writable` would let a command that writes `needs` run (for commands that
    read and save a by-product only where they can, such as `adlens evaluate`)."""
    try:
        require_writable(settings, "", needs)
    except ReadOnlyError:
        return False
    return True
