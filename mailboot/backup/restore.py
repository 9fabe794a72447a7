"""`mailboot restore`: put a backup into DATA_DIR, all of it or nothing.

The archive is unpacked into a staging directory inside DATA_DIR (the same filesystem, so moving
it into place is a few renames) and checked entry by entry against its manifest. Only a complete,
matching archive is moved into place; a truncated or damaged one leaves DATA_DIR as it was.
A restore is meant for a container that doesn't run the server (`docker run --rm -i -v VOLUME:/data
IMAGE restore -`): it refuses while mail daemons run here, or while Postfix holds the volume's
queue lock from another container.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
from pathlib import Path
from typing import IO

from mailboot.backup.archive import Manifest, apply_metadata, extract_verified
from mailboot.base.errors import StateError
from mailboot.base.files import TEMP_MARK, fsync_directory, remove_stale_temp_files

# The programs of the mail server (as /proc/PID/comm names them): Postfix's master, Dovecot, ...
DAEMON_PROGRAMS = frozenset({"master", "dovecot", "opendkim", "opendmarc", "unbound"})
# Entries an empty volume may hold: ext4 makes lost+found at a filesystem's root.
NOT_CONTENT = frozenset({"lost+found"})
# Postfix's master holds an exclusive lock on this file while it runs (relative to DATA_DIR).
MASTER_LOCK = Path("spool/postfix/pid/master.pid")


def restore(stream: IO[bytes], data_dir: Path, *, force: bool, proc: Path = Path("/proc"),
            ) -> Manifest:
    """Restore the archive read from `stream` into `data_dir`, replacing what is there only
    with `force`. Raises StateError (refused, nothing changed) or ArchiveError (the archive is
    truncated or damaged; nothing changed)."""
    refuse_while_running(data_dir, proc)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StateError(f"can't create DATA_DIR {data_dir}: {error.strerror}; mount a "
                         "writable volume there") from error
    if not data_dir.is_dir():
        raise StateError(f"DATA_DIR {data_dir} is a file, not a directory: mount a directory "
                         "(a volume) there")
    remove_stale_temp_files(data_dir)  # a restore that was killed left its staging behind
    present = sorted(p.name for p in data_dir.iterdir() if p.name not in NOT_CONTENT)
    if present and not force:
        raise StateError(f"DATA_DIR {data_dir} is not empty (it holds {', '.join(present[:5])}"
                         f"{', ...' if len(present) > 5 else ''}): restore into a new volume, or "
                         "add --force to replace everything in it")
    staging = data_dir / f".restore{TEMP_MARK}{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    try:
        try:
            manifest = extract_verified(stream, staging)
            apply_metadata(staging, manifest.entries, owners=os.geteuid() == 0)
        except OSError as error:
            raise StateError(f"can't unpack into {data_dir}: {error}; nothing was restored "
                             "(is the volume full?)") from error
        replace_contents(data_dir, staging, present)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def refuse_while_running(data_dir: Path, proc: Path) -> None:
    """Raise StateError while the mail server runs here or holds the volume's queue."""
    running = running_daemons(proc)
    if running:
        raise StateError(f"the mail server is running here ({', '.join(running)}): restore in a "
                         "container of its own, `docker run --rm -i -v VOLUME:/data IMAGE restore "
                         "-`, with the server's container stopped")
    if postfix_holds_lock(data_dir / MASTER_LOCK):
        raise StateError(f"Postfix is running on {data_dir} in another container: stop that "
                         "container before restoring into its volume")


def running_daemons(proc: Path) -> list[str]:
    """The mail daemons among this PID namespace's processes."""
    found = set()
    try:
        entries = list(proc.iterdir())
    except OSError:
        return []  # no /proc mounted: nothing to see
    for entry in entries:
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                name = (entry / "comm").read_text().strip()
                if name in DAEMON_PROGRAMS:
                    found.add(name)
    return sorted(found)


def postfix_holds_lock(lock: Path) -> bool:
    """True when another process holds the master's lock (flock, as Postfix takes it on Linux)."""
    try:
        descriptor = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        return error.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(descriptor)
    return False


def replace_contents(data_dir: Path, staging: Path, present: list[str]) -> None:
    """Move the staged entries into DATA_DIR; what was there (--force) goes aside first and is
    deleted once the new entries are in place."""
    aside = None
    if present:
        aside = data_dir / f".replaced{TEMP_MARK}{secrets.token_hex(4)}"
        aside.mkdir(mode=0o700)
        for name in present:
            (data_dir / name).rename(aside / name)
    for entry in sorted(staging.iterdir()):
        entry.rename(data_dir / entry.name)
    fsync_directory(data_dir)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
