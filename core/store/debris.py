"""Leftovers of interrupted writes: staging folders and temp files of builds that were killed
(`kill -9`, power loss) before they could clean up, and embedding-cache vector shards whose keys
file was never written. Live work is never touched: a staging name carries its writer's pid.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.store.artifacts import STAGING_PREFIX
from core.store.settings import Settings

_PID = re.compile(r"-(\d+)-[0-9a-f]{12}$")
STALE_WITHOUT_PID_S = 24 * 3600
"""Names without a pid (older AdLens) count as debris once they are this old."""


@dataclass(frozen=True)
class Debris:
    """One leftover: where, how big, what it was."""

    path: Path
    bytes: int
    kind: str  # "staging folder" | "temp file" | "orphan cache shard" | "aside folder"
    age_s: float


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_debris(path: Path, now: float) -> bool:
    m = _PID.search(path.name)
    if m:
        return int(m.group(1)) != os.getpid() and not _alive(int(m.group(1)))
    return now - path.stat().st_mtime > STALE_WITHOUT_PID_S


def _candidates(settings: Settings) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    roots = [settings.versions_dir, settings.towers_dir, settings.cache_dir, settings.vectors_dir,
             settings.traces_dir, settings.workspace]
    roots += [p for p in settings.versions_dir.iterdir() if p.is_dir()] if settings.versions_dir.is_dir() else []
    for root in roots:
        if not root.is_dir():
            continue
        for p in root.iterdir():
            if p.name.startswith(STAGING_PREFIX) and p.is_dir():
                out.append((p, "staging folder"))
            elif p.name.startswith(".deleting-") and p.is_dir():
                out.append((p, "aside folder"))
            elif p.name.startswith(".") and STAGING_PREFIX in p.name and p.is_file():
                out.append((p, "temp file"))
            elif p.name.startswith(".") and p.name.endswith(".tmp") and p.is_dir():  # towers before 0.2
                out.append((p, "staging folder"))
    if settings.cache_dir.is_dir():
        for vec in settings.cache_dir.rglob("shard-*.npy"):
            if not vec.with_name(vec.name[:-4] + ".keys.parquet").exists():
                out.append((vec, "orphan cache shard"))
    return out


def find_debris(settings: Settings) -> list[Debris]:
    """Leftovers of interrupted writes in the workspace (live builds excluded)."""
    now = time.time()
    found = []
    for path, kind in _candidates(settings):
        try:
            if kind == "orphan cache shard" and now - path.stat().st_mtime < 600:
                continue  # a cache write may be between its two files right now
            if kind != "orphan cache shard" and not _is_debris(path, now):
                continue
            found.append(Debris(path, _size(path), kind, now - path.stat().st_mtime))
        except FileNotFoundError:  # removed meanwhile by its owner
            continue
    return sorted(found, key=lambda d: str(d.path))


def clean_debris(settings: Settings, under: Path | None = None) -> list[Debris]:
    """Remove the leftovers (only those inside `under`, if given); returns what was removed."""
    removed = []
    for d in find_debris(settings):
        if under is not None and Path(under) not in d.path.parents:
            continue
        if d.path.is_dir():
            shutil.rmtree(d.path, ignore_errors=True)
        else:
            d.path.unlink(missing_ok=True)
        removed.append(d)
    return removed
