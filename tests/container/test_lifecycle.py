"""Restarts, stops and broken settings: nothing lost, nothing needlessly rewritten."""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Callable

import pytest

from tests.conftest import snapshot
from tests.container.clients import hold_local_delivery, wait_deferred
from tests.container.containers import Container, insecure_context
from tests.container.dockercli import docker
from tests.polling import eventually

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
    """The subjects in Alice's INBOX once there are at least `expected`."""
    def arrived() -> list[str] | None:
        subjects = inbox_subjects(container)
        return subjects if len(subjects) >= expected else None

    return eventually(arrived, timeout,
                      lambda: f"{expected} messages; the INBOX has {inbox_subjects(container)}")


def wait_healthy(container: Container, timeout: float = 60) -> None:
    def health() -> dict[str, object]:
        found = container.state().get("Health", {})
        assert isinstance(found, dict)
        return found

    eventually(lambda: health().get("Status") == "healthy", timeout,
               lambda: f"the health check to pass: {health()}", interval=1)


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
    def this_boot() -> str | None:
        boot = mail.logs().split(warm)[-1]
        return boot if "boot: dns records done" in boot else None

    third_boot = eventually(this_boot, 30, lambda: f"this start's records:\n{mail.log_tail()}")
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
    hold_local_delivery(mail)  # the messages wait in Postfix's queue
    deliver(mail, 5, "queued")
    wait_deferred(mail, 5)
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


def test_postfixs_own_checks_run_at_every_start_beside_the_daemons_and_say_what_they_find(
    make_container: MakeContainer,
) -> None:
    """The master starts without postfix-script's integrity checks (they would hold the banner
    back about 0.4 s); the same checks run once it listens, on a warm start too, and their
    warnings reach the log."""
    mail = make_container()
    mail.wait_ready()
    docker("stop", mail.name, timeout=60)
    # A damaged message, as a crash or a queue restored by hand can leave: root's, not postfix's.
    (mail.data / "spool" / "postfix" / "corrupt" / "F00DFACE").write_text("half a message\n")
    docker("start", mail.name)
    mail.wait_ready()
    wanted = ("postfix/postfix-script", "warning: damaged message: corrupt/F00DFACE",
              "warning: not owned by postfix: /data/spool/postfix/corrupt/F00DFACE")

    def warned() -> str | None:
        logs = mail.logs()
        return logs if all(warning in logs for warning in wanted) else None

    logs = eventually(warned, 60,
                      lambda: f"Postfix's warnings about the damaged message:\n{mail.logs()}")
    # The file came after the first start: the second, a warm one, found it.
    assert "nothing changed since this container last started" in logs
    assert "Postfix's own integrity checks failed" not in logs


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
    # pkill fails when no opendkim runs; a walk of /proc could trip over a process that ended.
    mail.exec("pkill", "-KILL", "-x", "opendkim")
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
