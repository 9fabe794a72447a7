"""Background DNS checks: changes logged once, the ready line when complete, polite backoff."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta

import pytest

from mailboot.base.taskstate import StateUnreadable
from mailboot.dkim.keys import DomainKeys
from mailboot.dns.answer import Answer
from mailboot.records.build import Record, all_records, build_record_groups
from mailboot.records.watch import DnsWatcher
from mailboot.settings.table import Settings
from tests.conftest import NOW


@pytest.fixture
def records(
    make_settings: Callable[..., Settings], make_keys: Callable[[Settings], tuple[DomainKeys, ...]]
) -> list[Record]:
    settings = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4="203.0.113.25")
    return all_records(build_record_groups(settings, make_keys(settings)))


def test_watcher_logs_changes_and_the_ready_line_once(
    records: list[Record], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dns: dict[tuple[str, str], Answer] = {}

    def lookup(name: str, rtype: str) -> Answer:
        return dns.get((name, rtype), Answer(nxdomain=True))

    watcher = DnsWatcher(lambda: records, lookup, ["203.0.113.25"], ["example.com"],
                         timedelta(minutes=1))
    assert watcher.step(NOW) == NOW + timedelta(minutes=1)
    assert "dns: example.com MX is missing: Add @ MX 10 mail.example.com." in caplog.text
    assert "READY" not in caplog.text
    assert watcher.step(NOW) == NOW + timedelta(minutes=1)  # too early: nothing is asked
    later = NOW + timedelta(minutes=1)
    assert watcher.step(later) == later + timedelta(minutes=1)  # polling, never backing off
    caplog.clear()
    later += timedelta(minutes=1)
    watcher.step(later)
    assert caplog.text == ""  # nothing changed, nothing said
    for record in records:
        if record.value is not None:
            dns[(record.name, record.rtype)] = Answer((record.value,))
    later += timedelta(minutes=1)
    assert watcher.step(later) == later + timedelta(days=1)
    assert "dns: example.com MX is now in place" in caplog.text
    assert caplog.text.count("dns: READY - every required DNS record is in place") == 1
    caplog.clear()
    later += timedelta(days=1)
    watcher.step(later)
    assert "READY" not in caplog.text
    del dns[("_dmarc.example.com", "TXT")]
    later += timedelta(days=1)
    watcher.step(later)
    assert "_dmarc.example.com TXT is missing" in caplog.text
    assert "no longer in place" in caplog.text


def test_dns_unreachable_is_said_once_and_what_was_known_is_kept(
    records: list[Record], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dns = {(r.name, r.rtype): Answer((r.value,)) for r in records if r.value is not None}
    reason: list[str] = []

    def lookup(name: str, rtype: str) -> Answer:
        if reason:
            return Answer(error=reason[0])
        return dns.get((name, rtype), Answer(nxdomain=True))

    watcher = DnsWatcher(lambda: records, lookup, ["203.0.113.25"], ["example.com"],
                         timedelta(minutes=1))
    assert watcher.step(NOW) == NOW + timedelta(days=1)
    assert "dns: READY" in caplog.text
    caplog.clear()
    reason.append("no DNS server answered (10.0.0.2: timed out): can this container reach ...")
    later = NOW + timedelta(days=1)
    assert watcher.step(later) == later + timedelta(minutes=1)
    later += timedelta(minutes=1)
    assert watcher.step(later) == later + timedelta(minutes=1)
    assert caplog.messages == [f"dns: can't check the DNS records: {reason[0]}"]
    caplog.clear()
    reason.clear()
    later += timedelta(minutes=1)
    assert watcher.step(later) == later + timedelta(days=1)
    # The records were in place before and still are: nothing but the recovery to say.
    assert caplog.messages == ["dns: DNS lookups get answers again"]


def test_an_address_or_mx_change_is_passed_on_and_the_poll_stretches_with_many_records(
    records: list[Record],
) -> None:
    dns: dict[tuple[str, str], Answer] = {}
    changes: list[str] = []

    def lookup(name: str, rtype: str) -> Answer:
        return dns.get((name, rtype), Answer(nxdomain=True))

    watcher = DnsWatcher(lambda: records, lookup, ["203.0.113.25"], ["example.com"],
                         timedelta(minutes=1), on_change=lambda: changes.append("changed"))
    watcher.step(NOW)
    assert changes == []  # the first look is not a change
    dkim = next(r for r in records if r.kind.value == "dkim")
    dns[(dkim.name, "TXT")] = Answer((dkim.value or "",))
    watcher.step(NOW + timedelta(minutes=1))
    assert changes == []  # a DKIM record is no news to the certificate keeper
    dns[("mail.example.com", "A")] = Answer(("203.0.113.25",))
    watcher.step(NOW + timedelta(minutes=2))
    assert changes == ["changed"]
    many = DnsWatcher(lambda: records * 100, lookup, [], ["example.com"], timedelta(minutes=1))
    moment = NOW + timedelta(minutes=3)
    assert many.step(moment) - moment == timedelta(seconds=len(records) * 100 / 10)


def test_on_ready_runs_once_when_every_required_record_is_in_place(
    records: list[Record],
) -> None:
    dns: dict[tuple[str, str], Answer] = {}
    readies: list[str] = []

    def lookup(name: str, rtype: str) -> Answer:
        return dns.get((name, rtype), Answer(nxdomain=True))

    watcher = DnsWatcher(lambda: records, lookup, ["203.0.113.25"], ["example.com"],
                         timedelta(minutes=1), on_ready=lambda: readies.append("ready"))
    watcher.step(NOW)
    assert readies == []
    for record in records:
        if record.value is not None:
            dns[(record.name, record.rtype)] = Answer((record.value,))
    watcher.step(NOW + timedelta(minutes=1))
    watcher.step(NOW + timedelta(days=2))
    assert readies == ["ready"]  # the self-test's log line comes once, not daily


def test_a_new_run_with_the_last_runs_memory_says_only_what_changed(
    records: list[Record], caplog: pytest.LogCaptureFixture
) -> None:
    """The worker is a new process each run: the findings it restores keep it from saying
    everything again, and the ready line comes once."""
    caplog.set_level(logging.INFO)
    dns: dict[tuple[str, str], Answer] = {}

    def lookup(name: str, rtype: str) -> Answer:
        return dns.get((name, rtype), Answer(nxdomain=True))

    def run(saved: dict[str, object] | None) -> DnsWatcher:
        watcher = DnsWatcher(lambda: records, lookup, ["203.0.113.25"], ["example.com"],
                             timedelta(minutes=1))
        if saved is not None:
            watcher.restore(json.loads(json.dumps(saved)))
        watcher.step(NOW)
        return watcher

    first = run(None)
    assert "example.com MX is missing" in caplog.text
    caplog.clear()
    second = run(first.state())
    assert caplog.text == ""
    for record in records:
        if record.value is not None:
            dns[(record.name, record.rtype)] = Answer((record.value,))
    third = run(second.state())
    assert caplog.text.count("READY") == 1 and "example.com MX is now in place" in caplog.text
    caplog.clear()
    run(third.state())
    assert caplog.text == ""
    with pytest.raises(StateUnreadable):
        first.restore({"previous": [["example.com", "no-such-kind", None, "ok"]]})
