"""Read-only workspaces: a team's finished workspace published on a read-only mount (or a
PostgreSQL role with only SELECT) is browsed, never written.

Reading opens the database read-only (core.store.db) and writes nothing anywhere (no lock file,
no WAL, no cache); a command that writes is refused up front by `require_writable`, which the CLI
boundary calls with what that command writes (core.cli.WRITES).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.common.errors import ReadOnlyError

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


def require_writable(settings, command: str, needs: Needs, engine=None) -> None:
    """Raise ReadOnlyError (exit 2, nothing written) when `command` needs to write the workspace
    folder or the database and cannot. `engine`: an open engine on settings.db_url (made if needed)."""
    if WORKSPACE in needs:
        why = folder_read_only(settings.workspace)
        if why:
            raise ReadOnlyError(read_only_message(f"`adlens {command}`", f"the workspace {settings.workspace}", why,
                                                  settings.workspace))
    if DATABASE in needs:
        from core.store.db import database_read_only, make_engine, redact_url

        eng = engine or make_engine(settings.db_url, create_tables=False)
        try:
            why = database_read_only(eng)
        finally:
            if engine is None:
                eng.dispose()
        if why:
            raise ReadOnlyError(read_only_message(f"`adlens {command}`", f"the database {redact_url(settings.db_url)}", why,
                                                  settings.workspace, database=eng.dialect.name != "sqlite"))


def writable(settings, needs: Needs = BOTH) -> bool:
    """Whether `require_writable` would let a command that writes `needs` run (for commands that
    read and save a by-product only where they can, such as `adlens evaluate`)."""
    try:
        require_writable(settings, "", needs)
    except ReadOnlyError:
        return False
    return True
