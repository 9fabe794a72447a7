"""The docker command line, for tests and the benchmark harnesses that share them."""

from __future__ import annotations

import subprocess
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
