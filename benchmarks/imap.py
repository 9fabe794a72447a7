"""IMAP at scale: 1,000 mailboxes, each with a phone and a laptop waiting in IDLE.

One container at default settings (IMAP_MAX_CONNECTIONS 4000) gets 1,000 mailboxes from
`mailboot account import`, all with one pre-made bcrypt hash at bcrypt's lowest cost (logins
here cost the server TLS, not bcrypt). An asyncio client on the host opens 2,000 IMAPS
connections on 993, two per mailbox, and takes each through LOGIN, SELECT INBOX and IDLE; then
waits until Dovecot has hibernated them (its imap processes gone, one imap-hibernate holding the
connections) and holds them for a minute. Meanwhile a new connection logs in every few seconds
(connect, TLS, LOGIN, SELECT: timed), and a message is sent to port 25 for one idling mailbox
(Postfix's smtp-source inside the container, from its own address, as another server sends: the
inbound checks judge it); the delay runs from the start of that SMTP session to the untagged
EXISTS on each of that mailbox's idling connections. Memory is the sum of PSS of the container's
processes before the connections and while they are held; the difference divided by the
connections is the memory of one idle connection.

Hibernation keeps one inotify instance per idle connection, counted against the host's
fs.inotify.max_user_instances for vmail's uid (Linux's default is 128, which a container can't
raise): the benchmark raises it for the run when it is lower than the connections need, and
puts it back afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import Figure, Mail, Report, create_mail, median, runs_text, seconds
from benchmarks.footprint import Process, processes

MAILBOXES = 1000
PER_MAILBOX = 2
PASSWORD = "bench password"  # noqa: S105 - the benchmark mailboxes' own
# Logins in flight at once: enough to keep both cores busy with TLS, few enough not to queue
# behind Dovecot's login processes for long.
LOGINS_IN_FLIGHT = 32
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INBOUND_SENDER = "sender@example.net"
WARM_MAILBOX = "warm@example.com"
# Seconds between two timed new logins while the connections are held.
LOGIN_EVERY = 5
HIBERNATE_WAIT = 120
# Logins answered [UNAVAILABLE] (a temporary failure, which clients retry) and retried.
RETRIED: list[str] = []


def users(count: int) -> list[str]:
    return [f"user{n:04d}@example.com" for n in range(count)]


@dataclass
class Session:
    """One IMAPS connection in IDLE; `exists` holds the moments untagged EXISTS arrived."""

    user: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    exists: list[float] = field(default_factory=list)
    closed: bool = False


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the container's self-signed certificate
    return context


async def _command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tag: str,
                   command: str) -> None:
    writer.write(f"{tag} {command}\r\n".encode())
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError(f"closed during {command.split()[0]}")
        if line.startswith(f"{tag} ".encode()):
            if not line.startswith(f"{tag} OK".encode()):
                raise RuntimeError(f"{command.split()[0]}: {line.decode(errors='replace')}")
            return


async def login(port: int, user: str, context: ssl.SSLContext
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, TLS, LOGIN, SELECT INBOX."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"greeting: {greeting!r}")
        await _command(reader, writer, "a", f'LOGIN "{user}" "{PASSWORD}"')
        await _command(reader, writer, "b", "SELECT INBOX")
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer


async def idle(port: int, user: str, context: ssl.SSLContext, gate: asyncio.Semaphore
               ) -> Session:
    """A logged-in connection in IDLE; a temporary failure ([UNAVAILABLE]) is retried."""
    for attempt in range(3):
        try:
            async with gate:
                reader, writer = await login(port, user, context)
                writer.write(b"c IDLE\r\n")
                await writer.drain()
                line = await reader.readline()
                if not line.startswith(b"+"):
                    raise RuntimeError(f"IDLE: {line!r}")
            return Session(user, reader, writer)
        except RuntimeError as error:
            if "UNAVAILABLE" not in str(error) or attempt == 2:
                raise
            RETRIED.append(user)
            await asyncio.sleep(1)
    raise AssertionError("unreachable")


async def watch(session: Session) -> None:
    """Note every untagged EXISTS; a connection that ends is marked closed."""
    while True:
        line = await session.reader.readline()
        if not line:
            session.closed = True
            return
        if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS"):
            session.exists.append(time.monotonic())


def count(found: list[Process], program: str) -> int:
    return sum(1 for process in found if process.program == program)


def pss_mib(found: list[Process]) -> float:
    return sum(process.pss_kib for process in found) / 1024


def by_program(found: list[Process]) -> dict[str, float]:
    """program -> the PSS of its processes together, in MiB."""
    programs: dict[str, float] = {}
    for process in found:
        programs[process.program] = programs.get(process.program, 0) + process.pss_kib / 1024
    return programs


def growth(held: Held, top: int = 5) -> str:
    """The programs whose PSS grew most while the connections were held."""
    grown = {name: held.programs_held.get(name, 0) - held.programs_before.get(name, 0)
             for name in {*held.programs_before, *held.programs_held}}
    largest = sorted(grown.items(), key=lambda item: -item[1])[:top]
    return "; ".join(f"{name} +{mib:.1f}" for name, mib in largest)


def deliver(mail: Mail, address: str, recipient: str) -> float:
    """One message to port 25; returns the moment the SMTP session started."""
    started = time.monotonic()
    mail.exec("smtp-source", "-c", "-m", "1", "-l", "1024", "-f", INBOUND_SENDER,
              "-t", recipient, f"{address}:25")
    return started


def raise_inotify(needed: int) -> tuple[int, int]:
    """(the host's limit before, the limit during the run); raised when it is too low."""
    before = int(INOTIFY_INSTANCES.read_text())
    if before >= needed:
        return before, before
    try:
        INOTIFY_INSTANCES.write_text(str(needed))
    except OSError:
        return before, before  # not root: measured as the host is, and the figures will show it
    return before, needed


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


@dataclass
class Held:
    """What the hold phase measured."""

    logins: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)  # SMTP session start -> EXISTS, each
    missed: int = 0  # idling connections of a mailbox that got mail but no EXISTS
    dropped: int = 0
    retried: int = 0
    count: int = 0  # connections in IDLE
    failed: int = 0  # connections that never reached IDLE
    first_error: str = ""
    failed_logins: int = 0  # timed logins while held that failed
    setup: float = 0.0
    hibernated_after: float = 0.0
    imap_processes: int = 0
    hibernate_processes: int = 0
    who: int = 0
    pss_before: float = 0.0
    pss_held: float = 0.0
    # program -> PSS in MiB, before and while held: where the memory goes
    programs_before: dict[str, float] = field(default_factory=dict)
    programs_held: dict[str, float] = field(default_factory=dict)
    out_of_inotify: bool = False


async def hold_phase(mail: Mail, connections: int, mailboxes: int, hold: float) -> Held:
    held = Held()
    port = mail.ports()[993]
    context = _tls()
    names = users(mailboxes)
    gate = asyncio.Semaphore(LOGINS_IN_FLIGHT)
    # One login first: Dovecot 2.4's auth process learns the auth-worker process limit from
    # its first worker's handshake, and until then opens a worker connection per concurrent
    # lookup, so a burst into a fresh auth process overshoots the limit (the master drops the
    # excess: "service(auth-worker): process_limit (30) reached") and a few logins fail.
    await timed_login(port, names[0], context)
    found = await asyncio.to_thread(processes, mail)
    held.pss_before, held.programs_before = pss_mib(found), by_program(found)
    RETRIED.clear()
    started = time.monotonic()
    results = await asyncio.gather(*(idle(port, names[n % mailboxes], context, gate)
                                     for n in range(connections)), return_exceptions=True)
    held.setup = time.monotonic() - started
    sessions = [result for result in results if isinstance(result, Session)]
    errors = [repr(result) for result in results if not isinstance(result, Session)]
    held.failed, held.first_error = len(errors), (errors[0] if errors else "")
    held.count = len(sessions)
    held.retried = len(RETRIED)
    watchers = [asyncio.create_task(watch(session)) for session in sessions]
    try:
        await wait_for_hibernation(mail, connections, held)
        address = (await asyncio.to_thread(mail.exec, "hostname", "-i")).stdout.split()[0]
        deadline = time.monotonic() + hold
        recipients = [names[1], names[mailboxes // 2], names[-1]]
        while time.monotonic() < deadline:
            try:
                held.logins.append(await timed_login(port, names[0], context))
            except (OSError, RuntimeError):
                held.failed_logins += 1
            if recipients and time.monotonic() > deadline - hold * len(recipients) / 4:
                await delivery(mail, address, recipients.pop(0), sessions, held)
            await asyncio.sleep(LOGIN_EVERY)
        held.dropped = sum(1 for session in sessions if session.closed)
    finally:
        for task in watchers:
            task.cancel()
        for session in sessions:
            session.writer.transport.abort()
    return held


async def wait_for_hibernation(mail: Mail, connections: int, held: Held) -> None:
    """Until (almost) no imap process is left, then the memory and process figures."""
    started = time.monotonic()
    found = await asyncio.to_thread(processes, mail)
    while (count(found, "imap") > connections // 100
           and time.monotonic() - started < HIBERNATE_WAIT):
        await asyncio.sleep(2)
        found = await asyncio.to_thread(processes, mail)
    held.hibernated_after = time.monotonic() - started
    held.imap_processes = count(found, "imap")
    held.hibernate_processes = count(found, "imap-hibernate")
    held.pss_held, held.programs_held = pss_mib(found), by_program(found)
    who = await asyncio.to_thread(mail.exec, "doveadm", "who")
    # "username  # proto (pids) (ips)": the second column counts the user's connections.
    held.who = sum(int(line.split()[1]) for line in who.stdout.splitlines()[1:]
                   if len(line.split()) > 1 and line.split()[1].isdigit())


async def timed_login(port: int, user: str, context: ssl.SSLContext) -> float:
    started = time.monotonic()
    _, writer = await login(port, user, context)
    took = time.monotonic() - started
    writer.transport.abort()
    return took


async def delivery(mail: Mail, address: str, recipient: str, sessions: list[Session],
                   held: Held) -> None:
    """A message for `recipient`; waits up to a minute for EXISTS on its idling connections."""
    idling = [session for session in sessions if session.user == recipient]
    before = [len(session.exists) for session in idling]
    sent = await asyncio.to_thread(deliver, mail, address, recipient)
    deadline = time.monotonic() + 60
    while (any(len(s.exists) == n for s, n in zip(idling, before, strict=True))
           and time.monotonic() < deadline):
        await asyncio.sleep(0.01)
    for session, known in zip(idling, before, strict=True):
        if len(session.exists) > known:
            held.delays.append(session.exists[known] - sent)
        else:
            held.missed += 1


def prepare(mail: Mail, mailboxes: int) -> None:
    """The mailboxes, with one cheap hash; postscreen learns the sender's address."""
    password_hash = mail.exec("doveadm", "pw", "-s", "BLF-CRYPT", "-r", "4", "-p",
                              PASSWORD).stdout.strip()
    lines = "".join(f"{user}\t{password_hash}\n" for user in [*users(mailboxes), WARM_MAILBOX])
    mail.exec("mailboot", "account", "import", stdin=lines)
    address = mail.exec("hostname", "-i").stdout.split()[0]
    deliver(mail, address, WARM_MAILBOX)  # postscreen's cache now knows the address
    time.sleep(5)


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("IMAP at scale", __doc__ or "")
    mailboxes = arguments.imap_mailboxes
    connections = mailboxes * PER_MAILBOX
    raise_open_files(connections * 2 + 1000)
    limit_before, limit = raise_inotify(connections + 1000)
    runs: list[Held] = []
    try:
        for _ in range(max(1, arguments.runs // 3)):
            mail = create_mail({"MAIL_DOMAINS": "example.com", "TLS_MODE": "self-signed",
                                "DNS_CHECK": "off"})
            try:
                mail.start_and_wait()
                prepare(mail, mailboxes)
                held = asyncio.run(hold_phase(mail, connections, mailboxes, arguments.imap_hold))
                held.out_of_inotify = "Inotify instance limit" in mail.logs()
                runs.append(held)
            finally:
                mail.remove()
    finally:
        if limit != limit_before:
            INOTIFY_INSTANCES.write_text(str(limit_before))
    figures += held_figures(runs, connections, mailboxes, arguments.imap_hold,
                            (limit_before, limit))


def held_figures(runs: list[Held], connections: int, mailboxes: int, hold: float,
                 inotify: tuple[int, int]) -> list[Figure]:
    label = f"{connections:,} IDLE connections over {mailboxes:,} mailboxes"
    per_connection = [(held.pss_held - held.pss_before) * 1024 / max(1, held.count)
                      for held in runs]
    logins = [t for held in runs for t in held.logins]
    delays = [d for held in runs for d in held.delays]
    last = runs[-1]
    return [
        Figure(f"{label}: logged in and in IDLE", seconds(median([h.setup for h in runs])),
               "", runs_text([h.setup for h in runs]) + f", {LOGINS_IN_FLIGHT} logins at a "
               f"time; retried after [UNAVAILABLE]: {sum(h.retried for h in runs)}"),
        Figure(f"{label}: connections that never reached IDLE",
               str(sum(h.failed for h in runs)), "0", last.first_error[:200]),
        Figure(f"{label}: held for {hold:.0f} s, connections dropped",
               str(sum(h.dropped for h in runs)), "0", ""),
        Figure("while held: imap processes / imap-hibernate processes / doveadm who",
               f"{last.imap_processes} / {last.hibernate_processes} / {last.who}", "",
               f"hibernated {last.hibernated_after:.0f} s after the last IDLE; host "
               f"fs.inotify.max_user_instances {inotify[1]} (was {inotify[0]})"
               + ("; Dovecot ran out of inotify instances" if last.out_of_inotify else "")),
        Figure("while held: a new login (connect, TLS, LOGIN, SELECT), median",
               seconds(median(logins)) if logins else "-", "≤ 1 s",
               f"{len(logins)} logins, slowest {max(logins, default=0):.3f} s; failed: "
               f"{sum(h.failed_logins for h in runs)}"),
        Figure("while held: mail on port 25 → EXISTS on the mailbox's idling connections",
               seconds(median(delays)) if delays else "-", "≤ 5 s",
               runs_text(delays) if delays else "none"),
        Figure("while held: idling connections of those mailboxes that saw no EXISTS",
               str(sum(h.missed for h in runs)), "0", ""),
        Figure("container memory before the connections (sum of PSS)",
               f"{median([h.pss_before for h in runs]):.0f} MiB", "",
               ", ".join(f"{h.pss_before:.0f}" for h in runs) + " MiB"),
        Figure("container memory with them held (sum of PSS)",
               f"{median([h.pss_held for h in runs]):.0f} MiB", "",
               ", ".join(f"{h.pss_held:.0f}" for h in runs) + " MiB"),
        Figure("memory per idle connection (PSS)", f"{median(per_connection):.0f} KiB", "",
               ", ".join(f"{v:.0f}" for v in per_connection) + " KiB; grown most, MiB: "
               + growth(last)),
    ]
