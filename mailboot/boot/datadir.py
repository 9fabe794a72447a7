"""DATA_DIR at the start of every boot: writable, rid of a killed start's leftovers, and the
last run forgotten. Light on purpose: the warm start (`warmstart`) runs it too."""

from __future__ import annotations

import os
from pathlib import Path

from mailboot.base.errors import StateError
from mailboot.base.files import remove_stale_temp_files
from mailboot.base.paths import Paths


def begin(paths: Paths) -> None:
    """Raises StateError when DATA_DIR can't hold what the boot keeps there."""
    check_data_dir(paths)
    remove_leftovers(paths)
    forget_the_last_run(paths)


def check_data_dir(paths: Paths) -> None:
    """DATA_DIR must be a directory we can write: say so plainly before anything else runs.

    access(2) answers without writing anything (EROFS for a read-only mount), so a refused
    start leaves DATA_DIR exactly as it was.
    """
    directory = paths.data_dir
    if not directory.exists():
        return  # made by the first stage that needs it
    if not directory.is_dir():
        raise StateError(f"DATA_DIR {directory} is a file, not a directory: mount a directory "
                         "(a volume) there")
    if not os.access(directory, os.W_OK):
        raise StateError(f"DATA_DIR {directory} is read-only here: mount it read-write; mailboot "
                         "keeps its keys, certificates, mail and queue there")


def remove_leftovers(paths: Paths) -> None:
    """Temporary files of a start that was killed mid-write never became real files: remove
    them where we write atomically (the DKIM directories clean themselves as they are read)."""
    for root in (paths.accounts_dir, paths.tls_dir, paths.data_dir / "acme"):
        for directory, _, _ in os.walk(root):
            remove_stale_temp_files(Path(directory))


def forget_the_last_run(paths: Paths) -> None:
    """The run directory survives `docker restart`: the worker's memory of the last run (and
    challenges it left) would hold its first run of this start back, and a start is when it
    says where everything stands. Its kept problems stay, for `mailboot status`."""
    paths.worker_state.unlink(missing_ok=True)
    if paths.acme_challenges.is_dir():
        for challenge in paths.acme_challenges.iterdir():
            challenge.unlink(missing_ok=True)
