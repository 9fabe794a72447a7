"""The outbound port-25 check: the setting, each result from a fake network, the log lines the
worker writes (only on change), and the state file `mailboot status` will read."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailboot.dns.answer import Answer
from mailboot.network.outbound import (
    OutboundPortCheck,
    PortResult,
    PortStatus,
    check_outbound,
    outbound_task,
    read_state,
)
from mailboot.settings.table import load_settings
from mailboot.settings.values import OutboundTarget, SettingValueError, parse_outbound_check

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GMAIL = OutboundTarget("gmail.com", 25, by_mx=True)
DNS = {
    ("gmail.com", "MX"): Answer(("20 alt1.mx.example.", "5 gmail-smtp-in.mx.example.",
                                 "30 alt2.mx.example.")),
    ("gmail-smtp-in.mx.example", "A"): Answer(("192.0.2.5",)),
    ("alt1.mx.example", "A"): Answer(("192.0.2.20",)),
    ("alt2.mx.example", "A"): Answer(("192.0.2.30",)),
    ("v6only.mx.example", "A"): Answer(()),
    ("v6only.mx.example", "AAAA"): Answer(("2001:db8::25",)),
    ("relay.example.net", "A"): Answer(("198.51.100.7",)),
}


def lookup(name: str, rtype: str) -> Answer:
    return DNS.get((name, rtype), Answer(nxdomain=True))


class FakeNetwork:
    """Connects as told per address: None (accepts) or the OSError to raise; records tries."""

    def __init__(self, behaviour: dict[str, OSError | None] | None = None,
                 default: OSError | None = None) -> None:
        self.behaviour, self.default = behaviour or {}, default
        self.tried: list[tuple[str, int, float]] = []

    def __call__(self, host: str, port: int, timeout: float) -> None:
        self.tried.append((host, port, timeout))
        error = self.behaviour.get(host, self.default)
        if error is not None:
            raise error


def unreachable() -> OSError:
    return OSError(errno.EHOSTUNREACH, "No route to host")


# --- the setting --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("gmail.com", OutboundTarget("gmail.com", 25, by_mx=True)),
    (" Example.COM ", OutboundTarget("example.com", 25, by_mx=True)),
    ("mx.example.net:25", OutboundTarget("mx.example.net", 25)),
    ("mx.example.net:2525", OutboundTarget("mx.example.net", 2525)),
    ("[mx.example.net]", OutboundTarget("mx.example.net", 25)),  # Postfix's "no MX lookup"
    ("192.0.2.25", OutboundTarget("192.0.2.25", 25)),
    ("192.0.2.25:2525", OutboundTarget("192.0.2.25", 2525)),
    ("[2001:db8::25]:25", OutboundTarget("2001:db8::25", 25)),
    ("2001:db8::25", OutboundTarget("2001:db8::25", 25)),
    ("OFF", "off"),
])
def test_the_setting_names_a_domain_a_host_or_off(text: str,
                                                  expected: OutboundTarget | str) -> None:
    assert parse_outbound_check(text) == expected


def test_the_default_tries_the_mx_of_a_well_known_domain() -> None:
    settings = load_settings({"MAIL_DOMAINS": "example.com"})
    assert settings.outbound_check == OutboundTarget("gmail.com", 25, by_mx=True)
    assert str(settings.outbound_check) == "the MX hosts of gmail.com"


def test_an_empty_setting_is_refused_with_the_forms() -> None:
    with pytest.raises(SettingValueError, match="domain, host:port, or off"):
        parse_outbound_check(" ")


# --- the check ----------------------------------------------------------------------------------

def test_the_most_preferred_mx_that_accepts_makes_it_ok() -> None:
    network = FakeNetwork()
    result = check_outbound(GMAIL, lookup, network, timeout=5)
    assert result == PortResult(PortStatus.OK, "gmail-smtp-in.mx.example (192.0.2.5) port 25",
                                "connected")
    assert network.tried == [("192.0.2.5", 25, 5)]


def test_a_dropped_connection_is_blocked_after_trying_two_hosts_at_most() -> None:
    network = FakeNetwork(default=TimeoutError("timed out"))
    result = check_outbound(GMAIL, lookup, network, timeout=5)
    assert result.status is PortStatus.BLOCKED and result.closed
    assert "no answer within 5 s" in result.detail and "alt1.mx.example" in result.detail
    assert [host for host, _, _ in network.tried] == ["192.0.2.5", "192.0.2.20"]


def test_a_second_host_that_accepts_is_enough() -> None:
    network = FakeNetwork({"192.0.2.5": ConnectionRefusedError()})
    assert check_outbound(GMAIL, lookup, network).status is PortStatus.OK


@pytest.mark.parametrize(("error", "status", "words"), [
    (ConnectionRefusedError(), PortStatus.REFUSED, "refused"),
    (unreachable(), PortStatus.UNREACHABLE, "No route to host"),
    (OSError(errno.EPERM, "Operation not permitted"), PortStatus.BLOCKED, "not permitted"),
])
def test_each_failure_says_what_happened(error: OSError, status: PortStatus, words: str) -> None:
    result = check_outbound(OutboundTarget("192.0.2.9", 25), lookup, FakeNetwork(default=error))
    assert (result.status, result.target) == (status, "192.0.2.9 port 25")
    assert words in result.detail and result.closed


def test_a_host_without_ipv4_is_tried_over_ipv6() -> None:
    network = FakeNetwork()
    result = check_outbound(OutboundTarget("v6only.mx.example", 25), lookup, network)
    assert result.open and network.tried == [("2001:db8::25", 25, 5.0)]


@pytest.mark.parametrize(("answer", "words"), [
    (Answer(error="timed out after 3 s"), "the MX lookup failed: timed out"),
    (Answer(("0 .",)), "has no MX host to try"),  # RFC 7505 null MX
    (Answer(nxdomain=True), "has no MX host to try"),
])
def test_without_mx_hosts_nothing_is_known(answer: Answer, words: str) -> None:
    network = FakeNetwork()
    result = check_outbound(GMAIL, lambda _name, _rtype: answer, network)
    assert result.status is PortStatus.DNS_FAILED and not result.closed and not result.open
    assert words in result.detail and network.tried == []


# --- the worker task ----------------------------------------------------------------------------

def sequence(*results: PortResult) -> Callable[[], PortResult]:
    remaining = list(results)
    return lambda: remaining.pop(0)


OK = PortResult(PortStatus.OK, "mx.example (192.0.2.5) port 25", "connected")
BLOCKED = PortResult(PortStatus.BLOCKED, "mx.example (192.0.2.5) port 25",
                     "no answer within 5 s: the connection is dropped on the way")
NO_DNS = PortResult(PortStatus.DNS_FAILED, "the MX hosts of gmail.com", "the MX lookup failed")


def make_task(tmp_path: Path, *results: PortResult,
              relay: str | None = None) -> OutboundPortCheck:
    return OutboundPortCheck(sequence(*results), relay, tmp_path / "run" / "outbound-port25.json")


def test_blocked_without_a_relay_warns_that_mail_will_queue_and_how_to_fix_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = make_task(tmp_path, BLOCKED)
    with caplog.at_level(logging.INFO, logger="mailboot.outbound"):
        assert task.step(NOW) == NOW + timedelta(days=1)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("outbound: port 25 to other mail servers is blocked here")
    for words in ("mail will queue", "set RELAY_HOST", "RELAY_USER", "RELAY_PASSWORD_FILE",
                  "RELAY_SPF_INCLUDE", "hosting provider to open outbound port 25",
                  "no answer within 5 s"):
        assert words in message


def test_only_changes_are_logged_and_the_check_is_daily(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = make_task(tmp_path, OK, OK, BLOCKED, BLOCKED, OK)
    with caplog.at_level(logging.INFO, logger="mailboot.outbound"):
        when = NOW
        for _ in range(5):
            when = task.step(when)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "outbound: port 25 to other mail servers is open",
        "outbound: port 25 to other mail servers is blocked here",
        "outbound: port 25 to other mail servers is open",
    ]
    assert when == NOW + timedelta(days=5)


def test_a_step_before_its_time_does_nothing(tmp_path: Path) -> None:
    task = make_task(tmp_path, OK)  # a second check would find the sequence empty
    due = task.step(NOW)
    assert task.step(NOW + timedelta(hours=1)) == due


def test_with_a_relay_port_25_is_no_alarm(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    task = make_task(tmp_path, OK, relay="smtp.relay.example.net:587")
    with caplog.at_level(logging.INFO, logger="mailboot.outbound"):
        task.step(NOW)
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert "the relay smtp.relay.example.net:587 answers" in record.getMessage()
    assert "port 25 outward is not needed" in record.getMessage()


def test_an_unreachable_relay_is_said_without_the_port_25_hint(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = make_task(tmp_path, BLOCKED, relay="smtp.relay.example.net:587")
    with caplog.at_level(logging.INFO, logger="mailboot.outbound"):
        task.step(NOW)
    message = caplog.records[0].getMessage()
    assert "the relay smtp.relay.example.net:587 can't be reached" in message
    assert "RELAY_PASSWORD_FILE" not in message and "blocked here" not in message


def test_a_failed_lookup_is_no_verdict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mailboot.outbound"):
        make_task(tmp_path, NO_DNS).step(NOW)
    assert caplog.records[0].getMessage() == ("outbound: can't check whether port 25 is open: "
                                              "the MX hosts of gmail.com: the MX lookup failed")


def test_the_last_result_is_kept_for_mailboot_status(tmp_path: Path) -> None:
    task = make_task(tmp_path, BLOCKED, OK)
    task.step(NOW)
    state = read_state(task.state_file)
    assert state == {"status": "blocked", "target": BLOCKED.target, "detail": BLOCKED.detail,
                     "via_relay": None, "checked": "2026-12-01T12:00:00Z"}
    task.step(NOW + timedelta(days=1))
    assert json.loads(task.state_file.read_text())["status"] == "ok"
    assert read_state(tmp_path / "missing.json") is None


def test_the_task_tries_the_relay_instead_of_the_setting_when_one_is_set(tmp_path: Path) -> None:
    network = FakeNetwork()
    task = outbound_task(GMAIL, ("relay.example.net", 587), lookup, tmp_path / "s.json",
                         connect=network)
    task.step(NOW)
    assert network.tried == [("198.51.100.7", 587, 5.0)]
    assert task.relay == "relay.example.net:587"
    direct = outbound_task(GMAIL, None, lookup, tmp_path / "s.json", connect=network)
    direct.step(NOW)
    assert network.tried[-1] == ("192.0.2.5", 25, 5.0) and direct.relay is None
