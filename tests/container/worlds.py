"""Worlds on the test network: our container beside the servers a test needs, as on the internet.

BIND serves the zones (ours as the user publishes them, the senders', the blocklists'); other
servers (senders, a receiving MTA, an SMTP sink, a port-25 helper) run at addresses of their own;
our container resolves through that BIND. One factory makes them all and removes them together,
last made first, whatever failed on the way; each test module says only what its world holds.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.container.containers import Container, unique_name
from tests.container.dockercli import docker
from tests.container.pebble_harness import DockerNetwork
from tests.container.zoneserver import ZoneServer, start_zone_server
from tests.polling import eventually

# Our container's settings in every world, unless a module says otherwise: one domain, and the
# self-signed certificate (no CA on the test network unless a module starts Pebble).
MAIL_DEFAULTS = {"MAIL_DOMAINS": "example.com", "TLS_MODE": "self-signed"}


@dataclass(frozen=True)
class Server:
    """Another server on the test network, at its own address: a container of some image."""

    name: str
    ip: str

    def exec(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        """What `argv`, run inside, printed."""
        flags = ["-i"] if stdin is not None else []
        return docker("exec", *flags, self.name, *argv, stdin=stdin, check=check).stdout

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr


@dataclass
class Scene:
    """What a test's world holds so far, and how to take it down."""

    network: DockerNetwork
    image: str  # ours, built from this checkout
    directory: Path  # data directories, zone files and the logs of removed containers
    _removals: list[Callable[[], object]] = field(default_factory=list)
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    def address(self) -> str:
        """The next free address on the test network (for a server started later)."""
        return self.network.allocate()

    def server(self, role: str, *argv: str, image: str | None = None, ip: str | None = None,
               options: tuple[str, ...] = ()) -> Server:
        """Start another server at `ip` (the next free address): `image` (ours by default, for
        its Python) with `options` for `docker run` (an --entrypoint, an -e) and `argv`."""
        server = Server(unique_name(f"mailboot-{role}"), ip or self.address())
        docker("run", "-d", "--name", server.name, "--network", self.network.name,
               "--ip", server.ip, *options, image or self.image, *argv)
        self._removals.append(lambda: self._remove(server))
        return server

    def zone_server(self, zones: dict[str, str]) -> ZoneServer:
        """BIND, serving `zones` (domain -> records in zone-file form)."""
        dns = start_zone_server(self.network, self._folder("zones"), zones)
        self._removals.append(dns.remove)
        return dns

    def mail(self, role: str, env: dict[str, str] | None = None, *, ip: str | None = None,
             dns: ZoneServer | None = None, accounts: dict[str, str] | None = None,
             public: bool = True, ready: bool = True) -> Container:
        """Our container, started, then (`ready`) waited for and given `accounts` (address ->
        password). Its public address is its own on the test network (`public`), where the
        world's senders reach it; it resolves through `dns`. `env` adds to or overrides
        MAIL_DEFAULTS."""
        ip = ip or self.address()
        settings = dict(MAIL_DEFAULTS)
        if public:
            settings["PUBLIC_IPV4"] = ip
        if dns is not None:
            settings["DNS_RESOLVERS"] = dns.ip
        mail = Container(unique_name(f"mailboot-{role}"), self._folder(f"{role}-data"),
                         {**settings, **(env or {})}, self.image, network=self.network.name,
                         ip=ip, dns=dns.ip if dns else None)
        self._removals.append(mail.remove)
        mail.start()
        if not ready:
            return mail
        mail.wait_ready()
        for address, password in (accounts or {}).items():
            mail.add_account(address, password)
        return mail

    def remove_all(self) -> None:
        """Remove what was made, last first; a removal that fails does not keep the others."""
        failed: list[Exception] = []
        while self._removals:
            try:
                self._removals.pop()()
            except Exception as error:  # raised below, once everything else is gone
                failed.append(error)
        if failed:
            raise failed[0]

    def _folder(self, name: str) -> Path:
        folder = self.directory / f"{name}-{next(self._numbers)}"
        folder.mkdir(parents=True)
        return folder

    def _remove(self, server: Server) -> None:
        """Remove a server, keeping its log for a failed test's post-mortem."""
        (self.directory / f"{server.name}.log").write_text(server.logs())
        docker("rm", "-f", server.name, check=False)


@contextlib.contextmanager
def scene(network: DockerNetwork, image: str, directory: Path) -> Iterator[Scene]:
    """An empty scene on `network`; everything made in it is removed at the end."""
    made = Scene(network, image, directory)
    try:
        yield made
    finally:
        made.remove_all()


def wait_for_smtp_banner(server: Server, timeout: float = 30) -> None:
    """Until the server's port 25 greets with 220 (asked from inside it, with bash)."""
    probe = "exec 3<>/dev/tcp/127.0.0.1/25 && head -c 3 <&3"
    eventually(lambda: server.exec("bash", "-c", probe, check=False) == "220", timeout,
               lambda: "the banner of " + server.name + ": " + server.logs()[-3000:],
               interval=0.3)
