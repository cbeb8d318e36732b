"""Safe artifact files: atomic writes, fsync, sha256 and pickle-free array loading.

Every artifact AdLens writes goes through here. A single file is written to a temporary file
in the same folder, fsynced, then `os.replace`d over its target (so readers see the old or the
new file, never half of one; `faiss.write_index` truncates its target first, hence the temp
file). A group of files (an index version) is written into a temporary directory that is
fsynced and renamed into place by the caller (core/versions.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.common.errors import ArtifactError
from core.common.jsonio import to_jsonable

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Persist a directory's entries (a rename is durable only once its folder is fsynced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (deepest first), then `root` itself."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))


def write_via_temp(path: Path, writer: Callable[[Path], None]) -> None:
    """Atomically create/replace `path`: `writer(tmp)` writes a temp file in the same folder,
    which is fsynced and renamed over `path`. The temp file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}")
    try:
        writer(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    write_via_temp(path, lambda p: p.write_bytes(data))



def atomic_write_json(path: Path, obj: Any) -> None:
    """Write `to_jsonable(obj)` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n").encode())


def _npy_safe(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == object:  # object arrays need pickle: store strings as fixed-width unicode
        array = array.astype(str)
    return array


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write an array as .npy without pickle (object arrays become unicode), atomically."""
    arr = _npy_safe(array)
    write_via_temp(path, lambda p: _np_save(p, arr))


def _np_save(p: Path, arr: np.ndarray) -> None:
    with open(p, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """np.load with allow_pickle=False; a missing or unreadable file raises ArtifactError."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{path}: not a readable .npy array ({exc}); the file is corrupted") from exc


def save_parquet(path: Path, frame: pd.DataFrame) -> None:
    write_via_temp(path, lambda p: frame.to_parquet(p, index=False))


def load_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing") from exc
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ArtifactError(f"{path}: not a readable Parquet file ({exc}); the file is corrupted") from exc


def hash_tree(root: Path, *, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative posix path: sha256} of every file under `root`, sorted, minus `exclude`."""
    root = Path(root)
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in exclude:
            out[rel] = sha256_file(p)
    return out


def verify_files(root: Path, files: dict[str, str]) -> None:
    """Check each listed file exists under `root` with the recorded sha256; the ArtifactError
    names the first file that fails."""
    root = Path(root)
    for rel, expected in files.items():
        p = root / rel
        if not p.is_file():
            raise ArtifactError(f"{p}: missing (listed in {root / 'manifest.json'})")
        got = sha256_file(p)
        if got != expected:
            raise ArtifactError(
                f"{p}: sha256 mismatch (manifest {expected[:12]}…, file {got[:12]}…): the file was "
                "modified or truncated after the build; rebuild this version under a new name"
            )


STAGING_PREFIX = ".tmp-"


def staging_name(prefix: str) -> str:
    """`.tmp-<prefix>-<pid>-<hex>`: the pid lets a later run tell a live build from debris."""
    return f"{STAGING_PREFIX}{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


@contextmanager
def staging_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh temporary directory inside `parent` (same filesystem, so it can be renamed into
    place); removed if the body raises, or if the body did not rename it away. A process killed
    meanwhile leaves it behind: core.store.debris finds and removes it."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / staging_name(prefix)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
