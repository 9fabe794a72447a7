"""Shared fixtures: a fixed clock, environments, a fake DNS server on loopback, and third-party
tools that must exist in CI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailboot.acme.issuer import Issued
from mailboot.base.errors import IssueError
from mailboot.base.paths import Paths
from mailboot.dkim import keys as dkim
from mailboot.dkim.keys import DomainKeys
from mailboot.settings.table import Settings, load_settings

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


class FakeDns:
    """A DNS server on a loopback UDP port that answers from `records`, which a test may change
    at any time: a stand-in for a system resolver or a zone's name servers.

    Every name below a zone in `zones` is answered authoritatively (NXDOMAIN or no data with the
    zone's SOA, as `dns.resolver.zone_for_name` needs); `mode` makes it stay silent or answer
    every question with SERVFAIL or REFUSED, as broken resolvers do.
    """

    def __init__(self, address: str = "127.0.0.1", port: int = 0) -> None:
        self.records: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.zones: set[str] = set()
        self.mode = "answer"  # or "silent", "SERVFAIL", "REFUSED"
        self.drop_next = 0  # datagrams to lose before answering again, as a lossy network does
        # Names whose answers a validating resolver would mark authenticated (the AD bit, given
        # only to a question that asks for it: RFC 6840 §5.7).
        self.validated: set[str] = set()
        self.asked: list[tuple[str, str]] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((address, port))
        self._socket.settimeout(0.05)
        self.address, self.port = self._socket.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def add(self, name: str, rtype: str, *values: str, ttl: int = 300) -> None:
        """Publish `values` at the absolute `name` (without the final dot)."""
        self.records[(name.lower().rstrip(".") + ".", rtype)] = (ttl, list(values))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            if self.drop_next > 0:
                self.drop_next -= 1
                continue
            response = self._answer(dns.message.from_wire(wire))
            if response is not None:
                self._socket.sendto(response.to_wire(), client)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name, rtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
        self.asked.append((name, rtype))
        response = dns.message.make_response(query)
        if self.mode == "silent":
            return None
        if self.mode != "answer":
            response.set_rcode(dns.rcode.from_text(self.mode))
            return response
        zone = max((z for z in self.zones if name == z or name.endswith("." + z)), key=len,
                   default=None)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        response.flags |= dns.flags.AA
        if (name, rtype) in self.records:
            ttl, values = self.records[(name, rtype)]
            response.answer.append(dns.rrset.from_text(name, ttl, "IN", rtype, *values))
            if name.rstrip(".") in self.validated and query.flags & dns.flags.AD:
                response.flags |= dns.flags.AD
            return response
        if rtype == "SOA" and name == zone:
            response.answer.append(self._soa(zone))
            return response
        if not any(known == name for known, _ in self.records) and name != zone:
            response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(self._soa(zone))
        return response

    @staticmethod
    def _soa(zone: str) -> dns.rrset.RRset:
        return dns.rrset.from_text(zone, 60, "IN", "SOA",
                                   f"ns1.{zone} hostmaster.{zone} 1 7200 3600 1209600 60")


@pytest.fixture
def fake_dns() -> Iterator[Callable[..., FakeDns]]:
    """Start fake DNS servers on loopback (`fake_dns()`, or `fake_dns("127.0.0.2", port)`)."""
    servers: list[FakeDns] = []

    def start(address: str = "127.0.0.1", port: int = 0) -> FakeDns:
        servers.append(FakeDns(address, port))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def closed_port() -> int:
    """A loopback UDP port where nothing listens (free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# A certificate's lifetime at the fake CA, as at Let's Encrypt.
LIFETIME = timedelta(days=90)


class FakeCa:
    """Issues real certificates from a throwaway CA; records every order."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake CA")])
        self.orders: list[list[str]] = []
        self.fail: IssueError | None = None
        self.unreachable = False
        self.now = NOW
        self.suggestion: datetime | None = None  # what the CA's renewal information says
        self.renewal_questions = 0

    def connect(self) -> None:
        if self.unreachable:
            raise IssueError("reading the CA's directory: the CA can't be reached (refused)")

    def issue(self, names: Sequence[str]) -> Issued:
        self.orders.append(list(names))
        if self.fail is not None:
            raise self.fail
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(self.now).not_valid_after(self.now + LIFETIME)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                               False)
                .sign(self.key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return Issued(key_pem, leaf.public_bytes(serialization.Encoding.PEM))

    def renewal_time(self, chain_pem: bytes) -> datetime | None:
        self.renewal_questions += 1
        return self.suggestion


# `mailboot run` up to the hand-over, outside the image: the daemons' checks and preparation are
# stubbed, files are re-rooted under the test's directory, and the exec prints what was loaded.
RUN_UNTIL_THE_HAND_OVER = """
import os, sys
from pathlib import Path
from mailboot.boot import run
from mailboot.cli import main as cli
from mailboot.daemons import registry
from mailboot.base.paths import Paths
root = Path(sys.argv[1])
run.Paths = lambda data_dir: Paths(data_dir, config_root=root / "root", run_dir=root / "run")
registry.check_all = registry.prepare_all = lambda paths: None
from mailboot.daemons import postfix
postfix.wait_until_listening = lambda: True  # no Postfix here to wait for
def hand_over(*argv):
    loaded = sorted(name for name in sys.modules if name == "dns" or name.startswith("dns."))
    print("handed over; DNS modules loaded:", loaded, file=sys.stderr, flush=True)
    os._exit(0)
os.execv = hand_over
raise SystemExit(cli.main(["run"]))
"""


def offline_run_settings(tmp_path: Path) -> dict[str, str]:
    """`mailboot run`'s environment for a run that asks no network (see below)."""
    # LANG: else Python coerces the C locale and adds LC_CTYPE to its environment (PEP 538).
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "MAIL_DOMAINS": "example.com",
            "DATA_DIR": str(tmp_path / "data"), "TLS_MODE": "self-signed",
            "PUBLIC_IPV4": "203.0.113.25", "PUBLIC_ADDRESS_DISCOVERY": "off", "DNS_CHECK": "off"}


def run_until_the_hand_over(root: Path,
                            environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`mailboot run` in a process of its own until it would exec the supervisor; rendered files
    go below root/root, runtime files below root/run. The output includes what the boot left
    running beside the daemons (run() waits for the pipe)."""
    return subprocess.run([sys.executable, "-c", RUN_UNTIL_THE_HAND_OVER, str(root)],
                          env=environment, cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=60, check=False)
