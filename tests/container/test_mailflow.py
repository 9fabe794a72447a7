"""Mail flow through the running container with real clients: submit, sign, deliver, read back."""

from __future__ import annotations

import email
import imaplib
import json
import secrets
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import dkim as dkimpy
import pytest

from tests.container.clients import search_inbox
from tests.container.containers import Container, insecure_context, running

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

ALICE, BOB = "alice@example.com", "bob@example.org"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def mail(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    with running(image, tmp_path_factory.mktemp("data"),
                 {"MAIL_DOMAINS": "example.com,example.org", "PUBLIC_IPV4": "203.0.113.25"},
                 "mailboot-flow", {ALICE: PASSWORD, BOB: PASSWORD}) as container:
        yield container


def message(sender: str, recipient: str) -> tuple[EmailMessage, str]:
    token = secrets.token_hex(6)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, recipient, f"test {token}"
    msg["Message-ID"] = f"<{token}@example.com>"
    msg.set_content(f"Hello, this is message {token}.\n")
    return msg, token


def fetch(container: Container, user: str, token: str, timeout: float = 30,
          password: str = PASSWORD) -> bytes:
    """The raw message with `token` in its subject from the user's INBOX, read over IMAPS."""
    return search_inbox(container, user, ("SUBJECT", f'"test {token}"'), token, timeout, password)


def imap_login_works(container: Container, user: str, password: str) -> bool:
    with imaplib.IMAP4_SSL("127.0.0.1", container.ports[993],
                           ssl_context=insecure_context()) as imap:
        try:
            imap.login(user, password)
        except imaplib.IMAP4.error:
            return False
        return True


def published_txt(container: Container) -> dict[str, str]:
    records = json.loads(container.exec("mailboot", "dns", "--json").stdout)
    return {r["name"]: r["value"] for r in records if r["type"] == "TXT"}


def verify_dkim(raw: bytes, txt: dict[str, str]) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return txt.get(name.decode(), "").encode()

    return bool(dkimpy.verify(raw, dnsfunc=dnsfunc))


def test_boot_prints_the_dns_records(mail: Container) -> None:
    logs = mail.wait_for_log("For web forms:", timeout=20)  # beside the daemons' start
    assert "IN MX    10 mail.example.com." in logs
    assert "._domainkey.example.org." in logs
    assert "For web forms:" in logs


def test_submission_on_587_with_starttls_is_signed_delivered_and_readable(
    mail: Container,
) -> None:
    msg, token = message(ALICE, BOB)
    with mail.smtp(587) as smtp:
        smtp.starttls(context=insecure_context())
        smtp.login(ALICE, PASSWORD)
        smtp.send_message(msg)
    raw = fetch(mail, BOB, token)
    parsed = email.message_from_bytes(raw)
    signature = parsed["DKIM-Signature"]
    assert signature is not None and "d=example.com" in signature
    assert verify_dkim(raw, published_txt(mail))
    # OpenDKIM logs only to syslog; the supervisor's /dev/log must carry it to `docker logs`.
    assert "DKIM-Signature field added (s=mb" in mail.logs()


def test_submission_on_465_with_implicit_tls(mail: Container) -> None:
    msg, token = message(BOB, ALICE)
    with mail.smtp(465, implicit_tls=True) as smtp:
        smtp.login(BOB, PASSWORD)
        smtp.send_message(msg)
    raw = fetch(mail, ALICE, token)
    assert "d=example.org" in str(email.message_from_bytes(raw)["DKIM-Signature"])
    assert verify_dkim(raw, published_txt(mail))


def test_mail_from_outside_on_port_25_is_delivered(mail: Container) -> None:
    msg, token = message("someone@example.net", ALICE)
    with mail.smtp(25) as smtp:
        smtp.ehlo("mx.example.net")
        smtp.starttls(context=insecure_context())
        smtp.send_message(msg)
    raw = fetch(mail, ALICE, token)
    assert b"someone@example.net" in raw


def test_postmaster_and_abuse_reach_a_mailbox(mail: Container) -> None:
    for role in ("postmaster@example.org", "abuse@example.com"):
        msg, token = message("someone@example.net", role)
        with mail.smtp(25) as smtp:
            smtp.send_message(msg)
        owner = ALICE if role.endswith("example.com") else BOB
        fetch(mail, owner, token)


def test_unknown_local_recipient_is_refused_at_rcpt(mail: Container) -> None:
    with mail.smtp(25) as smtp, pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        smtp.sendmail("someone@example.net", ["nobody@example.com"], b"Subject: x\r\n\r\nx\r\n")
    code, _ = caught.value.recipients["nobody@example.com"]
    assert 500 <= code < 600


def test_account_cli(mail: Container, tmp_path: Path) -> None:
    carol = "carol@example.com"
    mail.add_account(carol, PASSWORD)
    assert carol in mail.exec("mailboot", "account", "list").stdout.split()
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context()) as imap:
        imap.login(carol, PASSWORD)
    mail.exec("mailboot", "account", "password", carol, "--password-stdin",
              stdin="a new long password\n")
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context()) as imap:
        imap.login(carol, "a new long password")
    # The old password, right after it worked, no longer does (no cache keeps it alive).
    assert not imap_login_works(mail, carol, PASSWORD)
    mail.exec("mailboot", "alias", "add", "sales@example.com", carol)
    assert "sales@example.com -> carol@example.com" in mail.exec(
        "mailboot", "alias", "list").stdout
    msg, token = message("someone@example.net", "sales@example.com")
    with mail.smtp(25) as smtp:
        smtp.send_message(msg)
    fetch(mail, carol, token, password="a new long password")
    mail.exec("mailboot", "alias", "remove", "sales@example.com")
    assert "sales@example.com" not in mail.exec("mailboot", "alias", "list").stdout
    with mail.smtp(25) as smtp, pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp.sendmail("someone@example.net", ["sales@example.com"], b"Subject: x\r\n\r\nx\r\n")
    mail.exec("mailboot", "account", "remove", carol)
    assert carol not in mail.exec("mailboot", "account", "list").stdout.split()
    assert not imap_login_works(mail, carol, "a new long password")
    refused = mail.exec("mailboot", "account", "add", "dave@example.net", "--password-stdin",
                        stdin=PASSWORD + "\n", check=False)
    assert refused.returncode == 65 and "not at one of the mail domains" in refused.stderr


def test_passwords_are_stored_only_as_strong_hashes(mail: Container) -> None:
    passwd = (mail.data / "accounts" / "passwd").read_text()
    assert PASSWORD not in passwd
    assert all(line.split(":")[1].startswith("{BLF-CRYPT}") for line in passwd.splitlines())
    assert PASSWORD not in mail.logs()
