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
- `mtasts`: a socketmap (`socketmap`), Postfix's smtp_tls_policy_maps: receivers' MTA-STS
  policies (`outbound.mtasts`).
- `srs`: Postfix's socketmap lookups (`socketmap`): `forward` and `reverse`, the Sender
  Rewriting Scheme for copies forwarded off the server (`outbound.srs`).
- `auth`: Dovecot's auth policy (`authpolicy`, HTTP on loopback TCP), asked before and told
  after every login (IMAP, ManageSieve, and SMTP AUTH, which Postfix asks Dovecot):
  `logins.bans` counts the failures and refuses banned addresses.
- `bans`: Postfix's policy delegation at the connection of a client to 465 and 587: a banned
  address gets 421 and is disconnected before it can try a password.

What it must say only once (a blocklist refusing our resolver, Docker's proxy) is noted in
files below the run directory (`inbound.FileNotes`), so a later process doesn't say it again.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from mailboot.base.errors import StateError
from mailboot.base.logs import configure_logging
from mailboot.dns.lookup import local_lookup
from mailboot.inbound.decide import Blocklist, FileNotes, InboundChecks, default_gateway
from mailboot.logins.bans import BanRules, BanStore, LoginBans, refusal
from mailboot.outbound import limits, mtasts_fetch, srs
from mailboot.outbound.mtasts import MtaSts, PolicyCache, Sources
from mailboot.policy import authpolicy, delegation, socketmap
from mailboot.standards import publicsuffix

log = logging.getLogger(__name__)

# Seconds without an open connection before the process ends (smtpd lets go of an idle one
# after max_idle, 10 s): a quiet minute, and the next message starts a new one (about 0.4 s).
IDLE = 60.0
# Receivers' MTA-STS policies, one file per domain, below --state.
MTASTS_CACHE = "mta-sts"
# What serves one accepted connection of a socket, until its client lets go.
Serve = Callable[[socket.socket], None]


def blocklist(text: str) -> Blocklist:
    """`query-zone=shown-as` (the query zone may hold a DQS key; the log shows the other)."""
    query, _, shown = text.partition("=")
    return Blocklist(query, shown or query)


def ban_rules(text: str) -> tuple[int, int, int]:
    """`failures,window,duration` (a count and two numbers of seconds)."""
    failures, window, duration = (int(part) for part in text.split(","))
    return failures, window, duration


def inbound_checks(blocklists: Sequence[Blocklist], notes: Path) -> InboundChecks:
    return InboundChecks(local_lookup(), publicsuffix.load_rules(), blocklists,
                         default_route_gateway(), notes=FileNotes(notes))


def default_route_gateway() -> str | None:
    try:
        return default_gateway(Path("/proc/net/route").read_text())
    except OSError:
        return None


def login_bans(arguments: argparse.Namespace) -> LoginBans:
    failures, window, duration = arguments.login_bans
    rules = BanRules(failures, window, duration, tuple(arguments.login_ban_allow))
    notes = FileNotes(arguments.notes)
    # The policy process runs as the state directory's owner: what it writes stays its own.
    return LoginBans(BanStore(arguments.state), rules, default_route_gateway(),
                     proxy_noticed=lambda: notes.said("proxy"))


def auth_policy_server(bans: LoginBans) -> Serve:
    """Dovecot's auth policy on each connection: refuse a banned address before its login,
    count a failed login after it. A login refused for a ban is reported too
    (`policy_reject`): not counted again. Nor is a failure of our own (`fail_type` internal:
    the password file couldn't be read)."""
    def judge(command: str, attributes: Mapping[str, object]) -> tuple[int, str]:
        remote = str(attributes.get("remote", ""))
        if command == "allow":
            found = bans.banned(remote)
            return (-1, refusal(*found)) if found is not None else (0, "")
        if (command == "report" and attributes.get("policy_reject") is not True
                and attributes.get("fail_type") != "internal"):
            bans.report(remote, str(attributes.get("protocol", "")),
                        success=attributes.get("success") is True)
        return 0, ""

    def serve(connection: socket.socket) -> None:
        with connection.makefile("rb") as incoming, connection.makefile("wb") as outgoing:
            authpolicy.serve(incoming, outgoing, judge)
    return serve


def connection_check(bans: LoginBans) -> delegation.Decide:
    """Postfix's submission services ask when a client connects (smtpd_delay_reject = no):
    421 disconnects a banned address (access(5)) before its greeting."""
    def decide(request: Mapping[str, str]) -> str:
        found = bans.banned(request.get("client_address", ""))
        return "DUNNO" if found is None else f"421 4.7.0 {refusal(*found)}"
    return decide


def daily_limit(text: str) -> int | None:
    """A whole number, or `off` (no limit)."""
    return None if text == "off" else int(text)


def by_login(inbound: delegation.Decide, submission: delegation.Decide) -> delegation.Decide:
    """One socket for both: a request with a login comes from the submission services (port 25
    has no AUTH), the rest from port 25, whose checks stay as they are."""
    def decide(request: Mapping[str, str]) -> str:
        return submission(request) if request.get("sasl_username") else inbound(request)
    return decide


def stream_server(protocol: Callable[[BinaryIO, BinaryIO], object]) -> Serve:
    """A protocol that reads questions from one stream and writes answers to another, on each
    connection."""
    def serve(connection: socket.socket) -> None:
        with connection.makefile("rb") as incoming, connection.makefile("wb") as outgoing:
            protocol(incoming, outgoing)
    return serve


def delegation_server(decide: delegation.Decide) -> Serve:
    """Postfix's policy delegation protocol on each connection."""
    return stream_server(lambda incoming, outgoing: delegation.serve(incoming, outgoing, decide))


def mtasts_lookup(arguments: argparse.Namespace) -> socketmap.Lookup:
    """Postfix's smtp_tls_policy_maps (socketmap `mtasts`): the TLS policy of each destination
    domain, from its MTA-STS policy."""
    trust, helo = arguments.trust_ca_file, arguments.helo
    sources = Sources(local_lookup(),
                      lambda domain: mtasts_fetch.fetch_policy(domain, trust),
                      lambda host: mtasts_fetch.probe_mx(host, helo, trust), time.time)
    resolver = MtaSts(PolicyCache(arguments.state / MTASTS_CACHE), sources)

    def lookup(name: str, key: str) -> socketmap.Reply:
        if name != "mtasts":
            return socketmap.Reply("PERM", f"no map named {name!r} here (only mtasts)")
        value = resolver.answer(key)
        return socketmap.NOT_FOUND if value is None else socketmap.Reply("OK", value)
    return lookup


def socketmap_server(lookup: socketmap.Lookup) -> Serve:
    """Postfix's socketmap protocol on each connection."""
    return stream_server(lambda incoming, outgoing: socketmap.serve(incoming, outgoing, lookup))


def srs_lookup(state: Path, srs_domain: str, own_domains: Sequence[str],
               clock: Callable[[], float] = time.time) -> socketmap.Lookup:
    """The `forward` and `reverse` maps of `outbound.srs`. The secret is read (or made) on the
    first lookup; while it can't be, Postfix is told TEMP and keeps the mail queued."""
    made: list[srs.Rewriting] = []
    lock = threading.Lock()

    def lookup(name: str, key: str) -> socketmap.Reply:
        with lock:
            if not made:
                try:
                    made.append(srs.rewriting(state, srs_domain, tuple(own_domains)))
                except StateError as error:
                    log.error("%s", error)
                    return socketmap.Reply("TEMP", "the SRS secret can't be read; see the log")
        answer = {"forward": srs.forward, "reverse": srs.reverse}.get(name)
        if answer is None:
            return socketmap.Reply("PERM", f"no map {name!r} here (forward, reverse)")
        result = answer(made[0], key, clock())
        return socketmap.NOT_FOUND if result is None else socketmap.Reply("OK", result)
    return lookup


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
    parser.add_argument("--srs-fd", type=int,
                        help="Postfix's SRS socketmap socket the supervisor hands over")
    parser.add_argument("--srs-domain", help="the domain SRS addresses are made under")
    parser.add_argument("--mail-domain", action="append", default=[],
                        help="one of our mail domains (repeatable): senders kept, bounces taken")
    parser.add_argument("--state", type=Path, default=Path("/data/policy"),
                        help="what the policy process keeps across restarts (the SRS secret, "
                             "the bans, receivers' MTA-STS policies)")
    parser.add_argument("--idle", type=float, default=IDLE,
                        help="end after this many seconds without an open connection")
    parser.add_argument("--blocklist", type=blocklist, action="append", default=[],
                        help="query-zone=shown-as of an address blocklist postscreen asks")
    parser.add_argument("--auth-fd", type=int,
                        help="Dovecot's auth policy socket (HTTP) the supervisor hands over")
    parser.add_argument("--bans-fd", type=int,
                        help="the submission services' connection check (policy delegation)")
    parser.add_argument("--login-bans", type=ban_rules, default=(10, 600, 3600),
                        help="failures,window,duration: this many failed logins within window "
                             "seconds ban an address for duration seconds")
    parser.add_argument("--login-ban-allow", type=ipaddress.ip_network, action="append",
                        default=[], help="a network never banned (repeatable)")
    parser.add_argument("--notes", type=Path, default=Path("/run/mailboot/inbound"),
                        help="where the policy processes note what they said")
    parser.add_argument("--mtasts-fd", type=int,
                        help="Postfix's smtp_tls_policy_maps socketmap the supervisor hands over")
    parser.add_argument("--trust-ca-file", type=Path,
                        help="CA certificates trusted beside the system's (TLS_TRUST_CA_FILE)")
    parser.add_argument("--helo", default="localhost",
                        help="the EHLO name when a testing policy's MX hosts are checked")
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
    if arguments.mtasts_fd is not None:
        lookup = mtasts_lookup(arguments)
        found[socket.socket(fileno=arguments.mtasts_fd)] = socketmap_server(lookup)
    if arguments.srs_fd is not None:
        if not arguments.srs_domain:
            raise SystemExit("--srs-fd needs --srs-domain: the domain SRS addresses are made under")
        domains = arguments.mail_domain or [arguments.srs_domain]
        lookup = srs_lookup(arguments.state, arguments.srs_domain, domains)
        found[socket.socket(fileno=arguments.srs_fd)] = socketmap_server(lookup)
    if arguments.auth_fd is not None or arguments.bans_fd is not None:
        bans = login_bans(arguments)
        if arguments.auth_fd is not None:
            found[socket.socket(fileno=arguments.auth_fd)] = auth_policy_server(bans)
        if arguments.bans_fd is not None:
            found[socket.socket(fileno=arguments.bans_fd)] = delegation_server(
                connection_check(bans))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    configure_logging()  # to the supervisor's standard error, which `docker logs` shows
    serve_sockets(servers(arguments), arguments.idle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
