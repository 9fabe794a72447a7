"""What every benchmark shares: the image, containers with published ports, timing, the report."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.container.dockercli import docker as docker  # the tests' helper, re-exported
from tests.container.dockercli import revision_build_args

ROOT = Path(__file__).resolve().parent.parent
# MAILBOOT_BENCH_IMAGE: another tag, so that two checkouts benchmarking at once don't build
# over each other's image.
IMAGE = os.environ.get("MAILBOOT_BENCH_IMAGE", "mailboot:bench")
BASE_IMAGE = "debian:trixie-slim"
HANDOVER = re.compile(r"handing over to the supervisor, ([\d.]+) s after the entrypoint started")


def build_image() -> None:
    print("benchmark: building the image", flush=True)
    docker("build", "-q", "-t", IMAGE, *revision_build_args(ROOT), str(ROOT), timeout=1800)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclass
class Figure:
    name: str
    value: str
    target: str = ""
    runs: str = ""


@dataclass
class Report:
    sections: list[tuple[str, str, list[Figure]]] = field(default_factory=list)

    def section(self, title: str, method: str) -> list[Figure]:
        figures: list[Figure] = []
        self.sections.append((title, method, figures))
        return figures

    def last_section(self) -> str:
        title, _, figures = self.sections[-1]
        return "\n".join([f"== {title}", *(f"  {f.name}: {f.value} {f.target}" for f in figures)])

    def markdown(self, machine: list[str], minutes: float, previous: str = "") -> str:
        """The whole file; sections this run did not measure are kept from `previous`."""
        lines = ["# Benchmarks", "",
                 "Written by `scripts/benchmark` (see the README); do not edit by hand. Each "
                 "figure is the median of the runs listed beside it.", "", "## Machine", ""]
        lines += [f"- {line}" for line in machine]
        lines += [f"- this run: {minutes:.1f} min", ""]
        ours = {title: self._section_text(method, figures)
                for title, method, figures in self.sections}
        kept = _sections(previous)
        for title in [*SECTION_ORDER, *ours]:
            text = ours.get(title) or kept.get(title)
            if text and f"## {title}" not in lines:
                lines += [f"## {title}", "", text.rstrip("\n"), ""]
        return "\n".join(lines)

    @staticmethod
    def _section_text(method: str, figures: list[Figure]) -> str:
        rows = [f"| {f.name} | {f.value} | {f.target} | {f.runs} |" for f in figures]
        return "\n".join([method.strip(), "", "| figure | median | target | runs |",
                          "|---|---|---|---|", *rows])


SECTION_ORDER = ("Boot", "Bare daemons", "Beside mox", "Footprint", "ACME", "Ready after DNS",
                 "Mail throughput", "Bulk import", "IMAP at scale")


def _sections(markdown: str) -> dict[str, str]:
    """`## Title` -> the text below it, from an earlier BENCHMARKS.md."""
    found: dict[str, str] = {}
    title = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            found[title] = ""
        elif title is not None:
            found[title] += line + "\n"
    found.pop("Machine", None)
    return {name: text.strip("\n") for name, text in found.items()}


def machine_lines() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    packages = {"Postfix": "postfix", "Dovecot": "dovecot-core", "OpenDKIM": "opendkim",
                "OpenDMARC": "opendmarc", "Unbound": "unbound", "bogofilter": "bogofilter-sqlite",
                "Python": "python3", "acme": "python3-acme", "cryptography": "python3-cryptography",
                "dnspython": "python3-dnspython"}
    query = " ".join(f"$(dpkg-query -W -f='${{Version}}' {name})" for name in packages.values())
    versions = docker("run", "--rm", "--entrypoint", "sh", IMAGE, "-c", f"echo {query}",
                      check=False).stdout.split()
    server = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    return [f"CPU: {cpu}, {os.cpu_count()} cores; memory {memory_kib / 1048576:.1f} GiB",
            f"kernel {platform.release()}; Docker {server}",
            "in the image (Debian packages): " + ", ".join(
                f"{label} {version}" for label, version in
                zip(packages, versions, strict=False))]


@dataclass
class Mail:
    """A mailboot container with its ports published on loopback."""

    name: str
    data: Path

    def ports(self) -> dict[int, int]:
        bindings = json.loads(docker("inspect", self.name).stdout)[0]["NetworkSettings"]["Ports"]
        return {int(key.split("/")[0]): int(value[0]["HostPort"])
                for key, value in (bindings or {}).items() if value}

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *argv: str, stdin: str | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess[str]:
        flags = ["-i"] if stdin is not None else []
        return docker("exec", *flags, self.name, *argv, stdin=stdin, timeout=timeout)

    def running(self) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.name).stdout.strip() == "true"

    def handover_seconds(self) -> list[float]:
        """Every boot's time from entrypoint start to the supervisor's exec, in order."""
        return [float(m) for m in HANDOVER.findall(self.logs())]

    def start_and_wait(self) -> tuple[float, float]:
        """`docker start`, then seconds until the SMTP banner on 25 and the greeting on 993."""
        started = time.monotonic()
        docker("start", self.name)
        return wait_for_greetings(self, started)

    def stop(self) -> None:
        docker("stop", "-t", "30", self.name)

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False)
        shutil.rmtree(self.data, ignore_errors=True)


def create_mail(env: dict[str, str], *, network: str | None = None, ip: str | None = None,
                dns: str | None = None, volumes: dict[str, str] | None = None,
                image: str = IMAGE, healthcheck: bool = True) -> Mail:
    """A container of `image` (not started); healthcheck False: without the image's
    HEALTHCHECK (`docker create --no-healthcheck`)."""
    data = Path(tempfile.mkdtemp(prefix="mailboot-bench-"))
    name = f"mailboot-bench-{secrets.token_hex(4)}"
    arguments = ["create", "--name", name, "--hostname", "mail.example.com",
                 "-v", f"{data}:/data", "-p", "127.0.0.1::25", "-p", "127.0.0.1::993"]
    if not healthcheck:
        arguments.append("--no-healthcheck")
    for host_path, container_path in (volumes or {}).items():
        arguments += ["-v", f"{host_path}:{container_path}:ro"]
    if network:
        arguments += ["--network", network]
    if ip:
        arguments += ["--ip", ip]
    env = dict(env)
    if dns:
        arguments += ["--dns", dns]
        # The container's own resolver forwards to the test DNS (no DNSSEC records there).
        env.setdefault("DNS_FORWARDERS", dns)
        env.setdefault("DNSSEC_VALIDATION", "off")
    for key, value in env.items():
        arguments += ["-e", f"{key}={value}"]
    docker(*arguments, image)
    return Mail(name, data)


def wait_for_greetings(mail: Mail, started: float, timeout: float = 600) -> tuple[float, float]:
    """Poll every 20 ms; each figure is the first moment its greeting arrived."""
    smtp = imap = None
    deadline = started + timeout
    ports: dict[int, int] = {}
    while smtp is None or imap is None:
        if time.monotonic() > deadline or not mail.running():
            raise RuntimeError(f"{mail.name} not ready:\n{mail.logs()[-3000:]}")
        ports = ports or mail.ports()
        if ports and smtp is None and _greets(ports[25], b"220", tls=False):
            smtp = time.monotonic() - started
        if ports and imap is None and _greets(ports[993], b"* OK", tls=True):
            imap = time.monotonic() - started
        time.sleep(0.02)
    return smtp, imap


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


def _greets(port: int, greeting: bytes, *, tls: bool) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as raw:
        if not tls:
            return raw.recv(100).startswith(greeting)
        with _INSECURE.wrap_socket(raw) as connection:
            return connection.recv(100).startswith(greeting)
    return False


@contextlib.contextmanager
def network() -> Iterator[tuple[str, str]]:
    """A Docker network of our own: (name, address prefix such as '172.31.40.')."""
    for third in range(40, 250):
        name = f"mailboot-bench-{third}"
        if docker("network", "create", "--subnet", f"172.31.{third}.0/24", name,
                  check=False).returncode == 0:
            try:
                yield name, f"172.31.{third}."
            finally:
                docker("network", "rm", name, check=False)
            return
    raise RuntimeError("no free subnet for the benchmark network")


def seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def runs_text(values: Sequence[float], unit: str = "s") -> str:
    return ", ".join(f"{v:.3f}" if v < 10 else f"{v:.1f}" for v in values) + f" {unit}"
