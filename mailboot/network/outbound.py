"""Can this host open TCP port 25 to the outside? Many providers block it, and then every
outbound message queues and never leaves, silently.

The check connects to the MX hosts of a well-known domain (OUTBOUND_CHECK), or to the relay when
RELAY_HOST is set (port 25 is then not needed). The worker runs it at start and daily, logs only
what changed, and keeps the last result in a small JSON file for `mailboot status`.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from mailboot.base.files import read_json_object, write_atomically
from mailboot.base.formats import machine_time
from mailboot.base.taskstate import JsonObject, Saved, StateUnreadable, read_text
from mailboot.dns.answer import Lookup
from mailboot.settings.values import OutboundTarget

log = logging.getLogger("mailboot.outbound")

# Seconds per connection attempt: a blocked port drops the SYN, so only a timeout tells; the
# worker runs its tasks one after another, so the check must not hold the others up for long.
CONNECT_TIMEOUT = 5.0
# MX hosts tried at most: one answering is enough, and each silent one costs CONNECT_TIMEOUT.
MAX_HOSTS = 2
RECHECK = timedelta(days=1)
RELAY_HINT = ("send through a relay (smarthost): set RELAY_HOST, with RELAY_USER, "
              "RELAY_PASSWORD_FILE and RELAY_SPF_INCLUDE as your provider documents them; or "
              "ask your hosting provider to open outbound port 25")

# (host, port, timeout): returns once connected; raises OSError (TimeoutError when dropped).
Connect = Callable[[str, int, float], None]


class PortStatus(StrEnum):
    OK = "ok"
    BLOCKED = "blocked"  # no answer at all: a firewall drops the connection
    REFUSED = "refused"  # something on the way (or the host) said no
    UNREACHABLE = "unreachable"  # no route to the host
    DNS_FAILED = "dns-failed"  # nothing to connect to: the check could not be made


@dataclass(frozen=True)
class PortResult:
    status: PortStatus
    target: str  # what was tried, in words: "gmail-smtp-in.l.google.com (192.0.2.7) port 25"
    detail: str  # what happened, in plain words

    @property
    def open(self) -> bool:
        return self.status is PortStatus.OK

    @property
    def closed(self) -> bool:
        """Connections fail: the port is closed somewhere on the way (not merely unchecked)."""
        return self.status not in (PortStatus.OK, PortStatus.DNS_FAILED)


def connect_tcp(host: str, port: int, timeout: float) -> None:
    """Open and close one TCP connection (the production Connect)."""
    with socket.create_connection((host, port), timeout=timeout):
        pass


def check_outbound(target: OutboundTarget, lookup: Lookup, connect: Connect,
                   timeout: float = CONNECT_TIMEOUT) -> PortResult:
    """Try to open a TCP connection to `target`; the result says whether and why not.

    For a domain, its MX hosts are tried in order of preference (RFC 5321 §5.1), at most
    MAX_HOSTS of them; the first that accepts makes the result OK.
    """
    if target.by_mx:
        hosts = _mx_hosts(target.host, lookup)
        if isinstance(hosts, PortResult):
            return hosts
    else:
        hosts = [target.host]
    failures: list[PortResult] = []
    for host in hosts[:MAX_HOSTS]:
        address = _address_of(host, lookup)
        if isinstance(address, PortResult):
            failures.append(address)
            continue
        result = _try(host, address, target.port, connect, timeout)
        if result.open:
            return result
        failures.append(result)
    return _worst(failures)


def _mx_hosts(domain: str, lookup: Lookup) -> list[str] | PortResult:
    answer = lookup(domain, "MX")
    what = f"the MX hosts of {domain}"
    if answer.error is not None:
        return PortResult(PortStatus.DNS_FAILED, what, f"the MX lookup failed: {answer.error}")
    preferred: list[tuple[int, str]] = []
    for value in answer.values:
        preference, _, host = value.partition(" ")
        if preference.isdigit() and host.strip(". "):  # RFC 7505: "0 ." is a null MX
            preferred.append((int(preference), host.strip().rstrip(".")))
    if not preferred:
        return PortResult(PortStatus.DNS_FAILED, what, f"{domain} has no MX host to try; set "
                          "OUTBOUND_CHECK to a domain that receives mail")
    return [host for _, host in sorted(preferred)]


def _address_of(host: str, lookup: Lookup) -> str | PortResult:
    """An IP literal as it is, else the host's first IPv4 address, else its first IPv6."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        pass
    else:
        return host
    errors = []
    for rtype in ("A", "AAAA"):
        answer = lookup(host, rtype)
        if answer.values:
            return answer.values[0]
        if answer.error is not None:
            errors.append(answer.error)
    detail = errors[0] if errors else "it has no address (A or AAAA)"
    return PortResult(PortStatus.DNS_FAILED, host, f"can't look up {host}: {detail}")


def _try(host: str, address: str, port: int, connect: Connect, timeout: float) -> PortResult:
    target = f"{host} port {port}" if host == address else f"{host} ({address}) port {port}"
    try:
        connect(address, port, timeout)
    except TimeoutError:
        return PortResult(PortStatus.BLOCKED, target, f"no answer within {timeout:g} s: the "
                          "connection is dropped on the way")
    except ConnectionRefusedError:
        return PortResult(PortStatus.REFUSED, target, "the connection was refused")
    except OSError as error:
        if error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return PortResult(PortStatus.UNREACHABLE, target,
                              f"no route: {error.strerror or error}")
        return PortResult(PortStatus.BLOCKED, target, f"the connection failed: "
                          f"{error.strerror or error}")
    return PortResult(PortStatus.OK, target, "connected")


def _worst(failures: list[PortResult]) -> PortResult:
    """One result for several failed hosts: a closed port outweighs a failed lookup."""
    closed = [result for result in failures if result.closed]
    chosen = (closed or failures)[0]
    if len(failures) > 1:
        others = "; ".join(f"{r.target}: {r.detail}" for r in failures if r is not chosen)
        return PortResult(chosen.status, chosen.target, f"{chosen.detail} (also {others})")
    return chosen


class OutboundPortCheck:
    """The worker task: check at start and daily, log changes, keep the last result on disk.

    Real state (the last status, the next due time), so a class. With a relay, the relay is
    what must be reachable; port 25 outward is then not needed and never an alarm.
    """

    def __init__(self, check: Callable[[], PortResult], relay: str | None,
                 state_file: Path) -> None:
        self.check, self.relay, self.state_file = check, relay, state_file
        self.last: PortStatus | None = None
        self.due: datetime | None = None

    def state(self) -> JsonObject:
        return {"last": None if self.last is None else self.last.value}

    def restore(self, saved: Saved) -> None:
        """Raises StateUnreadable."""
        last = read_text(saved.get("last"))
        try:
            self.last = None if last is None else PortStatus(last)
        except ValueError as error:
            raise StateUnreadable(str(error)) from None

    def step(self, now: datetime) -> datetime:
        if self.due is not None and now < self.due:
            return self.due  # stepped early (a nudge for another task): nothing new here
        result = self.check()
        if result.status is not self.last:
            self._log(result)
        self.last = result.status
        self._save(result, now)
        self.due = now + RECHECK
        return self.due

    def _log(self, result: PortResult) -> None:
        where = f"{result.target}: {result.detail}"
        if self.relay is not None:
            if result.open:
                log.info("outbound: the relay %s answers (%s); port 25 outward is not needed "
                         "with RELAY_HOST", self.relay, result.target)
            elif result.closed:
                log.warning("outbound: the relay %s can't be reached (%s): outbound mail will "
                            "queue until it can; check RELAY_HOST and the firewall", self.relay,
                            where)
            else:
                log.warning("outbound: can't check the relay %s: %s", self.relay, where)
        elif result.open:
            log.info("outbound: port 25 to other mail servers is open (connected to %s)",
                     result.target)
        elif result.closed:
            log.warning("outbound: port 25 to other mail servers is blocked here (%s): outbound "
                        "mail will queue and not leave. To fix it, %s", where, RELAY_HINT)
        else:
            log.warning("outbound: can't check whether port 25 is open: %s", where)

    def _save(self, result: PortResult, now: datetime) -> None:
        state = {**asdict(result), "status": result.status.value, "via_relay": self.relay,
                 "checked": machine_time(now)}
        try:
            write_atomically(self.state_file, (json.dumps(state, indent=1) + "\n").encode())
        except OSError as error:  # only `mailboot status` misses it
            log.warning("outbound: can't write %s: %s", self.state_file, error.strerror)


def read_state(state_file: Path) -> dict[str, object] | None:
    """The last result the worker kept (for `mailboot status`), or None before the first."""
    return read_json_object(state_file)


def outbound_task(target: OutboundTarget, relay_host: tuple[str, int] | None,
                  lookup: Lookup, state_file: Path,
                  connect: Connect = connect_tcp) -> OutboundPortCheck:
    """The task for the settings: the relay when RELAY_HOST is set, else `target`."""
    relay = None
    if relay_host is not None:
        host, port = relay_host
        target = OutboundTarget(host, port)
        relay = str(target)
    return OutboundPortCheck(lambda: check_outbound(target, lookup, connect), relay, state_file)
