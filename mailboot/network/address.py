"""The public address, found rather than asked for.

When PUBLIC_IPV4 or PUBLIC_IPV6 is unset, the boot asks a DNS name whose authoritative server
answers with the asker's own address (PUBLIC_ADDRESS_DISCOVERY; Google's
o-o.myaddr.l.google.com TXT at ns1.google.com by default), directly over IPv4 and over IPv6: a
recursive resolver would answer with the resolver's address, not ours. What it finds fills the
A/AAAA and PTR lines on the first start. It is kept in DATA_DIR, so the worker and `mailboot dns`
see the same addresses (`effective_settings`), and a later boot whose discovery fails reuses it
(and says so). A configured address always wins; the worker checks it against what the internet
sees and warns when they differ.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver

from mailboot.base.files import write_atomically
from mailboot.base.formats import human_time, machine_time
from mailboot.base.paths import Paths
from mailboot.base.taskstate import JsonObject, Saved, StateUnreadable, read_object
from mailboot.dns.lookup import answer_values
from mailboot.network.found import (
    FAMILIES,
    address_in,
    configured,
    effective_settings,
    read_found,
)
from mailboot.settings.table import Settings
from mailboot.settings.values import EchoServer, IPAddress

log = logging.getLogger("mailboot.address")

# Seconds the boot spends at most: both families are asked at once, and the boot is timed.
BOOT_BUDGET = 2.0
RECHECK = timedelta(days=1)
_RTYPE = {4: "A", 6: "AAAA"}
_SETTING = {4: "PUBLIC_IPV4", 6: "PUBLIC_IPV6"}


class NoAnswerError(Exception):
    """The server answered, but with an error code instead of an answer."""


# (name, type, server address, port, timeout) -> the answer's values (TXT strings joined, or
# addresses); raises dns.exception.DNSException, OSError or NoAnswerError.
Ask = Callable[[str, str, str, int, float], Sequence[str]]
# (server name, "A" or "AAAA", timeout) -> its addresses; raises like Ask.
ServerAddresses = Callable[[str, str, float], Sequence[str]]


@dataclass(frozen=True)
class Found:
    """What discovery learnt for one address family: the address and how, or why not."""

    family: int
    address: IPAddress | None
    how: str  # "asked ns1.google.com (216.239.32.10) over IPv4 for ... TXT" or why none


Discover = Callable[[Sequence[int]], tuple[Found, ...]]


def discover(source: EchoServer, families: Sequence[int], ask: Ask,
             server_addresses: ServerAddresses, budget: float = BOOT_BUDGET,
             clock: Callable[[], float] = time.monotonic) -> tuple[Found, ...]:
    """Ask `source` over each family at once; never longer than `budget` seconds.

    A network or DNS failure is a Found without an address that says why; anything else a
    family's discovery raised is a bug, raised here with its traceback."""
    deadline = clock() + budget
    pool = ThreadPoolExecutor(max_workers=max(1, len(families)),
                              thread_name_prefix="address-discovery")
    futures = {family: pool.submit(_discover_family, source, family, ask, server_addresses,
                                   deadline, clock) for family in families}
    wait_for(futures.values(), timeout=max(0.0, deadline - clock()) + 0.1)
    pool.shutdown(wait=False, cancel_futures=True)
    found = []
    for family, future in futures.items():
        if not future.done():
            found.append(Found(family, None, f"no answer within {budget:g} s"))
        else:
            found.append(future.result())  # raises what the family's discovery raised
    return tuple(found)


def _discover_family(source: EchoServer, family: int, ask: Ask,
                     server_addresses: ServerAddresses, deadline: float,
                     clock: Callable[[], float]) -> Found:
    server = _server_address(source, family, server_addresses, deadline - clock())
    if isinstance(server, Found):
        return server
    at = source.server if source.server == server else f"{source.server} ({server})"
    for rtype in ("TXT", _RTYPE[family]):  # Google answers TXT; OpenDNS's myip answers A/AAAA
        remaining = deadline - clock()
        if remaining <= 0:
            return Found(family, None, f"{at} gave no answer in time")
        try:
            values = ask(source.name, rtype, server, source.port, remaining)
        except (dns.exception.DNSException, OSError, NoAnswerError) as error:
            return Found(family, None, f"asking {at} over IPv{family} failed: {_reason(error)}")
        for value in values:
            address = address_in(value, family)
            if address is not None:
                return Found(family, address, f"asked {at} over IPv{family} for {source.name} "
                             f"{rtype}, which answers with the asker's address")
    return Found(family, None, f"{at} answered {source.name} with no IPv{family} address")


def _server_address(source: EchoServer, family: int, server_addresses: ServerAddresses,
                    remaining: float) -> str | Found:
    try:
        literal = ipaddress.ip_address(source.server)
    except ValueError:
        pass
    else:
        if literal.version == family:
            return str(literal)
        return Found(family, None, f"the server {source.server} has no IPv{family} address")
    try:
        addresses = server_addresses(source.server, _RTYPE[family], max(remaining, 0.01))
    except (dns.exception.DNSException, OSError, NoAnswerError) as error:
        return Found(family, None, f"can't look up {source.server} {_RTYPE[family]}: "
                     f"{_reason(error)}")
    if not addresses:
        return Found(family, None, f"{source.server} has no IPv{family} address")
    return addresses[0]


def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


# --- production DNS ------------------------------------------------------------------------------


def ask_directly(name: str, rtype: str, server: str, port: int,
                 timeout: float) -> tuple[str, ...]:
    """One question to one server, without recursion (it is the authority for `name`)."""
    query = dns.message.make_query(name, rtype)
    query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, server, port=port, timeout=timeout)
    if response.rcode() != dns.rcode.NOERROR:
        rcode = dns.rcode.to_text(response.rcode())
        raise NoAnswerError(f"the server answered {rcode}")
    return answer_values(response, rtype)


def resolver_addresses(resolver: dns.resolver.Resolver) -> ServerAddresses:
    """The echo server's addresses, through `resolver` (Docker's at boot, Unbound later)."""

    def addresses(name: str, rtype: str, timeout: float) -> list[str]:
        try:
            answer = resolver.resolve(name, rtype, lifetime=timeout)
        except dns.resolver.NoAnswer:
            return []
        return [rdata.address for rdata in answer]

    return addresses


def make_discover(source: EchoServer, resolver: dns.resolver.Resolver,
                  budget: float = BOOT_BUDGET) -> Discover:
    server_addresses = resolver_addresses(resolver)
    return lambda families: discover(source, families, ask_directly, server_addresses, budget)


# --- the boot: find, keep, and use --------------------------------------------------------------


def settle(settings: Settings, paths: Paths, find: Discover | None,
           now: datetime) -> Settings:
    """Find the unset addresses, keep them in DATA_DIR, and return the effective settings.

    Without `find` (no network) only what an earlier boot kept is used. Never fails the boot:
    an address that can't be found is reused from the last boot, or left as a placeholder, and
    the log says why.
    """
    if settings.address_discovery == "off":
        if not settings.public_addresses:
            log.info("address: PUBLIC_ADDRESS_DISCOVERY=off and no PUBLIC_IPV4/PUBLIC_IPV6: the "
                     "address and PTR records are placeholders")
        return settings
    missing = [family for family in FAMILIES if configured(settings, family) is None]
    if not missing:
        return settings
    if find is None:
        return effective_settings(settings, paths)
    previous = read_found(paths)
    try:
        found = find(missing)
    except Exception as error:
        # Network and DNS failures come back as Found; this is a bug. The boot goes on (the
        # records then have placeholders, and mail runs), but the traceback is told.
        log.error("address: the discovery of the public address failed: %s: %s; this is a "
                  "bug, please report it with the lines below; set PUBLIC_IPV4 (and "
                  "PUBLIC_IPV6) meanwhile", type(error).__name__, error, exc_info=True)
        found = tuple(Found(family, None, f"discovery failed ({type(error).__name__})")
                      for family in missing)
    answered = {f.family for f in found}
    found = (*found, *(Found(family, None, "no answer") for family in missing
                       if family not in answered))
    kept = {f"ipv{f.family}": entry for f in found
            if (entry := _keep(f, previous, now)) is not None}
    _say_unfound(settings, [f for f in found if f"ipv{f.family}" not in kept],
                 known=bool(kept) or bool(settings.public_addresses))
    if not kept and not previous and not paths.found_addresses.exists():
        return settings  # nothing found, nothing to keep: no file
    try:
        write_atomically(paths.found_addresses, (json.dumps(kept, indent=1) + "\n").encode())
    except OSError as error:
        log.warning("address: can't keep the found addresses in %s: %s", paths.found_addresses,
                    error.strerror)
        return _with_kept(settings, kept)
    return effective_settings(settings, paths)


def _keep(found: Found, previous: dict[int, dict[str, str]],
          now: datetime) -> dict[str, str] | None:
    """Log what was found (or reused) for one family, and return what to keep for it."""
    family, setting = found.family, _SETTING[found.family]
    if found.address is not None:
        log.info("address: found the public IPv%d address %s (%s); %s overrides it", family,
                 found.address, found.how, setting)
        if not found.address.is_global:
            log.warning("address: %s is not a public address, so other mail servers can't "
                        "reach it; that is fine for a test setup, otherwise set %s",
                        found.address, setting)
        last = previous.get(family)
        if last is not None and last["address"] == str(found.address):
            return last  # unchanged: the volume is not written (a restart writes nothing)
        return {"address": str(found.address), "how": found.how,
                "found": machine_time(now)}
    last = previous.get(family)
    if last is not None:
        log.warning("address: can't find the public IPv%d address now (%s); using %s, found on "
                    "%s; set %s to be sure", family, found.how, last["address"], _found_on(last),
                    setting)
        return last
    return None


def _found_on(entry: dict[str, str]) -> str:
    """When a kept address was found, for the log (earlier versions wrote `+00:00`)."""
    try:
        return human_time(datetime.fromisoformat(entry["found"]))
    except (KeyError, ValueError):
        return "an earlier start"


def _say_unfound(settings: Settings, unfound: Sequence[Found], *, known: bool) -> None:
    """One line for the families without an address: a warning when no address is known at
    all (the records are placeholders), else a note (many servers have no IPv6)."""
    if not unfound:
        return
    source = settings.address_discovery
    reasons = "; ".join(f"IPv{f.family}: {f.how}" for f in unfound)
    if not known:
        log.warning("address: no public address found by asking %s (%s); the address and PTR "
                    "records are placeholders: set PUBLIC_IPV4 (and PUBLIC_IPV6)", source,
                    reasons)
        return
    for found in unfound:
        log.info("address: no public IPv%d address found by asking %s (%s); no %s record is "
                 "printed for it: set %s if the server has one", found.family, source, found.how,
                 _RTYPE[found.family], _SETTING[found.family])


def _with_kept(settings: Settings, kept: dict[str, dict[str, str]]) -> Settings:
    values: dict[str, Any] = {}
    for family, field in ((4, "public_ipv4"), (6, "public_ipv6")):
        if configured(settings, family) is None and f"ipv{family}" in kept:
            values[field] = ipaddress.ip_address(kept[f"ipv{family}"]["address"])
    return dataclasses.replace(settings, **values) if values else settings


# --- the worker: is the address still the one the internet sees? --------------------------------


class AddressCheck:
    """The worker task: at start and daily, compare what the internet sees with the addresses
    in use (configured, or found by the boot); warn when they differ, once per difference."""

    def __init__(self, configured_settings: Settings, in_use: Settings, find: Discover) -> None:
        self.configured, self.in_use, self.find = configured_settings, in_use, find
        self.said: dict[int, str] = {}
        self.due: datetime | None = None

    def state(self) -> JsonObject:
        return {"said": {str(family): text for family, text in self.said.items()}}

    def restore(self, saved: Saved) -> None:
        """Raises StateUnreadable."""
        try:
            self.said = {int(family): str(text) for family, text in read_object(
                saved.get("said", {})).items()}
        except ValueError as error:
            raise StateUnreadable(str(error)) from None

    def step(self, now: datetime) -> datetime:
        if self.due is not None and now < self.due:
            return self.due  # stepped early (a nudge for another task): nothing new here
        for found in self.find(FAMILIES):
            message = self._difference(found)
            if message is not None and message != self.said.get(found.family):
                log.warning("address: %s", message)
            if message is not None:
                self.said[found.family] = message
            else:
                self.said.pop(found.family, None)
        self.due = now + RECHECK
        return self.due

    def _difference(self, found: Found) -> str | None:
        if found.address is None:
            return None  # nothing learnt: the boot said why, if it mattered
        family, setting = found.family, _SETTING[found.family]
        if configured(self.configured, family) is not None:
            given = configured(self.configured, family)
            if given == found.address:
                return None
            return (f"{setting} is {given}, but the internet sees this server as "
                    f"{found.address} ({found.how}); the records and checks use {given}: "
                    f"check {setting}")
        in_use = configured(self.in_use, family)
        if in_use == found.address:
            return None
        if in_use is None:
            return (f"found the public IPv{family} address {found.address} now ({found.how}); "
                    f"restart to print the records with it, or set {setting}")
        return (f"the public IPv{family} address changed from {in_use} to {found.address} "
                f"({found.how}); restart to print the records for it, or set {setting}")
