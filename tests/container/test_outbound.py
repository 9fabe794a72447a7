"""Outbound mail judged by a standard receiving MTA: SPF, DKIM and DMARC as receivers check them.

The receiver (tests/container/receiver_image) is Debian's Postfix with postfix-policyd-spf-python,
OpenDKIM in verify mode and OpenDMARC, resolving names through BIND, which serves the zones that
`mailboot dns --zone` printed, as the user would publish them. Our users submit on 587; the
verdicts are read from the receiver's own Authentication-Results in the delivered message, and
`mailboot selftest` must foresee the same verdicts for the same zones.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.container.clients import fetch_text, queued
from tests.container.containers import ROOT, Container, insecure_context
from tests.container.dockercli import build, docker
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import Scene, Server, scene, wait_for_smtp_banner
from tests.container.zoneserver import ZoneServer, printed_zone, without
from tests.polling import eventually

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

RECEIVER_IMAGE = "mailboot-receiver:test"
RECEIVER = "mx.example.net"
CAROL = "carol@example.net"  # a mailbox at the receiver
USERS = {"example.com": "alice@example.com", "example.org": "dave@example.org"}
PASSWORD = "correct horse battery"
RELAY_USER, RELAY_PASSWORD = "relay@example.net", "relay pass s3cret!"  # no colon: passwd-file
AUTHSERV = re.compile(r"^\s*mx\.example\.net\b")


@dataclass
class World:
    """The test network with its DNS and the receiver; mail servers come and go."""

    scene: Scene
    dns: ZoneServer
    receiver: Server

    def receiver_zone(self) -> str:
        # The relay provider's SPF include names the receiver, which is also the relay.
        return (f"@ 3600 IN MX 10 {RECEIVER}.\n"
                f"mx 3600 IN A {self.receiver.ip}\n"
                f'_spf 3600 IN TXT "v=spf1 ip4:{self.receiver.ip} -all"\n')

    def publish(self, mail: Container, edit: Callable[[str, str], str] | None = None) -> None:
        """Serve the zones `mail` printed (edited by `edit(domain, zone)`), then restart the
        receiver so none of its resolvers answers from a cache, as if every TTL had run out."""
        zones = {"example.net": self.receiver_zone()}
        for domain in USERS:
            zone = printed_zone(mail, domain)
            zones[domain] = edit(domain, zone) if edit else zone
        self.dns.serve(zones)
        docker("restart", "-t", "2", self.receiver.name)
        wait_for_smtp_banner(self.receiver)

    def start_mail(self, role: str, **extra: str) -> Container:
        """One of our servers for both domains, resolving through the world's DNS."""
        return self.scene.mail(role, {"MAIL_DOMAINS": ",".join(USERS), **extra}, dns=self.dns,
                               accounts=dict.fromkeys(USERS.values(), PASSWORD))




@pytest.fixture(scope="module")
def world(test_network: DockerNetwork, image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    build(RECEIVER_IMAGE, ROOT / "tests/container/receiver_image", timeout=900)
    with scene(test_network, image, tmp_path_factory.mktemp("outbound")) as made:
        receiver_ip = made.address()
        dns = made.zone_server({"example.net": f"mx 3600 IN A {receiver_ip}\n"})
        receiver = made.server("receiver", image=RECEIVER_IMAGE, ip=receiver_ip, options=(
            "--hostname", RECEIVER, "--dns", dns.ip,
            "-e", f"RELAY_PASSWORD={RELAY_PASSWORD}"))
        wait_for_smtp_banner(receiver)
        yield World(made, dns, receiver)


def send(mail: Container, sender: str, recipient: str = CAROL) -> str:
    """Submit a message as a user of ours on 587 (STARTTLS, AUTH); return its token."""
    token = secrets.token_hex(6)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, recipient, f"test {token}"
    message["Message-ID"] = f"<{token}@{sender.split('@')[1]}>"
    message.set_content(f"Hello from {sender}, message {token}.\n")
    with mail.smtp(587) as client:
        client.starttls(context=insecure_context())
        client.login(sender, PASSWORD)
        client.send_message(message)
    return token


def received(world: World, token: str, timeout: float = 60) -> EmailMessage:
    """The message with `token` from carol's Maildir at the receiver, once it has arrived."""
    find = f"grep -l -r 'Subject: test {token}' /home/carol/Maildir/new | head -1 | xargs -r cat"
    raw = eventually(lambda: world.receiver.exec("sh", "-c", find, check=False), timeout,
                     lambda: f"message {token} at the receiver; its log:\n"
                             + world.receiver.logs()[-4000:])
    parsed = email.message_from_string(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def verdicts(message: EmailMessage) -> dict[str, str]:
    """method -> result ("spf" -> "pass", ...) from the receiver's own Authentication-Results
    (RFC 8601: only headers with the receiver's authserv-id count)."""
    found: dict[str, str] = {}
    for header in message.get_all("Authentication-Results", []):
        text = " ".join(str(header).split())
        if not AUTHSERV.match(text):
            continue
        for method, result in re.findall(r"\b(spf|dkim|dmarc)=(\w+)", text):
            found.setdefault(method, result)
    return found


def selftest_verdicts(mail: Container, domain: str) -> dict[str, str]:
    """method -> result from `mailboot selftest`'s block for `domain` (our one address)."""
    output = mail.exec("mailboot", "selftest", check=False).stdout
    block = output.split(f"{domain}: ", 1)[1].split("\n\n", 1)[0]
    return {method.lower(): result for method, result in
            re.findall(r"^  (DKIM|SPF|DMARC)\s+(\w+)", block, re.MULTILINE)}


def receiver_tls(message: EmailMessage) -> str:
    """The TLS version in the receiver's Received header (smtpd_tls_received_header)."""
    for header in message.get_all("Received", []):
        text = " ".join(str(header).split())
        if f"by {RECEIVER}" in text:
            match = re.search(r"using (TLSv[\d.]+)", text)
            return match.group(1) if match else f"no TLS: {text}"
    raise AssertionError("no Received header from the receiver")


@pytest.fixture(scope="module")
def mail(world: World) -> Container:
    return world.start_mail("out")


@pytest.mark.parametrize("domain", list(USERS))
def test_mail_to_a_standard_receiver_passes_spf_dkim_and_dmarc_over_tls(
    world: World, mail: Container, domain: str
) -> None:
    world.publish(mail)
    message = received(world, send(mail, USERS[domain]))
    assert verdicts(message) == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}, str(message)
    assert receiver_tls(message) in ("TLSv1.2", "TLSv1.3")
    dkim_results = " ".join(str(h) for h in message.get_all("Authentication-Results", []))
    assert f"header.d={domain}" in dkim_results and f"header.from={domain}" in dkim_results
    logs = mail.logs()
    assert f"to=<{CAROL}>, relay={RECEIVER}[{world.receiver.ip}]:25" in logs
    assert f"Trusted TLS connection established to {RECEIVER}" not in logs  # self-signed there
    assert f"TLS connection established to {RECEIVER}" in logs


def test_the_published_records_carry_the_verdicts(world: World, mail: Container) -> None:
    sender = USERS["example.com"]
    dkim_name = next(r["name"] for r in json.loads(mail.exec("mailboot", "dns", "--json").stdout)
                     if r["name"].endswith("._domainkey.example.com."))

    def no_dkim(domain: str, zone: str) -> str:
        return without(zone, dkim_name, "TXT") if domain == "example.com" else zone

    world.publish(mail, no_dkim)
    message = received(world, send(mail, sender))
    found = verdicts(message)
    # RFC 6376 §6.1.2: no key record for the signature makes it fail; DMARC passes on SPF alone.
    assert found == {"spf": "pass", "dkim": "fail", "dmarc": "pass"}, found
    assert selftest_verdicts(mail, "example.com") == found  # the self-test foresaw it
    assert 'reason="key not found in DNS"' in " ".join(
        str(h) for h in message.get_all("Authentication-Results", []))

    def no_dkim_and_foreign_spf(domain: str, zone: str) -> str:
        zone = no_dkim(domain, zone)
        return zone.replace('"v=spf1 a mx -all"', '"v=spf1 ip4:192.0.2.1 -all"')

    world.publish(mail, no_dkim_and_foreign_spf)
    assert selftest_verdicts(mail, "example.com") == {"spf": "fail", "dkim": "fail",
                                                      "dmarc": "fail"}
    token = send(mail, sender)
    # The receiver refuses it under our p=reject, and our server tells the sender so.
    bounce = fetch_text(mail, sender, token, timeout=60, password=PASSWORD)
    assert b"rejected by DMARC policy for example.com" in bounce, bounce[:3000]
    assert f"Subject: test {token}" not in world.receiver.exec(
        "sh", "-c", "cat /home/carol/Maildir/new/* 2>/dev/null || true", check=False)

    world.publish(mail)
    message = received(world, send(mail, sender))
    assert verdicts(message) == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    assert selftest_verdicts(mail, "example.com") == verdicts(message)
    assert mail.exec("mailboot", "selftest", check=False).returncode == 0


def test_a_recipient_the_receiver_refuses_is_bounced_to_the_sender(
    world: World, mail: Container
) -> None:
    world.publish(mail)
    sender = USERS["example.org"]
    token = send(mail, sender, "no-such-user@example.net")
    bounce = fetch_text(mail, sender, token, timeout=60, password=PASSWORD)
    # Our server reports the receiver's refusal at RCPT, quoting it (RFC 3464).
    assert b"Reporting-MTA: dns; mail.example.com" in bounce, bounce[:3000]
    assert b"Final-Recipient: rfc822; no-such-user@example.net" in bounce
    assert b"Diagnostic-Code: smtp; 550 5.1.1" in bounce


def test_a_receiver_that_is_down_gets_the_mail_when_it_is_back(
    world: World, mail: Container
) -> None:
    world.publish(mail)
    # The receiver's SMTP service goes down (its port 25 refuses connections), the host stays up.
    set_receiver_smtp(world, enabled=False)
    try:
        token = send(mail, USERS["example.com"])
        eventually(lambda: (queue := queued(mail)) and "delay_reason" in queue[0]["recipients"][0],
                   90, lambda: f"a delayed message in the queue:\n{mail.log_tail(3000)}",
                   interval=1)
        # A restart of our server while the message waits keeps it: the queue is on /data.
        docker("restart", "-t", "20", mail.name)
        mail.wait_ready()
        assert len(queued(mail)) == 1
    finally:
        set_receiver_smtp(world, enabled=True)
    wait_for_smtp_banner(world.receiver)
    mail.exec("postqueue", "-f")  # what an admin runs; Postfix would retry within minutes anyway
    message = received(world, token, timeout=90)
    assert verdicts(message)["dmarc"] == "pass"
    assert queued(mail) == []


def set_receiver_smtp(world: World, *, enabled: bool) -> None:
    """Close or reopen the receiver's port 25 (Postfix's master_service_disable, then reload)."""
    disabled = "" if enabled else "smtp.inet"
    world.receiver.exec("postconf", "-e", f"master_service_disable={disabled}")
    world.receiver.exec("postfix", "reload")


def test_through_an_authenticated_relay_dkim_and_dmarc_still_pass(
    world: World, mail: Container, tmp_path: Path
) -> None:
    secret = tmp_path / "relay_password"
    secret.write_text(RELAY_PASSWORD + "\n")
    secret.chmod(0o600)
    docker("stop", "-t", "20", mail.name)
    relayed = Container(f"{mail.name}-relay", mail.data, {
        **mail.env, "RELAY_HOST": f"{RECEIVER}:587", "RELAY_USER": RELAY_USER,
        "RELAY_PASSWORD_FILE": "/run/secrets/relay_password",
        "RELAY_SPF_INCLUDE": "_spf.example.net"}, mail.image,
        volumes={str(secret): "/run/secrets/relay_password"}, network=mail.network,
        ip=mail.ip, dns=mail.dns)
    try:
        relayed.start()
        relayed.wait_ready()
        zone = printed_zone(relayed, "example.com")
        assert '"v=spf1 a mx include:_spf.example.net -all"' in zone
        world.publish(relayed)
        message = received(world, send(relayed, USERS["example.com"]))
        found = verdicts(message)
        assert found["dkim"] == "pass" and found["dmarc"] == "pass", found
        logs = relayed.logs()
        assert f"outbound: through the relay [{RECEIVER}]:587" in logs
        assert f"relay={RECEIVER}[{world.receiver.ip}]:587" in logs
        assert "sasl_username=relay@example.net" in world.receiver.logs()
        assert RELAY_PASSWORD not in logs
        table = relayed.exec("stat", "-c", "%a %U", "/etc/postfix/relay_password").stdout
        assert table.split() == ["600", "root"]
    finally:
        relayed.remove()
        docker("start", mail.name)
        mail.wait_ready()
