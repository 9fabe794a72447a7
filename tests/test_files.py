"""Atomic writes (base/files): a crash or an error leaves the old file or the new one, and a
file created once is never replaced."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailboot.base.files import TEMP_MARK, create_once, replace_atomically, write_atomically


def test_a_streamed_write_replaces_the_file_whole_with_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "archive.tar"
    target.write_bytes(b"old")
    with replace_atomically(target, mode=0o600) as handle:
        for _ in range(3):
            handle.write(b"part ")
        assert target.read_bytes() == b"old"  # not yet: the new one is under a temporary name
    assert target.read_bytes() == b"part part part "
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["archive.tar"]


def test_a_streamed_write_that_fails_leaves_the_old_file_and_no_temporary_one(
        tmp_path: Path) -> None:
    target = tmp_path / "archive.tar"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="the source broke"), \
            replace_atomically(target) as handle:
        handle.write(b"half")
        raise RuntimeError("the source broke")
    assert target.read_bytes() == b"old"
    assert not [path for path in tmp_path.iterdir() if TEMP_MARK in path.name]


def test_a_write_gives_the_owner_and_is_skipped_when_nothing_changed(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    owner = (os.getuid(), os.getgid())
    assert write_atomically(target, b"{}", mode=0o640, owner=owner) is True
    assert (target.stat().st_uid, target.stat().st_gid) == owner
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert write_atomically(target, b"{}", mode=0o640, owner=owner) is False
    assert write_atomically(target, b"{}", mode=0o600) is True  # a new mode is a change


def test_a_write_without_sync_replaces_whole_and_never_waits_for_the_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "counts.json"
    target.write_bytes(b"old")

    def no_sync(_descriptor: int) -> None:
        raise AssertionError("synced")

    monkeypatch.setattr(os, "fsync", no_sync)
    assert write_atomically(target, b"new", mode=0o600, sync=False) is True
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["counts.json"]
    with pytest.raises(AssertionError, match="synced"):
        write_atomically(target, b"newer")  # the default waits for the disk


def test_a_file_created_once_is_never_replaced(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    assert create_once(key, b"first", mode=0o600) is True
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert create_once(key, b"second", mode=0o600) is False  # another process made it first
    assert key.read_bytes() == b"first"
    assert [path.name for path in tmp_path.iterdir()] == ["key.pem"]
