"""Checksums verified once per file stamp: `verify_files_once`.

Loading a version hashes every file it lists (hundreds of MB with EASE's matrix at 10k ads), on
every load, in every process: a dashboard page's first view paid for it each time. Here a file
whose sha256 matched is remembered in `<cache dir>/verified-files.json` with its stamp (size,
mtime and ctime in ns, inode, device), and is not re-read while its stamp is unchanged. Anything
that writes to a file, renames over it or sets its times changes its ctime, which user space
cannot set back, so a modified or replaced file is hashed again and its mismatch raised as
before. Like git's index, a file changed less than `RACY_S` seconds ago is never remembered (a
write within the timestamp's granularity could otherwise go unseen). What a stamp cannot see is
damage below the filesystem (bad sectors): `verify_files` (no memo) reads every byte.

The memo is a cache: unreadable, missing or unwritable (a read-only workspace) means every file
is hashed, never that one is skipped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from core.store.artifacts import atomic_write_json, verify_files

MEMO_FILE = "verified-files.json"
RACY_S = 2.0
"""A file whose ctime is this recent is verified but not remembered (see the module docstring)."""


def file_stamp(path: Path) -> list[int]:
    """What changes whenever a file's bytes could have: size, mtime, ctime (ns), inode, device."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _read(memo: Path) -> dict[str, dict]:
    try:
        data = json.loads(memo.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(memo: Path, new: dict[str, dict]) -> None:
    """Merge `new` into the memo on disk (another process may have added entries meanwhile) and drop
    entries whose file is gone; any OSError (read-only workspace) leaves the memo as it was."""
    try:
        data = {k: v for k, v in _read(memo).items() if os.path.exists(k)}
        data.update(new)
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(memo, data)
    except OSError:
        pass


def verify_files_once(root: Path, files: dict[str, str], cache_dir: Path | None) -> int:
    """`core.store.artifacts.verify_files(root, files)`, reading only the files not verified before
    with the same sha256 at the same stamp (memo in `cache_dir`; None: read every file). Raises the
    same ArtifactError on the first missing or mismatching file. Returns how many files were read."""
    if cache_dir is None:
        verify_files(root, files)
        return len(files)
    memo_path = Path(cache_dir) / MEMO_FILE
    memo = _read(memo_path)
    todo: dict[str, str] = {}
    stamps: dict[str, tuple[str, list[int]]] = {}
    for rel, expected in files.items():
        path = Path(root) / rel
        try:
            key, stamp = str(path.resolve()), file_stamp(path)
        except OSError:  # missing: verify_files says so
            todo[rel] = expected
            continue
        hit = memo.get(key)
        if isinstance(hit, dict) and hit.get("sha256") == expected and hit.get("stamp") == stamp:
            continue
        todo[rel] = expected
        stamps[rel] = (key, stamp)  # taken before reading: a write during the read changes it
    verify_files(root, todo)
    now_ns = time.time_ns()
    new = {key: {"sha256": todo[rel], "stamp": stamp} for rel, (key, stamp) in stamps.items()
           if now_ns - stamp[2] > RACY_S * 1e9}
    if new:
        _write(memo_path, new)
    return len(todo)
