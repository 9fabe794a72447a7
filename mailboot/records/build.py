"""The DNS records a user must publish, as typed data.

`build_record_groups` turns settings and DKIM keys into groups of records, one group per DNS zone
the user edits, plus one for the reverse DNS (PTR) set at the hosting provider. Each record has a
`Kind` (what it is for), from which its DNS type follows, and each kind's value is made by one
builder function below. Formatting lives in `zonefile.py`; `doctor.py` checks what is
published against the same data, dispatching on the kind.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import idna

from mailboot.dkim.keys import DkimKey, DomainKeys
from mailboot.dkim.state import Role
from mailboot.dns.names import client_hosts, hostname_zone
from mailboot.settings.table import Settings
from mailboot.standards import mtasts
from mailboot.tls.keys import TlsaKeys
from mailboot.web import clientconfig

DEFAULT_TTL = 3600
MX_PREFERENCE = 10


class Where(StrEnum):
    """Where a record is set: in the domain's DNS zone, or at the hosting provider (PTR)."""

    ZONE = "zone"
    PROVIDER = "provider"


class Kind(StrEnum):
    """What a record is for. Its DNS type, and for a TXT record the version tag its value starts
    with, follow from the kind; the checker judges a published value by its kind."""

    MX = "mx"
    A = "a"
    AAAA = "aaaa"
    SPF = "spf"  # a mail domain's SPF record (RFC 7208)
    HELO_SPF = "helo_spf"  # the SPF record of MAIL_HOSTNAME, the HELO name (RFC 7208 §2.3)
    DKIM = "dkim"
    DMARC = "dmarc"
    DMARC_REPORT_AUTH = "dmarc_report_auth"  # a report domain agrees to receive (RFC 7489 §7.1)
    MTA_STS = "mta_sts"  # the _mta-sts TXT record (RFC 8461 §3.1)
    MTA_STS_HOST = "mta_sts_host"  # the mta-sts.<domain> CNAME to the policy server
    CLIENT_HOST = "client_host"  # autoconfig./autodiscover.<domain> CNAMEs: clients' settings
    TLSRPT = "tlsrpt"
    SRV = "srv"
    PTR = "ptr"
    TLSA = "tlsa"  # DANE for inbound mail: the key port 25 serves (RFC 7672 §3)
    CAA = "caa"  # which CA, and which of its accounts, may issue for the host (RFC 8659, 8657)

    @property
    def rtype(self) -> str:
        return _RTYPES[self]

    @property
    def tag(self) -> str | None:
        """The version tag a TXT value of this kind starts with; None for other types."""
        return _TAGS.get(self)


_RTYPES: Final[Mapping[Kind, str]] = {
    Kind.MX: "MX", Kind.A: "A", Kind.AAAA: "AAAA", Kind.SPF: "TXT", Kind.HELO_SPF: "TXT",
    Kind.DKIM: "TXT", Kind.DMARC: "TXT", Kind.DMARC_REPORT_AUTH: "TXT", Kind.MTA_STS: "TXT",
    Kind.MTA_STS_HOST: "CNAME", Kind.CLIENT_HOST: "CNAME", Kind.TLSRPT: "TXT", Kind.SRV: "SRV",
    Kind.PTR: "PTR", Kind.TLSA: "TLSA", Kind.CAA: "CAA",
}
# RFC 7208 §4.5, RFC 6376 §3.6.1, RFC 7489 §6.3, RFC 8461 §3.1, RFC 8460 §3.
_TAGS: Final[Mapping[Kind, str]] = {
    Kind.SPF: "v=spf1", Kind.HELO_SPF: "v=spf1", Kind.DKIM: "v=DKIM1", Kind.DMARC: "v=DMARC1",
    Kind.DMARC_REPORT_AUTH: "v=DMARC1", Kind.MTA_STS: "v=STSv1", Kind.TLSRPT: "v=TLSRPTv1",
}


@dataclass(frozen=True)
class Record:
    """One DNS record. Names are absolute without the trailing dot, in their ASCII form.

    `value` is the presentation form (a TXT value joined into one unquoted string). A placeholder
    stands for a record whose value (or, for a PTR, whose name) depends on a setting that is not
    set: `placeholder` says what belongs there and where to find it, and `value` may be None.
    Made by the builder of its kind (`mx_record`, `spf_record`, ...), not directly.
    """

    name: str
    kind: Kind
    value: str | None
    purpose: str
    zone: str
    required: bool = True
    placeholder: str | None = None
    ttl: int = DEFAULT_TTL
    hold: str | None = None  # why not to publish it yet (printed instead of the record)

    @property
    def rtype(self) -> str:
        return self.kind.rtype

    @property
    def where(self) -> Where:
        # Reverse DNS belongs to whoever holds the address block: the hosting provider.
        return Where.PROVIDER if self.kind is Kind.PTR else Where.ZONE

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
                        real_names: Collection[str] | None = None,
                        tlsa: TlsaKeys | None = None,
                        caa: str | None = None) -> tuple[RecordGroup, ...]:
    """Every record for `settings`, grouped by the zone it belongs in; the PTR group comes last.

    `real_names`: names that have a certificate from a CA; the `_mta-sts` record of a domain
    whose policy host has none yet is marked to be held back. None: don't know (no hold).
    `tlsa`: the TLSA values of the certificate's keys, given only when the zone holding
    MAIL_HOSTNAME is DNSSEC-signed (`dane.TlsaSource`); None: no TLSA records.
    `caa`: the CAA value for MAIL_HOSTNAME (`caa.record_value`); None: no CAA record.
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
    by_zone[host_zone] += tlsa_records(settings.hostname, host_zone, tlsa)
    by_zone[host_zone] += caa_records(settings.hostname, host_zone, caa)
    for record in report_authorisations(settings):
        by_zone.setdefault(record.zone, []).append(record)
    groups = [_zone_group(settings, zone, records) for zone, records in by_zone.items()]
    return (*groups, _provider_group(settings))


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
        records.append(helo_spf_record(settings.hostname, zone))
    return records


def helo_spf_record(host: str, zone: str) -> Record:
    # RFC 7208 §2.3: an SPF record for the HELO name lets receivers check bounces (MAIL FROM
    # <>), which are judged by the HELO identity alone. (A host that is also a mail domain has
    # that domain's SPF record; two at one name would be a permanent error, RFC 7208 §4.5.)
    return Record(host, Kind.HELO_SPF, "v=spf1 a -all",
                  f"SPF for the HELO name {host}: only this server sends as it "
                  "(checked for bounces, RFC 7208 §2.3)", zone, required=False)


def address_records(settings: Settings, zone: str) -> list[Record]:
    host = settings.hostname
    if not settings.public_addresses:
        return [address_placeholder(host, 4, zone), address_placeholder(host, 6, zone)]
    return [address_record(host, address, zone) for address in settings.public_addresses]


def _address_purpose(host: str) -> str:
    return f"the address of {host}: where other servers and mail clients reach this server"


def address_record(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                   zone: str) -> Record:
    kind = Kind.A if address.version == 4 else Kind.AAAA
    return Record(host, kind, str(address), _address_purpose(host), zone)


def address_placeholder(host: str, version: int, zone: str) -> Record:
    """The A (4) or AAAA (6) record of a server whose public address is not set."""
    variable, family = ("PUBLIC_IPV4", "IPv4") if version == 4 else ("PUBLIC_IPV6", "IPv6")
    where_to_find = (
        f"set {variable} to the server's public {family} address and restart; your hosting "
        f"provider's control panel shows it (on the server: `ip -{version} addr show scope "
        "global`)"
    )
    required = version == 4
    if not required:
        where_to_find += f"; skip this record if the server has no public {family} address"
    return Record(host, Kind.A if version == 4 else Kind.AAAA, None, _address_purpose(host),
                  zone, required=required, placeholder=where_to_find)


def mx_record(domain: str, host: str) -> Record:
    return Record(domain, Kind.MX, f"{MX_PREFERENCE} {host}.",
                  f"mail for {domain} is delivered to {host}", domain)


def spf_record(settings: Settings, domain: str) -> Record:
    """SPF (RFC 7208): our own hosts, and the relay's when mail leaves through RELAY_HOST."""
    if settings.relay_spf_include is None:
        return Record(domain, Kind.SPF, "v=spf1 a mx -all",
                      f"SPF: only {domain}'s own and MX hosts may send mail as {domain} "
                      "(RFC 7208)", domain)
    include = settings.relay_spf_include
    return Record(domain, Kind.SPF, f"v=spf1 a mx include:{include} -all",
                  f"SPF: {domain}'s own and MX hosts, and the relay's ({include}), may send "
                  f"mail as {domain} (RFC 7208)", domain)


def domain_records(settings: Settings, domain: str, keys: DomainKeys,
                   real_names: Collection[str] | None = None) -> list[Record]:
    """The records in one mail domain's zone."""
    return [
        mx_record(domain, settings.hostname),
        spf_record(settings, domain),
        *dkim_records(keys),
        dmarc_record(settings, domain),
        mta_sts_record(settings, domain, real_names),
        mta_sts_host_record(settings, domain),
        *([tlsrpt_record(settings, domain)] if settings.tlsrpt_rua else []),  # TLSRPT_RUA=off
        *client_host_records(settings.hostname, domain),
        *srv_records(settings.hostname, domain),
    ]


def dkim_records(keys: DomainKeys) -> list[Record]:
    """One record per published key: the signing ones, the next one of a rotation (publish it
    now), and replaced ones until they are retired."""
    signers = keys.signers
    records = []
    for key in keys.keys:
        role = Role.SIGNING if key in signers else keys.role(key)
        if role is Role.SIGNING and key not in signers:
            role = Role.PREVIOUS  # its algorithm was taken out of DKIM_ALGORITHMS
        records.append(dkim_record(key, signing=role is Role.SIGNING, role=role))
    return records


_DKIM_ROLES: Final[Mapping[Role, str]] = {
    Role.SIGNING: "signs outgoing mail",
    Role.NEXT: "the next key: publish it now; it signs once this record is served",
    Role.PREVIOUS: "older key, still published until the log says it is retired",
}


def dkim_record(key: DkimKey, *, signing: bool, role: Role | None = None) -> Record:
    """A key's record (RFC 6376 §3.6.1; RFC 8463 §4 for Ed25519). Only the signing keys' are
    required: a next key's record is what a rotation waits for."""
    role = role or (Role.SIGNING if signing else Role.PREVIOUS)
    algorithm = "Ed25519" if key.algorithm == "ed25519" else "RSA"
    return Record(key.record_name, Kind.DKIM, key.record_value,
                  f"DKIM public key ({algorithm}), selector {key.selector} ({_DKIM_ROLES[role]}; "
                  "RFC 6376)", key.domain, required=role is Role.SIGNING)


def dmarc_record(settings: Settings, domain: str) -> Record:
    return Record(f"_dmarc.{domain}", Kind.DMARC, dmarc_value(settings),
                  f"DMARC: receivers {_dmarc_action(settings.dmarc_policy)} mail that claims to "
                  f"be from {domain} but fails SPF and DKIM (RFC 7489)", domain)


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


def _dmarc_action(disposition: str) -> str:
    return {"reject": "reject", "quarantine": "quarantine", "none": "only report"}[disposition]


def mta_sts_record(settings: Settings, domain: str,
                   real_names: Collection[str] | None = None) -> Record:
    """The `_mta-sts` TXT record; its id comes from the policy the policy server serves."""
    hold = None
    if real_names is not None and f"mta-sts.{domain}" not in real_names:
        # RFC 8461 §3.3: senders fetch the policy over HTTPS with a valid certificate; an
        # announced policy they can't fetch is ignored, but a cached enforce policy with our
        # temporary certificate would make them refuse to deliver.
        hold = (f"hold this record back until mta-sts.{domain} has a certificate from the CA "
                "(the log says when); announced earlier, senders may refuse mail")
    return Record(f"_mta-sts.{domain}", Kind.MTA_STS,
                  mtasts.record_value(mtasts.policy_for(settings)),
                  "MTA-STS: senders must use verified TLS to reach us; the id changes with the "
                  "policy (RFC 8461)", domain, required=False, hold=hold)


def mta_sts_host_record(settings: Settings, domain: str) -> Record:
    return Record(f"mta-sts.{domain}", Kind.MTA_STS_HOST, f"{settings.hostname}.",
                  f"MTA-STS: the host serving the policy at https://mta-sts.{domain}"
                  f"{mtasts.POLICY_PATH}", domain, required=False)


def tlsrpt_record(settings: Settings, domain: str) -> Record:
    return Record(f"_smtp._tls.{domain}", Kind.TLSRPT,
                  "v=TLSRPTv1; rua=" + ",".join(settings.tlsrpt_rua),
                  "TLS-RPT: where senders report TLS problems delivering to us (RFC 8460)",
                  domain, required=False)


def client_host_records(host: str, domain: str) -> list[Record]:
    """The names Thunderbird and Outlook ask first for a domain's settings, served by our port
    443 (`clientconfig`). Optional: the certificate covers each from the first DNS check after
    it appears (the CA must reach the name: its HTTP-01 challenge, RFC 8555 §8.3)."""
    clients = {"autoconfig": "Thunderbird (and the iPhone profile)", "autodiscover": "Outlook"}
    return [Record(name, Kind.CLIENT_HOST, f"{host}.",
                   f"{clients[name.split('.')[0]]} fetches its settings from https://{name}; "
                   "the certificate grows to cover the name within a DNS check interval of "
                   "this record appearing", domain, required=False)
            for name in client_hosts([domain])]


def srv_records(host: str, domain: str) -> list[Record]:
    """Mail client autoconfiguration (RFC 6186, RFC 8314 §5.1: implicit TLS first), Outlook's
    last way to its settings, and ManageSieve (RFC 5804 §1.8)."""
    return [
        srv_record(domain, "_submissions._tcp", "submission with implicit TLS (port 465)",
                   host, clientconfig.SUBMISSIONS_PORT, priority=0),
        srv_record(domain, "_submission._tcp", "submission with STARTTLS (port 587)",
                   host, clientconfig.SUBMISSION_PORT, priority=10),
        srv_record(domain, "_imaps._tcp", "IMAP with implicit TLS (port 993)", host,
                   clientconfig.IMAPS_PORT),
        srv_record(domain, "_imap._tcp", "IMAP without TLS"),
        srv_record(domain, "_pop3._tcp", "POP3"),
        srv_record(domain, "_pop3s._tcp", "POP3 with TLS"),
        # Outlook asks this when autodiscover.<domain> gives nothing, then POSTs to the target.
        srv_record(domain, "_autodiscover._tcp", "Outlook's settings (HTTPS, port 443)",
                   host, 443),
        srv_record(domain, "_sieve._tcp", "ManageSieve for filter rules (port 4190)",
                   host, 4190),
    ]


def srv_record(domain: str, service: str, what: str, host: str | None = None, port: int = 0,
               priority: int = 0) -> Record:
    """A service offered at host:port; without a host, one not offered (RFC 6186 §4: target
    "." says so, and clients don't try it in plain text)."""
    if host is None:
        return Record(f"{service}.{domain}", Kind.SRV, "0 0 0 .",
                      f"tells mail clients {what} is not offered", domain, required=False)
    return Record(f"{service}.{domain}", Kind.SRV, f"{priority} 1 {port} {host}.",
                  f"mail clients find {what}", domain, required=False)


def tlsa_records(host: str, zone: str, tlsa: TlsaKeys | None) -> list[Record]:
    """`_25._tcp.<host> TLSA 3 1 1` for the key in use and the next one (RFC 7671 §8.1 "current
    + next": the next key's record is published before a rollover switches to it). Optional:
    mail flows without them, but DANE senders (RFC 7672) then can't verify our certificate."""
    if tlsa is None:
        return []
    name = f"_25._tcp.{host}"
    return [Record(name, Kind.TLSA, tlsa.current,
                   "DANE: the key of the certificate port 25 serves; sending servers that check "
                   "DNSSEC verify our certificate by it (RFC 7672)", zone, required=False),
            Record(name, Kind.TLSA, tlsa.next,
                   "DANE: the next certificate key, published ahead of a key rollover "
                   "(`mailboot tls rollover`; RFC 7671 §8.1)", zone, required=False)]


def caa_records(host: str, zone: str, caa: str | None) -> list[Record]:
    """CAA at MAIL_HOSTNAME (RFC 8659): only our CA, for our account, may issue for it. The
    mta-sts., autoconfig. and autodiscover. names are CNAMEs to it and so covered by the same
    record (RFC 8659 §3)."""
    if caa is None:
        return []
    return [Record(host, Kind.CAA, caa,
                   f"only this CA, for this server's ACME account, may issue certificates for "
                   f"{host} and the mta-sts., autoconfig. and autodiscover. names that point to "
                   "it (RFC 8659, RFC 8657)",
                   zone, required=False)]


def report_authorisations(settings: Settings) -> list[Record]:
    """RFC 7489 §7.1: a domain outside ours that receives our DMARC reports must agree to it."""
    records = []
    for uri in settings.dmarc_rua:
        report_domain = uri.rpartition("@")[2]
        for domain in settings.domains:
            if _related(domain, report_domain):
                continue
            records.append(report_auth_record(domain, report_domain))
    return records


def report_auth_record(domain: str, report_domain: str) -> Record:
    return Record(f"{domain}._report._dmarc.{report_domain}", Kind.DMARC_REPORT_AUTH, "v=DMARC1",
                  f"lets {report_domain} receive DMARC reports for {domain} (RFC 7489 §7.1)",
                  report_domain)


def _related(domain: str, other: str) -> bool:
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


def _provider_group(settings: Settings) -> RecordGroup:
    note = (
        "set at your hosting provider (often called rDNS or PTR, in the server's "
        "network settings), not in your zone. Big receivers refuse mail from an address without it"
    )
    return RecordGroup("reverse DNS (PTR)", None, note, tuple(ptr_records(settings)))


def ptr_records(settings: Settings) -> list[Record]:
    if not settings.public_addresses:
        return [ptr_record(settings.hostname, None)]
    return [ptr_record(settings.hostname, address) for address in settings.public_addresses]


def ptr_record(host: str,
               address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> Record:
    """The reverse record of `address`; None: a placeholder, the address is not set."""
    purpose = f"reverse DNS: the address names {host}"
    if address is None:
        return Record("<reverse name of the server's public address>", Kind.PTR, f"{host}.",
                      purpose, "", placeholder="set PUBLIC_IPV4 (and PUBLIC_IPV6) and restart to "
                      "see the exact name")
    return Record(reverse_name(address), Kind.PTR, f"{host}.", purpose, "")


def reverse_name(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The in-addr.arpa / ip6.arpa name of an address (RFC 1035 §3.5, RFC 3596 §2.5)."""
    return address.reverse_pointer


def all_records(groups: Sequence[RecordGroup]) -> list[Record]:
    return [record for group in groups for record in group.records]
