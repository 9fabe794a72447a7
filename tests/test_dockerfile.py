"""The Dockerfile passes hadolint; each exception is justified in a comment beside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import require_tool

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def test_hadolint_is_clean() -> None:
    result = subprocess.run([require_tool("hadolint"), str(DOCKERFILE)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_exception_says_why() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"# hadolint ignore=(\S+)", line)
        if match:
            assert match.group(1) in lines[index - 1], f"explain {match.group(1)} at line {index}"


def test_every_exposed_port_has_a_comment() -> None:
    text = DOCKERFILE.read_text()
    (exposed,) = re.findall(r"^EXPOSE (.+)$", text, re.MULTILINE)
    for port in exposed.split():
        assert re.search(rf"^# {port}: \S", text, re.MULTILINE), f"port {port} lacks a comment"
