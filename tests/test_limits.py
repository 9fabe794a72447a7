"""Sending limits per login (outbound.limits): the counts, the day's rollover, first-time
recipients, release, a broken counter file; the policy process answering over a real socket;
`mailboot account release` and `mailboot status`."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailboot.base.paths import Paths
from mailboot.cli import main as cli
from mailboot.cli import status_view
from mailboot.diagnose import status
from mailboot.mailboxes import accounts
from mailboot.outbound import limits
from mailboot.outbound.limits import Day, Limit, Limits, SendingLimits
from mailboot.settings.table import load_settings

NOON = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
ALICE, BOB = "alice@example.com", "bob@example.com"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def rcpt(login: str, recipient: str, instance: str) -> dict[str, str]:
    return {"request": "smtpd_access_policy", "protocol_state": "RCPT", "sasl_username": login,
            "recipient": recipient, "instance": instance}


def end(login: str, instance: str) -> dict[str, str]:
    return {"request": "smtpd_access_policy", "protocol_state": "END-OF-MESSAGE",
            "sasl_username": login, "recipient": "", "instance": instance}


def send(service: SendingLimits, login: str, recipients: list[str], instance: str) -> list[str]:
    """One message as Postfix asks about it: each RCPT, then the end of data if any passed."""
    answers = [service.decide(rcpt(login, recipient, instance)) for recipient in recipients]
    if "DUNNO" in answers:
        assert service.decide(end(login, instance)) == "DUNNO"
    return answers


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return limits.state_directory(tmp_path / "policy")


def test_the_message_after_the_limit_is_refused_with_451_and_logged_once(
        directory: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    service = SendingLimits(directory, Limits(20, None), clock)
    for number in range(20):
        assert send(service, ALICE, ["friend@example.net"], f"m{number}") == ["DUNNO"]
    answers = send(service, ALICE, ["friend@example.net", "other@example.net"], "m20")
    assert answers[0] == answers[1] == (
        "451 4.7.1 alice@example.com has sent its limit of 20 messages today; more is refused "
        "until 00:00 UTC, or until the administrator releases the account")
    send(service, ALICE, ["friend@example.net"], "m21")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("limits:")]
    assert lines == [
        "limits: alice@example.com reached its limit of 20 messages today; further mail is "
        "refused with 4xx until 00:00 UTC or `mailboot account release alice@example.com`"]
    # Another login is not touched, and port 25's requests (no login) are not ours.
    assert send(service, BOB, ["friend@example.net"], "b0") == ["DUNNO"]
    assert service.decide({"protocol_state": "RCPT", "recipient": "x@example.com"}) == "DUNNO"
    # A new process (a restart) reads the count and still refuses, without a second log line.
    again = SendingLimits(directory, Limits(20, None), clock)
    assert send(again, ALICE.upper(), ["friend@example.net"], "m22")[0].startswith("451 4.7.1")
    assert sum("reached its limit" in r.getMessage() for r in caplog.records) == 1


def test_concurrent_sessions_and_a_release_lose_no_count(directory: Path, clock: Clock) -> None:
    """The policy process's threads count at once; release (another process) runs meanwhile on
    another login: every message is counted once."""
    service = SendingLimits(directory, Limits(10_000, None), clock)

    def session(number: int) -> None:
        for message in range(25):
            send(service, ALICE, [f"r{message}@example.net"], f"{number}-{message}")

    threads = [threading.Thread(target=session, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    subprocess.run([sys.executable, "-c", "import sys; from datetime import datetime, UTC; "
                    "from pathlib import Path; from mailboot.outbound import limits; "
                    "limits.release(Path(sys.argv[1]), 'bob@example.com', datetime.now(UTC))",
                    str(directory)], check=True, timeout=60)
    for thread in threads:
        thread.join()
    day = limits.read_day(directory, ALICE, NOON)
    assert (day.messages, day.first_time, len(day.known)) == (200, 25, 25)


def test_the_next_utc_day_starts_from_zero(directory: Path, clock: Clock) -> None:
    service = SendingLimits(directory, Limits(2, None), clock)
    send(service, ALICE, ["a@example.net"], "1")
    send(service, ALICE, ["a@example.net"], "2")
    assert send(service, ALICE, ["a@example.net"], "3")[0].startswith("451")
    clock.now = datetime(2026, 12, 5, 23, 59, 59, tzinfo=UTC)
    assert send(service, ALICE, ["a@example.net"], "4")[0].startswith("451")
    clock.now = datetime(2026, 12, 6, 0, 0, 0, tzinfo=UTC)
    assert send(service, ALICE, ["a@example.net"], "5") == ["DUNNO"]
    day = limits.read_day(directory, ALICE, clock.now)
    assert (day.day, day.messages, day.said) == ("2026-12-06", 1, frozenset())


def test_first_time_recipients_are_limited_and_known_ones_still_get_mail(
        directory: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    service = SendingLimits(directory, Limits(None, 3), clock)
    # Two new ones in one message count before it is committed: the third new one is refused.
    answers = send(service, ALICE, ["a@example.net", "b@example.net", "a@example.net"], "1")
    assert answers == ["DUNNO", "DUNNO", "DUNNO"]
    answers = send(service, ALICE, ["c@example.net", "d@example.net", "B@Example.net"], "2")
    assert answers[0] == answers[2] == "DUNNO"
    assert answers[1] == (
        "451 4.7.1 alice@example.com has written to its limit of 3 new recipients today; mail to "
        "addresses it never wrote to before is refused until 00:00 UTC, or until the "
        "administrator releases the account")
    assert send(service, ALICE, ["a@example.net", "c@example.net"], "3") == ["DUNNO", "DUNNO"]
    day = limits.read_day(directory, ALICE, NOON)
    assert (day.messages, day.first_time, len(day.known)) == (3, 3, 3)
    assert [r.getMessage() for r in caplog.records if "reached" in r.getMessage()] == [
        "limits: alice@example.com reached its limit of 3 first-time recipients today; mail to "
        "new recipients is refused with 4xx until 00:00 UTC or "
        "`mailboot account release alice@example.com`"]
    # Tomorrow the recipients are still known; the count of new ones starts from zero.
    clock.now += timedelta(days=1)
    assert send(service, ALICE, ["e@example.net", "a@example.net"], "4") == ["DUNNO", "DUNNO"]
    assert limits.read_day(directory, ALICE, clock.now).first_time == 1


def test_the_known_recipients_are_bounded_and_the_most_recent_kept() -> None:
    day = Day(ALICE, "2026-12-05", known=tuple(f"{n:012x}" for n in range(
        limits.KNOWN_RECIPIENTS)))
    after = limits.committed(day, ["000000000000", "ffffffffffff"], NOON)
    assert len(after.known) == limits.KNOWN_RECIPIENTS
    assert after.known[-2:] == ("000000000000", "ffffffffffff")  # used now: the newest
    assert "000000000001" not in after.known  # the oldest went
    assert (after.messages, after.first_time) == (1, 1)


def test_release_forgets_today_s_counts_but_not_the_recipients(
        directory: Path, clock: Clock) -> None:
    service = SendingLimits(directory, Limits(1, 5), clock)
    send(service, ALICE, ["a@example.net"], "1")
    assert send(service, ALICE, ["a@example.net"], "2")[0].startswith("451")
    before = limits.release(directory, ALICE, NOON)
    assert (before.messages, before.first_time) == (1, 1)
    assert send(service, ALICE, ["a@example.net"], "3") == ["DUNNO"]
    day = limits.read_day(directory, ALICE, NOON)
    assert (day.messages, day.first_time) == (1, 0)  # a@ was known already


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 1, "login": "alice@example.com"}',
                                     b'{"format": 99}', b"\xff\xfe", b"[]",
                                     b'{"format": 1, "login": "bob@example.com", "day": "x", '
                                     b'"messages": 1, "first_time": 1, "said": [], "known": []}'])
def test_a_broken_counter_is_logged_never_refuses_and_is_counted_again(
        directory: Path, clock: Clock, caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    directory.mkdir(parents=True)
    limits.day_file(directory, ALICE).write_bytes(content)
    service = SendingLimits(directory, Limits(1, 1), clock)
    with caplog.at_level(logging.WARNING):
        assert send(service, ALICE, ["a@example.net"], "1") == ["DUNNO"]
    assert any("can't be used" in r.getMessage() and "start again from zero" in r.getMessage()
               for r in caplog.records)
    day = limits.read_day(directory, ALICE, NOON)  # rewritten whole by the count
    assert (day.messages, day.first_time) == (1, 1)


def test_a_counter_that_can_t_be_written_lets_the_mail_through(
        tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    service = SendingLimits(blocked / "sending", Limits(1, 1), clock)
    assert send(service, ALICE, ["a@example.net"], "1") == ["DUNNO"]
    assert any("can't count alice@example.com's mail" in r.getMessage() for r in caplog.records)


def test_with_both_limits_off_nothing_is_written(directory: Path, clock: Clock) -> None:
    service = SendingLimits(directory, Limits(None, None), clock)
    assert send(service, ALICE, ["a@example.net"], "1") == ["DUNNO"]
    assert not directory.exists()


def test_the_policy_process_tells_submission_from_port_25_by_the_login(tmp_path: Path) -> None:
    """The real process, over a real socket, with the limits on its command line."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "policy"))
    listener.listen(8)
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "mailboot.policy.service", f"--policy-fd={listener.fileno()}",
         "--idle=1", f"--notes={tmp_path}", f"--state={tmp_path / 'state'}",
         "--send-limit-messages=1", "--send-limit-first-time=off"],
        pass_fds=[listener.fileno()])

    def ask(request: dict[str, str]) -> bytes:
        text = "".join(f"{key}={value}\n" for key, value in request.items()) + "\n"
        client.sendall(text.encode())
        return client.recv(1000)

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect(str(tmp_path / "policy"))
        assert ask(rcpt(ALICE, "a@example.net", "1")) == b"action=DUNNO\n\n"
        assert ask(end(ALICE, "1")) == b"action=DUNNO\n\n"
        assert ask(rcpt(ALICE, "a@example.net", "2")).startswith(b"action=451 4.7.1 alice@")
        # Port 25's request (no login) goes to the inbound checks, as before.
        assert ask({"request": "smtpd_access_policy", "protocol_state": "RCPT",
                    "client_address": "127.0.0.1", "sender": ""}) == b"action=DUNNO\n\n"
    listener.close()
    assert process.wait(timeout=30) == 0
    saved = json.loads(limits.day_file(tmp_path / "state" / "sending", ALICE).read_text())
    assert (saved["login"], saved["messages"], saved["said"]) == (ALICE, 1, ["messages"])


def environment(tmp_path: Path, **more: str) -> dict[str, str]:
    return {"MAIL_DOMAINS": "example.com", "DATA_DIR": str(tmp_path), "DNS_CHECK": "off", **more}


def test_account_release_clears_a_held_account_and_refuses_an_unknown_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = Paths(tmp_path)
    accounts.write_accounts(paths, [accounts.Account(ALICE, "{BLF-CRYPT}x")], owner=None)
    directory = limits.state_directory(paths.policy_state)
    now = datetime.now(UTC)
    directory.mkdir(parents=True)
    limits.write_day(directory, Day(ALICE, limits.utc_day(now), messages=7, first_time=2,
                                    said=frozenset({Limit.MESSAGES}), known=("abc",)))
    assert cli.main(["account", "release", "Alice@Example.com"], environment(tmp_path),
                    io.StringIO()) == 0
    assert ("mailboot: account: alice@example.com released: today's counts (7 messages, 2 "
            "first-time recipients) are forgotten; it may send again") in capsys.readouterr().err
    day = limits.read_day(directory, ALICE, datetime.now(UTC))
    assert (day.messages, day.first_time, day.said, day.known) == (0, 0, frozenset(), ("abc",))

    assert cli.main(["account", "release", "nobody@example.com"], environment(tmp_path),
                    io.StringIO()) == 65
    assert ("mailboot: nobody@example.com is not an account here, so it has no sending limits "
            "to release; `mailboot account list` shows the accounts") in capsys.readouterr().err


def test_status_shows_a_held_login_and_counts_it_as_not_in_place(tmp_path: Path) -> None:
    settings = load_settings(environment(tmp_path, SEND_LIMIT_MESSAGES_PER_DAY="20"))
    paths = Paths(tmp_path)
    directory = limits.state_directory(paths.policy_state)
    directory.mkdir(parents=True)
    limits.write_day(directory, Day(ALICE, "2026-12-05", messages=20, first_time=4))
    limits.write_day(directory, Day(BOB, "2026-12-04", messages=500))  # yesterday: not held
    (directory / "broken.json").write_text("{")
    sending = status.sending_state(settings, paths, NOON)
    assert isinstance(sending, status.Sending)
    assert [(h.login, h.limit, h.count, h.maximum) for h in sending.held] == [
        (ALICE, Limit.MESSAGES, 20, 20)]
    assert len(sending.unreadable) == 1 and "broken.json can't be used" in sending.unreadable[0]
    problems = status._sending_problems(sending)
    assert problems == [
        "limits: alice@example.com is held: it reached its limit of 20 messages today; if that "
        "wasn't its owner, change its password; `mailboot account release alice@example.com` "
        "lets it send again (else at 2026-12-06 00:00:00 UTC)"]
    lines = status_view._sending_lines(sending)
    assert lines[0] == "20 messages and 200 first-time recipients a day per login"
    assert lines[1] == ("alice@example.com HELD: 20 of 20 messages today, until 2026-12-06 "
                        "00:00:00 UTC or `mailboot account release alice@example.com`")
    assert status_view._sending_json(sending)["held"] == [
        {"account": ALICE, "limit": "messages", "count": 20, "maximum": 20,
         "until": "2026-12-06T00:00:00Z"}]
