"""Running programs and handing files to the daemons' users: the one place that does either.

Every call runs an argv list with check semantics and carries the program's stderr into the error.
Children get `CHILD_ENV`, never our own environment (which may hold secrets).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from mailboot.base.errors import CommandError, StateError

# The fixed, minimal environment of every program we start (daemons and their tools).
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def run(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60,
        new_session: bool = False, strict: bool = False) -> str:
    """Run a program, return its stdout; raise CommandError with its stderr when it fails.

    `strict`: anything on stderr counts as failure too. Secrets go on stdin, never in argv.
    """
    try:
        result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                                env=CHILD_ENV, timeout=timeout, check=False,
                                start_new_session=new_session)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CommandError(f"`{' '.join(argv)}` could not run: {error}") from error
    if result.returncode != 0 or (strict and result.stderr.strip()):
        said = (result.stderr or result.stdout).strip()
        raise CommandError(f"`{' '.join(argv)}` failed (exit {result.returncode}): {said}")
    return result.stdout


def succeeds(argv: Sequence[str], timeout: float = 30) -> bool:
    """True when the program exits 0 (a question, such as `postfix status`, not an action)."""
    try:
        return subprocess.run(list(argv), capture_output=True, env=CHILD_ENV, timeout=timeout,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def chown(path: Path, owner: tuple[int, int]) -> None:
    """Give `path` to a daemon's user (only when it isn't theirs already)."""
    status = path.stat()
    if (status.st_uid, status.st_gid) != owner:
        try:
            os.chown(path, *owner)
        except OSError as error:
            raise StateError(f"can't hand {path} to its daemon: {error.strerror}") from error
