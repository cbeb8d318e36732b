"""Read-only workspaces: a team's finished workspace published on a read-only mount (or a
PostgreSQL role with only SELECT) is browsed, never written.

Reading opens the database read-only (core.store.db) and writes nothing anywhere (no lock file,
no WAL, no cache); a command that writes is refused up front by core.store.db.require_writable,
which the CLI boundary calls with what that command writes (core.cli.WRITES).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, text

from core.store.models import Base

Needs = tuple[str, ...]  # what a command writes: "workspace" (its folders) and/or "database"
WORKSPACE, DATABASE = "workspace", "database"
BOTH: Needs = (WORKSPACE, DATABASE)


def _nearest_existing(path: Path) -> Path:
    p = Path(path)
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def folder_read_only(path: str | os.PathLike) -> str | None:
    """Why this process cannot write inside `path` (or, if it does not exist yet, where it would
    be created), or None. A read-only mount (ST_RDONLY) binds root too; permission bits only bind
    other users (root writes through them, so for root they do not make a folder read-only)."""
    p = _nearest_existing(Path(path))
    if not p.is_dir():
        return None  # not a folder at all: creating inside it fails with its own message
    try:
        if os.statvfs(p).f_flag & os.ST_RDONLY:
            return "it is on a read-only mount"
    except OSError:
        pass
    if not os.access(p, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        return "this user has no write permission on it"
    return None


def file_read_only(path: str | os.PathLike) -> str | None:
    """Why this process cannot write the existing file `path` (its folder's reason first), or None."""
    p = Path(path)
    why = folder_read_only(p.parent)
    if why is None and p.exists() and not os.access(p, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
        why = "this user has no write permission on it"
    return why


def read_only_message(doing: str, target: str, why: str, workspace: Path | None = None,
                      database: bool = False) -> str:
    """The one refusal: what would write (a command, a step), where, why it cannot, and the fixes."""
    fix = ("set ADLENS_DB_URL to a role that may write, or ask the database's owner for one" if database else
           f"copy the workspace somewhere writable (cp -a {workspace or 'WORKSPACE'} COPY, then pass --workspace "
           "COPY) or ask its owner for a writable one")
    return (f"{doing} writes to {target}, which is read-only ({why}). Reading commands (versions, status, "
            f"inspect, why-not, audience, compare, health, evaluate) and the dashboard work on it as it is; to "
            f"change it, {fix}")


READ_ONLY_OPTION = "adlens_read_only"  # engine execution option: why the engine may only read


def database_read_only(engine: Engine) -> str | None:
    """Why `engine` may only read (a read-only SQLite file or folder, a PostgreSQL role without
    INSERT/UPDATE/DELETE on AdLens's tables, a read-only transaction default, a hot standby), or None."""
    why = engine.get_execution_options().get(READ_ONLY_OPTION)
    if why or engine.dialect.name != "postgresql":
        return why
    names = sorted(Base.metadata.tables)
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT current_user, current_setting('transaction_read_only') = 'on', pg_is_in_recovery(), "
            "has_schema_privilege(current_schema(), 'CREATE')")).one()
        denied = conn.execute(text(
            "SELECT n FROM unnest(CAST(:names AS text[])) AS n WHERE to_regclass(n) IS NOT NULL AND NOT ("
            "has_table_privilege(to_regclass(n), 'INSERT') AND has_table_privilege(to_regclass(n), 'UPDATE') "
            "AND has_table_privilege(to_regclass(n), 'DELETE'))"), {"names": names}).scalars().all()
        missing = conn.execute(text(
            "SELECT n FROM unnest(CAST(:names AS text[])) AS n WHERE to_regclass(n) IS NULL"),
            {"names": names}).scalars().all()
    user, ro_txn, standby, can_create = row
    if standby:
        return "the server is a read-only standby"
    if ro_txn:
        return f"role {user!r} runs read-only transactions (default_transaction_read_only)"
    if denied:
        return f"role {user!r} may not INSERT, UPDATE and DELETE on {', '.join(denied)}"
    if missing and not can_create:
        return f"role {user!r} may not create the missing tables {', '.join(missing)}"
    return None
