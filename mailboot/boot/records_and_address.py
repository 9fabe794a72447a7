"""The boot's last word: the public address, how mail leaves, and the DNS records to publish.

It runs beside the daemons, not before them: each part asks the network (address discovery up
to 2 s, the TLSA and record lookups up to 1 s each), and none of it changes what the daemons
serve. Only DNS_CHECK=strict runs it before them, because it may refuse the start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from mailboot.acme import caa
from mailboot.base.errors import DnsNotReady
from mailboot.base.paths import Paths
from mailboot.boot.stages import stage
from mailboot.dkim.keys import DomainKeys
from mailboot.dns.answer import Lookup
from mailboot.network import address as publicaddress
from mailboot.records import doctor, zonefile
from mailboot.records.build import RecordGroup
from mailboot.records.published import check_published, published_groups
from mailboot.settings.table import Settings
from mailboot.tls import dane

log = logging.getLogger(__name__)

# Seconds: the announcement never waits longer on name servers; the worker checks the rest.
BOOT_DNS_BUDGET = 1.0


@dataclass(frozen=True)
class Network:
    """How the announcement reaches the DNS; None: no network (tests, DNS_CHECK=off)."""

    lookup: Lookup | None = None  # for the records' check and the TLSA keys in use
    # Finds the addresses the internet sees when PUBLIC_IPV4/6 are unset
    discover: publicaddress.Discover | None = None


def production_network(settings: Settings) -> Network:
    """The DNS as the boot asks it in the container: through the resolver Docker gave us, since
    Unbound may not answer yet (the announcement runs beside its start)."""
    import dns.resolver

    from mailboot.daemons import unbound
    from mailboot.dns.lookup import DnsLookup

    system = dns.resolver.Resolver(filename=str(unbound.boot_resolv_conf()))
    source = settings.address_discovery
    return Network(
        lookup=DnsLookup(settings.dns_resolvers, timeout=2.0, system=system),
        discover=None if source == "off" else publicaddress.make_discover(source, system))


def announce(settings: Settings, paths: Paths, now: datetime, keys: Sequence[DomainKeys],
             network: Network, out: TextIO) -> None:
    """Settle the public address, say how mail leaves, and print the records with their status
    to `out`; raises DnsNotReady when DNS_CHECK=strict and a required record is missing."""
    with stage("public address"):
        settings = publicaddress.settle(settings, paths, network.discover, now)
    log_outbound(settings)
    with stage("dns records"):
        lookup = network.lookup if settings.dns_check != "off" else None
        tlsa = dane.TlsaSource(settings, paths, lookup, budget=BOOT_DNS_BUDGET)()
        if (no_caa := caa.why_none(settings)) is not None:
            log.info("dns: %s", no_caa)
        print_records(settings, published_groups(settings, paths, keys, now, tlsa), lookup, out)


def print_records(settings: Settings, groups: Sequence[RecordGroup], lookup: Lookup | None,
                  out: TextIO) -> None:
    """Print the records with their status (DNS_CHECK); strict mode fails on missing ones.

    One write: the daemons log to the same stream, and the block must not be cut by them.
    """
    findings = None
    if settings.dns_check != "off" and lookup is not None:
        findings = check_published(groups, settings, lookup, budget=BOOT_DNS_BUDGET)
        log.info("dns: %s", doctor.summary(list(findings.values())))
    out.write(zonefile.zone_text(groups, findings) + "\n"
              + zonefile.table_text(groups, findings))
    out.flush()
    if settings.dns_check == "strict" and findings is not None:
        missing = [f for f in findings.values() if f.required_and_not_ok]
        if missing:
            raise DnsNotReady("DNS_CHECK=strict and these required records are not in place: "
                              + "; ".join(f"{f.record.name} {f.record.rtype} ({f.status}): "
                                          f"{f.hint}" for f in missing))


def log_outbound(settings: Settings) -> None:
    """One line: how mail leaves, and what SPF says about it (never the password)."""
    if settings.relay_host is None:
        tls = ("DANE, else the receiver's MTA-STS policy, else opportunistic TLS"
               if settings.dnssec_validation == "on" else
               "the receiver's MTA-STS policy, else opportunistic TLS (no DANE: "
               "DNSSEC_VALIDATION=off)")
        log.info("outbound: direct delivery by MX lookup from %s, HELO %s, %s",
                 ", ".join(map(str, settings.public_addresses)) or "this server",
                 settings.hostname, tls)
        return
    host, port = settings.relay_host
    login = f"AUTH as {settings.relay_user}" if settings.relay_user else "no AUTH"
    spf = (f"SPF includes {settings.relay_spf_include}" if settings.relay_spf_include else
           "SPF names no relay (set RELAY_SPF_INCLUDE)")
    log.info("outbound: through the relay [%s]:%d (TLS required, %s); %s", host, port, login, spf)
