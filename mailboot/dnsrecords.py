"""The DNS records a user must publish, as typed data.

`build_record_groups` turns settings and DKIM keys into groups of records, one group per DNS zone
the user edits, plus one for the reverse DNS (PTR) set at the hosting provider. Formatting lives in
`dnsformat.py`; checking what is published (later) takes the same data.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

import idna

from mailboot.dkim import DomainKeys
from mailboot.settings import Settings
from mailboot.tls import mtasts

DEFAULT_TTL = 3600
MX_PREFERENCE = 10


class Where(StrEnum):
    """Where a record is set: in the domain's DNS zone, or at the hosting provider (PTR)."""

    ZONE = "zone"
    PROVIDER = "provider"


@dataclass(frozen=True)
class Record:
    """One DNS record. Names are absolute without the trailing dot, in their ASCII form.

    `value` is the presentation form (a TXT value joined into one unquoted string). A placeholder
    stands for a record whose value (or, for a PTR, whose name) depends on a setting that is not
    set: `placeholder` says what belongs there and where to find it, and `value` may be None.
    """

    name: str
    rtype: str
    value: str | None
    purpose: str
    zone: str
    where: Where = Where.ZONE
    required: bool = True
    placeholder: str | None = None
    ttl: int = DEFAULT_TTL
    hold: str | None = None  # why not to publish it yet (printed instead of the record)

    @property
    def is_placeholder(self) -> bool:
        return self.placeholder is not None

    @property
    def fqdn(self) -> str:
        return self.name if self.is_placeholder and self.name.startswith("<") else self.name + "."

    @property
    def relative_name(self) -> str:
        """The name as web forms want it: relative to the zone, `@` for the zone itself."""
        if self.where is Where.PROVIDER:
            return self.fqdn
        if self.name == self.zone:
            return "@"
        return self.name.removesuffix("." + self.zone)


@dataclass(frozen=True)
class RecordGroup:
    """The records of one zone (or of the hosting provider), with a heading for people."""

    title: str
    zone: str | None
    note: str
    records: tuple[Record, ...]


def build_record_groups(settings: Settings, keys: Sequence[DomainKeys],
                        real_names: Collection[str] | None = None) -> tuple[RecordGroup, ...]:
    """Every record for `settings`, grouped by the zone it belongs in; the PTR group comes last.

    `real_names`: names that have a certificate from a CA; the `_mta-sts` record of a domain
    whose policy host has none yet is marked to be held back. None: don't know (no hold).
    """
    keys_by_domain = {domain_keys.domain: domain_keys for domain_keys in keys}
    host_zone = hostname_zone(settings.hostname, settings.domains)
    by_zone: dict[str, list[Record]] = {domain: [] for domain in settings.domains}
    for domain in settings.domains:
        mx, *others = domain_records(settings, domain, keys_by_domain[domain], real_names)
        # The MX comes first and the address of the host it names right after it.
        hosted = host_records(settings, host_zone) if domain == host_zone else []
        by_zone[domain] += [mx, *hosted, *others]
    if host_zone not in by_zone:
        by_zone[host_zone] = host_records(settings, host_zone)
    for record in report_authorisations(settings):
        by_zone.setdefault(record.zone, []).append(record)
    groups = [_zone_group(settings, zone, records) for zone, records in by_zone.items()]
    return (*groups, _provider_group(settings))


def hostname_zone(hostname: str, domains: Sequence[str]) -> str:
    """The zone that holds MAIL_HOSTNAME: the longest mail domain containing it, or its parent."""
    holders = [d for d in domains if hostname == d or hostname.endswith("." + d)]
    if holders:
        return max(holders, key=len)
    return hostname.split(".", 1)[1]


def _zone_group(settings: Settings, zone: str, records: list[Record]) -> RecordGroup:
    if zone in settings.domains:
        note = f"in the DNS zone of {zone}"
    elif zone == hostname_zone(settings.hostname, settings.domains):
        note = f"in the DNS zone that holds {settings.hostname} (not one of the mail domains)"
    else:
        note = f"in the DNS zone of {zone}, which receives reports (not one of the mail domains)"
    return RecordGroup(_display_name(zone), zone, note, tuple(records))


def _display_name(domain: str) -> str:
    """`xn--bcher-kva.de (bücher.de)`: the ASCII form DNS wants, and the name people know."""
    try:
        unicode_name = idna.decode(domain)
    except idna.IDNAError:
        return domain
    return domain if unicode_name == domain else f"{domain} ({unicode_name})"


def host_records(settings: Settings, zone: str) -> list[Record]:
    """A/AAAA of MAIL_HOSTNAME and an SPF record for its HELO name."""
    records = address_records(settings, zone)
    if settings.hostname not in settings.domains:
        # RFC 7208 §2.3: an SPF record for the HELO name lets receivers check bounces (MAIL FROM
        # <>), which are judged by the HELO identity alone.
        records.append(Record(
            settings.hostname, "TXT", "v=spf1 a -all",
            f"SPF for the HELO name {settings.hostname}: only this server sends as it "
            "(checked for bounces, RFC 7208 §2.3)",
            zone, required=False,
        ))
    return records


def address_records(settings: Settings, zone: str) -> list[Record]:
    name = settings.hostname
    purpose = f"the address of {name}: where other servers and mail clients reach this server"
    if not settings.public_addresses:
        return [
            _placeholder(name, "A", "PUBLIC_IPV4", "IPv4", purpose, zone, required=True),
            _placeholder(name, "AAAA", "PUBLIC_IPV6", "IPv6", purpose, zone, required=False),
        ]
    return [
        Record(name, "A" if address.version == 4 else "AAAA", str(address), purpose, zone)
        for address in settings.public_addresses
    ]


def _placeholder(
    name: str, rtype: str, variable: str, family: str, purpose: str, zone: str, *, required: bool
) -> Record:
    where_to_find = (
        f"set {variable} to the server's public {family} address and restart; your hosting "
        f"provider's control panel shows it (on the server: `ip -{family[-1]} addr show scope "
        "global`)"
    )
    if not required:
        where_to_find += f"; skip this record if the server has no public {family} address"
    return Record(
        name, rtype, None, purpose, zone, required=required, placeholder=where_to_find
    )


def spf_record(settings: Settings, domain: str) -> Record:
    """SPF (RFC 7208): our own hosts, and the relay's when mail leaves through RELAY_HOST."""
    if settings.relay_spf_include is None:
        return Record(domain, "TXT", "v=spf1 a mx -all",
                      f"SPF: only {domain}'s own and MX hosts may send mail as {domain} "
                      "(RFC 7208)", domain)
    include = settings.relay_spf_include
    return Record(domain, "TXT", f"v=spf1 a mx include:{include} -all",
                  f"SPF: {domain}'s own and MX hosts, and the relay's ({include}), may send "
                  f"mail as {domain} (RFC 7208)", domain)


def domain_records(settings: Settings, domain: str, keys: DomainKeys,
                   real_names: Collection[str] | None = None) -> list[Record]:
    """The records in one mail domain's zone."""
    host = settings.hostname
    return [
        Record(domain, "MX", f"{MX_PREFERENCE} {host}.",
               f"mail for {domain} is delivered to {host}", domain),
        spf_record(settings, domain),
        *dkim_records(keys),
        Record(f"_dmarc.{domain}", "TXT", dmarc_value(settings),
               f"DMARC: receivers {_dmarc_action(settings.dmarc_policy)} mail that claims to be "
               f"from {domain} but fails SPF and DKIM (RFC 7489)", domain),
        *mta_sts_records(settings, domain, real_names),
        Record(f"_smtp._tls.{domain}", "TXT", "v=TLSRPTv1; rua=" + ",".join(settings.tlsrpt_rua),
               "TLS-RPT: where senders report TLS problems delivering to us (RFC 8460)",
               domain, required=False),
        *srv_records(host, domain),
    ]


def dkim_records(keys: DomainKeys) -> list[Record]:
    records = []
    for key in keys.keys:
        role = "signs outgoing mail" if key is keys.signing else "older key, still published"
        records.append(Record(
            key.record_name, "TXT", f"v=DKIM1; k=rsa; t=s; p={key.public_key_b64}",
            f"DKIM public key, selector {key.selector} ({role}; RFC 6376)", keys.domain,
        ))
    return records


def dmarc_value(settings: Settings) -> str:
    tags = [
        "v=DMARC1",
        f"p={settings.dmarc_policy}",
        "adkim=s",  # strict alignment: we sign with d= exactly the From: domain
        "aspf=s",
    ]
    if settings.dmarc_rua:
        tags.append("rua=" + ",".join(settings.dmarc_rua))
    return "; ".join(tags)


def _dmarc_action(policy: str) -> str:
    return {"reject": "reject", "quarantine": "quarantine", "none": "only report"}[policy]


def mta_sts_records(settings: Settings, domain: str,
                    real_names: Collection[str] | None = None) -> list[Record]:
    policy = mtasts.policy_for(settings)
    hold = None
    if real_names is not None and f"mta-sts.{domain}" not in real_names:
        # RFC 8461 §3.3: senders fetch the policy over HTTPS with a valid certificate; an
        # announced policy they can't fetch is ignored, but a cached enforce policy with our
        # temporary certificate would make them refuse to deliver.
        hold = (f"hold this record back until mta-sts.{domain} has a certificate from the CA "
                "(the log says when); announced earlier, senders may refuse mail")
    return [
        Record(f"_mta-sts.{domain}", "TXT", mtasts.record_value(policy),
               "MTA-STS: senders must use verified TLS to reach us; the id changes with the "
               "policy (RFC 8461)", domain, required=False, hold=hold),
        Record(f"mta-sts.{domain}", "CNAME", f"{settings.hostname}.",
               f"MTA-STS: the host serving the policy at https://mta-sts.{domain}"
               f"{mtasts.POLICY_PATH}", domain, required=False),
    ]


def srv_records(host: str, domain: str) -> list[Record]:
    """Mail client autoconfiguration (RFC 6186, RFC 8314 §5.1: implicit TLS first)."""
    offered = [
        ("_submissions._tcp", f"0 1 465 {host}.", "submission with implicit TLS (port 465)"),
        ("_submission._tcp", f"10 1 587 {host}.", "submission with STARTTLS (port 587)"),
        ("_imaps._tcp", f"0 1 993 {host}.", "IMAP with implicit TLS (port 993)"),
    ]
    # RFC 6186 §4: target "." says the service is not offered, so clients don't try plain text.
    refused = [
        ("_imap._tcp", "IMAP without TLS"),
        ("_pop3._tcp", "POP3"),
        ("_pop3s._tcp", "POP3 with TLS"),
    ]
    records = [
        Record(f"{service}.{domain}", "SRV", value, f"mail clients find {what}", domain,
               required=False)
        for service, value, what in offered
    ]
    records += [
        Record(f"{service}.{domain}", "SRV", "0 0 0 .", f"tells mail clients {what} is not offered",
               domain, required=False)
        for service, what in refused
    ]
    return records


def report_authorisations(settings: Settings) -> list[Record]:
    """RFC 7489 §7.1: a domain outside ours that receives our DMARC reports must agree to it."""
    records = []
    for uri in settings.dmarc_rua:
        report_domain = uri.rpartition("@")[2]
        for domain in settings.domains:
            if _related(domain, report_domain):
                continue
            records.append(Record(
                f"{domain}._report._dmarc.{report_domain}", "TXT", "v=DMARC1",
                f"lets {report_domain} receive DMARC reports for {domain} (RFC 7489 §7.1)",
                report_domain,
            ))
    return records


def _related(domain: str, other: str) -> bool:
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


def _provider_group(settings: Settings) -> RecordGroup:
    note = (
        "set at your hosting provider (often called rDNS or PTR, in the server's "
        "network settings), not in your zone. Big receivers refuse mail from an address without it"
    )
    return RecordGroup("reverse DNS (PTR)", None, note, tuple(ptr_records(settings)))


def ptr_records(settings: Settings) -> list[Record]:
    purpose = f"reverse DNS: the address names {settings.hostname}"
    if not settings.public_addresses:
        return [Record(
            "<reverse name of the server's public address>", "PTR", f"{settings.hostname}.",
            purpose, "", where=Where.PROVIDER,
            placeholder="set PUBLIC_IPV4 (and PUBLIC_IPV6) and restart to see the exact name",
        )]
    return [
        Record(reverse_name(address), "PTR", f"{settings.hostname}.", purpose, "",
               where=Where.PROVIDER)
        for address in settings.public_addresses
    ]


def reverse_name(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The in-addr.arpa / ip6.arpa name of an address (RFC 1035 §3.5, RFC 3596 §2.5)."""
    return address.reverse_pointer


def all_records(groups: Sequence[RecordGroup]) -> list[Record]:
    return [record for group in groups for record in group.records]
