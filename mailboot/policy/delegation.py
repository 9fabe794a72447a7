"""Postfix's policy delegation protocol (SMTPD_POLICY_README) on one stream.

smtpd sends `name=value` lines ending in an empty line and waits for `action=...` and an empty
line; it keeps the connection for the next request, and closes it after `max_idle` without one.
So serving one connection is a loop over requests until the end of the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import BinaryIO

log = logging.getLogger(__name__)

Decide = Callable[[Mapping[str, str]], str]
MAX_REQUEST = 64 * 1024  # bytes; Postfix's requests are well under 2 KiB


def read_request(stream: BinaryIO) -> dict[str, str] | None:
    """One request's attributes, or None at the end of the stream (or a broken request)."""
    attributes: dict[str, str] = {}
    size = 0
    while True:
        line = stream.readline(MAX_REQUEST)
        size += len(line)
        if not line or size > MAX_REQUEST:
            return None
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            return attributes
        name, equals, value = text.partition("=")
        if equals:
            attributes[name] = value


def serve(incoming: BinaryIO, outgoing: BinaryIO, decide: Decide) -> int:
    """Answer every request until the stream ends; return how many were answered."""
    answered = 0
    while (request := read_request(incoming)) is not None:
        try:
            action = decide(request)
        except Exception:  # a bug here must not refuse mail: no opinion, and say so
            log.exception("inbound: the policy check failed; the message was let through")
            action = "DUNNO"
        outgoing.write(f"action={action}\n\n".encode())
        outgoing.flush()
        answered += 1
    return answered
