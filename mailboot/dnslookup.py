"""Lookups for the DNS doctor that see changes as soon as they are published.

By default each question goes to the name servers of the zone that holds the name, found
through the system resolver, without recursion: their answers are fresh, and asking them primes
no cache with a negative answer that would then hide the record for the SOA's negative TTL
(RFC 2308). With DNS_RESOLVERS, those servers are asked instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from mailboot.dnscheck import Answer

log = logging.getLogger(__name__)

Server = tuple[str, int]


class DnsLookup:
    """A callable (name, type) -> Answer; real state (a cache of zones' servers), so a class."""

    def __init__(self, servers: Sequence[Server] = (), timeout: float = 3.0,
                 system: dns.resolver.Resolver | None = None, authority_port: int = 53) -> None:
        self.servers = list(servers)
        self.timeout = timeout
        self._system = system  # finds the authoritative servers; the machine's by default
        self.authority_port = authority_port
        self._zone_servers: dict[str, list[Server]] = {}

    def __call__(self, name: str, rtype: str) -> Answer:
        try:
            servers = self.servers or self._authoritative(name)
        except dns.exception.DNSException as error:
            return Answer(error=f"can't find the name servers for {name}: {error}")
        query = dns.message.make_query(name, rtype)
        if not self.servers:
            query.flags &= ~dns.flags.RD  # ask the authority itself, no recursion
        errors = []
        for address, port in servers:
            try:
                response = self._ask(query, address, port)
            except (dns.exception.DNSException, OSError) as error:
                errors.append(f"{address}: {error or type(error).__name__}")
                continue
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                return Answer(nxdomain=True)
            if rcode != dns.rcode.NOERROR:
                errors.append(f"{address}: {dns.rcode.to_text(rcode)}")
                continue
            return Answer(_values(response, rtype))
        return Answer(error="; ".join(errors) or "no server to ask")

    def _ask(self, query: dns.message.Message, address: str, port: int) -> dns.message.Message:
        response = dns.query.udp(query, address, port=port, timeout=self.timeout)
        if response.flags & dns.flags.TC:  # truncated: a long TXT (DKIM) over TCP
            response = dns.query.tcp(query, address, port=port, timeout=self.timeout)
        return response

    def _authoritative(self, name: str) -> list[Server]:
        if self._system is None:
            self._system = dns.resolver.Resolver()
            self._system.lifetime = self.timeout * 2
        zone = dns.resolver.zone_for_name(name, resolver=self._system).to_text()
        if zone not in self._zone_servers:
            addresses: list[Server] = []
            for ns in self._system.resolve(zone, "NS"):
                target = ns.to_text()
                for rtype in ("A", "AAAA"):
                    try:
                        found = self._system.resolve(target, rtype)
                    except dns.exception.DNSException:
                        continue
                    addresses += [(a.to_text(), self.authority_port) for a in found]
            self._zone_servers[zone] = addresses
        return self._zone_servers[zone]


def _values(response: dns.message.Message, rtype: str) -> tuple[str, ...]:
    """The answer's records of the asked type (after any CNAME), in presentation form."""
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
