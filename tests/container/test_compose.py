"""The compose file users run: `docker compose up -d` (v2) and `docker-compose up -d` (v1)."""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.container.containers import ROOT
from tests.container.dockercli import docker
from tests.polling import eventually

pytestmark = pytest.mark.container


def compose_command() -> list[str]:
    """Whichever compose the machine has: users have v2 (`docker compose`), Debian ships v1."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True,
                      check=False).returncode == 0:
        return ["docker", "compose"]
    return [require_tool("docker-compose")]


def test_compose_file_is_valid() -> None:
    result = subprocess.run([*compose_command(), "-f", str(ROOT / "compose.yaml"), "config"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "mail-data" in result.stdout


def test_compose_up_runs_the_mail_server(image: str, tmp_path: Path) -> None:
    """The user's compose file, with ports moved to loopback-only ones for the test machine."""
    text = (ROOT / "compose.yaml").read_text()
    for port in (25, 465, 587, 993, 4190, 80, 443):
        text = text.replace(f'"{port}:{port}"', f'"127.0.0.1::{port}"')
    project = f"mailboot-compose-{secrets.token_hex(3)}"
    text = text.replace("build: .", f"build: {ROOT}").replace("image: mailboot:latest",
                                                              f"image: {image}")
    text = text.replace("container_name: mail", f"container_name: {project}")
    (tmp_path / "compose.yaml").write_text(text)
    command = [*compose_command(), "-p", project, "-f", str(tmp_path / "compose.yaml")]
    subprocess.run([*command, "up", "-d", "--no-build"], check=True, capture_output=True,
                   timeout=300)
    try:
        # "220-" from postscreen to a new client (the pregreet test), "220 " once it passed.
        eventually(lambda: banner(project)[4:26] == b"mail.example.com ESMTP", 90,
                   lambda: "the banner: " + docker("logs", project, check=False).stderr,
                   interval=1)
        # The records come beside the daemons' start, once Postfix listens.
        eventually(lambda: "IN MX    10 mail.example.com." in docker("logs", project).stdout, 60,
                   lambda: "the records: " + docker("logs", project, check=False).stdout,
                   interval=1)
    finally:
        subprocess.run([*command, "down", "-v"], check=False, capture_output=True, timeout=120)


def banner(container: str) -> bytes:
    published = docker("port", container, "25", check=False).stdout
    if not published:
        return b""
    port = int(published.splitlines()[0].rsplit(":", 1)[1])
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 5) as c:
        return c.recv(100)
    return b""
