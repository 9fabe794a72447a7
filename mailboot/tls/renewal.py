"""When to renew and when to try again: pure arithmetic on times, tested with a fixed clock."""

from __future__ import annotations

from datetime import datetime, timedelta

MAX_RETRY = timedelta(hours=1)


def renew_at(not_before: datetime, not_after: datetime, suggested: datetime | None) -> datetime:
    """The CA's suggestion (ARI) when it gave one, else when a third of the lifetime remains.

    A suggestion is never followed past the last tenth of the lifetime: a window reaching beyond
    notAfter (Pebble's does) would otherwise let the certificate expire before we renew it.
    """
    lifetime = not_after - not_before
    if suggested is not None:
        return min(suggested, not_after - lifetime / 10)
    return not_after - lifetime / 3


def next_retry(previous: timedelta | None, first: timedelta) -> timedelta:
    """Back off politely: the first wait, then doubling, never more than an hour."""
    if previous is None:
        return first
    return min(MAX_RETRY, max(first, previous * 2))


def retry_time(now: datetime, delay: timedelta, ca_says: datetime | None) -> datetime:
    """Our own backoff, or later if the CA asked us to wait longer (rate limits)."""
    ours = now + delay
    return max(ours, ca_says) if ca_says is not None else ours
