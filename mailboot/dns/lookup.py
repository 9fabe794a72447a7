"""Lookups for the DNS doctor that see changes as soon as they are published.

By default each question goes to the name servers of the zone that holds the name, found
through the system resolver, without recursion: their answers are fresh, and asking them primes
no cache with a negative answer that would then hide the record for the SOA's negative TTL
(RFC 2308). A zone's servers are remembered for the TTL of its NS records (within a floor and a
ceiling), so a domain moved to another DNS provider is asked at the new one. With DNS_RESOLVERS,
those servers are asked instead.

A failure becomes an `Answer` whose error says in plain words what failed and what to check;
failures that don't depend on the name asked (no DNS server reachable) have the same text for
every name, so the doctor can tell that every lookup failed for one reason and say it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from mailboot.dns.answer import Answer

log = logging.getLogger(__name__)

Server = tuple[str, int]

# Seconds a zone's name servers are remembered: the NS (and address) TTL, but at least a minute
# (a zone with a tiny TTL is not asked for its servers before every record) and at most a day.
NS_TTL_FLOOR = 60
NS_TTL_CEILING = 86400

_REACH_ADVICE = ("can this container reach a DNS server at all? check /etc/resolv.conf of the "
                 "container, the host's firewall, or set DNS_RESOLVERS")


@dataclass(frozen=True)
class ServerSource:
    """Who the servers a DnsLookup is given are, in the words of its failures: a message must
    name the resolver that failed, not a setting that may be unset."""

    name: str  # "the DNS servers in DNS_RESOLVERS"
    failed: str  # what to do when they answered with an error code
    silent: str  # what to do when none answered


CONFIGURED = ServerSource(
    "the DNS servers in DNS_RESOLVERS",
    failed="they must answer for these names (a recursive resolver, or the zones' own name "
    "servers)",
    silent="can this container reach them? check the host's firewall, or unset DNS_RESOLVERS to "
    "use the container's own resolver")
# The container's own resolver (Unbound): recursive, validating, and what blocklists accept;
# /etc/resolv.conf names it once the daemons run (daemons/unbound.py).
LOCAL_RESOLVER: Server = ("127.0.0.1", 53)
OWN_RESOLVER = ServerSource(
    "the container's own resolver (Unbound, which /etc/resolv.conf names)",
    failed="it asks the internet's DNS servers itself, on port 53: where the host's network "
    "blocks that, set DNS_FORWARDERS; or the domain's DNS is broken (an answer that fails "
    "DNSSEC validation is a SERVFAIL)",
    silent="is it running? the supervisor starts it with the mail daemons, and its lines in the "
    "log say what went wrong")


@dataclass(frozen=True)
class _ZoneServers:
    zone: str
    names: tuple[str, ...]  # the NS host names, for messages
    servers: tuple[Server, ...]
    expires: float  # on the lookup's clock


class DnsLookup:
    """A callable (name, type) -> Answer; real state (a cache of zones' servers), so a class.

    `servers`, when given, are asked instead of the zones' own, and `source` says who they are
    (DNS_RESOLVERS, or the container's own resolver: `local_lookup`); `system` finds the zones'
    servers (the machine's resolver by default); `clock` is monotonic seconds, for the cache's
    expiry.
    """

    def __init__(self, servers: Sequence[Server] = (), timeout: float = 3.0,
                 system: dns.resolver.Resolver | None = None, authority_port: int = 53,
                 clock: Callable[[], float] = time.monotonic,
                 source: ServerSource = CONFIGURED) -> None:
        self.servers = list(servers)
        self.source = source
        self.timeout = timeout
        self._system = system
        self.authority_port = authority_port
        self._clock = clock
        self._zone_servers: dict[str, _ZoneServers] = {}

    def __call__(self, name: str, rtype: str) -> Answer:
        zone: _ZoneServers | None = None
        if not self.servers:
            try:
                # RFC 4035 §3.1.4.1: a zone's DS record is the parent's data, answered by the
                # parent's servers (the zone's own servers say it has none).
                zone = self._authoritative(_parent(name) if rtype.upper() == "DS" else name)
            except dns.exception.DNSException as error:
                return Answer(error=system_failure(error))
        query = dns.message.make_query(name, rtype)
        if zone is not None:
            query.flags &= ~dns.flags.RD  # ask the authority itself, no recursion
        else:
            # Ask a resolver to say whether it validated the answer (RFC 6840 §5.7): DANE and
            # MTA-STS (outbound.mtasts) must know whether TLSA records are DNSSEC-secure.
            query.flags |= dns.flags.AD
        failures: list[tuple[str, str, bool]] = []  # (address, what happened, answered)
        for address, port in zone.servers if zone is not None else self.servers:
            try:
                response = self._ask(query, address, port)
            except (dns.exception.DNSException, OSError) as error:
                failures.append((address, self._no_reply(error), False))
                continue
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                return Answer(nxdomain=True)
            if rcode != dns.rcode.NOERROR:
                failures.append((address, dns.rcode.to_text(rcode), True))
                continue
            return Answer(answer_values(response, rtype), ttl=_ttl(response, rtype),
                          authenticated=bool(response.flags & dns.flags.AD))
        return Answer(error=self._failure(zone, failures))

    def _ask(self, query: dns.message.Message, address: str, port: int) -> dns.message.Message:
        # A UDP datagram can be lost: ask again once, as stub resolvers retransmit (RFC 1035
        # §4.2.1), within the same total time. One lost packet made a record "unknown" in CI.
        try:
            response = dns.query.udp(query, address, port=port, timeout=self.timeout / 2)
        except dns.exception.Timeout:
            response = dns.query.udp(query, address, port=port, timeout=self.timeout / 2)
        if response.flags & dns.flags.TC:  # truncated: a long TXT (DKIM) over TCP
            response = dns.query.tcp(query, address, port=port, timeout=self.timeout)
        return response

    def _no_reply(self, error: Exception) -> str:
        if isinstance(error, dns.exception.Timeout):
            return f"timed out after {self.timeout:g} s"
        return _os_reason(error)

    def _failure(self, zone: _ZoneServers | None, failures: list[tuple[str, str, bool]]) -> str:
        """Plain words for servers that gave no usable answer."""
        details = ", ".join(f"{address}: {what}" for address, what, _ in failures)
        answered = any(answered for _, _, answered in failures)
        if zone is None:
            listed = ", ".join(f"{address}:{port}" for address, port in self.servers)
            if answered:
                return f"{self.source.name} failed the question ({details}): {self.source.failed}"
            return f"no answer from {self.source.name} ({listed}; {details}): {self.source.silent}"
        who = f"the name servers of {zone.zone.rstrip('.')} ({', '.join(zone.names)})"
        if not failures:
            return f"{who} have no address: no server to ask"
        if answered:
            return (f"{who} failed the question ({details}): is the zone set up at the DNS "
                    "provider its NS records name?")
        return (f"{who} did not answer ({details}); if the host's firewall lets DNS out only "
                "to its own resolver, set DNS_RESOLVERS to that resolver")

    def _authoritative(self, name: str) -> _ZoneServers:
        if self._system is None:
            self._system = dns.resolver.Resolver()
            self._system.lifetime = self.timeout * 2
        zone = dns.resolver.zone_for_name(name, resolver=self._system).to_text()
        known = self._zone_servers.get(zone)
        if known is None or self._clock() >= known.expires:
            known = self._zone_servers[zone] = self._find_servers(self._system, zone)
        return known

    def _find_servers(self, system: dns.resolver.Resolver, zone: str) -> _ZoneServers:
        ns = system.resolve(zone, "NS")
        names = tuple(record.to_text() for record in ns)
        addresses: list[Server] = []
        ttls = [ns.rrset.ttl if ns.rrset is not None else NS_TTL_FLOOR]
        for target in names:
            for rtype in ("A", "AAAA"):
                try:
                    found = system.resolve(target, rtype)
                except dns.exception.DNSException:
                    continue
                addresses += [(a.to_text(), self.authority_port) for a in found]
                ttls.append(found.rrset.ttl if found.rrset is not None else NS_TTL_FLOOR)
        # Servers without an address are asked again soon: their addresses may appear.
        ttl = min(ttls) if addresses else NS_TTL_FLOOR
        keep = max(NS_TTL_FLOOR, min(ttl, NS_TTL_CEILING))
        return _ZoneServers(zone, tuple(n.rstrip(".") for n in names), tuple(addresses),
                            self._clock() + keep)


def local_lookup(timeout: float = 3.0) -> DnsLookup:
    """Lookups through the container's own resolver, recursive (the policy service, the
    outbound check): what blocklists accept, whatever DNS_RESOLVERS says."""
    return DnsLookup([LOCAL_RESOLVER], timeout=timeout, source=OWN_RESOLVER)


def _parent(name: str) -> str:
    """`example.com` -> `com`; a top-level name -> the root."""
    return name.rstrip(".").partition(".")[2] or "."


def system_failure(error: dns.exception.DNSException) -> str:
    """Plain words for a failure of the resolver that finds the zones' servers. The text does
    not depend on the name asked: when the resolver is unreachable, every lookup says the same."""
    if isinstance(error, dns.resolver.NoResolverConfiguration):
        return ("no DNS server is configured (/etc/resolv.conf of the container names none): "
                "give the container one (docker run --dns), or set DNS_RESOLVERS")
    if isinstance(error, dns.resolver.NoRootSOA):
        return ("the container's DNS server says no name exists, not even the DNS root: it is "
                "not a working resolver; check /etc/resolv.conf of the container, or set "
                "DNS_RESOLVERS")
    errors = error.kwargs.get("errors") or []  # (server, tcp, port, error, response) tuples
    if isinstance(error, dns.exception.Timeout) or (
        isinstance(error, dns.resolver.NoNameservers)
        and all(response is None for *_, response in errors)
    ):
        return f"no DNS server answered ({_resolver_reasons(errors)}): {_REACH_ADVICE}"
    if isinstance(error, dns.resolver.NoNameservers):
        return (f"the container's DNS server failed the question ({_resolver_reasons(errors)}): "
                "it may not reach the internet itself (the container's own resolver asks the "
                "internet's DNS servers on port 53: where the host's network blocks that, set "
                "DNS_FORWARDERS), or a domain's DNS is broken")
    return f"the container's DNS server failed: {error}"


def _resolver_reasons(errors: Sequence[tuple[object, ...]]) -> str:
    """`10.0.0.2: timed out` from dnspython's (server, tcp, port, error, response) tuples."""
    reasons: dict[str, None] = {}
    for server, _tcp, _port, error, _response in errors:
        address = str(server).removeprefix("Do53:").removesuffix("@53")
        if isinstance(error, dns.exception.Timeout):
            what = "timed out"
        elif isinstance(error, OSError):
            what = _os_reason(error)
        else:
            what = str(error)
        reasons[f"{address}: {what}"] = None
    return ", ".join(reasons) or "no server to ask"


def _os_reason(error: Exception) -> str:
    """`connection refused` rather than `[Errno 111] Connection refused`."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return (text[:1].lower() + text[1:]) or type(error).__name__


def _ttl(response: dns.message.Message, rtype: str) -> int | None:
    """The smallest TTL of the answer's records of the asked type; None without any."""
    wanted = dns.rdatatype.from_text(rtype)
    ttls = [rrset.ttl for rrset in response.answer if rrset.rdtype == wanted]
    return min(ttls) if ttls else None


def answer_values(response: dns.message.Message, rtype: str) -> tuple[str, ...]:
    """The answer's records of the asked type (after any CNAME), in presentation form; a TXT
    record as one text: its character-strings joined without spaces (RFC 7208 §3.3, RFC 6376
    §3.6.2.2), unquoted, as UTF-8 (a byte that isn't becomes U+FFFD)."""
    wanted = dns.rdatatype.from_text(rtype)
    values: list[str] = []
    for rrset in response.answer:
        if rrset.rdtype != wanted:
            continue
        for rdata in rrset:
            if wanted == dns.rdatatype.TXT:
                values.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            else:
                values.append(rdata.to_text())
    return tuple(values)
