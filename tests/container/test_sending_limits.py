"""Sending limits per login, end to end: with 20 messages a day, the 21st is refused with a
4xx at RCPT, also after a restart; another account still sends; `mailboot status` shows the
held account; `mailboot account release` lets it send again (real Postfix, Dovecot SASL, and the
policy process started on demand by the supervisor)."""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from tests.container.containers import Container, insecure_context, running
from tests.container.dockercli import docker

pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

ALICE, BOB = "alice@example.com", "bob@example.com"
PASSWORD = "correct horse battery"
LIMIT = 20
LOG_LINE = (f"limits: {ALICE} reached its limit of {LIMIT} messages today; further mail is "
            f"refused with 4xx until 00:00 UTC or `mailboot account release {ALICE}`")


@pytest.fixture(scope="module")
def mail(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    with running(image, tmp_path_factory.mktemp("data"),
                 {"MAIL_DOMAINS": "example.com", "SEND_LIMIT_MESSAGES_PER_DAY": str(LIMIT)},
                 "mailboot-limits", {ALICE: PASSWORD, BOB: PASSWORD}) as container:
        yield container


def message(sender: str, recipient: str, subject: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, recipient, subject
    mail.set_content("counted\n")
    return mail


def submit(mail: Container, login: str, recipient: str, count: int) -> list[str]:
    """`count` messages in one session on 587 (each its own transaction); for each, "sent" or
    the refusal's code and text."""
    results = []
    with smtplib.SMTP("127.0.0.1", mail.ports[587], timeout=30) as smtp:
        smtp.starttls(context=insecure_context())
        smtp.login(login, PASSWORD)
        for number in range(count):
            try:
                smtp.send_message(message(login, recipient, f"message {number}"))
                results.append("sent")
            except smtplib.SMTPRecipientsRefused as refused:
                code, text = refused.recipients[recipient]
                results.append(f"{code} {text.decode()}")
    return results


def held(mail: Container) -> list[str]:
    result = mail.exec("mailboot", "status", "--json", check=False)
    return [entry["account"] for entry in json.loads(result.stdout)["sending_limits"]["held"]]


def test_the_21st_message_waits_until_release_and_others_still_send(mail: Container) -> None:
    assert submit(mail, ALICE, BOB, LIMIT) == ["sent"] * LIMIT
    assert held(mail) == [ALICE]  # the 20th reached the limit
    refused = submit(mail, ALICE, BOB, 1)[0]
    assert refused == (f"451 4.7.1 <{BOB}>: Recipient address rejected: {ALICE} has sent its "
                       f"limit of {LIMIT} messages today; more is refused until 00:00 UTC, or "
                       "until the administrator releases the account")

    docker("restart", "-t", "5", mail.name, timeout=60)
    mail.wait_ready()
    assert submit(mail, ALICE, BOB, 1)[0].startswith("451 4.7.1"), "counted across the restart"
    assert submit(mail, BOB, ALICE, 2) == ["sent", "sent"]
    assert mail.logs().count(LOG_LINE) == 1  # once a day, not once per refusal or process

    result = mail.exec("mailboot", "status", check=False)
    screen = result.stdout
    assert result.returncode == 1
    assert f"limits: {ALICE} is held: it reached its limit of {LIMIT} messages today" in screen
    assert f"{ALICE} HELD: {LIMIT} of {LIMIT} messages today" in screen
    assert held(mail) == [ALICE]

    unknown = mail.exec("mailboot", "account", "release", "nobody@example.com", check=False)
    assert unknown.returncode == 65 and "nobody@example.com is not an account here" in (
        unknown.stderr)
    released = mail.exec("mailboot", "account", "release", ALICE)
    assert f"{ALICE} released: today's counts ({LIMIT} messages" in released.stderr
    assert held(mail) == []
    assert submit(mail, ALICE, BOB, 1) == ["sent"]
