"""DANE for inbound mail (RFC 7672): TLSA records printed for a DNSSEC-signed zone, matching the
key port 25 serves; renewals keep the key; a rollover waits for the next key's record, and then
for the record's TTL (a short one here).

BIND serves `com` (with the DS record of `example.com`, or without it) and `example.com` signed
on the host with dnssec-signzone; the mail container asks it through DNS_RESOLVERS. Pebble issues
real certificates, 60 s long, so a renewal happens within the test.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import require_tool
from tests.container.acme_setup import NAMES, MakeContainer, mail_with_acme, pebble_context
from tests.container.clients import served_certificate
from tests.container.containers import Container, insecure_context
from tests.container.dockercli import docker
from tests.container.pebble_harness import DockerNetwork, Pebble, start_pebble
from tests.container.worlds import Scene
from tests.container.zoneserver import OPTIONS, SOA, ZoneServer
from tests.polling import eventually

pytestmark = pytest.mark.container

NAME = "_25._tcp.mail.example.com"
# The TLSA records' TTL: a rollover switches once the next key's record has been served this long.
TLSA_TTL = 5
PRINTED_TLSA = re.compile(r"^_25\._tcp\.mail\.example\.com\.\s+\d+ IN TLSA\s+(3 1 1 [0-9a-f]{64})$",
                          re.MULTILINE)


class SignedZones:
    """`example.com` signed with keys made once, and its parent `com` holding (or not) the DS."""

    def __init__(self, directory: Path, ip: str) -> None:
        self.directory, self.ip = directory, ip
        self.keys = directory / "keys"
        self.keys.mkdir(parents=True)
        keygen = require_tool("dnssec-keygen")
        for flags in ([], ["-f", "KSK"]):
            subprocess.run([keygen, "-q", "-K", str(self.keys), "-a", "ECDSAP256SHA256",
                            "-n", "ZONE", *flags, "example.com"], check=True, capture_output=True)

    def zones(self, tlsa: tuple[str, ...] = (), ds: bool = True) -> dict[str, str]:
        records = "".join(f"{name} 300 IN A {self.ip}\n" for name in ("mail", "mta-sts"))
        records += "".join(f"{NAME}. {TLSA_TTL} IN TLSA {value}\n" for value in tlsa)
        unsigned = self.directory / "example.com.unsigned"
        unsigned.write_text(f"$ORIGIN example.com.\n{SOA}{records}")
        signed = self.directory / "example.com.signed"
        subprocess.run([require_tool("dnssec-signzone"), "-S", "-K", str(self.keys),
                        "-d", str(self.directory), "-o", "example.com", "-f", str(signed),
                        str(unsigned)], check=True, capture_output=True)
        # The delegation (a DS belongs at a zone cut, RFC 4034 §5), then the DS itself.
        parent = f"$ORIGIN com.\n{SOA}example.com. 3600 IN NS ns1.example.net.\n"
        if ds:
            parent += (self.directory / "dsset-example.com.").read_text()
        return {"com": parent, "example.com": signed.read_text()}


def serve(server: ZoneServer, zones: dict[str, str]) -> None:
    """Serve complete zone files (the signed one has its own SOA), restarting BIND."""
    config = [OPTIONS]
    for domain, text in zones.items():
        path = server.directory / f"{domain}.zone"
        path.write_text(text)
        path.chmod(0o644)
        config.append(f'zone "{domain}" {{ type primary; file "/zones/{domain}.zone"; }};\n')
    (server.directory / "named.conf").write_text("".join(config))
    docker("restart", "-t", "1", server.name)
    server.wait_serving("example.com")


def served_tlsa(mail: Container) -> tuple[str, int]:
    """The TLSA 3 1 1 value of the key port 25 serves (after STARTTLS), and its serial."""
    certificate = x509.load_der_x509_certificate(
        served_certificate(mail, 25, insecure_context()))
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"3 1 1 {hashlib.sha256(spki).hexdigest()}", certificate.serial_number


def wait_until(what: str, mail: Container, check: Callable[[], bool],
               timeout: float = 90) -> None:
    eventually(check, timeout, lambda: f"{what}:\n{mail.log_tail()}", interval=1)


@pytest.fixture
def short_pebble(test_network: DockerNetwork, tmp_path: Path) -> Iterator[Pebble]:
    started = start_pebble(test_network, tmp_path / "pebble", validity=60)
    yield started
    started.remove()


def test_tlsa_records_match_the_served_key_renewals_keep_it_and_a_rollover_waits(
    make_container: MakeContainer, short_pebble: Pebble, test_network: DockerNetwork,
    tmp_path: Path, scene: Scene,
) -> None:
    ip = test_network.allocate()
    signer = SignedZones(tmp_path / "signing", ip)
    bind = scene.zone_server({"example.net": ""})
    serve(bind, signer.zones())
    for name in NAMES:
        short_pebble.set_a(name, ip)
    mail = mail_with_acme(make_container, short_pebble, ip, DNS_RESOLVERS=bind.ip,
                          DNS_CHECK_INTERVAL="2s")
    mail.wait_ready()
    context = pebble_context(short_pebble, tmp_path)
    wait_until("a Pebble certificate", mail,
               lambda: _verifies(mail, context))
    # The boot printed both records; so does `mailboot dns`.
    current, following = PRINTED_TLSA.findall(mail.logs())[:2]
    printed = mail.exec("mailboot", "dns", "--zone", "--domain", "example.com").stdout
    assert PRINTED_TLSA.findall(printed) == [current, following]
    first, serial = served_tlsa(mail)
    assert first == current

    # A renewal (a third of 60 s left) keeps the key.
    wait_until("a renewal", mail, lambda: served_tlsa(mail)[1] != serial)
    assert served_tlsa(mail)[0] == current

    # A rollover waits for the next key's record...
    said = mail.exec("mailboot", "tls", "rollover").stdout
    assert f"{NAME} TLSA {following}" in said
    mail.wait_for_log(f"waiting until {NAME} TLSA {following} is served by the DNS")
    time.sleep(5)
    assert served_tlsa(mail)[0] == current
    # ...and switches once it has been served for its TTL, not at first sight.
    serve(bind, signer.zones((current, following)))
    mail.wait_for_log(f"{NAME} TLSA {following} is served and matches the next key; the "
                      "switch happens at ")
    assert f"(once the record's TTL of {TLSA_TTL} s has passed)" in mail.logs()
    wait_until("the new key served", mail, lambda: served_tlsa(mail)[0] == following)
    logs = mail.wait_for_log("key rollover done")
    assert f"remove {NAME} TLSA {current} now" in logs
    now_printed = PRINTED_TLSA.findall(
        mail.exec("mailboot", "dns", "--zone", "--domain", "example.com").stdout)
    assert now_printed[0] == following and now_printed[1] not in (current, following)

    # Without the DS at the parent the zone is unsigned: no TLSA record, and the log says why.
    serve(bind, signer.zones((current, following), ds=False))
    unsigned = mail.exec("mailboot", "dns", "--zone", "--domain", "example.com")
    assert " IN TLSA " not in unsigned.stdout
    assert ("no TLSA (DANE) records: example.com is not DNSSEC-signed (no DS at its parent)"
            in unsigned.stderr)
    assert mail.restart_count() == 0


def _verifies(mail: Container, context: ssl.SSLContext) -> bool:
    try:
        served_certificate(mail, 25, context)
    except OSError:
        return False
    return True
