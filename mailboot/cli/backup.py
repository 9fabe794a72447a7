"""`mailboot backup` and `mailboot restore`: the archive on a file or a pipe.

Neither needs the mail settings (a restore runs in a container of its own, before the server's
first start): only DATA_DIR. The archive goes to stdout or comes from stdin with `-`; the log
goes to stderr, so `docker exec mail mailboot backup - > backup.tar` holds the archive alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from mailboot.backup import restore
from mailboot.backup import take as backup
from mailboot.base.errors import ConfigError, StateError, UsageError
from mailboot.base.files import replace_atomically
from mailboot.base.formats import format_size, human_time
from mailboot.settings.values import SettingValueError, parse_data_dir

log = logging.getLogger(__name__)

COMMANDS = ("backup", "restore")


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    take = commands.add_parser("backup", help="write an archive of DATA_DIR (keys, certificates, "
                               "accounts, mail, queue) while the server runs")
    take.add_argument("file", nargs="?", default="-", metavar="FILE",
                      help="where to write it; - (the default) for standard output")
    take.set_defaults(run=run_backup)
    put = commands.add_parser("restore", help="put a backup into an empty DATA_DIR (in a "
                              "container that doesn't run the server)")
    put.add_argument("file", nargs="?", default="-", metavar="FILE",
                     help="the archive; - (the default) for standard input")
    put.add_argument("--force", action="store_true",
                     help="replace what DATA_DIR holds (refused without it unless it is empty)")
    put.set_defaults(run=run_restore)


def data_dir(environ: Mapping[str, str]) -> Path:
    """DATA_DIR as the settings table reads it (the other settings aren't needed here)."""
    try:
        return parse_data_dir(environ.get("DATA_DIR", "/data"))
    except SettingValueError as error:
        raise ConfigError([f"DATA_DIR: {error}"]) from None


def run_backup(arguments: argparse.Namespace, environ: Mapping[str, str]) -> int:
    directory, started = data_dir(environ), time.monotonic()
    now = datetime.now(UTC)
    if arguments.file == "-":
        if sys.stdout.isatty():
            raise UsageError("backup: standard output is a terminal; redirect it to a file "
                             "(`mailboot backup - > backup.tar`) or name a FILE")
        summary = backup.take_backup(directory, sys.stdout.buffer, now)
    else:
        summary = _backup_to_file(directory, Path(arguments.file), now)
    manifest = summary.manifest
    log.info("backup: %d entries, %d files, %s of %s in %d pass(es), %.1f s",
             len(manifest.entries), manifest.files, format_size(manifest.size), directory,
             summary.passes, time.monotonic() - started)
    return 0


def _backup_to_file(directory: Path, target: Path, now: datetime) -> backup.BackupSummary:
    """Written under a temporary name and renamed: FILE is a whole archive or isn't there.
    Mode 0600: the archive holds private keys and password hashes."""
    target = target.absolute()
    if target.resolve().is_relative_to(directory.resolve()):
        raise UsageError(f"backup: {target} is inside DATA_DIR {directory}, which is what is "
                         "being archived; write it elsewhere (a mounted directory) or to -")
    try:
        with replace_atomically(target, mode=0o600) as handle:
            return backup.take_backup(directory, handle, now)
    except OSError as error:
        raise StateError(f"backup: can't write {target}: {error.strerror}") from error


def run_restore(arguments: argparse.Namespace, environ: Mapping[str, str]) -> int:
    directory, started = data_dir(environ), time.monotonic()
    if arguments.file == "-":
        if sys.stdin.isatty():
            raise UsageError("restore: standard input is a terminal; give the archive on it "
                             "(`docker run --rm -i ... restore - < backup.tar`) or name a FILE")
        manifest = restore.restore(sys.stdin.buffer, directory, force=arguments.force)
    else:
        source = Path(arguments.file)
        if not source.is_file():
            raise UsageError(f"restore: {source} is not a file; name the archive, or give it on "
                             "standard input with -")
        with source.open("rb") as handle:
            manifest = restore.restore(handle, directory, force=arguments.force)
    log.info("restore: %d entries, %d files, %s of a backup taken %s, into %s, %.1f s; "
             "start the server on it", len(manifest.entries), manifest.files,
             format_size(manifest.size), _taken(manifest.created), directory,
             time.monotonic() - started)
    return 0


def _taken(created: str) -> str:
    """The manifest's time for people; as written when it isn't one (a damaged manifest)."""
    try:
        return human_time(datetime.fromisoformat(created))
    except ValueError:
        return created
