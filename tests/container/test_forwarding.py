"""Forwarding off the server with SRS, judged by a standard receiver (receiver_image here:
Postfix with postfix-policyd-spf-python, OpenDKIM verifying and OpenDMARC).

Foreign senders at their own addresses write to an alias of ours that forwards to carol at the
receiver: one with SPF -all, DMARC p=reject and a DKIM signature, one with SPF -all and no DMARC.
Without SRS both fail SPF there (our address is not in their records). The receiver also hosts
the senders' own mailboxes (their domains' MX), so a bounce it sends to an SRS address, which our
server turns back into the sender's address, can be found where the sender reads mail.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.container.clients import SMTP_TRANSACTION, our_verdicts, signed_as_sent
from tests.container.containers import ROOT, Container, insecure_context
from tests.container.dockercli import build, docker
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import Server, scene, wait_for_smtp_banner
from tests.container.zoneserver import ZoneServer, printed_zone
from tests.polling import eventually

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

RECEIVER_IMAGE = "mailboot-receiver:test"
RECEIVER = "mx.example.net"
CAROL = "carol@example.net"  # a mailbox at the receiver
GONE = "gone@example.net"  # accepted by the receiver, then bounced (its transport is error:)
ALICE = "alice@example.com"  # a mailbox of ours
PASSWORD = "correct horse battery"
FORWARD = "friends@example.com"  # alias: carol at the receiver and alice here
FORWARD_GONE = "old@example.com"  # alias: the receiver's gone mailbox
SELECTOR = "s1"
AUTHSERV = re.compile(r"^\s*mx\.example\.net\b")
# The senders' domains; their mailboxes (for the bounces) are at the receiver.
SENDER_DOMAINS = ("goodsender.net", "strict.net", "quarantine.net")



@dataclass
class World:
    dns: ZoneServer
    receiver: Server
    senders: dict[str, Server]  # "good": the senders' own server; "outsider": nobody's
    mail: Container
    dkim_key: bytes  # PEM of goodsender.net's signing key

    def send(self, role: str, sender: str, recipient: str,
             raw: bytes) -> dict[str, tuple[int, str]]:
        """One SMTP transaction from a sender's container to our port 25."""
        job = {"host": self.mail.ip, "helo": f"{role}.sender.example", "sender": sender,
               "recipient": recipient, "message": base64.b64encode(raw).decode()}
        result = self.senders[role].exec("python3", "-c", SMTP_TRANSACTION, stdin=json.dumps(job))
        return {step: (code, text) for step, (code, text) in json.loads(result).items()}


def sender_zones(ips: dict[str, str], receiver_ip: str, public_key: str) -> dict[str, str]:
    """The foreign senders' domains (their mail server is "good", their MX the receiver), the
    receiver's domain, PTRs, and the blocklists our server asks, empty."""
    txt = " ".join(f'"{public_key[i:i + 200]}"' for i in range(0, len(public_key), 200))
    mx = f"@ 300 IN MX 10 {RECEIVER}.\n"
    spf = f'@ 300 IN TXT "v=spf1 ip4:{ips["good"]} -all"\n'
    prefix = receiver_ip.rsplit(".", 1)[0]
    reverse = "".join(f"{ip.rsplit('.', 1)[1]} 300 IN PTR {name}.sender.example.\n"
                      for name, ip in ips.items())
    reverse += f"{receiver_ip.rsplit('.', 1)[1]} 300 IN PTR {RECEIVER}.\n"
    return {
        "example.net": f"@ 300 IN MX 10 {RECEIVER}.\nmx 300 IN A {receiver_ip}\n",
        "goodsender.net": (mx + spf + '_dmarc 300 IN TXT "v=DMARC1; p=reject"\n'
                           f"{SELECTOR}._domainkey 300 IN TXT ( \"v=DKIM1; k=rsa; p=\" {txt} )\n"),
        "strict.net": mx + spf,  # SPF -all and no DMARC at all
        "quarantine.net": mx + spf + '_dmarc 300 IN TXT "v=DMARC1; p=quarantine"\n',
        "sender.example": "".join(f"{name} 300 IN A {ip}\n" for name, ip in ips.items()),
        ".".join(reversed(prefix.split("."))) + ".in-addr.arpa": reverse,
        "zen.spamhaus.org": "", "dbl.spamhaus.org": "", "list.dnswl.org": "",
    }




def host_the_senders_mailboxes(receiver: Server) -> None:
    """The receiver is also the senders' domains' MX (the bounces land there), and its gone
    mailbox accepts mail only to bounce it afterwards, as a mailbox closed for good does."""
    receiver.exec("sh", "-c", "for user in letters shop offers gone; do "
                              "useradd --create-home --shell /usr/sbin/nologin $user; done")
    receiver.exec("postconf", "-e", "mydestination = example.net, localhost, "
                  + ", ".join(SENDER_DOMAINS))
    receiver.exec("postconf", "-e",
                  f"transport_maps = inline:{{ {{ {GONE}=error:5.2.1 this mailbox is closed }} }}")


@pytest.fixture(scope="module")
def world(test_network: DockerNetwork, image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    build(RECEIVER_IMAGE, ROOT / "tests/container/receiver_image", timeout=900)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with scene(test_network, image, tmp_path_factory.mktemp("forwarding")) as made:
        senders = {role: made.server(f"sender-{role}", "infinity",
                                     options=("--entrypoint", "sleep"))
                   for role in ("good", "outsider")}
        receiver_ip, mail_ip = made.address(), made.address()
        zones = sender_zones({role: s.ip for role, s in senders.items()}, receiver_ip, public)
        dns = made.zone_server(zones)
        receiver = made.server("receiver", image=RECEIVER_IMAGE, ip=receiver_ip,
                               options=("--hostname", RECEIVER, "--dns", dns.ip))
        wait_for_smtp_banner(receiver)
        host_the_senders_mailboxes(receiver)
        mail = made.mail("fwd", ip=mail_ip, dns=dns, accounts={ALICE: PASSWORD})
        # Our zone as `mailboot dns --zone` prints it: SPF "a mx -all" names this server.
        dns.serve({**zones, "example.com": printed_zone(mail, "example.com")})
        docker("restart", "-t", "2", receiver.name)  # its resolvers forget what they cached
        wait_for_smtp_banner(receiver)
        mail.exec("mailboot", "alias", "add", FORWARD, f"{CAROL},{ALICE}")
        mail.exec("mailboot", "alias", "add", FORWARD_GONE, GONE)
        yield World(dns, receiver, senders, mail, pem)


def message(sender: str, recipient: str, signed_by: bytes | None = None) -> tuple[bytes, str]:
    token = secrets.token_hex(6)
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, recipient, f"test {token}"
    mail["Message-ID"] = f"<{token}@{sender.split('@')[1]}>"
    mail["Date"] = "Sat, 05 Dec 2026 12:00:00 +0000"
    mail.set_content(f"Hello, message {token}.\n")
    return signed_as_sent(mail, SELECTOR, signed_by), token


def mailbox_text(receiver: Server, user: str, token: str) -> str:
    """What of `user`'s Maildir at the receiver mentions `token` (empty while nothing does)."""
    find = (f"grep -l -r '{token}' /home/{user}/Maildir/new 2>/dev/null | head -1 "
            "| xargs -r cat")
    return receiver.exec("sh", "-c", find, check=False)


def at_receiver(world: World, user: str, token: str, timeout: float = 60) -> EmailMessage:
    raw = eventually(lambda: mailbox_text(world.receiver, user, token), timeout,
                     lambda: f"message {token} in {user}'s mailbox at the receiver; its log:\n"
                             f"{world.receiver.logs()[-3000:]}\nours:\n"
                             f"{world.mail.log_tail(4000)}")
    parsed = email.message_from_string(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def verdicts(message: EmailMessage) -> dict[str, str]:
    """method -> result from the receiver's own Authentication-Results (RFC 8601)."""
    found: dict[str, str] = {}
    for header in message.get_all("Authentication-Results", []):
        text = " ".join(str(header).split())
        if AUTHSERV.match(text):
            for method, result in re.findall(r"\b(spf|dkim|dmarc)=(\w+)", text):
                found.setdefault(method, result)
    return found


def queue_ids(logs: str, token: str) -> list[str]:
    """Our Postfix queue ids of the message with `token` (its Message-ID holds the token)."""
    return re.findall(rf"postfix/\S*cleanup\[\d+\]: (\w+): message-id=<{token}@", logs)


def test_a_signed_message_from_a_p_reject_domain_passes_spf_dkim_and_dmarc_when_forwarded(
        world: World) -> None:
    raw, token = message("letters@goodsender.net", FORWARD, signed_by=world.dkim_key)
    steps = world.send("good", "letters@goodsender.net", FORWARD, raw)
    assert steps["data"][0] == 250, steps
    forwarded = at_receiver(world, "carol", token)
    assert verdicts(forwarded) == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}, forwarded
    # The envelope sender is an SRS address under our domain, whose SPF names us.
    assert re.fullmatch(r"<SRS0=[^=]{4}=[A-Z2-7]{2}=goodsender\.net=letters@example\.com>",
                        str(forwarded["Return-Path"])), forwarded["Return-Path"]
    world.mail.wait_for_log("srs: a copy of mail from letters@goodsender.net for another server "
                            "has the return address SRS0=")


def test_an_unsigned_message_from_a_domain_without_dmarc_passes_spf_when_forwarded(
        world: World) -> None:
    raw, token = message("shop@strict.net", FORWARD)
    steps = world.send("good", "shop@strict.net", FORWARD, raw)
    assert steps["data"][0] == 250, steps
    forwarded = at_receiver(world, "carol", token)
    found = verdicts(forwarded)
    assert found["spf"] == "pass", forwarded
    assert found.get("dmarc", "none") == "none", found  # strict.net publishes no DMARC


def test_the_local_copy_keeps_its_envelope_and_our_users_mail_leaves_unchanged(
        world: World) -> None:
    """Only copies forwarded off the server are rewritten: alice's copy of the alias's mail
    keeps the sender's own address, and mail alice sends herself leaves directly, never
    through the re-injection (nor the policy process's SRS socket)."""
    raw, token = message("letters@goodsender.net", FORWARD, signed_by=world.dkim_key)
    assert world.send("good", "letters@goodsender.net", FORWARD, raw)["data"][0] == 250
    local = eventually(lambda: world.mail.exec(
        "sh", "-c", f"grep -l -r 'test {token}' /data/mail/example.com/alice/ | head -1 "
                    "| xargs -r head -c 2000", check=False).stdout, 30,
        lambda: f"message {token} in alice's mailbox:\n{world.mail.log_tail(3000)}")
    assert re.search(r"^Return-Path: <letters@goodsender\.net>$", local, re.MULTILINE), local
    assert our_verdicts(email.message_from_string(local, policy=email.policy.default)) \
        .get("dmarc") == "pass"

    own = EmailMessage()
    own_token = secrets.token_hex(6)
    own["From"], own["To"], own["Subject"] = ALICE, CAROL, f"test {own_token}"
    own["Message-ID"] = f"<{own_token}@example.com>"
    own.set_content("From alice herself.\n")
    with world.mail.smtp(587) as client:
        client.starttls(context=insecure_context())
        client.login(ALICE, PASSWORD)
        client.send_message(own)
    delivered = at_receiver(world, "carol", own_token)
    assert str(delivered["Return-Path"]) == f"<{ALICE}>"
    assert verdicts(delivered) == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    logs = world.mail.logs()
    [queue_id] = queue_ids(logs, own_token)
    assert re.search(rf"{queue_id}: to=<{CAROL}>, relay={re.escape(RECEIVER)}\[", logs), logs
    assert f"{queue_id}: to=<{CAROL}>, relay=127.0.0.1" not in logs
    assert f"srs: a copy of mail from {ALICE}" not in logs


def test_a_bounce_from_the_receiver_reaches_the_original_sender(world: World) -> None:
    raw, token = message("letters@goodsender.net", FORWARD_GONE, signed_by=world.dkim_key)
    assert world.send("good", "letters@goodsender.net", FORWARD_GONE, raw)["data"][0] == 250
    # The receiver accepted it, then bounced it to the SRS address; our server took the bounce
    # on port 25 and sent it on to letters@goodsender.net, whose mailbox is at the receiver.
    bounce = at_receiver(world, "letters", token, timeout=90)
    assert "this mailbox is closed" in bounce.as_string()
    assert str(bounce["Return-Path"]) == "<>"
    logs = world.mail.logs()
    assert re.search(r"to=<letters@goodsender\.net>, orig_to=<SRS0=[^>]+@example\.com>", logs)


def test_a_forged_or_foreign_srs_address_is_refused(world: World) -> None:
    raw, _ = message("someone@strict.net", FORWARD)
    forged = "SRS0=abcd=AA=strict.net=someone@example.com"
    steps = world.send("good", "", forged, raw)
    assert steps["rcpt"][0] == 550, steps
    world.mail.wait_for_log(f"srs: refused a bounce address: '{forged.lower()}': the hash "
                            "does not hold")


def test_a_quarantined_message_is_held_not_forwarded(world: World) -> None:
    """quarantine.net says p=quarantine; sent from outside its SPF and unsigned, it fails DMARC:
    alice's copy goes to her Junk, the copy for the receiver is held here."""
    raw, token = message("offers@quarantine.net", FORWARD)
    steps = world.send("outsider", "offers@quarantine.net", FORWARD, raw)
    assert steps["data"][0] == 250, steps
    notice = "mailboot: DMARC p=quarantine: held, not forwarded off the server"
    [held] = [line for line in world.mail.wait_for_log(notice).splitlines() if notice in line]
    assert "hold: header Authentication-Results: mail.example.com" in held, held
    assert "to=<carol@example.net>" in held, held
    queue = [json.loads(line) for line in
             world.mail.exec("postqueue", "-j").stdout.splitlines() if line.strip()]
    assert [entry["queue_name"] for entry in queue
            if entry["recipients"][0]["address"] == CAROL] == ["hold"], queue
    junk = eventually(lambda: world.mail.exec(
        "sh", "-c", f"grep -l -r 'test {token}' /data/mail/example.com/alice/", check=False)
        .stdout, 30, lambda: f"alice's copy of {token}:\n{world.mail.log_tail(3000)}")
    assert "/.Junk/" in junk, junk
    status = world.mail.exec("mailboot", "status", check=False).stdout
    assert re.search(r"\b1 on hold\b", status), status
    # Later mail to carol arrives (so the held copy had its chance), and the held one did not.
    later, later_token = message("shop@strict.net", FORWARD)
    assert world.send("good", "shop@strict.net", FORWARD, later)["data"][0] == 250
    at_receiver(world, "carol", later_token)
    assert mailbox_text(world.receiver, "carol", token) == ""


def test_through_a_relay_the_rewritten_copy_leaves_by_the_relay(world: World) -> None:
    """With RELAY_HOST the forwarded copy, once rewritten, leaves through the relay as all our
    mail does (here the receiver's submission port, with its SMTP AUTH), not to the MX."""
    mail = world.mail
    docker("stop", "-t", "20", mail.name)
    relayed = Container(f"{mail.name}-relay", mail.data, {
        **mail.env, "RELAY_HOST": f"{RECEIVER}:587", "RELAY_USER": "relay@example.net",
        "RELAY_PASSWORD": "relay-secret"}, mail.image, network=mail.network, ip=mail.ip,
        dns=mail.dns)
    try:
        relayed.start()
        relayed.wait_ready()
        raw, token = message("shop@strict.net", FORWARD)
        assert world.send("good", "shop@strict.net", FORWARD, raw)["data"][0] == 250
        forwarded = at_receiver(world, "carol", token)
        assert re.fullmatch(r"<SRS0=[^=]{4}=[A-Z2-7]{2}=strict\.net=shop@example\.com>",
                            str(forwarded["Return-Path"])), forwarded["Return-Path"]
        logs = relayed.logs()
        assert re.search(rf"to=<{re.escape(CAROL)}>, orig_to=<{FORWARD}>, relay=127\.0\.0\.1", logs)
        assert re.search(rf"to=<{re.escape(CAROL)}>, relay={re.escape(RECEIVER)}\[[\d.]+\]:587",
                         logs), logs[-3000:]
        assert "sasl_username=relay@example.net" in world.receiver.logs()
    finally:
        relayed.remove()
        docker("start", mail.name)
        mail.wait_ready()
