"""Backup while mail flows, restore into a new volume, start a new container on it."""

from __future__ import annotations

import imaplib
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.container.clients import hold_local_delivery, wait_deferred
from tests.container.containers import Container, insecure_context
from tests.container.dockercli import docker
from tests.polling import eventually

pytestmark = pytest.mark.container

ALICE, BOB = "alice@example.com", "bob@example.org"
PASSWORDS = {ALICE: "correct horse battery", BOB: "staple tuna orbit"}
MakeContainer = Callable[..., Container]


def deliver(container: Container, recipient: str, subjects: list[str]) -> None:
    with container.smtp(25) as smtp:
        for subject in subjects:
            smtp.sendmail("someone@example.net", [recipient],
                          f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def subjects(container: Container, user: str) -> list[str]:
    with imaplib.IMAP4_SSL("127.0.0.1", container.ports[993],
                           ssl_context=insecure_context()) as imap:
        imap.login(user, PASSWORDS[user])
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "ALL")
        result = []
        for number in found[0].split():
            _, data = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            item = data[0]
            assert isinstance(item, tuple)
            result.append(item[1].decode().removeprefix("Subject: ").strip())
        return sorted(result)


def wait_for(container: Container, user: str, expected: set[str],
             timeout: float = 60) -> list[str]:
    def arrived() -> list[str] | None:
        found = subjects(container, user)
        return found if expected <= set(found) else None

    return eventually(arrived, timeout, lambda: f"all of {expected} for {user}, who has "
                      f"{subjects(container, user)}")


def dkim_records(container: Container) -> list[str]:
    zone = container.exec("mailboot", "dns", "--zone").stdout
    return [line for line in zone.splitlines() if "_domainkey" in line]


class Traffic:
    """Mail arriving for Bob and Alice's client flipping \\Seen (Maildir renames in cur/),
    both until stopped."""

    def __init__(self, container: Container) -> None:
        self.container, self.sent = container, 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._guarded, args=(work,))
                        for work in (self._send, self._flag)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not self.errors, self.errors

    def _guarded(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as error:  # raised in the test's thread, by __exit__
            self.errors.append(error)
            self.stop.set()

    def _send(self) -> None:
        with self.container.smtp(25) as smtp:
            while not self.stop.is_set():
                smtp.sendmail("someone@example.net", [BOB],
                              f"Subject: during {self.sent}\r\n\r\nbody\r\n".encode())
                self.sent += 1
                time.sleep(0.05)

    def _flag(self) -> None:
        with imaplib.IMAP4_SSL("127.0.0.1", self.container.ports[993],
                               ssl_context=insecure_context()) as imap:
            imap.login(ALICE, PASSWORDS[ALICE])
            imap.select("INBOX")
            flip = "+FLAGS"
            while not self.stop.is_set():
                imap.store("1:*", flip, "(\\Seen)")
                flip = "-FLAGS" if flip == "+FLAGS" else "+FLAGS"


def restore_into(image: str, target: Path, archive: bytes) -> subprocess.CompletedProcess[bytes]:
    target.mkdir(exist_ok=True)
    return subprocess.run(["docker", "run", "--rm", "-i", "-v", f"{target}:/data", image,
                           "restore", "-"], input=archive, capture_output=True, timeout=120,
                          check=False)


def test_backup_while_mail_flows_restores_into_a_new_container(
    make_container: MakeContainer, image: str, tmp_path: Path,
) -> None:
    mail = make_container()
    mail.wait_ready()
    for address, password in PASSWORDS.items():
        mail.add_account(address, password)
    before = {ALICE: {f"before {n}" for n in range(4)}, BOB: {f"before {n}" for n in range(3)}}
    for user, wanted in before.items():
        deliver(mail, user, sorted(wanted))
        wait_for(mail, user, wanted)
    records = dkim_records(mail)
    assert len(records) >= 2
    hold_local_delivery(mail)  # these wait in Postfix's deferred queue
    deliver(mail, ALICE, ["queued 0", "queued 1"])
    wait_deferred(mail, 2)
    assert mail.exec("postqueue", "-j").stdout.count('"queue_name"') == 2

    with Traffic(mail) as traffic:
        time.sleep(1)
        taken = subprocess.run(["docker", "exec", mail.name, "mailboot", "backup", "-"],
                               capture_output=True, timeout=300, check=False)
    assert taken.returncode == 0, taken.stderr.decode()
    assert b"backup: " in taken.stderr and traffic.sent > 0
    archive = taken.stdout
    (tmp_path / "backup.tar").write_bytes(archive)
    with tarfile.open(tmp_path / "backup.tar") as tar:
        assert tar.getnames()[-1] == "MANIFEST.json"

    # Refused inside the running server: nothing is read, nothing changes.
    inside = subprocess.run(["docker", "exec", "-i", mail.name, "mailboot", "restore", "--force",
                             "-"], input=archive, capture_output=True, timeout=60, check=False)
    assert inside.returncode == 78 and b"running here" in inside.stderr, inside.stderr
    # ... and beside it, on its volume (a truncated archive: were the refusal missing, a
    # restore would refuse that and change nothing either).
    beside = subprocess.run(["docker", "run", "--rm", "-i", "-v", f"{mail.data}:/data", image,
                             "restore", "--force", "-"], input=archive[:20000],
                            capture_output=True, timeout=60, check=False)
    assert beside.returncode == 78 and b"another container" in beside.stderr, beside.stderr

    empty = tmp_path / "truncated-target"
    refused = restore_into(image, empty, archive[: len(archive) // 2])
    assert refused.returncode == 65, refused.stderr.decode()
    assert b"truncated" in refused.stderr
    assert list(empty.iterdir()) == []

    restored = tmp_path / "restored"
    done = restore_into(image, restored, archive)
    assert done.returncode == 0, done.stderr.decode()
    docker("stop", mail.name, timeout=60)

    new = make_container(data=restored)
    new.wait_ready()
    assert dkim_records(new) == records
    for user, wanted in before.items():
        found = subjects(new, user)  # logs in with the same password
        assert all(found.count(subject) == 1 for subject in wanted), (user, found)
    queue = new.exec("postqueue", "-j").stdout
    assert queue.count('"queue_name"') >= 2, queue
    new.exec("postqueue", "-f")  # the retry would come by itself, minutes later
    wait_for(new, ALICE, {"queued 0", "queued 1"})
