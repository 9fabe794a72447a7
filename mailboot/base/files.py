"""Atomic file writes: a crash leaves the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".tmp-"


def temp_path_for(path: Path) -> Path:
    """A sibling temporary name that `remove_stale_temp_files` recognises as ours."""
    # os.urandom, as secrets.token_hex uses, without importing secrets: that brings hmac and
    # OpenSSL's hash library (5 MiB) into the supervisor, which imports this module for life.
    return path.with_name(f".{path.name}{TEMP_MARK}{os.urandom(4).hex()}")


def write_new_file(path: Path, content: bytes, mode: int) -> None:
    """Create `path` (failing if it exists) with `mode`, write, and sync it to disk."""
    with _new_file(path, mode) as handle:
        handle.write(content)


@contextlib.contextmanager
def _new_file(path: Path, mode: int, sync: bool = True) -> Iterator[io.BufferedWriter]:
    """Create `path` (failing if it exists) with `mode`; what the body wrote is synced to disk
    when it ends (unless `sync` is False)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        yield handle
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def create_once(path: Path, content: bytes, mode: int) -> bool:
    """Create `path` whole with `content` and `mode` unless it exists; never replace a file (a
    private key another process made meanwhile). Return True when this call created it.

    Written under a temporary name and synced, then hard-linked into place: a crash leaves no
    file or a whole one, and a link fails on an existing name where a rename would replace it.
    """
    temp = temp_path_for(path)
    try:
        write_new_file(temp, content, mode)
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
    finally:
        temp.unlink(missing_ok=True)
    fsync_directory(path.parent)
    return True


def fsync_directory(directory: Path) -> None:
    """Make a rename or link inside `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_json_object(path: Path) -> dict[str, object] | None:
    """The JSON object a file holds, or None when it is missing, unreadable or not an object
    (state another process keeps: a reader shows "not yet" rather than failing)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def write_atomically(
    path: Path, content: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None,
    sync: bool = True,
) -> bool:
    """Replace `path` with `content` unless it already holds exactly that; return True if written.

    The new content goes to a temporary file with its final mode and owner, then replaces the old
    file with one rename (POSIX rename is atomic). `sync=False` skips the waits for the disk: a
    crashed process still leaves the old file or the new one, a power cut may lose the change
    (for counters rewritten many times a second, whose last changes don't matter).
    """
    if _unchanged(path, content, mode, owner):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with replace_atomically(path, mode, owner, sync) as handle:
        handle.write(content)
    return True


@contextlib.contextmanager
def replace_atomically(
    path: Path, mode: int = 0o644, owner: tuple[int, int] | None = None, sync: bool = True
) -> Iterator[io.BufferedWriter]:
    """Write the new `path` through the handle this yields, for content too large to hold in
    memory (a backup archive); `write_atomically` for the rest.

    The handle writes a temporary file with its final mode and owner; when the body ends, the
    file is synced and replaces `path` with one rename. When the body raises, the temporary
    file is removed and `path` is left as it was. The directory must exist.
    """
    temp = temp_path_for(path)
    try:
        with _new_file(temp, mode, sync) as handle:
            yield handle
        if owner is not None:
            os.chown(temp, *owner)
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
    if sync:
        fsync_directory(path.parent)


def _unchanged(path: Path, content: bytes, mode: int, owner: tuple[int, int] | None) -> bool:
    try:
        status = path.stat()
        if status.st_mode & 0o7777 != mode or status.st_size != len(content):
            return False
        if owner is not None and (status.st_uid, status.st_gid) != owner:
            return False
        return path.read_bytes() == content
    except FileNotFoundError:
        return False


def remove_stale_temp_files(directory: Path) -> None:
    """Remove temporary files a killed process left behind; they never became real files."""
    try:
        names = [entry.name for entry in directory.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if name.startswith(".") and TEMP_MARK in name:
            leftover = directory / name
            # On a read-only volume the leftover stays: harmless, it is never read.
            with contextlib.suppress(OSError):
                if leftover.is_dir() and not leftover.is_symlink():
                    import shutil  # here: it brings bz2 and lzma, rarely needed

                    shutil.rmtree(leftover)
                else:
                    leftover.unlink(missing_ok=True)
