"""Postfix's socketmap lookup protocol (socketmap_table(5)) on one stream.

Postfix sends a netstring (`<length>:<name> <key>,`) and waits for one back: `OK <value>`,
`NOTFOUND `, `TEMP <reason>`, `TIMEOUT <reason>` or `PERM <reason>`. It keeps the connection for
the next lookup and closes it after `max_idle` (10 s by default) without one, so serving one
connection is a loop over lookups until the end of the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger(__name__)

MAX_REQUEST = 10_000  # bytes; a map name and one address or domain are far shorter


@dataclass(frozen=True)
class Reply:
    """One answer: `status` is OK, NOTFOUND, TEMP, TIMEOUT or PERM."""

    status: str
    text: str = ""

    def netstring(self) -> bytes:
        body = f"{self.status} {self.text}".encode()
        return b"%d:%s," % (len(body), body)


NOT_FOUND = Reply("NOTFOUND")
# A map: (map name, key) -> reply. A map that can't tell (DNS down) says TEMP: Postfix then
# defers what it was doing, which is always safer than a wrong answer.
Lookup = Callable[[str, str], Reply]


def read_netstring(stream: BinaryIO) -> bytes | None:
    """One netstring's payload, or None at the end of the stream or for a broken one."""
    digits = b""
    while (char := stream.read(1)) != b":":
        if not char or not char.isdigit() or len(digits) > 6:
            return None
        digits += char
    if not digits or int(digits) > MAX_REQUEST:
        return None
    payload = stream.read(int(digits))
    if len(payload) != int(digits) or stream.read(1) != b",":
        return None
    return payload


def serve(incoming: BinaryIO, outgoing: BinaryIO, lookup: Lookup) -> int:
    """Answer every lookup until the stream ends; return how many were answered."""
    answered = 0
    while (request := read_netstring(incoming)) is not None:
        name, _, key = request.decode("utf-8", "replace").partition(" ")
        try:
            reply = lookup(name, key)
        except Exception:  # a bug here must not decide for Postfix: try again later
            log.exception("policy: the %s lookup of %r failed", name, key)
            reply = Reply("TEMP", "mailboot's lookup failed; see its log")
        outgoing.write(reply.netstring())
        outgoing.flush()
        answered += 1
    return answered
