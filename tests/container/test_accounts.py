"""Accounts beyond one password: app passwords per device, quotas set by command, and bulk
import of 10,000 mailboxes, with real IMAP and submission logins."""

from __future__ import annotations

import imaplib
import json
import secrets
import smtplib
import time
from collections.abc import Iterator

import pytest

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
from tests.container.clients import ssha512
from tests.container.containers import Container, insecure_context, running

pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

ALICE = "alice@example.com"
PASSWORD = "correct horse battery"
BULK = 10_000


@pytest.fixture(scope="module")
def mail(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    with running(image, tmp_path_factory.mktemp("data"),
                 {"MAIL_DOMAINS": "example.com,example.org", "MAILBOX_QUOTA": "2G"},
                 "mailboot-accounts", {ALICE: PASSWORD}) as container:
        yield container


def imap_login(mail: Container, user: str, password: str) -> bool:
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context()) as imap:
        try:
            imap.login(user, password)
        except imaplib.IMAP4.error:
            return False
        return True


def submission_login(mail: Container, user: str, password: str) -> bool:
    with smtplib.SMTP("127.0.0.1", mail.ports[587], timeout=30) as smtp:
        smtp.starttls(context=insecure_context())
        try:
            smtp.login(user, password)
        except smtplib.SMTPAuthenticationError:
            return False
        return True


def logs_in(mail: Container, user: str, password: str) -> tuple[bool, bool]:
    return imap_login(mail, user, password), submission_login(mail, user, password)


def listed(mail: Container) -> dict[str, dict[str, object]]:
    rows = json.loads(mail.exec("mailboot", "account", "list", "--json").stdout)
    return {str(row["address"]): row for row in rows}


def test_each_app_password_logs_in_and_is_revoked_alone(mail: Container) -> None:
    devices = {f"device-{n}": f"app password {secrets.token_hex(8)}" for n in range(3)}
    for name, password in devices.items():
        mail.exec("mailboot", "account", "password", ALICE, "--add-app", name,
                  "--password-stdin", stdin=password + "\n")
    for password in [PASSWORD, *devices.values()]:
        assert logs_in(mail, ALICE, password) == (True, True)
    assert listed(mail)[ALICE]["app_passwords"] == sorted(devices)

    mail.exec("mailboot", "account", "password", ALICE, "--remove-app", "device-1")
    assert logs_in(mail, ALICE, devices["device-1"]) == (False, False)
    for password in (PASSWORD, devices["device-0"], devices["device-2"]):
        assert logs_in(mail, ALICE, password) == (True, True)
    assert "device-1" not in mail.exec("mailboot", "account", "list").stdout

    twice = mail.exec("mailboot", "account", "password", ALICE, "--add-app", "device-0",
                      "--password-stdin", stdin="another long password\n", check=False)
    assert twice.returncode == 65 and "already has an app password named device-0" in (
        twice.stderr)


def test_quota_is_set_by_command_and_listed(mail: Container) -> None:
    bob = "bob@example.org"
    mail.exec("mailboot", "account", "add", bob, "--quota", "5M", "--password-stdin",
              stdin=PASSWORD + "\n")
    rows = listed(mail)
    assert rows[bob]["limit_bytes"] == 5 << 20
    assert rows[ALICE]["limit_bytes"] == 2 << 30  # MAILBOX_QUOTA
    assert rows[bob]["used_bytes"] == 0
    mail.exec("mailboot", "account", "quota", bob, "--quota", "unlimited")
    assert listed(mail)[bob]["limit_bytes"] is None
    assert imap_login(mail, bob, PASSWORD)  # the quota field keeps the line a valid login


def test_ten_thousand_accounts_import_in_one_write(mail: Container) -> None:
    passwords = {f"user{n:05}@example.org": f"password number {n}" for n in range(BULK - 2)}
    lines = [f"{address}\t{ssha512(password)}" for address, password in passwords.items()]
    bcrypt = mail.exec("doveadm", "pw", "-s", "BLF-CRYPT", "-r", "10", "-p",
                       "imported bcrypt pw").stdout.strip()
    lines += [f"hashed@example.com\t{bcrypt}", "plain@example.com\ta plain password here"]
    started = time.monotonic()
    done = mail.exec("mailboot", "account", "import", stdin="\n".join(lines) + "\n")
    took = time.monotonic() - started
    print(f"imported {BULK} accounts in {took:.1f} s")  # the bar: under 60 s here
    assert f"imported {BULK} account(s) (1 plain password(s) hashed)" in done.stdout
    assert "fast hash" in done.stderr  # the SSHA512 ones are told to get a new password
    some = secrets.SystemRandom().sample(sorted(passwords), 3)
    for address in some:
        assert imap_login(mail, address, passwords[address])
    assert logs_in(mail, "hashed@example.com", "imported bcrypt pw") == (True, True)
    assert imap_login(mail, "plain@example.com", "a plain password here")
    assert not imap_login(mail, some[0], "wrong password")

    passwd = (mail.data / "accounts" / "passwd").read_bytes()
    bad = [f"new{n}@example.com\tanother plain password" for n in range(99)]
    bad.insert(56, "new-bad@example.net\tanother plain password")  # line 57: not our domain
    refused = mail.exec("mailboot", "account", "import", stdin="\n".join(bad) + "\n",
                        check=False)
    assert refused.returncode == 65
    assert "line 57: 'new-bad@example.net' is not at one of the mail domains" in refused.stderr
    assert "nothing was imported" in refused.stderr
    assert (mail.data / "accounts" / "passwd").read_bytes() == passwd
    assert not imap_login(mail, "new0@example.com", "another plain password")
