"""Postfix's policy delegation protocol (SMTPD_POLICY_README), served on a unix socket.

smtpd sends `name=value` lines ending in an empty line and waits for `action=...` and an empty
line; it keeps the connection for the next request. Only Postfix's own smtpd processes connect
(the socket is in its private directory and belongs to the postfix user), at most one per
smtpd process, so a thread per connection is bounded by Postfix's process limit.
"""

from __future__ import annotations

import logging
import os
import socketserver
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

Decide = Callable[[Mapping[str, str]], str]
MAX_REQUEST = 64 * 1024  # bytes; Postfix's requests are well under 2 KiB


def read_request(stream: socketserver.StreamRequestHandler) -> dict[str, str] | None:
    """One request's attributes, or None at the end of the connection (or a broken request)."""
    attributes: dict[str, str] = {}
    size = 0
    while True:
        line = stream.rfile.readline(MAX_REQUEST)
        size += len(line)
        if not line or size > MAX_REQUEST:
            return None
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            return attributes
        name, equals, value = text.partition("=")
        if equals:
            attributes[name] = value


class _Handler(socketserver.StreamRequestHandler):
    server: PolicyServer

    def handle(self) -> None:
        while (request := read_request(self)) is not None:
            try:
                action = self.server.decide(request)
            except Exception:  # a bug here must not refuse mail: no opinion, and say so
                log.exception("inbound: the policy check failed; the message was let through")
                action = "DUNNO"
            self.wfile.write(f"action={action}\n\n".encode())
            self.wfile.flush()


class PolicyServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, decide: Decide) -> None:
        self.decide = decide
        path.unlink(missing_ok=True)  # a socket left by the last run
        super().__init__(str(path), _Handler)


def start(path: Path, decide: Decide, owner: tuple[int, int] | None) -> PolicyServer:
    """Listen on `path` (mode 0600, owned by `owner`) in a background thread."""
    server = PolicyServer(path, decide)
    if owner is not None:
        os.chown(path, *owner)
    path.chmod(0o600)
    threading.Thread(target=server.serve_forever, name="smtp-policy", daemon=True).start()
    return server
