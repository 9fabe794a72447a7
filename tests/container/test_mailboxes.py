"""Mailboxes, end to end: quotas (the 90 % warning, refusal at RCPT time), users' own Sieve
filters over ManageSieve with a vacation reply that leaves by MX, and app passwords.

One container for the module, on a test network with BIND serving our domain and an outside
one, whose MX is a tiny SMTP sink (a container of the image running Python) that keeps every
message it receives: where the vacation replies go, and where a bounce would go.
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import imaplib
import json
import secrets
import smtplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import managesieve
import pytest

from mailboot.daemons.dovecot import parse_quota_usage
from tests.container.clients import fetched_message, sieve_client
from tests.container.containers import Container, insecure_context
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import Server, scene
from tests.polling import eventually

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

FULL = "alice@example.com"  # MAILBOX_QUOTA=1M
AWAY = "bob@example.com"  # has a vacation script
PASSWORD = "correct horse battery"
APP_PASSWORD = "phone app password 3"
OUTSIDE = "outside.example"
MIB = 1024 * 1024
WARNING_SUBJECT = "Your mailbox is almost full"

# An SMTP server that accepts everything and appends each message as a JSON line.
SINK = r"""
import base64, json, socketserver
class Session(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")
    def handle(self):
        self.reply("220 sink")
        sender, recipients = "", []
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.reply("250 sink")
            elif verb == b"MAIL":
                sender, recipients = line.decode().split(":", 1)[1].strip(), []
                self.reply("250 ok")
            elif verb == b"RCPT":
                recipients.append(line.decode().split(":", 1)[1].strip())
                self.reply("250 ok")
            elif verb == b"DATA":
                self.reply("354 go on")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                with open("/tmp/sink.jsonl", "a") as out:
                    out.write(json.dumps({"from": sender, "to": recipients,
                                          "data": base64.b64encode(data).decode()}) + "\n")
                self.reply("250 kept")
            elif verb == b"QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 25), Session).serve_forever()
"""


@dataclass
class World:
    mail: Container
    sink: Server

    def received(self) -> list[tuple[str, list[str], EmailMessage]]:
        """What the sink kept: (envelope sender, recipients, message)."""
        kept = []
        for line in self.sink.exec("sh", "-c", "cat /tmp/sink.jsonl 2>/dev/null",
                                   check=False).splitlines():
            item = json.loads(line)
            message = email.message_from_bytes(base64.b64decode(item["data"]),
                                               policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            kept.append((item["from"], item["to"], message))
        return kept


@pytest.fixture(scope="module")
def world(test_network: DockerNetwork, image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with scene(test_network, image, tmp_path_factory.mktemp("mailboxes")) as made:
        sink = made.server("sink", "-c", SINK, options=("--entrypoint", "python3"))
        mail_ip = made.address()
        dns = made.zone_server({
            "example.com": f"@ 300 IN MX 10 mail.example.com.\nmail 300 IN A {mail_ip}\n",
            OUTSIDE: f"@ 300 IN MX 10 mx.{OUTSIDE}.\nmx 300 IN A {sink.ip}\n",
        })
        mail = made.mail("boxes", {"DNSBL": "off", "MAILBOX_QUOTA": "1M",
                                   "OUTBOUND_CHECK": "off"},
                         ip=mail_ip, dns=dns, accounts={FULL: PASSWORD, AWAY: PASSWORD})
        add_app_password(mail, AWAY, 3, APP_PASSWORD)
        yield World(mail, sink)


def add_app_password(mail: Container, address: str, slot: int, password: str) -> None:
    """A line in one slot's file, by hand, as `mailboot account app-password` writes it."""
    hashed = mail.exec("sh", "-c", "setsid doveadm -O pw -s BLF-CRYPT -r 5",
                       stdin=f"{password}\n{password}\n").stdout.strip()
    mail.exec("sh", "-c", f"cat >> /data/accounts/app-passwords/{slot}",
              stdin=f"{address}:{hashed}:::Phone:::\n")


def message(sender: str, recipient: str, body: str = "Hello.\n", subject: str = "test",
            extra: dict[str, str] | None = None) -> tuple[bytes, str]:
    token = secrets.token_hex(6)
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, recipient, f"{subject} {token}"
    mail["Message-ID"] = f"<{token}@{OUTSIDE}>"
    mail["Date"] = email.utils.formatdate()
    for name, value in (extra or {}).items():
        mail[name] = value
    mail.set_content(body)
    return mail.as_bytes().replace(b"\n", b"\r\n"), token


def send_from_outside(mail: Container, sender: str, recipient: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", mail.ports[25], local_hostname=f"mx.{OUTSIDE}",
                      timeout=60) as smtp:
        smtp.sendmail(sender, [recipient], raw)


def imap(mail: Container, user: str, password: str = PASSWORD) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context(),
                               timeout=30)
    try:
        client.login(user, password)
    except imaplib.IMAP4.error:
        client.shutdown()
        raise
    return client


def look(mail: Container, user: str, criteria: str, mailbox: str) -> EmailMessage | None:
    """The first message in `mailbox` that matches the IMAP SEARCH `criteria`, if there is one."""
    with imap(mail, user) as client:
        if client.select(f'"{mailbox}"', readonly=True)[0] != "OK":
            return None  # not made yet: Sieve's fileinto :create makes it
        numbers = client.search(None, criteria)[1][0].split()
        if not numbers:
            return None
        item = client.fetch(numbers[0], "(BODY.PEEK[])")[1][0]
    return fetched_message(item)


def wait_for(mail: Container, user: str, criteria: str, mailbox: str = "INBOX",
             timeout: float = 30) -> EmailMessage:
    """The first message in `mailbox` that matches the IMAP SEARCH `criteria`, once there."""
    return eventually(lambda: look(mail, user, criteria, mailbox), timeout,
                      lambda: f"{criteria} in {user}'s {mailbox}:\n{mail.log_tail(3000)}")


def wait_for_empty_queue(mail: Container, timeout: float = 30) -> None:
    eventually(lambda: not mail.exec("postqueue", "-j").stdout.strip(), timeout,
               lambda: "an empty queue: " + mail.exec("postqueue", "-p").stdout)


# --- quotas ---------------------------------------------------------------------------------------

def test_a_nearly_full_mailbox_is_warned_and_a_message_that_would_not_fit_is_refused(
    world: World,
) -> None:
    mail = world.mail
    # About 92 % of 1 MiB (with the headers our server adds), from another server on port 25.
    filler = "".join(f"{'x' * 75}\n" for _ in range(int(0.91 * MIB) // 76))
    raw, token = message(f"big@{OUTSIDE}", FULL, filler)
    send_from_outside(mail, f"big@{OUTSIDE}", FULL, raw)
    wait_for(mail, FULL, f'SUBJECT "test {token}"')

    warning = wait_for(mail, FULL, f'SUBJECT "{WARNING_SUBJECT}"')
    assert warning["From"].addresses[0].addr_spec == "postmaster@example.com"
    assert warning["Auto-Submitted"] == "auto-generated"
    assert "MB of your 1.0 MB" in warning.get_content()

    use = parse_quota_usage(mail.exec("doveadm", "-f", "tab", "quota", "get", "-A").stdout)
    assert use[FULL].limit_bytes == MIB
    assert 0.9 * MIB < use[FULL].used_bytes < MIB

    # The client announces 200 kB (RFC 1870): the recipient is refused, nothing is accepted.
    with smtplib.SMTP("127.0.0.1", mail.ports[25], local_hostname=f"mx.{OUTSIDE}",
                      timeout=60) as smtp:
        smtp.ehlo()
        assert smtp.mail(f"late@{OUTSIDE}", ["SIZE=200000"])[0] == 250
        code, text = smtp.rcpt(FULL)
    assert (code, text.split()[0]) == (552, b"5.2.2"), text
    assert b"Mailbox is full" in text
    assert not mail.exec("postqueue", "-j").stdout.strip()
    assert not [to for _, to, _ in world.received() if f"<late@{OUTSIDE}>" in to]


# --- app passwords ------------------------------------------------------------------------------

def test_an_app_password_logs_in_to_imap_and_submission_beside_the_main_one(
    world: World,
) -> None:
    for password in (APP_PASSWORD, PASSWORD):
        with imap(world.mail, AWAY, password) as client:
            assert client.select("INBOX")[0] == "OK"
    with smtplib.SMTP("127.0.0.1", world.mail.ports[587], timeout=30) as smtp:
        smtp.starttls(context=insecure_context())
        assert smtp.login(AWAY, APP_PASSWORD)[0] == 235
    with pytest.raises(imaplib.IMAP4.error):
        imap(world.mail, AWAY, "not the app password")


# --- ManageSieve and the users' filters ----------------------------------------------------------

SCRIPT = """require ["fileinto", "mailbox", "vacation"];
if header :contains "Subject" "[club]" {
  fileinto :create "Lists";
  stop;
}
vacation :days 7 :subject "Away" "I am away until Monday.";
"""


def test_managesieve_refuses_a_login_before_starttls(world: World) -> None:
    with sieve_client(world.mail.ports[4190], starttls=False) as client:
        assert client.supports_tls
        assert client.loginmechs == []  # no SASL mechanism offered before TLS (RFC 5804 §2.1)
        assert "vacation" in client.capabilities
        with pytest.raises(managesieve.MANAGESIEVE.error, match="No matching authentication"):
            client.login("", AWAY, PASSWORD)
    # A client that ignores the capabilities and sends its password anyway is refused too.
    with socket.create_connection(("127.0.0.1", world.mail.ports[4190]), timeout=20) as raw, \
            raw.makefile("rb") as reader:
        while not reader.readline().startswith(b"OK"):
            pass
        token = base64.b64encode(f"\0{AWAY}\0{PASSWORD}".encode())
        raw.sendall(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')
        assert reader.readline().startswith(b"NO (ENCRYPT-NEEDED)")


def test_a_users_filter_files_mail_and_replies_once_while_away(world: World) -> None:
    mail = world.mail
    with sieve_client(mail.ports[4190], starttls=True) as client:
        assert "PLAIN" in client.loginmechs
        assert client.login("", AWAY, APP_PASSWORD) == "OK"
        assert client.putscript("away", SCRIPT) == "OK"
        assert client.setactive("away") == "OK"
        assert client.listscripts() == ("OK", [("away", True)])
        assert client.getscript("away") == ("OK", SCRIPT)

    carol, dave, erin = (f"{name}@{OUTSIDE}" for name in ("carol", "dave", "erin"))
    first, first_token = message(carol, AWAY)
    send_from_outside(mail, carol, AWAY, first)
    wait_for(mail, AWAY, f'SUBJECT "test {first_token}"')
    second, second_token = message(carol, AWAY)  # the same sender within the 7 days
    send_from_outside(mail, carol, AWAY, second)
    listed, listed_token = message(dave, AWAY, extra={"Precedence": "list"})
    send_from_outside(mail, dave, AWAY, listed)
    club, club_token = message(erin, AWAY, subject="[club] next meeting")
    send_from_outside(mail, erin, AWAY, club)

    wait_for(mail, AWAY, f'SUBJECT "test {second_token}"')
    wait_for(mail, AWAY, f'SUBJECT "test {listed_token}"')
    filed = wait_for(mail, AWAY, 'SUBJECT "[club]"', mailbox="Lists")
    assert filed["Message-ID"] == f"<{club_token}@{OUTSIDE}>"
    wait_for_empty_queue(mail)

    replies = [(sender, to, m) for sender, to, m in world.received() if m["Subject"] == "Away"]
    assert [to for _, to, _ in replies] == [[f"<{carol}>"]], replies
    sender, _, reply = replies[0]
    assert sender == "<>"  # RFC 5230 §5.1: the null envelope sender
    assert reply["From"].addresses[0].addr_spec == AWAY
    assert reply["Auto-Submitted"].startswith("auto-replied")
    assert reply["In-Reply-To"] == f"<{first_token}@{OUTSIDE}>"
    assert "d=example.com" in " ".join(str(reply["DKIM-Signature"]).split())
