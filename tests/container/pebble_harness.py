"""Pebble (Let's Encrypt's test CA) and its challenge DNS, in a container on a test network.

The mail container joins the same network at a fixed address; the test says through Pebble's
challenge test server which names resolve to it, exactly as a user adds A records.
"""

from __future__ import annotations

import json
import random
import secrets
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.container.dockercli import build, docker
from tests.polling import eventually

HERE = Path(__file__).resolve().parent
PEBBLE_IMAGE = "mailboot-pebble:test"
EAB_KID = "kid-1"
EAB_HMAC_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


@dataclass
class DockerNetwork:
    name: str
    prefix: str  # "172.30.17." ; .2 is Pebble, mail containers take .10 and up
    next_host: int = 10

    def allocate(self) -> str:
        self.next_host += 1
        return f"{self.prefix}{self.next_host}"


@dataclass
class Pebble:
    name: str
    network: DockerNetwork
    ip: str
    directory: Path  # host folder with config, TLS pair and the CA bundle
    validity: int
    started: list[str] = field(default_factory=list)

    @property
    def directory_url(self) -> str:
        return f"https://{self.ip}:14000/dir"

    @property
    def ca_bundle(self) -> Path:
        """What ACME clients must trust to talk to Pebble (ACME_CA_BUNDLE)."""
        return self.directory / "ca.pem"

    @property
    def dns(self) -> str:
        return f"{self.ip}:8053"

    def _management(self, path: str, body: dict[str, object]) -> None:
        request = urllib.request.Request(f"http://{self.ip}:8055{path}",
                                         data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our container
            response.read()

    def set_a(self, host: str, address: str) -> None:
        self._management("/add-a", {"host": host + ".", "addresses": [address]})

    def clear_a(self, host: str) -> None:
        self._management("/clear-a", {"host": host + "."})

    def issuing_roots_pem(self) -> str:
        """Pebble's issuing root (made anew at each Pebble start), to verify what it issued."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        context.check_hostname = False
        with urllib.request.urlopen(f"https://{self.ip}:15000/roots/0", context=context,
                                    timeout=10) as response:
            return str(response.read().decode())

    def new_order_count(self) -> int:
        logs = docker("logs", self.name, check=False)
        return (logs.stdout + logs.stderr).count("POST /order-plz")

    def stop(self) -> None:
        docker("stop", "-t", "1", self.name)

    def start(self) -> None:
        docker("start", self.name)
        wait_for_pebble(self)

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


def _ca_and_server_pair(directory: Path, ip: str) -> None:
    """A CA for Pebble's HTTPS listener and a server certificate for its address."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
              .issuer_name(ca_name).public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=7))
              .add_extension(x509.SubjectAlternativeName([
                  x509.DNSName("pebble"), x509.IPAddress(ipaddress.ip_address(ip))]), False)
              .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def write_config(directory: Path, validity: int) -> None:
    config = {"pebble": {
        "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
        "certificate": "/pebble/cert.pem", "privateKey": "/pebble/key.pem",
        "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
        "externalAccountMACKeys": {EAB_KID: EAB_HMAC_KEY},
        "certificateValidityPeriod": validity,
    }}
    (directory / "config.json").write_text(json.dumps(config))


def wait_for_pebble(pebble: Pebble, timeout: float = 30) -> None:
    context = ssl.create_default_context(cafile=str(pebble.ca_bundle))

    def answers() -> bool:
        with urllib.request.urlopen(pebble.directory_url, context=context,  # noqa: S310
                                    timeout=2) as response:
            response.read()
        return True

    eventually(answers, timeout, lambda: f"Pebble's directory at {pebble.directory_url}: "
               + docker("logs", pebble.name, check=False).stderr, interval=0.3,
               ignoring=(OSError,))


def create_network(attempts: int = 40) -> DockerNetwork:
    """A Docker network of its own on a free 172.30.x.0/24, for containers at fixed addresses.

    Another test process (a pytest-xdist worker, another checkout's run) may take the same
    subnet between our choice and Docker's: Docker then refuses ours ("Pool overlaps with other
    one on this address space"), and we try another.
    """
    refusals: list[str] = []
    for _ in range(attempts):
        third = random.randint(16, 250)  # noqa: S311 - not for security
        name = f"mailboot-test-{third}-{secrets.token_hex(3)}"
        created = docker("network", "create", "--subnet", f"172.30.{third}.0/24", name,
                         check=False)
        if created.returncode == 0:
            return DockerNetwork(name, f"172.30.{third}.")
        if "overlaps" not in created.stderr:
            raise AssertionError(f"docker network create {name} failed: {created.stderr}")
        refusals.append(created.stderr.strip())
    raise AssertionError(f"no free 172.30.x.0/24 for a test network in {attempts} tries "
                         f"(remove stale ones: docker network prune): {refusals[-1]}")


@pytest.fixture(scope="session")
def test_network() -> Iterator[DockerNetwork]:
    """One network per test process (each pytest-xdist worker has its own)."""
    network = create_network()
    try:
        yield network
    finally:
        docker("network", "rm", network.name, check=False)


def start_pebble(network: DockerNetwork, directory: Path, validity: int,
                 dns: str | None = None) -> Pebble:
    """Pebble on the test network; `dns` (host:port): the server it validates names through,
    instead of its challenge test server."""
    build(PEBBLE_IMAGE, HERE / "pebble_image", timeout=600)
    ip = network.allocate()
    directory.mkdir(parents=True, exist_ok=True)
    _ca_and_server_pair(directory, ip)
    write_config(directory, validity)
    pebble = Pebble(f"mailboot-pebble-{secrets.token_hex(4)}", network, ip, directory, validity)
    docker("run", "-d", "--name", pebble.name, "--network", network.name, "--ip", ip,
           "-v", f"{directory}:/pebble:ro", *(("-e", f"PEBBLE_DNS={dns}") if dns else ()),
           PEBBLE_IMAGE)
    wait_for_pebble(pebble)
    return pebble


@pytest.fixture
def pebble(test_network: DockerNetwork, tmp_path: Path) -> Iterator[Pebble]:
    """A fresh Pebble per test: its own order count, its own roots, certificates valid 90 days."""
    started = start_pebble(test_network, tmp_path / "pebble", validity=90 * 86400)
    yield started
    started.remove()
