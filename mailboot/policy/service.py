"""The policy process, started on demand: the supervisor holds the sockets the daemons ask us on
(Postfix's private/mailboot-policy, ...) and, when one of them is asked and no policy process
runs, starts `python3 -P -m mailboot.policy.service --policy-fd=N ...` as an unprivileged user.
That one process answers every connection on every socket (a thread per connection: each keeps
its connection for the next question and lets go of it after its idle time, main.cf) and ends
once no connection has been open for `--idle` seconds, so nothing of it stays in memory while no
mail moves, and a burst of 200 sessions costs one process, not 200.

Each socket has a name, and the name says what is asked on it and in which protocol:
- `policy`: Postfix's policy delegation (`delegation`): the port-25 checks (`inbound.decide`),
  and for the submission services, whose requests carry the login (`sasl_username`), the
  sending limits (`outbound.limits`).

What it must say only once (a blocklist refusing our resolver, Docker's proxy) is noted in
files below the run directory (`inbound.FileNotes`), so a later process doesn't say it again.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from mailboot.base.logs import configure_logging
from mailboot.dns.lookup import local_lookup
from mailboot.inbound.decide import Blocklist, FileNotes, InboundChecks, default_gateway
from mailboot.outbound import limits
from mailboot.policy import delegation
from mailboot.standards import publicsuffix

# Seconds without an open connection before the process ends (smtpd lets go of an idle one
# after max_idle, 10 s): a quiet minute, and the next message starts a new one (about 0.4 s).
IDLE = 60.0
# What serves one accepted connection of a socket, until its client lets go.
Serve = Callable[[socket.socket], None]


def blocklist(text: str) -> Blocklist:
    """`query-zone=shown-as` (the query zone may hold a DQS key; the log shows the other)."""
    query, _, shown = text.partition("=")
    return Blocklist(query, shown or query)


def inbound_checks(blocklists: Sequence[Blocklist], notes: Path) -> InboundChecks:
    try:
        routes = Path("/proc/net/route").read_text()
    except OSError:
        routes = ""
    return InboundChecks(local_lookup(), publicsuffix.load_rules(), blocklists,
                         default_gateway(routes), notes=FileNotes(notes))


def daily_limit(text: str) -> int | None:
    """A whole number, or `off` (no limit)."""
    return None if text == "off" else int(text)


def by_login(inbound: delegation.Decide, submission: delegation.Decide) -> delegation.Decide:
    """One socket for both: a request with a login comes from the submission services (port 25
    has no AUTH), the rest from port 25, whose checks stay as they are."""
    def decide(request: Mapping[str, str]) -> str:
        return submission(request) if request.get("sasl_username") else inbound(request)
    return decide


def delegation_server(decide: delegation.Decide) -> Serve:
    """Postfix's policy delegation protocol on each connection."""
    def serve(connection: socket.socket) -> None:
        with connection.makefile("rb") as incoming, connection.makefile("wb") as outgoing:
            delegation.serve(incoming, outgoing, decide)
    return serve


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


def serve_sockets(listeners: Mapping[socket.socket, Serve], idle: float) -> None:
    """Accept every socket's connections, each served in its own thread, until none has been
    open on any socket for `idle` seconds."""
    connections = Connections()
    stop = threading.Event()
    acceptors = [threading.Thread(target=_accept, args=(listener, serve, connections, stop),
                                  daemon=True) for listener, serve in listeners.items()]
    for acceptor in acceptors:
        acceptor.start()
    while connections.idle_for() < idle:
        time.sleep(min(1.0, idle))
    stop.set()
    for acceptor in acceptors:
        acceptor.join()


def serve_socket(listener: socket.socket, decide: delegation.Decide, idle: float) -> None:
    """One policy delegation socket (what the tests of the port-25 checks run)."""
    serve_sockets({listener: delegation_server(decide)}, idle)


def _accept(listener: socket.socket, serve: Serve, connections: Connections,
            stop: threading.Event) -> None:
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return  # the socket was closed under us: the process is ending
        connection.settimeout(None)
        connections.opened()
        threading.Thread(target=_answer, args=(connection, serve, connections),
                         daemon=True).start()


def _answer(connection: socket.socket, serve: Serve, connections: Connections) -> None:
    try:
        with connection:
            serve(connection)
    except OSError:
        pass  # the client went away: its own timeout and default action take over
    finally:
        connections.closed()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m mailboot.policy.service")
    parser.add_argument("--policy-fd", type=int,
                        help="Postfix's policy delegation socket the supervisor hands over")
    parser.add_argument("--idle", type=float, default=IDLE,
                        help="end after this many seconds without an open connection")
    parser.add_argument("--blocklist", type=blocklist, action="append", default=[],
                        help="query-zone=shown-as of an address blocklist postscreen asks")
    parser.add_argument("--notes", type=Path, default=Path("/run/mailboot/inbound"),
                        help="where the policy processes note what they said")
    parser.add_argument("--state", type=Path, default=Path("/data/policy"),
                        help="what the policy process keeps across restarts")
    parser.add_argument("--send-limit-messages", type=daily_limit, default=None,
                        help="messages a login may send a UTC day, or off")
    parser.add_argument("--send-limit-first-time", type=daily_limit, default=None,
                        help="recipients new to a login it may write to a UTC day, or off")
    return parser


def servers(arguments: argparse.Namespace) -> dict[socket.socket, Serve]:
    """Each handed socket with what serves it."""
    found: dict[socket.socket, Serve] = {}
    if arguments.policy_fd is not None:
        inbound = inbound_checks(arguments.blocklist, arguments.notes).decide
        sending = limits.SendingLimits(
            limits.state_directory(arguments.state),
            limits.Limits(arguments.send_limit_messages, arguments.send_limit_first_time),
            lambda: datetime.now(UTC))
        found[socket.socket(fileno=arguments.policy_fd)] = delegation_server(
            by_login(inbound, sending.decide))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    configure_logging()  # to the supervisor's standard error, which `docker logs` shows
    serve_sockets(servers(arguments), arguments.idle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
