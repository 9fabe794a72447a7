"""Our image as users run it: one container, its published ports, its log and its /data.

Ports are published on 127.0.0.1 only, on ports Docker picks; /data is a directory of the test,
so the test can look at what the container keeps. Names are random: several test processes (and
other checkouts on the machine) run containers side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.container.dockercli import docker
from tests.polling import eventually

ROOT = Path(__file__).resolve().parent.parent.parent
# A worktree of its own may build and test its own image beside another one.
IMAGE = os.environ.get("MAILBOOT_TEST_IMAGE", "mailboot:test")
PORTS = (25, 465, 587, 993, 4190, 80, 443)
BOOT_TIMEOUT = 90.0


def insecure_context() -> ssl.SSLContext:
    """The container starts on a self-signed certificate: test clients accept it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def unique_name(prefix: str) -> str:
    """A container name no other test process picks: `prefix` and random hex."""
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass
class Container:
    name: str
    data: Path
    env: dict[str, str]
    image: str
    ports: dict[int, int] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)  # host path -> container path
    network: str | None = None
    ip: str | None = None
    dns: str | None = None  # the test DNS server the container resolves through
    run_options: tuple[str, ...] = ()  # more `docker run` options, e.g. ("--ulimit", "...")

    def start(self) -> None:
        arguments = ["run", "-d", "--name", self.name, "--hostname", "mail.example.com",
                     "-v", f"{self.data}:/data", *self.run_options]
        for host_path, container_path in self.volumes.items():
            arguments += ["-v", f"{host_path}:{container_path}:ro"]
        if self.network:
            arguments += ["--network", self.network]
        if self.ip:
            arguments += ["--ip", self.ip]
        env = dict(self.env)
        if self.dns:
            arguments += ["--dns", self.dns]
            # The daemons resolve through the container's own Unbound, which forwards to the
            # test DNS; that serves only the test zones, without DNSSEC records to validate.
            env.setdefault("DNS_FORWARDERS", self.dns)
            env.setdefault("DNSSEC_VALIDATION", "off")
        for key, value in env.items():
            arguments += ["-e", f"{key}={value}"]
        for port in PORTS:
            arguments += ["-p", f"127.0.0.1::{port}"]
        docker(*arguments, self.image)
        self.read_ports()

    def read_ports(self) -> None:
        inspect = json.loads(docker("inspect", self.name).stdout)[0]
        bindings = inspect["NetworkSettings"]["Ports"] or {}
        self.ports = {int(key.split("/")[0]): int(value[0]["HostPort"])
                      for key, value in bindings.items() if value}

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def log_tail(self, characters: int = 4000) -> str:
        """The end of the log, for a failure message."""
        return self.logs()[-characters:]

    def wait_for_log(self, text: str, timeout: float = 60) -> str:
        """Until `text` appears in the log (a decision was made); returns the whole log."""
        def logged() -> str | None:
            logs = self.logs()
            if text in logs:
                return logs
            assert self.state()["Running"], f"the container stopped:\n{logs[-4000:]}"
            return None

        return eventually(logged, timeout, lambda: f"{text!r} in the log:\n{self.log_tail()}")

    def wait_for_count(self, text: str, more_than: int, timeout: float = 60) -> str:
        """Until `text` is in the log more than `more_than` times (the log spans every start
        of the container); returns the whole log."""
        def logged() -> str | None:
            logs = self.logs()
            return logs if logs.count(text) > more_than else None

        return eventually(logged, timeout,
                          lambda: f"a new {text!r} in the log:\n{self.log_tail()}")

    def exec(self, *argv: str, stdin: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        flags = ["-i"] if stdin is not None else []
        return docker("exec", *flags, self.name, *argv, stdin=stdin, check=check)

    def restart_count(self) -> int:
        return int(json.loads(docker("inspect", self.name).stdout)[0]["RestartCount"])

    def state(self) -> dict[str, object]:
        return dict(json.loads(docker("inspect", self.name).stdout)[0]["State"])

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Until the SMTP banner and the IMAPS greeting arrive (what users wait for)."""
        def ready() -> bool:
            if not self.state()["Running"]:
                raise AssertionError(f"the container stopped:\n{self.logs()}")
            self.read_ports()
            return bool(self.ports) and _smtp_answers(self.ports[25]) \
                and _imaps_answers(self.ports[993])

        eventually(ready, timeout, lambda: f"{self.name} to be ready:\n{self.logs()}")

    def wait_exit(self, timeout: float = 60) -> int:
        def stopped() -> dict[str, object] | None:
            state = self.state()
            return None if state["Running"] else state

        state = eventually(stopped, timeout, f"{self.name} to exit", interval=0.3)
        return int(str(state["ExitCode"]))

    def add_account(self, address: str, password: str) -> None:
        self.exec("mailboot", "account", "add", address, "--password-stdin",
                  stdin=password + "\n")

    def smtp(self, port: int, *, implicit_tls: bool = False) -> smtplib.SMTP:
        host_port = self.ports[port]
        if implicit_tls:
            return smtplib.SMTP_SSL("127.0.0.1", host_port, timeout=30,
                                    context=insecure_context())
        return smtplib.SMTP("127.0.0.1", host_port, timeout=30)

    def remove(self) -> None:
        """Remove the container, keeping its log beside /data for a failed test's post-mortem."""
        with contextlib.suppress(OSError, AssertionError):
            (self.data.parent / f"{self.name}.log").write_text(self.logs())
        docker("rm", "-f", "-v", self.name, check=False)


def _smtp_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as c:
        return c.recv(100).startswith(b"220")
    return False


def _imaps_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as raw, \
            insecure_context().wrap_socket(raw) as connection:
        return connection.recv(100).startswith(b"* OK")
    return False


@contextlib.contextmanager
def running(image: str, data: Path, env: dict[str, str], prefix: str,
            accounts: dict[str, str] | None = None,
            run_options: tuple[str, ...] = ()) -> Iterator[Container]:
    """A started container, ready and with `accounts` (address -> password), removed after."""
    container = Container(unique_name(prefix), data, env, image, run_options=run_options)
    container.start()
    try:
        container.wait_ready()
        for address, password in (accounts or {}).items():
            container.add_account(address, password)
        yield container
    finally:
        container.remove()
