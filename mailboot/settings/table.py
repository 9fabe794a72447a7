"""Settings: one table of environment variables, parsed once into a frozen `Settings`.

Every variable is declared exactly once in `TABLE`: its name, the `Settings` field it fills, its
parser (from `values`), its default (a text parsed like user input, or derived from other
settings), its meaning and an example. The README's settings table and `mailboot settings` are
generated from it, so the documentation can't drift from the code. Parsing reports every problem
at once (`ConfigError`), each line naming the variable, what is wrong with it and either an
example of a right value or what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from mailboot.base.errors import ConfigError
from mailboot.settings.values import (
    DnsblSite,
    EchoServer,
    OutboundTarget,
    SettingValueError,
    choice,
    off_or,
    parse_absolute_file,
    parse_address_discovery,
    parse_alert_to,
    parse_ban_duration,
    parse_ban_failures,
    parse_ban_window,
    parse_ca_file,
    parse_caa_issuer,
    parse_connection_limit,
    parse_daily_limit,
    parse_data_dir,
    parse_dkim_algorithms,
    parse_dnsbl,
    parse_domain_list,
    parse_domain_name,
    parse_dqs_key,
    parse_duration,
    parse_eab_hmac_key,
    parse_email_address,
    parse_grace,
    parse_https_url,
    parse_mailto_list,
    parse_max_age,
    parse_metrics_port,
    parse_networks,
    parse_outbound_check,
    parse_password,
    parse_public_ipv4,
    parse_public_ipv6,
    parse_relay_host,
    parse_relay_user,
    parse_resolvers,
    parse_size,
    parse_spf_include,
    parse_tlsrpt_list,
    parse_token,
)


class DmarcDisposition(StrEnum):
    """DMARC_POLICY: the p= our DMARC records publish (RFC 7489 §6.3), what receivers should do
    with mail that claims to be ours and fails DMARC. (Reading others' records, and which one
    applies, is `standards.dmarc`.)"""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


class TlsMode(StrEnum):
    ACME = "acme"
    MANUAL = "manual"
    SELF_SIGNED = "self-signed"


class DnsCheckMode(StrEnum):
    WARN = "warn"
    STRICT = "strict"
    OFF = "off"


class OnOff(StrEnum):
    ON = "on"
    OFF = "off"


class MtaStsMode(StrEnum):
    """RFC 8461 §5 policy modes."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
# Google's authoritative servers answer this TXT question with the asker's own address.
DEFAULT_ADDRESS_DISCOVERY = "o-o.myaddr.l.google.com@ns1.google.com"
# Spamhaus ZEN (SBL, CSS, XBL, PBL: 127.0.0.2-11; 127.255.255.x means "query refused", never a
# listing) refuses alone; DNSWL's allowlist (127.0.x.0-3 by trust) outweighs some of it.
# Spamhaus's free Data Query Service answers any resolver, for a key (SPAMHAUS_DQS_KEY).
SPAMHAUS_DQS_ZONES = {"zen.spamhaus.org": "zen.dq.spamhaus.net",
                      "dbl.spamhaus.org": "dbl.dq.spamhaus.net"}
DEFAULT_DNSBL = "zen.spamhaus.org=127.0.0.[2..11]*3, list.dnswl.org=127.0.[0..255].[0..3]*-2"


# Directory host -> the issuer domain the CA documents for CAA.
KNOWN_ISSUERS = {
    "acme-v02.api.letsencrypt.org": "letsencrypt.org",
    "acme-staging-v02.api.letsencrypt.org": "letsencrypt.org",
    "acme.zerossl.com": "sectigo.com",  # ZeroSSL issues from Sectigo's CA
    "api.buypass.com": "buypass.com",
    "api.test4.buypass.no": "buypass.com",
    "dv.acme-v02.api.pki.goog": "pki.goog",
    "dv.acme-v02.test-api.pki.goog": "pki.goog",
    "acme.ssl.com": "ssl.com",
}


def issuer_for_directory(directory_url: str) -> str | None:
    """The CAA issuer domain of a known CA's directory; None for a CA we don't know."""
    return KNOWN_ISSUERS.get((urlsplit(directory_url).hostname or "").lower())


# --- the table ------------------------------------------------------------------------------------


Derive = Callable[[Mapping[str, Any]], Any]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: how to read it, its default, and how to document it.

    An unset variable takes `default` (text, parsed like user input) or, when that is None,
    `derive(values)`: a value computed from the other settings' values. With neither, the field
    is None (and a `required` variable is a problem instead). `secret` values never appear in a
    message.
    """

    name: str
    field: str  # attribute of Settings it fills
    parse: Callable[[str], Any]
    default: str | None
    default_doc: str  # the default as shown to users
    doc: str
    example: str
    required: bool = False
    secret: bool = False
    derive: Derive | None = None


def _mail_dot_primary(values: Mapping[str, Any]) -> str:
    return f"mail.{values['domains'][0]}"


def _none_listed(_values: Mapping[str, Any]) -> tuple[Any, ...]:
    return ()


def _reports_at_primary(local_part: str) -> Derive:
    """A system address of our own for reports at the primary domain: the server reads what
    arrives there (`inbound.reports`), so nobody's mailbox fills with XML."""
    def derive(values: Mapping[str, Any]) -> tuple[str, ...]:
        return (f"mailto:{local_part}@{values['domains'][0]}",)
    return derive


def _postmaster_address(values: Mapping[str, Any]) -> str:
    return f"postmaster@{values['domains'][0]}"


# CAA_ISSUER's value when ACME_DIRECTORY is a CA not in KNOWN_ISSUERS (no dot: never a domain).
CAA_UNKNOWN = "unknown"


def _caa_issuer_of_directory(values: Mapping[str, Any]) -> str:
    return issuer_for_directory(values["acme_directory"]) or CAA_UNKNOWN


TABLE: tuple[Setting, ...] = (
    Setting(
        "MAIL_DOMAINS", "domains", parse_domain_list, None, "required",
        "Comma-separated mail domains; the first is the primary. Internationalised names are "
        "accepted and converted to their ASCII form.",
        "example.com,example.org", required=True,
    ),
    Setting(
        "MAIL_HOSTNAME", "hostname", parse_domain_name, None, "`mail.<primary>`",
        "The server's fully-qualified name: MX target, certificate name, HELO name, PTR target.",
        "mail.example.com", derive=_mail_dot_primary,
    ),
    Setting(
        "PUBLIC_IPV4", "public_ipv4", parse_public_ipv4, None, "unset",
        "The server's public IPv4 address: the A record, its PTR and their checks.",
        "203.0.113.25",
    ),
    Setting(
        "PUBLIC_IPV6", "public_ipv6", parse_public_ipv6, None, "unset",
        "The server's public IPv6 address: the AAAA record, its PTR and their checks.",
        "2001:db8::25",
    ),
    Setting(
        "PUBLIC_ADDRESS_DISCOVERY", "address_discovery", parse_address_discovery,
        DEFAULT_ADDRESS_DISCOVERY, f"`{DEFAULT_ADDRESS_DISCOVERY}`",
        "How the addresses the internet sees are found when PUBLIC_IPV4 or PUBLIC_IPV6 is "
        "unset (and checked against them when set): NAME@SERVER[:PORT], a name whose "
        "authoritative SERVER answers with the asker's address (TXT, A or AAAA), asked "
        "directly over IPv4 and IPv6; or off.",
        "off",
    ),
    Setting(
        "DATA_DIR", "data_dir", parse_data_dir, "/data", "`/data`",
        "Where every piece of state lives (DKIM keys, certificates, mailboxes, the queue).",
        "/data",
    ),
    Setting(
        "DMARC_POLICY", "dmarc_policy", choice(DmarcDisposition), "reject", "`reject`",
        "What receivers should do with mail that fails DMARC: none, quarantine or reject.",
        "quarantine",
    ),
    # --- DMARC and TLS reports (inbound.reports) ---
    Setting(
        "DMARC_RUA", "dmarc_rua", off_or(parse_mailto_list), None,
        "`dmarc-reports@<primary>`",
        "Comma-separated addresses for DMARC aggregate reports (the DMARC records' rua tag). "
        "Reports to an address at one of our domains are read by the server (`mailboot "
        "reports`), never stored as mail (an alias of that address delivers them as mail "
        "instead); `off`: ask for no reports.",
        "dmarc@example.com", derive=_reports_at_primary("dmarc-reports"),
    ),
    Setting(
        "TLSRPT_RUA", "tlsrpt_rua", off_or(parse_tlsrpt_list), None, "`tls-reports@<primary>`",
        "Comma-separated addresses or https URIs for TLS reports (RFC 8460), read like "
        "DMARC_RUA's; `off`: no TLS-RPT record.",
        "postmaster@example.com", derive=_reports_at_primary("tls-reports"),
    ),
    Setting(
        "MTA_STS_MODE", "mta_sts_mode", choice(MtaStsMode), "enforce", "`enforce`",
        "MTA-STS policy mode (RFC 8461): enforce, testing or none.",
        "testing",
    ),
    Setting(
        "MTA_STS_MAX_AGE", "mta_sts_max_age", parse_max_age, "1d", "`1d`",
        "How long senders cache the MTA-STS policy; short while the setup is new, raise it "
        "(e.g. to 4w) once everything works. Seconds or a number with s, m, h, d or w.",
        "4w",
    ),
    Setting(
        "TLS_MODE", "tls_mode", choice(TlsMode), "acme", "`acme`",
        "Where the TLS certificate comes from: acme (issued and renewed automatically), manual "
        "(TLS_CERT_FILE and TLS_KEY_FILE, reloaded when they change) or self-signed.",
        "manual",
    ),
    Setting(
        "TLS_CERT_FILE", "tls_cert_file", parse_absolute_file, None, "unset",
        "With TLS_MODE=manual: the mounted certificate chain (PEM, leaf first).",
        "/certs/fullchain.pem",
    ),
    Setting(
        "TLS_KEY_FILE", "tls_key_file", parse_absolute_file, None, "unset",
        "With TLS_MODE=manual: the mounted private key (PEM) of that certificate.",
        "/certs/privkey.pem",
    ),
    Setting(
        "ACME_DIRECTORY", "acme_directory", parse_https_url, LETS_ENCRYPT, "Let's Encrypt",
        "The ACME CA's directory URL (default: Let's Encrypt production).",
        "https://acme.zerossl.com/v2/DV90",
    ),
    Setting(
        "ACME_EMAIL", "acme_email", parse_email_address, None, "unset",
        "Contact address given to the CA for the ACME account (expiry notices, policy news).",
        "hostmaster@example.com",
    ),
    Setting(
        "ACME_CA_BUNDLE", "acme_ca_bundle", parse_absolute_file, None, "system CAs",
        "A PEM file of CAs to trust for the ACME server itself (private CAs, tests).",
        "/certs/acme-ca.pem",
    ),
    Setting(
        "ACME_EAB_KID", "acme_eab_kid", parse_token, None, "unset",
        "External account binding key id, for CAs that require one (e.g. ZeroSSL).",
        "kid-1234",
    ),
    Setting(
        "ACME_EAB_HMAC_KEY", "acme_eab_hmac_key", parse_eab_hmac_key, None, "unset",
        "External account binding MAC key (base64url), given with ACME_EAB_KID.",
        "c2VjcmV0LW1hYy1rZXk", secret=True,
    ),
    Setting(
        "ACME_RETRY_INTERVAL", "acme_retry_interval", parse_duration, "5m", "`5m`",
        "First wait after a certificate attempt the CA refused or failed (1s to 1h); it "
        "doubles up to an hour. Names whose DNS records are not ready yet are not attempts: "
        "they are looked at every DNS_CHECK_INTERVAL.",
        "2m",
    ),
    Setting(
        "CAA_ISSUER", "caa_issuer", parse_caa_issuer, None,
        "the CA of `ACME_DIRECTORY` when known (Let's Encrypt, ZeroSSL, Buypass, Google, "
        "SSL.com)",
        "The CA's domain for the optional CAA record (RFC 8659) that lets only it, and only "
        "for our ACME account (RFC 8657), issue for MAIL_HOSTNAME; for another CA, the domain "
        "it documents. `off`: no CAA record.",
        "letsencrypt.org", derive=_caa_issuer_of_directory,
    ),
    Setting(
        "DNS_CHECK", "dns_check", choice(DnsCheckMode), "warn", "`warn`",
        "Check the published DNS records: warn (at boot and in the background until all are "
        "in place), strict (the boot fails while required records are missing) or off.",
        "strict",
    ),
    Setting(
        "DNS_CHECK_INTERVAL", "dns_check_interval", parse_duration, "1m", "`1m`",
        "How often, while records are missing, the background DNS check and the certificate's "
        "pre-checks look again (1s to 1h; longer with many domains); daily once everything "
        "is in place.",
        "30s",
    ),
    Setting(
        "DNS_RESOLVERS", "dns_resolvers", parse_resolvers, None, "unset",
        "DNS servers to ask instead of the domains' own name servers, for the checks mailboot "
        "makes: comma-separated IP addresses, each with an optional port (ip:port or "
        "[ipv6]:port, 53 unless given).",
        "192.0.2.53:53", derive=_none_listed,
    ),
    Setting(
        "DNS_FORWARDERS", "dns_forwarders", parse_resolvers, None,
        "unset (resolve from the root servers)",
        "DNS resolvers the container's own validating resolver forwards to, instead of asking "
        "the internet's servers itself: comma-separated IP addresses, each with an optional "
        "port. For networks that block outbound DNS. They must pass DNSSEC records along, and "
        "blocklists may refuse queries that come through a large public resolver.",
        "192.0.2.53,192.0.2.54:5353", derive=_none_listed,
    ),
    Setting(
        "DKIM_ALGORITHMS", "dkim_algorithms", parse_dkim_algorithms, "rsa", "`rsa`",
        "The DKIM keys every domain signs with: rsa, or rsa,ed25519 to add an Ed25519 key "
        "(RFC 8463); both sign every message, and receivers that don't know Ed25519 ignore its "
        "signature. An Ed25519 key added later signs once its record is published.",
        "rsa,ed25519",
    ),
    Setting(
        "DKIM_ROTATION_GRACE", "dkim_rotation_grace", parse_grace, "7d", "`7d`",
        "After `mailboot dkim rotate` switches to the new key, how long the old key's record "
        "stays published (mail signed with it is still being verified) before the old key is "
        "retired and the log says to remove its record.",
        "14d",
    ),
    Setting(
        "DNSBL", "dnsbl", parse_dnsbl, DEFAULT_DNSBL, f"`{DEFAULT_DNSBL}`",
        "DNS blocklists and allowlists postscreen asks about each client on port 25, in its "
        "own `zone=filter*weight` form (comma- or space-separated); a client whose weights add "
        "up to 3 or more is refused. `off`: ask none (the domain list DBL is then off too).",
        "zen.spamhaus.org=127.0.0.[2..11]*3,bl.spamcop.net=127.0.0.2*2",
    ),
    Setting(
        "SPAMHAUS_DQS_KEY", "spamhaus_dqs_key", parse_dqs_key, None, "unset",
        "Your key for Spamhaus's free Data Query Service: ZEN and DBL are then asked at "
        "<key>.zen.dq.spamhaus.net, which answers whatever resolver you use. Refused clients "
        "are told zen.spamhaus.org; Postfix's own log lines show the key.",
        "abcdefghijklmnopqrstuvwxyz",
    ),
    Setting(
        "DNSSEC_VALIDATION", "dnssec_validation", choice(OnOff), "on", "`on`",
        "The container's resolver validates DNSSEC (and so makes outbound DANE work). Turn it "
        "off only when DNS_FORWARDERS can't pass DNSSEC records along (some routers, test "
        "networks): every lookup would fail otherwise.",
        "off",
    ),
    Setting(
        "IMAP_MAX_CONNECTIONS", "imap_max_connections", parse_connection_limit, "4000", "`4000`",
        "How many IMAP connections may be open at once, over all mailboxes (each phone or "
        "laptop holds one to five). Dovecot's login and IMAP limits are sized from it. The "
        "default holds 1,000 people with a phone and a laptop each waiting in IDLE (2,000), "
        "twice over: for the extra connections clients open while they sync, and for the old "
        "ones a phone leaves behind when it changes networks until they time out.",
        "8000",
    ),
    Setting(
        "MAILBOX_QUOTA", "mailbox_quota", parse_size, None, "unset (no limit)",
        "How much mail each mailbox may hold (K, M, G, T: binary units; `none`: no limit). "
        "At 90 % its owner gets a warning; mail that would not fit is refused when the sending "
        "server names the recipient, so the sender is told. `mailboot account quota` sets one "
        "mailbox's own.",
        "5G",
    ),
    Setting(
        "RELAY_HOST", "relay_host", parse_relay_host, None, "unset (direct delivery by MX)",
        "Send outbound mail through this smarthost (host[:port] or [ipv6]:port, port 587 "
        "unless given; 465 means TLS from the start), for providers that block outbound port "
        "25. TLS is required on the way there.",
        "smtp.relay.example.net:587",
    ),
    Setting(
        "RELAY_USER", "relay_user", parse_relay_user, None, "unset",
        "User name for SMTP AUTH at RELAY_HOST.",
        "apikey",
    ),
    Setting(
        "RELAY_PASSWORD", "relay_password", parse_password, None, "unset",
        "Password for RELAY_USER. Prefer RELAY_PASSWORD_FILE, which keeps it out of the "
        "container's environment.",
        "correct-horse-battery", secret=True,
    ),
    Setting(
        "RELAY_PASSWORD_FILE", "relay_password_file", parse_absolute_file, None, "unset",
        "A mounted file (e.g. a Docker secret) holding the password for RELAY_USER.",
        "/run/secrets/relay_password",
    ),
    Setting(
        "RELAY_SPF_INCLUDE", "relay_spf_include", parse_spf_include, None, "unset",
        "The domain your relay provider asks you to include in SPF (the include: it documents); "
        "added to every domain's SPF record.",
        "_spf.relay.example.net",
    ),
    # --- login bans (logins.bans) ---
    Setting(
        "LOGIN_BAN_FAILURES", "login_ban_failures", parse_ban_failures, "10", "`10`",
        "Failed logins from one address (SMTP AUTH on 465/587, IMAP, ManageSieve together) "
        "within LOGIN_BAN_WINDOW that ban it for LOGIN_BAN_DURATION: every login and every "
        "connection to 465/587 from it is then refused. IPv6 counts per /64. Never banned: "
        "loopback, LOGIN_BAN_ALLOWLIST, and the Docker gateway when every client comes through "
        "it. `mailboot ban list` shows the bans, `mailboot ban remove` lifts one. `off`: no "
        "bans.",
        "5",
    ),
    Setting(
        "LOGIN_BAN_WINDOW", "login_ban_window", parse_ban_window, "10m", "`10m`",
        "How far back failed logins count toward a ban (seconds, or with s/m/h/d).",
        "1h",
    ),
    Setting(
        "LOGIN_BAN_DURATION", "login_ban_duration", parse_ban_duration, "1h", "`1h`",
        "How long a ban lasts (seconds, or with s/m/h/d; at most 30d); it ends by itself, "
        "and is kept across restarts.",
        "1d",
    ),
    Setting(
        "LOGIN_BAN_ALLOWLIST", "login_ban_allowlist", parse_networks, "none", "`none`",
        "Addresses and networks (CIDR, comma-separated) that are never banned: your office, a "
        "VPN, a webmail host.",
        "192.0.2.0/24,2001:db8::/48",
    ),
    Setting(
        "OUTBOUND_CHECK", "outbound_check", parse_outbound_check, "gmail.com", "`gmail.com`",
        "Where the worker checks, at start and daily, that this host can open port 25 to the "
        "outside (many providers block it): a domain whose MX hosts are tried, host:port, or "
        "off. With RELAY_HOST the relay is tried instead.",
        "mx.example.net:25",
    ),
    # --- our own reputation (mailboot.network.reputation) ---
    Setting(
        "REPUTATION_CHECK", "reputation_check", choice(OnOff), "on", "`on`",
        "At start, when the DNS records are READY, and daily, the worker asks Spamhaus ZEN about "
        "the public addresses (not with RELAY_HOST) and the DBL about every mail domain and "
        "MAIL_HOSTNAME (with SPAMHAUS_DQS_KEY through DQS); a listing is a warning and makes "
        "`mailboot status` exit 1. `off`: never ask.",
        "off",
    ),
    # --- alerts by mail (worker.alerts) ---
    Setting(
        "ALERT_TO", "alert_to", parse_alert_to, None, "`postmaster@<primary>`",
        "Where the worker mails an alert when something turns bad (a published DNS record "
        "missing or changed, the certificate not renewed, a blocklist listing, mail deferred "
        "for over an hour, DATA_DIR under 10 % free, a login held at its sending limit), a "
        "reminder daily while it lasts, and a note when it is good again. Make postmaster@ an "
        "alias to your own address (`mailboot alias add`). `off`: no alert mail.",
        "owner@example.net", derive=_postmaster_address,
    ),
    # --- Outbound MTA-STS (outbound.mtasts) ---
    Setting(
        "TLS_TRUST_CA_FILE", "tls_trust_ca_file", parse_ca_file, None,
        "unset (the system's CAs only)",
        "A mounted PEM file of CA certificates to trust beside the system's when mail goes "
        "out: for fetching receivers' MTA-STS policies and for verifying their MX hosts "
        "(Postfix's smtp_tls_CAfile). For private CAs and tests; readable by everyone.",
        "/certs/extra-ca.pem",
    ),
    # --- sending limits per login (outbound.limits) ---
    Setting(
        "SEND_LIMIT_MESSAGES_PER_DAY", "send_limit_messages_per_day", parse_daily_limit,
        "1000", "`1000`",
        "How many messages each login may send through 465/587 in a UTC day; then its mail is "
        "refused with a temporary error (451) until midnight UTC or `mailboot account release`. "
        "Limits the harm of a stolen password. `off`: no limit.",
        "300",
    ),
    Setting(
        "SEND_LIMIT_FIRST_TIME_RECIPIENTS_PER_DAY", "send_limit_first_time_recipients_per_day",
        parse_daily_limit, "200", "`200`",
        "How many recipients each login may write to in a UTC day that it never wrote to "
        "before; then mail to new recipients is refused with 451 (known ones still get it) "
        "until midnight UTC or `mailboot account release`. `off`: no limit.",
        "50",
    ),
    # --- metrics (diagnose.metrics) ---
    Setting(
        "METRICS_PORT", "metrics_port", parse_metrics_port, "off", "`off`",
        "A TCP port on which to serve Prometheus metrics (`/metrics`, plain HTTP, no login): "
        "Dovecot's own, Postfix's queue and delivery counts, the certificate's expiry, each "
        "DNS record's state, our blocklist state, the worker's last run. Listened on all the "
        "container's interfaces but published only if you publish it (`-p "
        "127.0.0.1:9166:9166`, or a private network for your Prometheus); a process answers "
        "only while scrapes come. `off`: no port, nothing running.",
        "9166",
    ),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in TABLE}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated settings, built only by `load_settings`.

    One field per `TABLE` entry, with no defaults of its own: an unset variable takes the table's
    default or derivation. `relay_password` also takes what RELAY_PASSWORD_FILE holds. The one
    field the table doesn't fill is `warnings`: what was accepted but deserves a word (an address
    that isn't public, a misspelt variable). Secrets are left out of repr(), so a Settings in a
    log line or a traceback doesn't carry them along.
    """

    domains: tuple[str, ...]
    hostname: str
    public_ipv4: ipaddress.IPv4Address | None
    public_ipv6: ipaddress.IPv6Address | None
    address_discovery: EchoServer | Literal["off"]
    data_dir: Path
    dmarc_policy: DmarcDisposition
    dmarc_rua: tuple[str, ...]
    tlsrpt_rua: tuple[str, ...]
    mta_sts_mode: MtaStsMode
    mta_sts_max_age: int
    tls_mode: TlsMode
    tls_cert_file: Path | None
    tls_key_file: Path | None
    acme_directory: str
    acme_email: str | None
    acme_ca_bundle: Path | None
    acme_eab_kid: str | None
    acme_eab_hmac_key: str | None = dataclasses.field(repr=False)  # secret
    acme_retry_interval: int
    caa_issuer: str  # a domain; "off": no record; CAA_UNKNOWN: derived for a CA we don't know
    dns_check: DnsCheckMode
    dns_check_interval: int
    dns_resolvers: tuple[tuple[str, int], ...]
    dns_forwarders: tuple[tuple[str, int], ...]
    dkim_algorithms: tuple[str, ...]
    dkim_rotation_grace: int
    dnsbl: tuple[DnsblSite, ...]
    spamhaus_dqs_key: str | None
    dnssec_validation: OnOff
    imap_max_connections: int
    mailbox_quota: int | None  # bytes; None: no limit
    relay_host: tuple[str, int] | None
    relay_user: str | None
    relay_password: str | None = dataclasses.field(repr=False)  # secret
    relay_password_file: Path | None
    relay_spf_include: str | None
    outbound_check: OutboundTarget | Literal["off"]
    reputation_check: OnOff
    alert_to: str | Literal["off"]
    tls_trust_ca_file: Path | None
    login_ban_failures: int | Literal["off"]
    login_ban_window: int  # seconds
    login_ban_duration: int  # seconds
    login_ban_allowlist: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    send_limit_messages_per_day: int | Literal["off"]
    send_limit_first_time_recipients_per_day: int | Literal["off"]
    metrics_port: int | Literal["off"]
    warnings: tuple[str, ...]

    @property
    def sending_limits(self) -> tuple[int | None, int | None]:
        """The day's messages and first-time recipients per login; None: no limit."""
        return (None if self.send_limit_messages_per_day == "off"
                else self.send_limit_messages_per_day,
                None if self.send_limit_first_time_recipients_per_day == "off"
                else self.send_limit_first_time_recipients_per_day)

    def blocklist_zone(self, zone: str) -> str:
        """Where to ask the blocklist `zone`: Spamhaus's through DQS with SPAMHAUS_DQS_KEY."""
        if self.spamhaus_dqs_key is None or zone not in SPAMHAUS_DQS_ZONES:
            return zone
        return f"{self.spamhaus_dqs_key}.{SPAMHAUS_DQS_ZONES[zone]}"

    @property
    def primary_domain(self) -> str:
        return self.domains[0]

    @property
    def public_addresses(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return tuple(a for a in (self.public_ipv4, self.public_ipv6) if a is not None)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read every setting from `environ`; raise ConfigError listing every problem at once."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in TABLE:
        raw = environ.get(setting.name, "")
        if not raw.strip():
            if setting.required:
                problems.append(_problem(setting, "is required but not set"))
                continue
            raw = setting.default or ""
        try:
            values[setting.field] = setting.parse(raw) if raw else None
        except SettingValueError as error:
            problems.append(_problem(setting, str(error)))
    problems += _combination_problems(environ, values)
    if problems:
        raise ConfigError(problems)
    for setting in TABLE:
        if values[setting.field] is None and setting.derive is not None:
            values[setting.field] = setting.derive(values)
    values["warnings"] = tuple(_warnings(environ, values))
    return Settings(**values)


def _combination_problems(environ: Mapping[str, str], values: dict[str, Any]) -> list[str]:
    """Settings that are fine alone but not together, and a relay password file that can't be
    used (reading it fills `relay_password`)."""
    problems = []
    if values.get("tls_mode") == "manual":
        problems += [_problem(SETTINGS_BY_NAME[name], "is required with TLS_MODE=manual")
                     for name in ("TLS_CERT_FILE", "TLS_KEY_FILE")
                     if not environ.get(name, "").strip()]
    eab = [name for name in ("ACME_EAB_KID", "ACME_EAB_HMAC_KEY") if environ.get(name, "").strip()]
    if len(eab) == 1:
        missing = "ACME_EAB_HMAC_KEY" if eab == ["ACME_EAB_KID"] else "ACME_EAB_KID"
        problems.append(_problem(SETTINGS_BY_NAME[missing],
                                 f"is required when {eab[0]} is set; the CA gives both"))
    return problems + _relay_problems(values) + _read_relay_password_file(values)


def _relay_problems(values: Mapping[str, Any]) -> list[str]:
    """The relay's credentials come together, with a relay to use them on."""
    # Judged on the values that parsed: a bad value has its own problem reported already.
    given = {setting.name for setting in TABLE
             if setting.name.startswith("RELAY_") and values.get(setting.field) is not None}
    problems = []
    if given - {"RELAY_HOST"} and "RELAY_HOST" not in given:
        problems.append(_problem(SETTINGS_BY_NAME["RELAY_HOST"],
                                 "is required when RELAY_USER or a relay password is set"))
    if {"RELAY_PASSWORD", "RELAY_PASSWORD_FILE"} <= given:
        problems.append("RELAY_PASSWORD_FILE: is set together with RELAY_PASSWORD; keep one "
                        "(the file is the safer)")
    has_password = bool(given & {"RELAY_PASSWORD", "RELAY_PASSWORD_FILE"})
    if has_password != ("RELAY_USER" in given):
        missing = "RELAY_USER" if has_password else "RELAY_PASSWORD_FILE or RELAY_PASSWORD"
        example = ("RELAY_USER=" + SETTINGS_BY_NAME["RELAY_USER"].example if has_password else
                   "RELAY_PASSWORD_FILE=" + SETTINGS_BY_NAME["RELAY_PASSWORD_FILE"].example)
        problems.append(f"{missing}: is required with "
                        f"{'a relay password' if has_password else 'RELAY_USER'}; SMTP AUTH "
                        f"needs both a user name and a password (example: {example})")
    return problems


def _read_relay_password_file(values: dict[str, Any]) -> list[str]:
    """Fill `relay_password` from RELAY_PASSWORD_FILE; the problems say why it can't be used.

    The file holds a secret: no message quotes any of it (not even the byte UTF-8 stumbled on).
    """
    path = values.get("relay_password_file")
    if path is None:
        return []
    try:
        password = parse_password(path.read_text(encoding="utf-8"))
    except OSError as error:
        return [f"RELAY_PASSWORD_FILE: {path} can't be read ({error.strerror}); mount the file "
                "into the container, readable by root"]
    except UnicodeDecodeError:
        return [f"RELAY_PASSWORD_FILE: {path} is not UTF-8 text; save the password in it as "
                "UTF-8, alone on one line"]
    except SettingValueError as error:
        return [f"RELAY_PASSWORD_FILE: {path} {error}; it must hold the password alone, on "
                "one line"]
    if not password:
        return [f"RELAY_PASSWORD_FILE: {path} is empty; put the password in it"]
    values["relay_password"] = password
    return []


def _problem(setting: Setting, reason: str) -> str:
    return f"{setting.name}: {reason} (example: {setting.name}={setting.example})"


def _warnings(environ: Mapping[str, str], values: Mapping[str, Any]) -> list[str]:
    found = [
        warning
        for name, field in (("PUBLIC_IPV4", "public_ipv4"), ("PUBLIC_IPV6", "public_ipv6"))
        if values[field] is not None and (warning := ip_warning(name, values[field]))
    ]
    if values["relay_host"] and not values["relay_spf_include"]:
        found.append("RELAY_HOST is set but RELAY_SPF_INCLUDE is not: receivers check SPF "
                     "against the relay's addresses, so SPF will fail (DKIM still carries "
                     "DMARC); set RELAY_SPF_INCLUDE to the include: your provider documents")
    return found + unknown_variable_warnings(environ)


def ip_warning(name: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Explain why a non-global address will not work on the internet, or None if it is global."""
    if address.is_global:
        return None
    return (
        f"{name}: {address} is not a public address, so other mail servers can't reach it; "
        "that is fine for a test setup, otherwise give the address the internet sees"
    )


def unknown_variable_warnings(environ: Mapping[str, str]) -> list[str]:
    """Warn about variables that look like ours but aren't (a typo silently keeps a default)."""
    prefixes = {setting.name.split("_")[0] + "_" for setting in TABLE}
    warnings = []
    for name in sorted(environ):
        if name in SETTINGS_BY_NAME or not name.startswith(tuple(prefixes)):
            continue
        close = difflib.get_close_matches(name, list(SETTINGS_BY_NAME), n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{name} is not a mailboot setting and is ignored{hint}")
    return warnings


def settings_markdown() -> str:
    """The settings table as Markdown, for the README and `mailboot settings`."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.default_doc} | {s.doc} |" for s in TABLE]
    return "\n".join(lines) + "\n"
