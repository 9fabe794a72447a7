"""The docker command line, for tests and the benchmark harnesses that share them."""

from __future__ import annotations

import contextlib
import fcntl
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def docker(*args: str, check: bool = True, timeout: float = 120,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, input=stdin,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr}{result.stdout}")
    return result


def git_commit(root: Path, revision: str = "HEAD") -> str | None:
    """The full commit name of `revision` in the checkout at `root`; None outside a git
    checkout (a source archive) or when git doesn't know it."""
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet",
                                 f"{revision}^{{commit}}"], capture_output=True, text=True,
                                timeout=30, check=False)
    except OSError:  # no git on this machine
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def revision_build_args(root: Path) -> list[str]:
    """The image's org.opencontainers.image.revision label for a build of the checkout at
    `root`: its commit, or nothing (the Dockerfile's default, unknown) outside git."""
    commit = git_commit(root)
    return ["--build-arg", f"REVISION={commit}"] if commit else []
@contextlib.contextmanager
def one_build_at_a_time(tag: str) -> Iterator[None]:
    """Hold the machine-wide lock for building `tag` (a context manager, or a decorator).

    pytest-xdist's workers each want the same images; Docker 20.10's builder runs two builds
    of one Dockerfile side by side, step for step. Under the lock the first builds and the rest
    find every layer in the cache. The lock is a file's flock(2), let go when its holder ends.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", tag)
    path = Path(tempfile.gettempdir()) / f"mailboot-test-build-{name}.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(tag: str, context: Path, timeout: float = 900) -> str:
    """`docker build` of a helper image (BIND, Pebble, a receiving MTA), one at a time."""
    with one_build_at_a_time(tag):
        docker("build", "--quiet", "-t", tag, str(context), timeout=timeout)
    return tag
