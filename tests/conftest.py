"""Shared fixtures: a fixed clock, environments, and third-party tools that must exist in CI."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailboot import dkim
from mailboot.dkim import DomainKeys
from mailboot.paths import Paths
from mailboot.settings import Settings, load_settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def require_tool(name: str) -> str:
    """The path of a program a test needs; missing is a failure in CI and a skip elsewhere."""
    # Tools installed from PyPI (hadolint) live beside this Python, which may not be on PATH.
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path:
        return path
    message = f"{name} is not installed (scripts/test installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_settings(data_dir: Path) -> Callable[..., Settings]:
    """Settings from keyword variables; DATA_DIR defaults to the test's own directory."""

    def make(**variables: str) -> Settings:
        environ = {"DATA_DIR": str(data_dir), **variables}
        return load_settings(environ)

    return make


@pytest.fixture
def make_keys(data_dir: Path) -> Callable[[Settings], tuple[DomainKeys, ...]]:
    def make(settings: Settings) -> tuple[DomainKeys, ...]:
        return dkim.ensure_keys(Paths(settings.data_dir), settings.domains, NOW)

    return make


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file below `directory` with its bytes, mode and mtime: to prove nothing changed."""
    if not directory.exists():
        return {}
    return {
        str(path.relative_to(directory)): (
            path.read_bytes() if path.is_file() else b"",
            path.stat().st_mode,
            path.stat().st_mtime_ns,
        )
        for path in sorted(directory.rglob("*"))
    }
