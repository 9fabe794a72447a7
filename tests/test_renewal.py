"""Renewal and retry times: arithmetic on a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailboot.tls.renewal import MAX_RETRY, next_retry, renew_at, retry_time

ISSUED = datetime(2026, 11, 1, tzinfo=UTC)
EXPIRES = ISSUED + timedelta(days=90)


def test_without_a_suggestion_renewal_is_due_when_a_third_of_the_lifetime_remains() -> None:
    assert renew_at(ISSUED, EXPIRES, None) == ISSUED + timedelta(days=60)


def test_the_cas_suggestion_is_followed_when_it_leaves_time() -> None:
    suggested = ISSUED + timedelta(days=70)
    assert renew_at(ISSUED, EXPIRES, suggested) == suggested
    earlier = ISSUED + timedelta(days=5)  # e.g. the CA announces a revocation
    assert renew_at(ISSUED, EXPIRES, earlier) == earlier


def test_a_suggestion_past_the_end_is_capped_before_expiry() -> None:
    assert renew_at(ISSUED, EXPIRES, EXPIRES + timedelta(days=3)) == ISSUED + timedelta(days=81)


def test_retries_double_up_to_an_hour() -> None:
    first = timedelta(minutes=1)
    delay = next_retry(None, first)
    assert delay == first
    seen = [delay]
    for _ in range(10):
        delay = next_retry(delay, first)
        seen.append(delay)
    assert seen[1] == 2 * first and seen[-1] == MAX_RETRY and max(seen) == MAX_RETRY


def test_the_ca_can_ask_for_a_later_retry_but_not_an_earlier_one() -> None:
    now, five = ISSUED, timedelta(minutes=5)
    assert retry_time(now, five, now + timedelta(hours=2)) == now + timedelta(hours=2)
    assert retry_time(now, five, now + timedelta(minutes=1)) == now + five
    assert retry_time(now, five, None) == now + five
