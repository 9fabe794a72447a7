"""Inbound defence, end to end: senders at their own addresses on a test network, BIND serving
their domains (SPF, DKIM, DMARC) and a fake Spamhaus ZEN, our container forwarding its resolver
to it. Real postscreen, OpenDKIM, OpenDMARC, Sieve and bogofilter decide."""

from __future__ import annotations

import base64
import imaplib
import json
import random
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.container.clients import SMTP_TRANSACTION, fetched_message, our_verdicts, signed_as_sent
from tests.container.containers import Container, insecure_context
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import Server, scene
from tests.container.zoneserver import ZoneServer
from tests.polling import eventually

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

ALICE = "alice@example.com"
BOB = "bob@example.com"
PASSWORD = "correct horse battery"
SELECTOR = "s1"
# Words the filter learns; a message takes a random handful, so no two are alike.
SPAM_WORDS = ("viagra", "casino", "jackpot", "bitcoin", "winner", "lottery", "prize", "claim",
              "urgent", "pills", "cheap", "discount", "offer", "crypto", "profit", "guaranteed",
              "bonus", "free", "click", "unsubscribe")
HAM_WORDS = ("meeting", "agenda", "minutes", "project", "schedule", "review", "budget",
             "quarterly", "report", "team", "lunch", "thursday", "deadline", "draft", "proposal",
             "notes", "feedback", "roadmap", "sprint")


# Talks before its turn: EHLO right after connecting, then a whole transaction.
PREGREET = r"""
import socket, sys, time
host = sys.argv[1]
with socket.create_connection((host, 25), timeout=30) as s:
    s.sendall(b"EHLO pregreet.example.net\r\n")
    time.sleep(8)
    s.sendall(b"MAIL FROM:<a@plain.net>\r\nRCPT TO:<alice@example.com>\r\nQUIT\r\n")
    s.settimeout(10)
    seen = b""
    try:
        while chunk := s.recv(4096):
            seen += chunk
    except OSError:
        pass
    print(seen.decode(errors="replace"))
"""


@dataclass
class Sender:
    """A container at its own address on the test network, which sends as another server."""

    server: Server

    @property
    def ip(self) -> str:
        return self.server.ip

    def send(self, mail_ip: str, sender: str, recipient: str, message: bytes,
             helo: str = "mx.sender.example") -> dict[str, tuple[int, str]]:
        job = {"host": mail_ip, "helo": helo, "sender": sender, "recipient": recipient,
               "message": base64.b64encode(message).decode()}
        result = self.server.exec("python3", "-c", SMTP_TRANSACTION, stdin=json.dumps(job))
        return {step: (code, text) for step, (code, text) in json.loads(result).items()}


@dataclass
class World:
    network: DockerNetwork
    dns: ZoneServer
    mail: Container
    senders: dict[str, Sender]
    dkim_key: bytes  # PEM of goodsender.net's signing key


def zones(ips: dict[str, str], mail_ip: str, public_key: str) -> dict[str, str]:
    """What the world publishes: our domain, the senders' domains, the blocklists."""
    third = mail_ip.split(".")[2]
    txt = " ".join(f'"{public_key[i:i + 200]}"' for i in range(0, len(public_key), 200))
    reverse = "".join(f"{ip.rsplit('.', 1)[1]} 300 IN PTR {name}.sender.example.\n"
                      for name, ip in ips.items())
    return {
        "example.com": (f"@ 300 IN MX 10 mail.example.com.\nmail 300 IN A {mail_ip}\n"
                        f'@ 300 IN TXT "v=spf1 ip4:{mail_ip} -all"\n'
                        '_dmarc 300 IN TXT "v=DMARC1; p=reject"\n'),
        # A well-run sender: SPF for its server, a DKIM key, DMARC p=reject.
        "goodsender.net": (f'@ 300 IN TXT "v=spf1 ip4:{ips["good"]} -all"\n'
                           f"{SELECTOR}._domainkey 300 IN TXT ( \"v=DKIM1; k=rsa; p=\" {txt} )\n"
                           '_dmarc 300 IN TXT "v=DMARC1; p=reject"\n'),
        "quarantine.net": (f'@ 300 IN TXT "v=spf1 ip4:{ips["good"]} -all"\n'
                           '_dmarc 300 IN TXT "v=DMARC1; p=quarantine"\n'),
        # SPF -all and no DMARC at all.
        "strict.net": f'@ 300 IN TXT "v=spf1 ip4:{ips["good"]} -all"\n',
        "plain.net": "@ 300 IN A 192.0.2.1\n",
        "sender.example": "".join(f"{name} 300 IN A {ip}\n" for name, ip in ips.items()),
        f"{third}.30.172.in-addr.arpa": reverse,
        # Spamhaus ZEN as a test double: one sender listed (SBL, 127.0.0.2), one answered
        # with "query refused" (127.255.255.254), as ZEN answers public resolvers.
        "zen.spamhaus.org": (f"{reverse_v4(ips['listed'])} 300 IN A 127.0.0.2\n"
                             f"{reverse_v4(ips['refused'])} 300 IN A 127.255.255.254\n"
                             "2.0.0.127 300 IN A 127.0.0.2\n"),
        "dbl.spamhaus.org": "",
        "list.dnswl.org": "",
    }


def reverse_v4(ip: str) -> str:
    return ".".join(reversed(ip.split(".")))


@pytest.fixture(scope="module")
def world(test_network: DockerNetwork, image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with scene(test_network, image, tmp_path_factory.mktemp("inbound")) as made:
        senders = {role: Sender(made.server(f"sender-{role}", "infinity",
                                            options=("--entrypoint", "sleep")))
                   for role in ("good", "outsider", "listed", "refused", "pregreet")}
        mail_ip = made.address()
        dns = made.zone_server(zones({r: s.ip for r, s in senders.items()}, mail_ip, public))
        mail = made.mail("in", ip=mail_ip, dns=dns, accounts={ALICE: PASSWORD, BOB: PASSWORD})
        yield World(test_network, dns, mail, senders, pem)


def message(sender: str, recipient: str, body: str = "Hello.", signed_by: bytes | None = None,
            extra: dict[str, str] | None = None) -> tuple[bytes, str]:
    token = secrets.token_hex(6)
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, recipient, f"test {token}"
    mail["Message-ID"] = f"<{token}@{sender.split('@')[1]}>"
    mail["Date"] = "Tue, 01 Dec 2026 12:00:00 +0000"
    for name, value in (extra or {}).items():
        mail[name] = value
    mail.set_content(body + "\n")
    return signed_as_sent(mail, SELECTOR, signed_by), token


def look(mail: Container, user: str, token: str, mailbox: str = "INBOX") -> EmailMessage | None:
    """The message with `token` in `mailbox` now, read over IMAPS; None if it is not there."""
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context(),
                           timeout=30) as imap:
        imap.login(user, PASSWORD)
        imap.select(f'"{mailbox}"', readonly=True)
        _, found = imap.search(None, "SUBJECT", f'"test {token}"')
        if not found[0]:
            return None
        _, data = imap.fetch(found[0].split()[0], "(BODY.PEEK[])")
    return fetched_message(data[0])


def find(mail: Container, user: str, token: str, mailbox: str = "INBOX",
         timeout: float = 30) -> EmailMessage:
    """The message with `token` in `mailbox`, once it has arrived."""
    return eventually(lambda: look(mail, user, token, mailbox), timeout,
                      lambda: f"test {token} in {user}'s {mailbox}:\n{mail.log_tail(3000)}")


# --- postscreen --------------------------------------------------------------------------------

def test_a_listed_sender_is_refused_naming_the_blocklist(world: World) -> None:
    raw, _ = message("someone@plain.net", ALICE)
    steps = world.senders["listed"].send(world.mail.ip or "", "someone@plain.net", ALICE, raw)
    code, text = steps["rcpt"]
    assert code // 100 == 5 and "zen.spamhaus.org" in text, steps
    assert "data" not in steps


def test_a_blocklist_that_refuses_our_resolver_never_refuses_mail(world: World) -> None:
    raw, token = message("someone@plain.net", ALICE)
    steps = world.senders["refused"].send(world.mail.ip or "", "someone@plain.net", ALICE, raw)
    assert steps["data"][0] == 250, steps
    assert find(world.mail, ALICE, token) is not None
    refused = world.senders["refused"].ip
    world.mail.wait_for_log("this blocklist refuses our resolver: zen.spamhaus.org answered "
                            f"127.255.255.254 (\"query refused\") for {refused}")


def test_a_client_that_talks_before_the_banner_is_refused(world: World) -> None:
    sender = world.senders["pregreet"]
    seen = sender.server.exec("python3", "-c", PREGREET, world.mail.ip or "")
    replies = seen.splitlines()
    # postscreen plays along until RCPT, then refuses every recipient: nothing is accepted.
    assert "550 5.5.1 Protocol error" in replies, seen
    assert not any(line.startswith("250 2.1.5") for line in replies), seen
    world.mail.wait_for_log("PREGREET 27 after ")  # 27: the bytes of the early EHLO


# --- SPF, DKIM and DMARC -----------------------------------------------------------------------

def test_a_foreign_domains_valid_mail_carries_pass_verdicts(world: World) -> None:
    """...and only ours: a verdict that arrives with our authserv-id is removed (RFC 8601 §5)."""
    forged = {"Authentication-Results": "mail.example.com; spf=fail smtp.mailfrom=forged.example"}
    raw, token = message("news@goodsender.net", ALICE, signed_by=world.dkim_key, extra=forged)
    steps = world.senders["good"].send(world.mail.ip or "", "news@goodsender.net", ALICE, raw)
    assert steps["data"][0] == 250, steps
    delivered = find(world.mail, ALICE, token)
    assert delivered is not None
    assert our_verdicts(delivered) == {"dkim": "pass", "spf": "pass", "dmarc": "pass"}
    assert "forged.example" not in delivered.as_string()


def test_the_same_domain_from_outside_its_spf_and_unsigned_is_refused_citing_dmarc(
        world: World) -> None:
    raw, token = message("news@goodsender.net", ALICE)
    steps = world.senders["outsider"].send(world.mail.ip or "", "news@goodsender.net", ALICE, raw)
    code, text = steps["data"]
    assert code // 100 == 5 and "DMARC" in text and "goodsender.net" in text, steps
    assert look(world.mail, ALICE, token) is None


@pytest.mark.parametrize("envelope", ["boss@example.com", "bounces@plain.net"])
def test_our_own_domain_from_outside_is_refused_even_with_a_forged_pass(
        world: World, envelope: str) -> None:
    forged = {"Authentication-Results": "mail.example.com; dkim=pass header.d=example.com; "
                                        "spf=pass smtp.mailfrom=example.com; dmarc=pass"}
    raw, token = message("boss@example.com", ALICE, extra=forged)
    steps = world.senders["outsider"].send(world.mail.ip or "", envelope, ALICE, raw)
    code, text = steps.get("data", steps.get("rcpt", (0, "")))
    assert code // 100 == 5, steps
    assert "DMARC" in text or "SPF" in text, steps
    assert look(world.mail, ALICE, token) is None


def test_spf_fail_without_dmarc_is_refused(world: World) -> None:
    raw, _ = message("shop@strict.net", ALICE)
    steps = world.senders["outsider"].send(world.mail.ip or "", "shop@strict.net", ALICE, raw)
    code, text = steps["rcpt"]
    assert code == 550 and "5.7.23" in text and "strict.net" in text, steps
    # One log line: the client, the check and the reason.
    world.mail.wait_for_log(f"[{world.senders['outsider'].ip}]: "
                            "550 5.7.23 <alice@example.com>: Recipient address rejected: SPF: "
                            "strict.net does not allow")


def test_quarantine_goes_to_junk_and_clean_mail_to_the_inbox(world: World) -> None:
    suspicious, suspicious_token = message("offers@quarantine.net", BOB)
    steps = world.senders["outsider"].send(world.mail.ip or "", "offers@quarantine.net", BOB,
                                           suspicious)
    assert steps["data"][0] == 250, steps
    clean, clean_token = message("news@goodsender.net", BOB, signed_by=world.dkim_key)
    assert world.senders["good"].send(world.mail.ip or "", "news@goodsender.net", BOB,
                                      clean)["data"][0] == 250
    junk = find(world.mail, BOB, suspicious_token, mailbox="Junk")
    assert junk is not None and our_verdicts(junk)["dmarc"] == "fail"
    assert find(world.mail, BOB, clean_token) is not None
    assert look(world.mail, BOB, suspicious_token) is None  # delivered once, into Junk


# --- our own users --------------------------------------------------------------------------

def test_our_users_submissions_and_local_mail_are_unaffected(world: World) -> None:
    """Alice writes to Bob (a local mailbox) on 587: signed, never judged, in his INBOX."""
    raw, token = message(ALICE, BOB)
    with world.mail.smtp(587) as client:
        client.starttls(context=insecure_context())
        client.login(ALICE, PASSWORD)
        client.sendmail(ALICE, [BOB], raw)
    delivered = find(world.mail, BOB, token)
    assert delivered is not None
    assert "d=example.com" in str(delivered["DKIM-Signature"])
    assert not our_verdicts(delivered)


# --- learning --------------------------------------------------------------------------------

def words(vocabulary: tuple[str, ...], chooser: random.Random) -> str:
    return " ".join(chooser.choices(vocabulary, k=40))


def test_moving_mail_into_and_out_of_junk_teaches_the_filter(world: World) -> None:
    chooser = random.Random(secrets.randbits(32))  # noqa: S311 - test content, not security
    mail = world.mail
    spam_tokens = [deliver_local(mail, words(SPAM_WORDS, chooser)) for _ in range(20)]
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context()) as imap:
        imap.login(BOB, PASSWORD)
        # Ham a user had found in Junk: put there directly (APPEND trains nothing).
        for _ in range(20):
            ham = f"Subject: ham\r\n\r\n{words(HAM_WORDS, chooser)}\r\n".encode()
            imap.append('"Junk"', None, None, ham)
        imap.select("INBOX")
        for token in spam_tokens:
            wait_for_subject(imap, token)
        # The user moves the spam into Junk (learnt as spam) ...
        _, found = imap.search(None, "SUBJECT", '"test "')
        imap.copy(b",".join(found[0].split()).decode(), '"Junk"')
        imap.store(b",".join(found[0].split()).decode(), "+FLAGS", "\\Deleted")
        imap.expunge()
        # ... and the ham out of Junk into the INBOX (learnt as ham).
        imap.select('"Junk"')
        _, found = imap.search(None, "SUBJECT", '"ham"')
        assert len(found[0].split()) == 20
        imap.copy(b",".join(found[0].split()).decode(), "INBOX")
    spam_token = deliver_local(mail, words(SPAM_WORDS, chooser))
    ham_token = deliver_local(mail, words(HAM_WORDS, chooser))
    assert find(mail, BOB, spam_token, mailbox="Junk") is not None, mail.logs()[-3000:]
    assert find(mail, BOB, ham_token) is not None
    wordlist = mail.data / "mail" / "example.com" / "bob" / ".bogofilter" / "wordlist.db"
    assert wordlist.is_file()


def deliver_local(mail: Container, body: str) -> str:
    """Alice writes to Bob on 587 (the filter judges local mail as any other)."""
    raw, token = message(ALICE, BOB, body=body)
    with mail.smtp(587) as client:
        client.starttls(context=insecure_context())
        client.login(ALICE, PASSWORD)
        client.sendmail(ALICE, [BOB], raw)
    return token


def wait_for_subject(imap: imaplib.IMAP4_SSL, token: str, timeout: float = 30) -> None:
    def arrived() -> bool:
        imap.noop()  # the server tells of new mail in the selected mailbox on any command
        return bool(imap.search(None, "SUBJECT", f'"test {token}"')[1][0])

    eventually(arrived, timeout, f"test {token} in the INBOX", interval=0.3)


# --- the resolver and Docker's proxy -------------------------------------------------------

def test_the_daemons_resolve_through_the_local_resolver(world: World) -> None:
    assert world.mail.exec("cat", "/etc/resolv.conf").stdout.startswith("nameserver 127.0.0.1\n")
    stats = world.mail.exec("unbound-control", "-s", "/run/unbound.ctl", "stats_noreset").stdout
    total = re.search(r"^total\.num\.queries=(\S+)$", stats, re.MULTILINE)
    assert total is not None and float(total.group(1)) > 10, stats


def test_dockers_proxy_hiding_the_senders_is_said_loudly(world: World) -> None:
    """Connections through the published port come from the network's gateway (Docker's
    userland proxy): after a few sessions the log says what is wrong and how to fix it."""
    for _ in range(4):
        with world.mail.smtp(25) as smtp:
            smtp.ehlo("client.example")
            smtp.mail("someone@plain.net")
            smtp.rcpt(ALICE)
    gateway = world.network.prefix + "1"
    world.mail.wait_for_log(f"every session on port 25 comes from {gateway}, this container's "
                            "gateway: Docker's userland proxy hides the senders' addresses")


def test_opendmarc_brings_no_database_client_into_the_image(world: World) -> None:
    """Its report database is unused: MariaDB's client and Perl would add about 130 MB."""
    for package in ("mariadb-client", "mariadb-client-core", "perl"):
        installed = world.mail.exec("dpkg-query", "-W", "-f", "${Status}", package, check=False)
        assert "installed" not in installed.stdout.replace("not-installed", ""), package
