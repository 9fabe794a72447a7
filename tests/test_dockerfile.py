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


def run_instructions() -> list[str]:
    """Each RUN instruction as one line: continuations joined, comment lines inside dropped."""
    instructions: list[str] = []
    current: list[str] | None = None
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if current is None:
            if not stripped.startswith("RUN "):
                continue
            current = []
        if stripped.startswith("#"):
            continue
        current.append(stripped.removesuffix("\\").strip())
        if not stripped.endswith("\\"):
            instructions.append(" ".join(current))
            current = None
    return instructions


def install_instruction() -> str:
    (install,) = [run for run in run_instructions() if "apt-get install" in run]
    return install


def test_dpkg_leaves_documentation_out_before_the_install() -> None:
    """The rule is written in the installing RUN, before apt-get: a later layer can't shrink it."""
    install = install_instruction()
    start = install.index("apt-get install")
    for path in ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*"):
        assert -1 < install.find(f"'path-exclude={path}'") < start, path
    assert -1 < install.find("> /etc/dpkg/dpkg.cfg.d/") < start
    assert "'path-include=/usr/share/doc/*/copyright'" in install
    # Without its manual pages, `postfix set-permissions` stops at the first one it misses.
    assert start < install.find("manpage_directory")


def test_the_install_leaves_no_package_cache_in_its_layer() -> None:
    install = install_instruction()
    start = install.index("apt-get install")
    for cleanup in ("apt-get clean", "rm -rf /var/lib/apt/lists/*"):
        assert start < install.find(cleanup), cleanup
