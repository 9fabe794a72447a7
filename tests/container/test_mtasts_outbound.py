"""Outbound MTA-STS (RFC 8461): receivers' policies obeyed when our server sends.

(tests/container/test_mtasts.py is about the policy we publish; this module about the ones we
obey.) The world: BIND serving the receiver domain `example.net` (its MX, `_mta-sts` TXT and the
policy host) and the DNSSEC-signed `danemail.org` (its MX with a TLSA record, and a policy too);
an HTTPS server for `mta-sts.<domain>` with a certificate from a test CA made here; the standard
receiver (tests/container/receiver_image) as the MX of both, with its own self-signed certificate
(one the test CA didn't sign) or one the test CA signed. Our container trusts the test CA through
TLS_TRUST_CA_FILE, a mounted PEM file, as a user with a private CA would, and its resolver
validates DNSSEC from the signed zone's DS record, mounted where Debian keeps the root's key.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import require_tool
from tests.container.clients import queued
from tests.container.containers import ROOT, Container, insecure_context, unique_name
from tests.container.dockercli import build, docker
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import Scene, Server, scene, wait_for_smtp_banner
from tests.container.zoneserver import OPTIONS, SOA, ZoneServer, printed_zone, supporting_zones
from tests.polling import eventually
from tests.privateca import PrivateCa

pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

RECEIVER_IMAGE = "mailboot-receiver:test"
DOMAIN, MX = "example.net", "mx.example.net"  # the receiver domain with an MTA-STS policy
DANE_DOMAIN, DANE_MX = "danemail.org", "mx.danemail.org"  # signed, with TLSA records
SENDER, PASSWORD = "alice@example.com", "correct horse battery"
# The HTTPS server of the policies: each request's host is printed; the policy for a host is
# the file of that name in /srv/policies (the test changes it between steps).
POLICY_SERVER = r"""
import http.server, pathlib, ssl
root = pathlib.Path("/srv")
class Policy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0]
        print("GET", host, self.path, flush=True)
        path = root / "policies" / host
        if self.path != "/.well-known/mta-sts.txt" or not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("0.0.0.0", 443), Policy)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/srv/cert.pem", "/srv/key.pem")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


# --- the world -----------------------------------------------------------------------------------
def policy(mode: str, mx: str) -> str:
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"


@dataclass
class World:
    scene: Scene
    directory: Path
    dns: ZoneServer
    receiver: Server
    web: Server
    mail: Container
    ca: PrivateCa
    ids: dict[str, str] = field(default_factory=dict)  # domain -> its policy id in DNS
    tlsa: str = ""  # the receiver's key as a TLSA 3 1 1 value

    def set_policy(self, domain: str, text: str) -> None:
        """Serve `text` as `domain`'s policy and announce it with a new id."""
        (self.directory / "web" / "policies" / f"mta-sts.{domain}").write_text(text)
        self.ids[domain] = secrets.token_hex(6)
        self.publish()

    def publish(self) -> None:
        """Serve every zone as things stand (BIND restarts with the new files)."""
        receiver_domain = (f"@ 3600 IN MX 10 {MX}.\nmx 3600 IN A {self.receiver.ip}\n"
                           f"mta-sts 3600 IN A {self.web.ip}\n"
                           # A TTL of 1 s: a new id is seen at once (Unbound caches for the TTL).
                           f'_mta-sts 1 IN TXT "v=STSv1; id={self.ids.get(DOMAIN, "none")}"\n')
        plain = {**supporting_zones(self.mail.ip or ""), "example.com":
                 printed_zone(self.mail, "example.com")}
        plain[DOMAIN] = receiver_domain + f"ns1 3600 IN A {self.dns.ip}\n"
        dane = (f"@ 300 IN MX 10 {DANE_MX}.\nmx 300 IN A {self.receiver.ip}\n"
                f"mta-sts 300 IN A {self.web.ip}\n"
                f'_mta-sts 300 IN TXT "v=STSv1; id={self.ids.get(DANE_DOMAIN, "none")}"\n')
        if self.tlsa:
            dane += f"_25._tcp.mx 300 IN TLSA {self.tlsa}\n"
        serve(self.dns, plain, {DANE_DOMAIN: sign(self.directory / "signing", DANE_DOMAIN,
                                                  dane)})

    def receiver_certificate(self, signed: bool) -> None:
        """The receiver's port 25 serves the test CA's certificate for MX (`signed`), or the
        self-signed one its image made."""
        if signed:
            issued = self.ca.issue(MX)
            self.receiver.exec("sh", "-c", "umask 077 && cat > /etc/ssl/private/signed.key",
                               stdin=issued.key_pem.decode())
            self.receiver.exec("sh", "-c", "cat > /etc/ssl/certs/signed.pem",
                               stdin=issued.cert_pem.decode())
            files = "/etc/ssl/private/signed.key, /etc/ssl/certs/signed.pem"
        else:
            files = "/etc/ssl/private/receiver.key, /etc/ssl/certs/receiver.pem"
        self.receiver.exec("postconf", "-e", f"smtpd_tls_chain_files = {files}")
        self.receiver.exec("postfix", "reload")


def sign(directory: Path, zone: str, records: str) -> str:
    """`records` as the zone `zone`, signed with keys made once in `directory`."""
    keys = directory / "keys"
    if not keys.exists():
        keys.mkdir(parents=True)
        for flags in ([], ["-f", "KSK"]):
            subprocess.run([require_tool("dnssec-keygen"), "-q", "-K", str(keys), "-a",
                            "ECDSAP256SHA256", "-n", "ZONE", *flags, zone], check=True,
                           capture_output=True)
    unsigned, signed = directory / f"{zone}.unsigned", directory / f"{zone}.signed"
    unsigned.write_text(f"$ORIGIN {zone}.\n{SOA}{records}")
    subprocess.run([require_tool("dnssec-signzone"), "-S", "-K", str(keys), "-d",
                    str(directory), "-o", zone, "-f", str(signed), str(unsigned)], check=True,
                   capture_output=True)
    return signed.read_text()


def trust_anchor(directory: Path, zone: str) -> Path:
    """The signed zone's DS records (what its parent would publish), in a file of their own:
    the container's Unbound validates from it instead of the root's key (mounted over
    /usr/share/dns/root.key), as on a private network with DNSSEC of its own; the offline test
    network has no root to validate from. Names outside the zone are then insecure, not bogus."""
    sign(directory / "signing", zone, "")  # the keys, made once; their DS set
    anchor = directory / "trust-anchor"
    anchor.write_text((directory / "signing" / f"dsset-{zone}.").read_text())
    anchor.chmod(0o644)
    return anchor


def serve(server: ZoneServer, plain: dict[str, str], complete: dict[str, str]) -> None:
    """BIND serving `plain` zones (records; the SOA is added) and `complete` zone files."""
    config = [OPTIONS]
    for domain, text in {**{d: f"$ORIGIN {d}.\n{SOA}{r}" for d, r in plain.items()},
                         **complete}.items():
        path = server.directory / f"{domain}.zone"
        path.write_text(text)
        path.chmod(0o644)
        config.append(f'zone "{domain}" {{ type primary; file "/zones/{domain}.zone"; }};\n')
    (server.directory / "named.conf").write_text("".join(config))
    (server.directory / "named.conf").chmod(0o644)
    docker("restart", "-t", "1", server.name)
    for domain in (DOMAIN, DANE_DOMAIN):
        server.wait_serving(domain)




@pytest.fixture(scope="module")
def world(test_network: DockerNetwork, image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    build(RECEIVER_IMAGE, ROOT / "tests/container/receiver_image", timeout=900)
    directory = tmp_path_factory.mktemp("mtasts-outbound")
    ca = PrivateCa()
    web_files = directory / "web"
    (web_files / "policies").mkdir(parents=True)
    issued = ca.issue(f"mta-sts.{DOMAIN}", f"mta-sts.{DANE_DOMAIN}")
    (web_files / "cert.pem").write_bytes(issued.cert_pem)
    (web_files / "key.pem").write_bytes(issued.key_pem)
    for path in (web_files, web_files / "policies"):
        path.chmod(0o755)
    for path in (web_files / "cert.pem", web_files / "key.pem"):
        path.chmod(0o644)
    (directory / "ca.pem").write_bytes(ca.pem())
    (directory / "ca.pem").chmod(0o644)
    with scene(test_network, image, directory / "scene") as made:
        dns = made.zone_server({DOMAIN: ""})
        receiver = made.server("receiver", image=RECEIVER_IMAGE, options=(
            "--hostname", MX, "--dns", dns.ip))
        web = made.server("mtasts-web", "-c", POLICY_SERVER, options=(
            "--entrypoint", "python3", "-v", f"{web_files}:/srv:ro"))
        wait_for_smtp_banner(receiver)
        receiver.exec("postconf", "-e", f"mydestination = {DOMAIN}, {DANE_DOMAIN}, localhost")
        receiver.exec("postfix", "reload")
        data = directory / "mail-data"
        data.mkdir()
        ip = made.address()
        mail = Container(unique_name("mailboot-mtasts"), data, {
            "MAIL_DOMAINS": "example.com", "TLS_MODE": "self-signed", "PUBLIC_IPV4": ip,
            "DNS_RESOLVERS": dns.ip, "TLS_TRUST_CA_FILE": "/certs/ca.pem",
            "DNSSEC_VALIDATION": "on"}, image,
            volumes={str(directory / "ca.pem"): "/certs/ca.pem",
                     str(trust_anchor(directory, DANE_DOMAIN)): "/usr/share/dns/root.key"},
            network=test_network.name, ip=ip, dns=dns.ip)
        try:
            mail.start()
            mail.wait_ready()
            mail.add_account(SENDER, PASSWORD)
            made_world = World(made, directory, dns, receiver, web, mail, ca)
            made_world.publish()
            yield made_world
        finally:
            (directory / "mail.log").write_text(mail.logs())
            mail.remove()


def send(world: World, recipient: str) -> str:
    """Submit a message from our user on 587; return its token (in the subject)."""
    token = secrets.token_hex(6)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, recipient, f"test {token}"
    message.set_content(f"Message {token}.\n")
    with world.mail.smtp(587) as client:
        client.starttls(context=insecure_context())
        client.login(SENDER, PASSWORD)
        client.send_message(message)
    return token


def delivered(world: World, token: str, timeout: float = 60) -> str:
    """The message with `token` in carol's Maildir at the receiver, once it is there."""
    find = f"grep -l -r 'Subject: test {token}' /home/carol/Maildir/new | head -1 | xargs -r cat"
    return eventually(lambda: world.receiver.exec("sh", "-c", find, check=False), timeout,
                      lambda: f"message {token} at the receiver:\n{world.mail.log_tail()}")


def delay_reason(world: World) -> str | None:
    for message in queued(world.mail):
        for recipient in message["recipients"]:
            if "delay_reason" in recipient:
                return str(recipient["delay_reason"])
    return None


def test_enforce_defers_to_an_mx_the_ca_did_not_sign_and_delivers_once_it_did(
    world: World,
) -> None:
    world.receiver_certificate(signed=False)
    world.set_policy(DOMAIN, policy("enforce", MX))
    token = send(world, f"carol@{DOMAIN}")
    reason = eventually(lambda: delay_reason(world), 60,
                        lambda: f"a deferred message:\n{world.mail.log_tail()}", interval=1)
    assert "Server certificate not verified" in reason, reason
    logs = world.mail.logs()
    policy_id = world.ids[DOMAIN]
    assert (f"mailboot: mta-sts: {DOMAIN}: mode enforce, mx {MX}, max_age 86400 "
            f"(id {policy_id}, fetched)") in logs
    assert (f"mailboot: mta-sts: {DOMAIN}: enforcing its MTA-STS policy (id {policy_id}): "
            f"delivery only over TLS with a CA-verified certificate of an MX matching {MX}, "
            "else the mail waits in the queue") in logs
    assert f"GET mta-sts.{DOMAIN} /.well-known/mta-sts.txt" in world.web.logs()
    assert f"subject: test {token}" not in world.receiver.exec(
        "sh", "-c", "cat /home/carol/Maildir/new/* 2>/dev/null || true", check=False).lower()

    world.receiver_certificate(signed=True)
    wait_for_smtp_banner(world.receiver)
    world.mail.exec("postqueue", "-f")
    delivered(world, token, timeout=90)
    assert f"Verified TLS connection established to {MX}" in world.mail.logs()
    assert queued(world.mail) == []


def test_testing_delivers_and_says_what_enforce_would_have_done(world: World) -> None:
    world.receiver_certificate(signed=False)
    world.set_policy(DOMAIN, policy("testing", MX))
    wait_for_smtp_banner(world.receiver)
    delivered(world, send(world, f"carol@{DOMAIN}"))
    policy_id = world.ids[DOMAIN]
    world.mail.wait_for_log(f"mailboot: mta-sts: {DOMAIN}: mode testing, mx {MX}, max_age "
                            f"86400 (id {policy_id}, changed)")
    logs = world.mail.wait_for_log(
        f"mailboot: warning: mta-sts: testing: {DOMAIN}: under mode enforce the mail would "
        f"have been deferred: no MX passes (policy id {policy_id}, mx {MX}): {MX}: its "
        "certificate is not verified (")
    assert "Server certificate not verified" not in logs.split(policy_id, 1)[1]


def test_a_domain_with_tlsa_records_uses_dane_and_fetches_no_policy(world: World) -> None:
    world.receiver_certificate(signed=False)  # DANE-EE: the key counts, not who signed it
    wait_for_smtp_banner(world.receiver)
    certificate = x509.load_pem_x509_certificate(
        world.receiver.exec("cat", "/etc/ssl/certs/receiver.pem").encode())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    world.tlsa = f"3 1 1 {hashlib.sha256(spki).hexdigest()}"
    # An enforce policy the receiver's certificate fails: DANE must take precedence over it.
    (world.directory / "web" / "policies" / f"mta-sts.{DANE_DOMAIN}").write_text(
        policy("enforce", DANE_MX))
    world.ids[DANE_DOMAIN] = secrets.token_hex(6)
    world.publish()
    delivered(world, send(world, f"carol@{DANE_DOMAIN}"))
    logs = world.mail.logs()
    assert f"Verified TLS connection established to {DANE_MX}" in logs
    assert (f"mailboot: mta-sts: {DANE_DOMAIN}: DANE applies (DNSSEC-validated TLSA records "
            "for its MX hosts), so no MTA-STS policy is asked for (RFC 8461 §2)") in logs
    assert f"GET mta-sts.{DANE_DOMAIN}" not in world.web.logs()
