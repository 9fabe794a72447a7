"""What port 25 decides about a sender beyond postscreen and the milters, and what it notices.

Postfix asks this for every recipient of every message arriving on port 25 (the policy
delegation protocol, `policy.delegation`), after postscreen let the client in and before the message
is accepted. It decides one thing and notices two:

- SPF `-all` with no DMARC: when the sender's domain says "only these addresses send my mail"
  (SPF fail, RFC 7208 §2.6.4) and has no DMARC policy (none published, several records, or one
  without a valid p=: `standards.dmarc` decides, as for the self-test and the DNS doctor), the
  mail is refused at RCPT (RFC 7208 §8.4). With a DMARC policy, DMARC decides instead
  (OpenDMARC, at end of data): a forwarded message fails SPF but can still pass by its DKIM
  signature.
- A blocklist that refuses our resolver (it answers 127.255.255.x, "query refused", as
  Spamhaus does for queries through public resolvers): postscreen's filters never count that
  as a listing, so the list silently protects nothing. Said once an hour per list.
- Docker's userland proxy: when every session comes from the container's own gateway, the
  senders' addresses are hidden and SPF and the blocklists judge the gateway. Said once.

Every other case answers DUNNO (no opinion): a failed lookup never refuses mail.

The policy process (`policy.service`) starts on demand and ends when idle, so what must be said
once across its lives (the proxy, a refusing blocklist within the hour) is remembered in
`FileNotes`, small files in the run directory; tests use `MemoryNotes`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mailboot.base.files import write_atomically
from mailboot.dns.answer import Lookup
from mailboot.standards import dmarc
from mailboot.standards.publicsuffix import SuffixRules
from mailboot.standards.spf import check_sender

log = logging.getLogger(__name__)

DUNNO = "DUNNO"
# Sessions from the gateway before we say Docker's proxy hides the senders.
PROXY_SESSIONS = 3
# Seconds between two warnings about the same refusing blocklist, and between two DNSBL
# probes for one client address.
REFUSAL_REPEAT = 3600.0
PROBE_REPEAT = 600.0
MAX_REMEMBERED = 4096
# Answers that mean "we won't answer you", not a listing: Spamhaus's 127.255.255.252-255
# ("public resolver", "typo", "limit"), DNSWL's 127.0.0.255 ("limit exceeded").
REFUSED = (ipaddress.ip_network("127.255.255.0/24"), ipaddress.ip_network("127.0.0.255/32"))


@dataclass(frozen=True)
class Blocklist:
    query_zone: str  # where to ask (with a DQS key, if any)
    shown_as: str  # its public name, for the log


class Notes(Protocol):
    """What the policy processes remember together: sessions from the gateway, and when each
    thing was last said."""

    def add_gateway_session(self, session: str) -> int:
        """Remember one session from the gateway; return how many distinct ones so far."""
        ...

    def first_to_say(self, what: str) -> bool:
        """True exactly once per `what`, across every process."""
        ...

    def said_at(self, what: str) -> float | None:
        """When `what` was last said (`clock` seconds), or None."""
        ...

    def say(self, what: str, now: float) -> None: ...


@dataclass
class MemoryNotes:
    """Notes in this process only (tests, and one process that holds them all)."""

    sessions: set[str] = field(default_factory=set)
    said: dict[str, float] = field(default_factory=dict)
    once: set[str] = field(default_factory=set)

    def add_gateway_session(self, session: str) -> int:
        self.sessions.add(session)
        return len(self.sessions)

    def first_to_say(self, what: str) -> bool:
        first = what not in self.once
        self.once.add(what)
        return first

    def said_at(self, what: str) -> float | None:
        return self.said.get(what)

    def say(self, what: str, now: float) -> None:
        self.said[what] = now


class FileNotes:
    """Notes as files in `directory`, shared by every policy process (each one is started by
    Postfix for one smtpd). Where a note can't be read or written (a run directory this user
    can't write), the log says so once per process, with the cause, and this process keeps its
    notes in memory: a line may then be said again by another process, never lost, and mail is
    never held up."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fallback = MemoryNotes()
        self._failed = False

    def add_gateway_session(self, session: str) -> int:
        path = self.directory / "gateway-sessions"
        try:
            # O_APPEND: lines from several processes never interleave (each is one write).
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, _safe(session).encode() + b"\n")
            finally:
                os.close(descriptor)
            return len(set(path.read_text().splitlines()))
        except OSError as error:
            self._forgotten(path, error)
            return self._fallback.add_gateway_session(session)

    def first_to_say(self, what: str) -> bool:
        path = self.directory / f"said-{_safe(what)}"
        try:  # O_EXCL: exactly one process creates it
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False  # another process said it
        except OSError as error:
            self._forgotten(path, error)
            return self._fallback.first_to_say(what)
        return True

    def said(self, what: str) -> bool:
        """Whether a process of this run said `what` (`first_to_say`): the login bans ask
        whether port 25 noticed Docker's proxy."""
        return (self.directory / f"said-{_safe(what)}").exists()

    def said_at(self, what: str) -> float | None:
        path = self.directory / f"said-at-{_safe(what)}"
        try:
            return float(path.read_text())
        except FileNotFoundError:
            return self._fallback.said_at(what)  # never said (or only in this process)
        except ValueError:
            return None  # not a time: as if never said (it is written whole, so not ours)
        except OSError as error:
            self._forgotten(path, error)
            return self._fallback.said_at(what)

    def say(self, what: str, now: float) -> None:
        path = self.directory / f"said-at-{_safe(what)}"
        try:
            write_atomically(path, repr(now).encode(), mode=0o600)
        except OSError as error:
            self._forgotten(path, error)
            self._fallback.say(what, now)

    def _forgotten(self, path: Path, error: OSError) -> None:
        if self._failed:
            return
        self._failed = True
        log.warning("inbound: can't keep the policy service's notes in %s (%s: %s); this "
                    "process remembers them alone, so a warning about Docker's proxy or a "
                    "refusing blocklist may come later or more than once. The run directory "
                    "must be writable by the policy service's user", self.directory,
                    path.name, error.strerror or error)


def _safe(text: str) -> str:
    """A file name part from a blocklist's name or a session id (no / or .. can reach it)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:100]


@dataclass
class InboundChecks:
    """The checks behind the port-25 policy service's answers. One per policy process;
    `decide` may be called from several threads at once."""

    lookup: Lookup  # recursive, through the container's resolver
    suffixes: SuffixRules
    blocklists: Sequence[Blocklist] = ()
    gateway: str | None = None  # the container's default gateway (Docker's proxy speaks as it)
    # Wall-clock seconds: the notes are shared by processes, and compared across them.
    clock: Callable[[], float] = time.time
    notes: Notes = field(default_factory=MemoryNotes)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._proxy_warned = False
        self._probed: dict[str, float] = {}
        self._verdicts: dict[tuple[str, str, str, str], str] = {}

    def decide(self, request: Mapping[str, str]) -> str:
        """The action for one policy request (Postfix's attributes); DUNNO when unsure."""
        client = request.get("client_address", "")
        if request.get("sasl_username") or not _is_remote(client):
            return DUNNO
        self._notice_proxy(client, request.get("instance", ""))
        self._notice_refusing_blocklists(client)
        return self._spf_without_dmarc(request.get("instance", ""), client,
                                       request.get("sender", ""), request.get("helo_name", ""))

    # --- SPF fail and no DMARC ---------------------------------------------------------------

    def _spf_without_dmarc(self, message: str, client: str, sender: str, helo: str) -> str:
        """One verdict per message (Postfix's `instance`), not per recipient; the next message
        is judged afresh, so a sender who fixes SPF or adds DMARC is heard at once."""
        if not sender:
            return DUNNO  # bounces: DMARC judges their From: at end of data
        key = (message, client, sender.lower(), helo.lower())
        with self._lock:
            known = self._verdicts.get(key)
        if known is not None:
            return known
        verdict = self._judge_spf(client, sender, helo)
        with self._lock:
            if len(self._verdicts) >= MAX_REMEMBERED:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    def _judge_spf(self, client: str, sender: str, helo: str) -> str:
        if check_sender(client, sender, helo, self.lookup).result != "fail":
            return DUNNO
        domain = sender.rpartition("@")[2].lower()
        found = dmarc.discover(domain, self.lookup, self.suffixes)
        if found.has_policy or found.outcome is dmarc.Outcome.TEMPERROR:
            return DUNNO  # a policy (DMARC decides), or unknown (never refuse on a failure)
        # No policy: no DMARC record, several, or one without a valid p= (RFC 7489 §6.6.3).
        # Postfix logs the refusal (NOQUEUE: reject ... client, sender, this text): one line.
        return (f"550 5.7.23 SPF: {domain} does not allow {client} to send its mail, and it "
                f"publishes no DMARC policy{_why_none(found)} (RFC 7208 section 8.4)")

    # --- what we notice -----------------------------------------------------------------------

    def _notice_proxy(self, client: str, session: str) -> None:
        if client != self.gateway or self._proxy_warned:
            return
        with self._lock:
            if self.notes.add_gateway_session(session) < PROXY_SESSIONS:
                return
            self._proxy_warned = True
            if not self.notes.first_to_say("proxy"):
                return  # another process said it
        log.error(
            "inbound: every session on port 25 comes from %s, this container's gateway: Docker's "
            "userland proxy hides the senders' addresses, so SPF, DMARC and the blocklists judge "
            "the gateway instead of the sender. Fix: publish port 25 without the proxy (set "
            "\"userland-proxy\": false in /etc/docker/daemon.json and restart Docker, or run the "
            "container with --network host)", client)

    def _notice_refusing_blocklists(self, client: str) -> None:
        if not self.blocklists:
            return
        now = self.clock()
        with self._lock:
            last = self._probed.get(client)
            if last is not None and now - last < PROBE_REPEAT:
                return
            if len(self._probed) >= MAX_REMEMBERED:
                self._probed.clear()
            self._probed[client] = now
        reversed_name = reverse_name(client)
        for blocklist in self.blocklists:
            answer = self.lookup(f"{reversed_name}.{blocklist.query_zone}", "A")
            refusals = [value for value in answer.values if _is_refusal(value)]
            if refusals:
                self._warn_refusal(blocklist, refusals[0], client, now)

    def _warn_refusal(self, blocklist: Blocklist, code: str, client: str, now: float) -> None:
        what = f"refusal-{blocklist.shown_as}"
        with self._lock:
            last = self.notes.said_at(what)
            if last is not None and 0 <= now - last < REFUSAL_REPEAT:
                return
            self.notes.say(what, now)
        log.warning(
            "inbound: this blocklist refuses our resolver: %s answered %s (\"query refused\") "
            "for %s, so its answers never count and it protects nothing. Blocklists refuse "
            "queries that come through large public resolvers: unset DNS_FORWARDERS so the "
            "container resolves by itself, or (Spamhaus) set SPAMHAUS_DQS_KEY",
            blocklist.shown_as, code, client)


def _why_none(found: dmarc.DmarcDiscovery) -> str:
    """For the refusal: why what the sender's admin may see in DNS is no policy (short, for
    the SMTP reply)."""
    if found.outcome is dmarc.Outcome.PERMERROR:
        return f"; the DMARC record at {found.name} has no valid p="
    if found.records > 1:
        return f"; {found.name} has {found.records} DMARC records, which count as none"
    return ""


def reverse_name(address: str) -> str:
    """The DNSBL query name of an address (RFC 5782 §2.1 IPv4, §2.4 IPv6 nibbles)."""
    parsed = ipaddress.ip_address(address)
    return parsed.reverse_pointer.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")


def _is_refusal(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in network for network in REFUSED)


def _is_remote(client: str) -> bool:
    try:
        return not ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False  # "unknown" (Postfix's word for no address)


def default_gateway(route_table: str) -> str | None:
    """The IPv4 default gateway from /proc/net/route (hex, host byte order: little-endian)."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            return str(ipaddress.IPv4Address(bytes.fromhex(fields[2])[::-1]))
    return None
