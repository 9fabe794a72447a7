"""What a DNS lookup answers, as data: the one shape the lookup, the SPF evaluator and the DNS
doctor share (so tests can write DNS state as plain values)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """What the DNS said: values in presentation form (a TXT record's strings joined, unquoted,
    by `dns.lookup.answer_values`, the one decoder)."""

    values: tuple[str, ...] = ()
    nxdomain: bool = False
    error: str | None = None  # no usable answer: what failed and what to check, in plain words
    ttl: int | None = None  # the answer's TTL in seconds, when the lookup knows it
    # The resolver validated it with DNSSEC (the AD bit, RFC 4035 §3.2.3): only a validating
    # resolver we trust (the container's own Unbound) makes this mean anything.
    authenticated: bool = False


Lookup = Callable[[str, str], Answer]
