"""One rule for every switch that waits for a DNS record: served, unchanged, for its TTL.

A DKIM rotation (the next key signs) and the TLS key rollover (the next key is served on port 25)
both switch to something that only works once a record is in DNS. Seeing the record served once
is not enough: a resolver that asked just before still holds the old answer (the record's
absence, RFC 2308 §5, or the old TLSA set) for up to the TTL, and a verifier or DANE sender
behind it would fail our mail or refuse our certificate. So the switch waits until the record has
been served, matching, without a break, for at least its TTL since it was first seen.

`judge` takes the lookup's answer, whether it serves what we expect (each caller compares in its
own way: a DKIM key by its p=, a TLSA record by its normal form), what was seen before, and the
time; it returns the verdict and the sighting to keep. The caller persists the sighting where its
state lives (a DKIM domain's state file, DATA_DIR/tls/keys), so a restart resumes the wait. A
lookup without an answer keeps what was seen; a record that stops matching starts the wait over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from mailboot.dns.answer import Answer
from mailboot.records.build import DEFAULT_TTL


@dataclass(frozen=True)
class Sighting:
    """Since when the record holding `value` has been seen served, without a break."""

    value: str  # what was expected (a stale sighting of another value counts for nothing)
    since: datetime


class Stage(StrEnum):
    UNKNOWN = "unknown"  # no answer: nothing learnt, what was seen stays seen
    NOT_SERVED = "not served"  # absent or different: the wait starts over once it is
    WAITING = "waiting"  # served since `sighting.since`; the switch happens at `go_at`
    GO = "go"  # served for at least its TTL: switch now


@dataclass(frozen=True)
class Verdict:
    stage: Stage
    sighting: Sighting | None  # what to keep until the next look
    ttl: timedelta  # the served record's TTL (or the TTL we print, when the lookup can't tell)

    @property
    def since(self) -> datetime | None:
        """Since when the record has been served (the time to keep), if it is."""
        return None if self.sighting is None else self.sighting.since

    @property
    def go_at(self) -> datetime | None:
        """When the switch may happen (WAITING and GO)."""
        return None if self.sighting is None else self.sighting.since + self.ttl

    def wake(self, now: datetime, poll: timedelta) -> datetime:
        """When to look again: at the next poll, or when the wait ends if that is sooner."""
        if self.stage is Stage.WAITING and self.go_at is not None:
            return min(now + poll, self.go_at)
        return now + poll

    def waiting_text(self) -> str:
        """`at 2026-11-25 13:00:00 UTC (once the record's TTL of 3600 s has passed)`."""
        ttl = f"the record's TTL of {int(self.ttl.total_seconds())} s"
        if self.go_at is None:
            return f"once the record is served and {ttl} has passed since"
        return f"at {when(self.go_at)} (once {ttl} has passed)"


def judge(answer: Answer, expected: str, matches: bool, seen: Sighting | None,
          now: datetime) -> Verdict:
    """Where the record serving `expected` stands at `now`. `matches`: whether `answer` serves
    it, as the caller judges; `seen`: the sighting kept from the last look."""
    ttl = timedelta(seconds=answer.ttl if answer.ttl is not None else DEFAULT_TTL)
    if seen is not None and seen.value != expected:
        seen = None  # kept for another record: this one's wait has not begun
    if answer.error is not None:
        return Verdict(Stage.UNKNOWN, seen, ttl)
    if not matches:
        return Verdict(Stage.NOT_SERVED, None, ttl)
    sighting = seen if seen is not None else Sighting(expected, now)
    stage = Stage.GO if now >= sighting.since + ttl else Stage.WAITING
    return Verdict(stage, sighting, ttl)


def when(moment: datetime) -> str:
    """A time as the log says it: `2026-11-25 13:00:00 UTC`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
