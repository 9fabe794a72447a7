"""The one rule a DKIM rotation and a TLS key rollover wait by: a record served, unchanged, for
its TTL (fixed clock, answers as data)."""

from __future__ import annotations

from datetime import timedelta

from mailboot.dns.answer import Answer
from mailboot.records.build import DEFAULT_TTL
from mailboot.rotation import gate
from mailboot.rotation.gate import Sighting, Stage
from tests.conftest import NOW

POLL = timedelta(minutes=5)
SERVED = Answer(("3 1 1 ab",), ttl=600)


def test_served_waits_its_ttl_from_the_first_sight() -> None:
    first = gate.judge(SERVED, "3 1 1 ab", True, None, NOW)
    assert first.stage is Stage.WAITING and first.sighting == Sighting("3 1 1 ab", NOW)
    assert first.go_at == NOW + timedelta(seconds=600) and first.since == NOW
    assert first.waiting_text() == ("at 2026-11-25 12:10:00 UTC (once the record's TTL of "
                                    "600 s has passed)")
    assert first.wake(NOW, POLL) == NOW + POLL
    later = NOW + timedelta(seconds=599)
    almost = gate.judge(SERVED, "3 1 1 ab", True, first.sighting, later)
    assert almost.stage is Stage.WAITING and almost.sighting == first.sighting
    assert almost.wake(later, POLL) == NOW + timedelta(seconds=600)  # not a poll later
    done = gate.judge(SERVED, "3 1 1 ab", True, first.sighting, NOW + timedelta(seconds=600))
    assert done.stage is Stage.GO


def test_not_served_forgets_and_no_answer_keeps_what_was_seen() -> None:
    seen = Sighting("3 1 1 ab", NOW)
    gone = gate.judge(Answer(), "3 1 1 ab", False, seen, NOW + timedelta(hours=2))
    assert gone.stage is Stage.NOT_SERVED and gone.sighting is None and gone.since is None
    assert gone.waiting_text().startswith("once the record is served")
    failed = gate.judge(Answer(error="timed out"), "3 1 1 ab", False, seen,
                        NOW + timedelta(hours=2))
    assert failed.stage is Stage.UNKNOWN and failed.sighting == seen


def test_a_sighting_of_another_value_counts_for_nothing() -> None:
    stale = Sighting("3 1 1 00", NOW - timedelta(days=3))
    verdict = gate.judge(SERVED, "3 1 1 ab", True, stale, NOW)
    assert verdict.stage is Stage.WAITING and verdict.since == NOW


def test_without_a_ttl_in_the_answer_the_printed_one_counts() -> None:
    verdict = gate.judge(Answer(("x",)), "x", True, None, NOW)
    assert verdict.ttl == timedelta(seconds=DEFAULT_TTL)
