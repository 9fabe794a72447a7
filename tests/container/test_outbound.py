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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.container.clients import fetch_text
from tests.container.conftest import ROOT, Container, docker, insecure_context
from tests.container.pebble_harness import DockerNetwork
from tests.container.zoneserver import ZoneServer, printed_zone, start_zone_server, without

pytestmark = pytest.mark.container

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

    network: DockerNetwork
    dns: ZoneServer
    receiver: str
    receiver_ip: str

    def receiver_zone(self) -> str:
        # The relay provider's SPF include names the receiver, which is also the relay.
        return (f"@ 3600 IN MX 10 {RECEIVER}.\n"
                f"mx 3600 IN A {self.receiver_ip}\n"
                f'_spf 3600 IN TXT "v=spf1 ip4:{self.receiver_ip} -all"\n')

    def publish(self, mail: Container, edit: Callable[[str, str], str] | None = None) -> None:
        """Serve the zones `mail` printed (edited by `edit(domain, zone)`), then restart the
        receiver so none of its resolvers answers from a cache, as if every TTL had run out."""
        zones = {"example.net": self.receiver_zone()}
        for domain in USERS:
            zone = printed_zone(mail, domain)
            zones[domain] = edit(domain, zone) if edit else zone
        self.dns.serve(zones)
        docker("restart", "-t", "2", self.receiver)
        wait_for_banner(self.receiver)


def wait_for_banner(receiver: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    probe = "exec 3<>/dev/tcp/127.0.0.1/25 && head -c 3 <&3"
    while docker("exec", receiver, "bash", "-c", probe, check=False).stdout != "220":
        assert time.monotonic() < deadline, docker("logs", receiver, check=False).stdout[-3000:]
        time.sleep(0.3)


@pytest.fixture(scope="module")
def world(test_network: DockerNetwork,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    docker("build", "-q", "-t", RECEIVER_IMAGE, str(ROOT / "tests/container/receiver_image"),
           timeout=900)
    receiver_ip = test_network.allocate()
    dns = start_zone_server(test_network, tmp_path_factory.mktemp("zones"),
                            {"example.net": f"mx 3600 IN A {receiver_ip}\n"})
    receiver = f"mailboot-receiver-{secrets.token_hex(3)}"
    docker("run", "-d", "--name", receiver, "--hostname", RECEIVER, "--network",
           test_network.name, "--ip", receiver_ip, "--dns", dns.ip,
           "-e", f"RELAY_PASSWORD={RELAY_PASSWORD}", RECEIVER_IMAGE)
    try:
        wait_for_banner(receiver)
        yield World(test_network, dns, receiver, receiver_ip)
    finally:
        logs = docker("logs", receiver, check=False)
        (tmp_path_factory.getbasetemp() / f"{receiver}.log").write_text(logs.stdout + logs.stderr)
        docker("rm", "-f", receiver, check=False)
        dns.remove()


MakeContainer = Callable[..., Container]


def start_mail(make_container: MakeContainer, world: World, data: Path | None = None,
               **extra: str) -> Container:
    ip = world.network.allocate()
    mail = make_container(env={"MAIL_DOMAINS": ",".join(USERS), "PUBLIC_IPV4": ip,
                               "TLS_MODE": "self-signed", "DNS_RESOLVERS": world.dns.ip,
                               **extra},
                          data=data, network=world.network.name, ip=ip, dns=world.dns.ip)
    mail.wait_ready()
    if data is None:
        for user in USERS.values():
            mail.add_account(user, PASSWORD)
    return mail


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
    deadline = time.monotonic() + timeout
    find = f"grep -l -r 'Subject: test {token}' /home/carol/Maildir/new | head -1 | xargs -r cat"
    while True:
        raw = docker("exec", world.receiver, "sh", "-c", find, check=False).stdout
        if raw:
            parsed = email.message_from_string(raw, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            return parsed
        assert time.monotonic() < deadline, (
            f"message {token} did not arrive; receiver log:\n"
            + docker("logs", world.receiver, check=False).stdout[-4000:])
        time.sleep(0.5)


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
def mail(world: World, image: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    made: list[Container] = []

    def make(env: dict[str, str], data: Path | None = None, network: str | None = None,
             ip: str | None = None, dns: str | None = None) -> Container:
        directory = data or tmp_path_factory.mktemp("data")
        container = Container(f"mailboot-out-{secrets.token_hex(4)}", directory, env, image,
                              network=network, ip=ip, dns=dns)
        made.append(container)
        container.start()
        return container

    try:
        yield start_mail(make, world)
    finally:
        for container in made:
            container.remove()


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
    assert f"to=<{CAROL}>, relay={RECEIVER}[{world.receiver_ip}]:25" in logs
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
    assert f"Subject: test {token}" not in docker(
        "exec", world.receiver, "sh", "-c", "cat /home/carol/Maildir/new/* 2>/dev/null || true",
        check=False).stdout

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
        deadline = time.monotonic() + 90
        while not (queue := queued(mail)) or "delay_reason" not in queue[0]["recipients"][0]:
            assert time.monotonic() < deadline, mail.logs()[-3000:]
            time.sleep(1)
        # A restart of our server while the message waits keeps it: the queue is on /data.
        docker("restart", "-t", "20", mail.name)
        mail.wait_ready()
        assert len(queued(mail)) == 1
    finally:
        set_receiver_smtp(world, enabled=True)
    wait_for_banner(world.receiver)
    mail.exec("postqueue", "-f")  # what an admin runs; Postfix would retry within minutes anyway
    message = received(world, token, timeout=90)
    assert verdicts(message)["dmarc"] == "pass"
    assert queued(mail) == []


def set_receiver_smtp(world: World, *, enabled: bool) -> None:
    """Close or reopen the receiver's port 25 (Postfix's master_service_disable, then reload)."""
    disabled = "" if enabled else "smtp.inet"
    docker("exec", world.receiver, "postconf", "-e", f"master_service_disable={disabled}")
    docker("exec", world.receiver, "postfix", "reload")


def queued(mail: Container) -> list[dict[str, list[dict[str, str]]]]:
    output = mail.exec("postqueue", "-j").stdout
    return [json.loads(line) for line in output.splitlines() if line.strip()]


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
        assert f"relay={RECEIVER}[{world.receiver_ip}]:587" in logs
        assert "sasl_username=relay@example.net" in docker("logs", world.receiver).stdout
        assert RELAY_PASSWORD not in logs
        table = relayed.exec("stat", "-c", "%a %U", "/etc/postfix/relay_password").stdout
        assert table.split() == ["600", "root"]
    finally:
        relayed.remove()
        docker("start", mail.name)
        mail.wait_ready()
