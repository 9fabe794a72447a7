"""Restarts, stops and broken settings: nothing lost, nothing needlessly rewritten."""

from __future__ import annotations

import imaplib
import smtplib
import time
from collections.abc import Callable

import pytest

from tests.conftest import snapshot
from tests.container.conftest import Container, docker, insecure_context

pytestmark = pytest.mark.container

ALICE = "alice@example.com"
PASSWORD = "correct horse battery"
MakeContainer = Callable[..., Container]


def deliver(container: Container, count: int, subject: str) -> None:
    with container.smtp(25) as smtp:
        for number in range(count):
            smtp.sendmail("someone@example.net", [ALICE],
                          f"Subject: {subject} {number}\r\n\r\nbody\r\n".encode())


def inbox_subjects(container: Container) -> list[str]:
    with imaplib.IMAP4_SSL("127.0.0.1", container.ports[993],
                           ssl_context=insecure_context()) as imap:
        imap.login(ALICE, PASSWORD)
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "ALL")
        subjects = []
        for number in found[0].split():
            _, data = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            item = data[0]
            assert isinstance(item, tuple)
            subjects.append(item[1].decode().removeprefix("Subject: ").strip())
        return subjects


def wait_for_inbox(container: Container, expected: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        subjects = inbox_subjects(container)
        if len(subjects) >= expected or time.monotonic() > deadline:
            return subjects
        time.sleep(0.5)


def wait_healthy(container: Container, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while container.state().get("Health", {}).get("Status") != "healthy":  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"not healthy: {container.state().get('Health')}"
        time.sleep(1)


def test_restart_keeps_keys_mailboxes_and_rewrites_nothing(make_container: MakeContainer) -> None:
    # The image's own HEALTHCHECK command, asked every 2 s instead of every 20 s.
    mail = make_container(run_options=("--health-interval", "2s"))
    mail.wait_ready()
    wait_healthy(mail)
    mail.add_account(ALICE, PASSWORD)
    deliver(mail, 3, "before restart")
    assert len(wait_for_inbox(mail, 3)) == 3
    keys_before = snapshot(mail.data / "dkim")
    tls_before = snapshot(mail.data / "tls")
    docker("restart", mail.name, timeout=60)
    mail.wait_ready()
    stopped = mail.logs().split("received SIGTERM; stopping the daemons")[1]
    assert "all daemons stopped" in stopped and "killing it" not in stopped
    assert snapshot(mail.data / "dkim") == keys_before
    assert snapshot(mail.data / "tls") == tls_before
    assert len(inbox_subjects(mail)) == 3
    second_boot = mail.logs().split("received SIGTERM; stopping the daemons")[-1]
    # A mailbox was added since the first boot: the restart boots in full, and says why.
    assert "boot: changed since the last start: DATA_DIR's DKIM keys, accounts and " \
        "certificate, the rendered configuration; a full boot" in second_boot
    assert "boot: 0 configuration file(s) changed" in second_boot
    assert "created a new" not in second_boot
    # Nothing changed since: the next restart starts warm, the boot checks beside the daemons
    # (writing nothing) and prints the records again, and mail flows as before.
    docker("restart", mail.name, timeout=60)
    mail.wait_ready()
    warm = "boot: nothing changed since this container last started"
    assert warm in mail.logs().split("received SIGTERM; stopping the daemons")[-1]
    # Until this start's boot beside the daemons is done (the last start's may log its end
    # after the stop, so this start's lines are those after its first).
    deadline = time.monotonic() + 30
    while "boot: dns records done" not in (third_boot := mail.logs().split(warm)[-1]):
        assert time.monotonic() < deadline, third_boot[-3000:]
        time.sleep(0.5)
    assert "boot: 0 configuration file(s) changed" in third_boot
    assert third_boot.index("handing over to the supervisor") \
        < third_boot.index("boot: render configuration done")
    deliver(mail, 1, "after a warm start")
    assert len(wait_for_inbox(mail, 4)) == 4
    assert snapshot(mail.data / "dkim") == keys_before
    assert snapshot(mail.data / "tls") == tls_before


def test_messages_queued_before_a_stop_are_delivered_after_the_start(
    make_container: MakeContainer,
) -> None:
    mail = make_container()
    mail.wait_ready()
    mail.add_account(ALICE, PASSWORD)
    # Hold local delivery back, as if Dovecot were busy: the messages wait in Postfix's queue.
    mail.exec("postconf", "-e", "defer_transports=lmtp")
    mail.exec("postfix", "reload")
    time.sleep(2)
    deliver(mail, 5, "queued")
    time.sleep(2)
    queue = mail.exec("postqueue", "-j").stdout
    assert queue.count('"queue_name"') == 5, queue
    docker("stop", mail.name, timeout=60)
    assert mail.state()["ExitCode"] == 0  # 137 if Docker had had to kill it
    assert "killing it" not in mail.logs() and "all daemons stopped" in mail.logs()
    assert len(list((mail.data / "spool" / "postfix" / "deferred").rglob("*"))) >= 5
    docker("start", mail.name)  # the boot renders main.cf afresh, without defer_transports
    mail.wait_ready()
    mail.exec("postqueue", "-f")
    subjects = wait_for_inbox(mail, 5)
    assert sorted(subjects) == [f"queued {n}" for n in range(5)]


def test_broken_setting_stops_the_container_with_78_and_says_why(
    make_container: MakeContainer,
) -> None:
    mail = make_container(env={"MAIL_DOMAINS": "example.com,localhost", "DMARC_POLICY": "strict"})
    assert mail.wait_exit() == 78
    logs = mail.logs()
    assert "MAIL_DOMAINS: 'localhost' is not a fully-qualified domain name" in logs
    assert "DMARC_POLICY: 'strict' is not one of none, quarantine, reject" in logs
    assert list(mail.data.iterdir()) == []


def test_broken_setting_after_a_good_start_loses_nothing(make_container: MakeContainer) -> None:
    mail = make_container()
    mail.wait_ready()
    docker("stop", mail.name, timeout=60)
    before = snapshot(mail.data / "dkim")
    broken = make_container(env={"MAIL_DOMAINS": "example.com", "PUBLIC_IPV4": "300.1.1.1"},
                            data=mail.data)
    assert broken.wait_exit() == 78
    assert snapshot(mail.data / "dkim") == before


def test_a_daemon_that_dies_stops_the_container(make_container: MakeContainer) -> None:
    mail = make_container()
    mail.wait_ready()
    mail.exec("python3", "-c", "import os\nfor p in filter(str.isdigit, os.listdir('/proc')):\n"
              "    if open(f'/proc/{p}/comm').read().strip() == 'opendkim': os.kill(int(p), 9)")
    assert mail.wait_exit() == 1
    assert "opendkim exited with code" in mail.logs()


def test_submission_works_only_after_tls_and_login(make_container: MakeContainer) -> None:
    mail = make_container(env={"MAIL_DOMAINS": "example.com"})
    mail.wait_ready()
    mail.add_account(ALICE, PASSWORD)
    with mail.smtp(587) as smtp:
        smtp.starttls(context=insecure_context())
        smtp.login(ALICE, PASSWORD)
        refused = smtp.sendmail(ALICE, [ALICE], b"Subject: self\r\n\r\nhi\r\n")
    assert refused == {}
    with pytest.raises(smtplib.SMTPException), mail.smtp(587) as smtp:
        smtp.login(ALICE, PASSWORD)
