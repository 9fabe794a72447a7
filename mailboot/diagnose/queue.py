"""The Postfix mail queue in numbers: how many messages wait, and the oldest deferred one and why.

`postqueue -j` (Postfix 3.1 and later, postqueue(1)) prints one JSON object per queued message:
its queue (maildrop, incoming, active, deferred, hold), its arrival time in seconds since the
epoch, and for each recipient still to be delivered the reason of the last failure
(`delay_reason`). It asks Postfix's showq service, so it fails while Postfix is down.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mailboot.base import programs

POSTQUEUE = "/usr/sbin/postqueue"
# Queues whose messages are being delivered or are about to be (postqueue(1), QUEUE NAMES).
WAITING = frozenset({"maildrop", "incoming", "active"})


@dataclass(frozen=True)
class Deferred:
    """A deferred message: when it arrived, one recipient still waiting, and why."""

    queue_id: str
    arrival: datetime
    recipient: str
    reason: str


@dataclass(frozen=True)
class Queue:
    active: int  # maildrop, incoming and active: being delivered or about to be
    deferred: int  # failed for now; tried again later
    hold: int  # held: by the administrator, or a forwarded copy DMARC quarantined (SRS)
    oldest_deferred: Deferred | None


def parse(text: str) -> Queue:
    """The counts and the oldest deferred message of `postqueue -j` output; raises ValueError
    when a line is not a message as postqueue describes it."""
    counts = {"waiting": 0, "deferred": 0, "hold": 0}
    oldest: Deferred | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        message = json.loads(line)
        if not isinstance(message, dict) or not isinstance(message.get("queue_name"), str):
            raise ValueError(f"not a queued message: {line[:200]}")
        queue = message["queue_name"]
        if queue in WAITING:
            counts["waiting"] += 1
        elif queue in counts:
            counts[queue] += 1
        if queue == "deferred":
            deferred = _deferred(message)
            if oldest is None or deferred.arrival < oldest.arrival:
                oldest = deferred
    return Queue(counts["waiting"], counts["deferred"], counts["hold"], oldest)


def _deferred(message: dict[str, object]) -> Deferred:
    arrival = message.get("arrival_time")
    if not isinstance(arrival, int | float):
        raise ValueError(f"a message without an arrival time: {message.get('queue_id')}")
    recipients = message.get("recipients")
    first = recipients[0] if isinstance(recipients, list) and recipients else {}
    first = first if isinstance(first, dict) else {}
    return Deferred(str(message.get("queue_id", "")), datetime.fromtimestamp(arrival, UTC),
                    str(first.get("address", "")), str(first.get("delay_reason", "")))


def read_queue(run: Callable[[Sequence[str]], str] = programs.run) -> Queue:
    """The queue as Postfix sees it now; raises CommandError when postqueue fails (Postfix is
    down) and ValueError when its output can't be read."""
    return parse(run([POSTQUEUE, "-j"]))
