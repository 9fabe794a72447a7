"""`mailboot backup`: an archive of DATA_DIR taken while the server runs.

Nothing is stopped. What keeps the copy consistent is how each daemon writes its files:
- Maildir (Dovecot): a message is written in `tmp/` and renamed into `new/`, then into `cur/`
  (where a flag change renames it again); its file never changes. `tmp/` is left out, a message
  is known by its folder and unique name (the part before `:2,`), and a file that vanishes between
  the listing and the copy was renamed: it is looked up again by that name in new/ and cur/.
- Postfix's queue: a message file is complete once its owner-execute bit is set (cleanup and
  postdrop set it last) and keeps its name (the queue ID) as it moves between incoming, active,
  deferred and hold. Incomplete files are left out; a message is known by its queue ID. Postfix
  renames restored files to match their new inode numbers by itself: `postfix start` runs
  postsuper's structure check (postfix-script, check-fatal).
- Files mailboot writes are replaced atomically (files.py): a copy holds the old or the new one.
- SQLite databases (bogofilter's word lists) are copied with SQLite's online backup, which
  restarts when a writer changes a page; Dovecot's index files and Postfix's btree caches,
  changed in place, are left out: both are rebuilt by their daemons.
The walk repeats until a pass finds nothing new and nothing vanished (at most PASSES times), so a
message moved between folders or queues while a pass was under way is still captured. Mail that
arrives during the backup may or may not be in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO

from mailboot.backup.archive import ArchiveWriter, Manifest, entry_for
from mailboot.base.errors import StateError
from mailboot.base.files import TEMP_MARK

log = logging.getLogger(__name__)

PASSES = 3
# Kept in memory up to this size; bigger files spill to a temporary file (the container's /tmp).
SPOOL_IN_MEMORY = 8 << 20
# Below spool/postfix: directories of message files, known by their queue ID.
MESSAGE_QUEUES = frozenset({"active", "corrupt", "deferred", "hold", "incoming", "maildrop",
                            "saved"})
# The queues where files are written (cleanup, postdrop); the others only receive them by rename.
# A file there is complete once its mode is u=rwx (MAIL_QUEUE_STAT_READY, mail_queue.h).
WRITTEN_QUEUES = frozenset({"incoming", "maildrop"})
# Below spool/postfix: sockets, FIFOs and the master's pid lock, made anew at every start.
QUEUE_RUNTIME = frozenset({"pid", "private", "public"})
# Dovecot rebuilds these from the Maildir and dovecot-uidlist (UIDs are kept by the latter);
# a copy taken while Dovecot writes one in place could be torn.
DOVECOT_INDEX_PREFIXES = ("dovecot.index", "dovecot.list.index", "dovecot-uidlist.lock")
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")

Key = tuple[str, ...]


@dataclass(frozen=True)
class BackupSummary:
    manifest: Manifest
    passes: int


def capture_key(relative: PurePosixPath) -> Key | None:
    """What identifies a file across renames while the server runs; None: leave it out."""
    parts, name = relative.parts, relative.name
    if any(TEMP_MARK in part for part in parts):
        return None  # an atomic write (or a restore) in flight: never a real file
    if parts[:2] == ("spool", "postfix") and len(parts) > 3:
        if parts[2] in QUEUE_RUNTIME:
            return None
        if parts[2] in MESSAGE_QUEUES:
            return ("queue", name)
    if parts[0] == "mail":
        folder = relative.parent
        if folder.name == "tmp":
            return None
        if folder.name in ("new", "cur"):
            return ("message", str(folder.parent), name.split(":", 1)[0])
        if name.startswith(DOVECOT_INDEX_PREFIXES):
            return None
    if parts[0] == "postfix" and name.endswith(".db"):
        return None  # Postfix's btree caches (postscreen's verdicts): refilled by themselves
    if name.endswith(SQLITE_SIDE_FILES):
        return None  # the database itself is copied whole, with SQLite's backup
    return ("path", str(relative))


def _descend(relative: PurePosixPath) -> bool:
    """Directories left out whole: atomic writes and restores in flight, and the filesystem's
    own lost+found where DATA_DIR is a filesystem's root."""
    return TEMP_MARK not in relative.name and str(relative) != "lost+found"


def take_backup(data_dir: Path, stream: IO[bytes], now: datetime,
                passes: int = PASSES, after_pass: Callable[[int], None] | None = None,
                ) -> BackupSummary:
    """Write an archive of `data_dir` to `stream`. Raises StateError when it can't be read.

    `after_pass` is called with each pass's number (tests change the tree between passes)."""
    if not data_dir.is_dir():
        raise StateError(f"DATA_DIR {data_dir} is not a directory: there is nothing to back up "
                         "(is the volume mounted?)")
    writer = ArchiveWriter(stream)
    captured: set[Key] = set()
    number = 0
    for number in range(1, passes + 1):
        outcomes = _one_pass(data_dir, writer, captured)
        if after_pass is not None:
            after_pass(number)
        changed = outcomes[ADDED] + outcomes[VANISHED]
        if number > 1 and changed == 0:
            break
        if number == passes and number > 1:
            log.info("backup: %d file(s) appeared or moved during the last pass: they are in "
                     "the next backup", changed)
    return BackupSummary(writer.finish(now), number)


# What became of one listed entry.
ADDED, SKIPPED, VANISHED = "added", "skipped", "vanished"
# Attempts to find a message Dovecot renamed between the listing and the copy: a client may set
# and clear flags faster than one attempt takes.
RENAME_ATTEMPTS = 20


def _one_pass(data_dir: Path, writer: ArchiveWriter, captured: set[Key]) -> Counter[str]:
    """Walk the tree once, adding what no earlier pass captured; count the outcomes."""
    outcomes: Counter[str] = Counter()
    for directory, dirnames, filenames in os.walk(data_dir):
        here = PurePosixPath(Path(directory).relative_to(data_dir).as_posix())
        # new/ before cur/: a message renamed from one into the other during the walk is
        # listed in the second if it has left the first.
        dirnames[:] = sorted((name for name in dirnames if _descend(here / name)),
                             key=lambda name: (name != "new", name))
        # os.walk lists a symlink to a directory (tls/live) among the directories.
        for name in [*dirnames, *sorted(filenames)]:
            outcomes[_add(data_dir, here / name, writer, captured)] += 1
    return outcomes


def _add(data_dir: Path, relative: PurePosixPath, writer: ArchiveWriter,
         captured: set[Key]) -> str:
    """Add one listed entry unless it is captured already or left out."""
    parent = relative.parent
    if str(parent) != "." and ("dir", str(parent)) not in captured:
        return SKIPPED  # its directory vanished before it was captured: a later pass takes both
    try:
        with _reading(data_dir / relative):
            return _copy(data_dir, relative, writer, captured)
    except FileNotFoundError:
        pass  # renamed or removed since the listing
    key = capture_key(relative)
    if key is not None and key[0] == "message" and key not in captured:
        with _reading(data_dir / relative):
            return _add_renamed_message(data_dir, relative, key, writer, captured)
    return VANISHED  # a later pass finds it if it was renamed


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Anything but a vanished file stops the backup: the archive would lack it."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, sqlite3.Error) as error:
        raise StateError(f"can't read {path} for the backup: {error}; the archive is "
                         "incomplete (a restore refuses it)") from error


def _copy(data_dir: Path, relative: PurePosixPath, writer: ArchiveWriter,
          captured: set[Key]) -> str:
    """Add the entry at `relative`; raises FileNotFoundError when it is gone."""
    path = data_dir / relative
    status = os.lstat(path)
    kind = stat.S_IFMT(status.st_mode)
    key = ("dir", str(relative)) if kind == stat.S_IFDIR else capture_key(relative)
    if key is None or key in captured:
        return SKIPPED
    if kind == stat.S_IFDIR:
        writer.add(entry_for(str(relative), status))
    elif kind == stat.S_IFLNK:
        writer.add(entry_for(str(relative), status, target=str(path.readlink())))
    elif kind != stat.S_IFREG or not _add_regular(path, relative, key, writer):
        return SKIPPED  # sockets and FIFOs are made anew by their daemons
    captured.add(key)
    return ADDED


def _add_renamed_message(data_dir: Path, relative: PurePosixPath, key: Key,
                         writer: ArchiveWriter, captured: set[Key]) -> str:
    """Dovecot renamed the message after the listing (new/ to cur/, or a flag change in cur/):
    look it up again by its unique name, in both, a few times."""
    folder = relative.parent.parent
    for _ in range(RENAME_ATTEMPTS):
        for subdirectory in ("new", "cur"):
            try:
                names = [entry.name for entry in (data_dir / folder / subdirectory).iterdir()]
            except FileNotFoundError:
                continue
            for name in names:
                if name.split(":", 1)[0] == key[2]:
                    with contextlib.suppress(FileNotFoundError):
                        return _copy(data_dir, folder / subdirectory / name, writer, captured)
    return VANISHED  # expunged


def _add_regular(path: Path, relative: PurePosixPath, key: Key, writer: ArchiveWriter) -> bool:
    """Copy one file into the archive; False when it is a queue file still being written."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as source:
        status = os.fstat(descriptor)
        if (key[0] == "queue" and relative.parts[2] in WRITTEN_QUEUES
                and not status.st_mode & stat.S_IXUSR):
            return False  # still being written: the sender has no answer yet
        if source.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
            try:
                with _sqlite_copy(path) as copy, copy.open("rb") as snapshot:
                    _add_content(snapshot, relative, status, writer)
                return True
            except sqlite3.Error as error:  # a hot journal can't be rolled back read-only
                log.warning("backup: SQLite could not copy %s (%s): copied as it is", path,
                            error)
        source.seek(0)
        _add_content(source, relative, status, writer)
    return True


def _add_content(source: IO[bytes], relative: PurePosixPath, status: os.stat_result,
                 writer: ArchiveWriter) -> None:
    """Spool the content once (so size and checksum describe exactly what is archived)."""
    digest, size = hashlib.sha256(), 0
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            spool.write(chunk)
            size += len(chunk)
        spool.seek(0)
        writer.add(entry_for(str(relative), status, size=size, sha256=digest.hexdigest()),
                   spool)


@contextlib.contextmanager
def _sqlite_copy(path: Path) -> Iterator[Path]:
    """A consistent copy of a live SQLite database (SQLite's online backup), read-only on it."""
    with tempfile.TemporaryDirectory(prefix="mailboot-backup-") as directory:
        copy = Path(directory) / "copy.db"
        source = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            target = sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
        yield copy
