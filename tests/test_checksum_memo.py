"""Checksums verified once per file stamp (core/store/checksum_memo.py): a file is re-read only when
its stamp changed, and a changed file is always caught."""

from __future__ import annotations

import os

import pytest

from core.common.errors import ArtifactError
from core.store import checksum_memo
from core.store.artifacts import sha256_file
from core.store.checksum_memo import MEMO_FILE, verify_files_once


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """Two files with their sha256, and no racy window (the files were just written)."""
    monkeypatch.setattr(checksum_memo, "RACY_S", -1.0)
    root = tmp_path / "v"
    root.mkdir()
    (root / "a.npy").write_bytes(b"a" * 1000)
    (root / "sub").mkdir()
    (root / "sub" / "b.json").write_bytes(b"{}")
    files = {rel: sha256_file(root / rel) for rel in ("a.npy", "sub/b.json")}
    return root, files, tmp_path / "cache"


def test_second_verification_reads_nothing(folder):
    root, files, cache = folder
    assert verify_files_once(root, files, cache) == 2
    assert (cache / MEMO_FILE).is_file()
    assert verify_files_once(root, files, cache) == 0


def test_a_modified_file_is_caught_even_with_its_size_and_mtime_restored(folder):
    root, files, cache = folder
    verify_files_once(root, files, cache)
    p = root / "a.npy"
    st = p.stat()
    p.write_bytes(b"b" * 1000)  # same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: the ctime still moved
    with pytest.raises(ArtifactError, match="a.npy: sha256 mismatch"):
        verify_files_once(root, files, cache)


def test_a_replaced_or_missing_file_is_caught(folder):
    root, files, cache = folder
    verify_files_once(root, files, cache)
    tmp = root / "a.tmp"
    tmp.write_bytes(b"c" * 1000)
    os.replace(tmp, root / "a.npy")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        verify_files_once(root, files, cache)
    (root / "a.npy").unlink()
    with pytest.raises(ArtifactError, match="a.npy: missing"):
        verify_files_once(root, files, cache)


def test_a_different_expected_checksum_reads_the_file_again(folder):
    root, files, cache = folder
    verify_files_once(root, files, cache)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        verify_files_once(root, {**files, "a.npy": "0" * 64}, cache)


def test_recently_changed_files_are_not_remembered(folder, monkeypatch):
    root, files, cache = folder
    monkeypatch.setattr(checksum_memo, "RACY_S", 3600.0)
    assert verify_files_once(root, files, cache) == 2
    assert verify_files_once(root, files, cache) == 2


def test_no_memo_or_an_unwritable_one_reads_every_file(folder):
    root, files, _cache = folder
    assert verify_files_once(root, files, None) == 2
    blocker = root.parent / "not-a-dir"
    blocker.write_text("x")  # the cache dir cannot be created under a file
    assert verify_files_once(root, files, blocker / "cache") == 2
    assert verify_files_once(root, files, blocker / "cache") == 2


def test_a_corrupt_memo_is_ignored(folder):
    root, files, cache = folder
    cache.mkdir()
    (cache / MEMO_FILE).write_text("{not json")
    assert verify_files_once(root, files, cache) == 2
    assert verify_files_once(root, files, cache) == 0
