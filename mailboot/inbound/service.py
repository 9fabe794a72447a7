"""The port-25 policy service, started on demand: the supervisor holds Postfix's policy socket
(private/mailboot-policy) and, when an smtpd connects and no policy process runs, starts
`python3 -P -m mailboot.inbound.service --listen-fd=N` as an unprivileged user. That one
process answers every smtpd (a thread per connection: each keeps its connection for the next
question and lets go of it after `max_idle`, main.cf) and ends once no connection has been
open for `--idle` seconds, so nothing of it stays in memory while no mail arrives, and a burst
of 200 sessions costs one process, not 200.

What it must say only once (a blocklist refusing our resolver, Docker's proxy) is noted in
files below the run directory (`inbound.FileNotes`), so a later process doesn't say it again.
"""

from __future__ import annotations

import argparse
import logging
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from mailboot.base import logs
from mailboot.dns.lookup import DnsLookup
from mailboot.inbound import protocol as smtp_policy
from mailboot.inbound.decide import Blocklist, FileNotes, InboundPolicy, default_gateway
from mailboot.standards import publicsuffix

# The container's own resolver (Unbound): recursive, validating, and what blocklists accept.
LOCAL_RESOLVER = ("127.0.0.1", 53)
# Seconds without an open connection before the process ends (smtpd lets go of an idle one
# after max_idle, 10 s): a quiet minute, and the next message starts a new one (about 0.4 s).
IDLE = 60.0


def blocklist(text: str) -> Blocklist:
    """`query-zone=shown-as` (the query zone may hold a DQS key; the log shows the other)."""
    query, _, shown = text.partition("=")
    return Blocklist(query, shown or query)


def policy(blocklists: Sequence[Blocklist], notes: Path) -> InboundPolicy:
    try:
        routes = Path("/proc/net/route").read_text()
    except OSError:
        routes = ""
    return InboundPolicy(DnsLookup([LOCAL_RESOLVER]), publicsuffix.load_rules(), blocklists,
                         default_gateway(routes), notes=FileNotes(notes))


def log_to_stderr() -> None:
    """Our lines to the supervisor's standard error, which `docker logs` shows."""
    logger = logging.getLogger("mailboot")
    logger.setLevel(logging.INFO)
    logger.addHandler(logs.stderr_handler())


class Connections:
    """How many connections are open, and since when none has been (real state, shared by the
    connection threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.quiet_since = time.monotonic()

    def opened(self) -> None:
        with self.lock:
            self.open += 1

    def closed(self) -> None:
        with self.lock:
            self.open -= 1
            self.quiet_since = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.open else time.monotonic() - self.quiet_since


def serve_socket(listener: socket.socket, decide: smtp_policy.Decide, idle: float) -> None:
    """Accept smtpd's connections, each answered in its own thread, until none has been open
    for `idle` seconds."""
    connections = Connections()
    listener.settimeout(1.0)
    while connections.idle_for() < idle:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        connections.opened()
        threading.Thread(target=_answer, args=(connection, decide, connections),
                         daemon=True).start()


def _answer(connection: socket.socket, decide: smtp_policy.Decide,
            connections: Connections) -> None:
    try:
        with connection, connection.makefile("rb") as incoming, \
                connection.makefile("wb") as outgoing:
            smtp_policy.serve(incoming, outgoing, decide)
    except OSError:
        pass  # smtpd went away: its own timeout and default action take over
    finally:
        connections.closed()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mailboot.inbound.service")
    parser.add_argument("--listen-fd", type=int, required=True,
                        help="the listening socket the supervisor hands over")
    parser.add_argument("--idle", type=float, default=IDLE,
                        help="end after this many seconds without an open connection")
    parser.add_argument("--blocklist", type=blocklist, action="append", default=[],
                        help="query-zone=shown-as of an address blocklist postscreen asks")
    parser.add_argument("--notes", type=Path, default=Path("/run/mailboot/inbound"),
                        help="where the policy processes note what they said")
    arguments = parser.parse_args(argv)
    log_to_stderr()
    listener = socket.socket(fileno=arguments.listen_fd)
    decide = policy(arguments.blocklist, arguments.notes).decide
    serve_socket(listener, decide, arguments.idle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
