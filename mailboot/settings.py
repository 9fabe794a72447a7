"""Settings: one table of environment variables, parsed once into a frozen `Settings`.

Every variable is declared exactly once in `TABLE` (name, default, meaning, example, parser).
The README's settings table and `mailboot settings` are generated from it, so the documentation
can't drift from the code. Parsing reports every problem at once (`ConfigError`), each line naming
the variable, what is wrong with it and an example of a right value.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import idna

from mailboot.errors import ConfigError


class DmarcPolicy(StrEnum):
    """RFC 7489 §6.3 p=: what receivers do with mail failing DMARC."""

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


class MtaStsMode(StrEnum):
    """RFC 8461 §5 policy modes."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
# RFC 8461 §3.2: max_age is at most 31557600 seconds (about a year).
MTA_STS_MAX_AGE_LIMIT = 31_557_600


E = TypeVar("E", bound=StrEnum)


class SettingValueError(ValueError):
    """A value that a parser rejects; the message says what is wrong, without the variable name."""


# --- parsers: text -> value, raising SettingValueError -------------------------------------------

_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def parse_domain_name(text: str) -> str:
    """Return the ASCII (IDNA 2008 / UTS 46) lower-case form of a fully-qualified domain name.

    A trailing dot is accepted and dropped. Raises SettingValueError with the reason otherwise.
    """
    name = text.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise SettingValueError("is empty")
    _reject_non_names(text, name)
    if len(name) > 253:  # RFC 1035 §2.3.4: 255 octets on the wire
        raise SettingValueError(f"{text!r} is longer than 253 characters")
    try:
        ascii_name = idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as error:
        raise SettingValueError(f"{text!r} is not a valid domain name ({error})") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise SettingValueError(f"{text!r} is not a fully-qualified domain name")
    if len(ascii_name) > 253:  # RFC 1035 §2.3.4: 255 octets on the wire
        raise SettingValueError(f"{text!r} is longer than 253 characters")
    for label in labels:
        if not _LDH_LABEL.match(label):
            raise SettingValueError(
                f"{text!r} has an invalid label {label!r} (letters, digits and inner hyphens, "
                "1 to 63 characters)"
            )
    if labels[-1].isdigit():
        raise SettingValueError(f"{text!r} ends in a numeric label, so it is not a domain name")
    return ascii_name


def _reject_non_names(text: str, name: str) -> None:
    """Catch the usual mix-ups (an IP, a URL, an address) before IDNA gives a cryptic reason."""
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        raise SettingValueError(f"{text!r} is an IP address; a domain name belongs here")
    if "://" in name or "/" in name:
        raise SettingValueError(f"{text!r} looks like a URL; give only the domain name")
    if "@" in name:
        raise SettingValueError(f"{text!r} looks like an email address; give only the domain name")
    if any(character.isspace() for character in name):
        raise SettingValueError(f"{text!r} contains white space")
    if "*" in name:
        raise SettingValueError(f"{text!r} is a wildcard; give the exact domain name")


def parse_domain_list(text: str) -> tuple[str, ...]:
    """Parse a comma-separated list of domains; duplicates (also IDN vs. ASCII) are errors."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise SettingValueError("is empty")
    domains: list[str] = []
    problems: list[str] = []
    for item in items:
        if not item:
            problems.append("has an empty entry (two commas in a row, or a trailing comma)")
            continue
        try:
            domain = parse_domain_name(item)
        except SettingValueError as error:
            problems.append(str(error))
            continue
        if domain in domains:
            problems.append(f"lists {domain!r} twice")
        else:
            domains.append(domain)
    if problems:
        raise SettingValueError("; ".join(problems))
    return tuple(domains)


# RFC 5322 §3.2.3 atext, minus "!": DMARC uses "!" to attach a size limit to a URI (RFC 7489 §6.4).
_LOCAL_PART = re.compile(r"^[A-Za-z0-9#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9#$%&'*+/=?^_`{|}~-]+)*$")


def parse_email_address(text: str) -> str:
    """Return `local@ascii-domain` for a plain address; raises SettingValueError otherwise."""
    address = text.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise SettingValueError(f"{text!r} is not an email address")
    if not _LOCAL_PART.match(local) or len(local) > 64:  # RFC 5321 §4.5.3.1.1
        raise SettingValueError(f"{text!r} has a local part mailboot can't put in a DNS record")
    try:
        ascii_domain = parse_domain_name(domain)
    except SettingValueError as error:
        raise SettingValueError(f"{text!r}: the domain {error}") from None
    return f"{local}@{ascii_domain}"


def parse_mailto_list(text: str) -> tuple[str, ...]:
    """Parse comma-separated report addresses (`a@b.example` or `mailto:a@b.example`)."""
    uris = []
    for item in _split_list(text):
        address = item[len("mailto:") :] if item.lower().startswith("mailto:") else item
        uris.append("mailto:" + parse_email_address(address))
    return tuple(uris)


def parse_tlsrpt_list(text: str) -> tuple[str, ...]:
    """Parse TLS-RPT report destinations: addresses, `mailto:` or `https:` URIs (RFC 8460 §3)."""
    uris = []
    for item in _split_list(text):
        if item.lower().startswith("https:"):
            uris.append(_parse_https_uri(item))
        else:
            uris.extend(parse_mailto_list(item))
    return tuple(uris)


def _parse_https_uri(text: str) -> str:
    parts = urlsplit(text)
    if not parts.hostname or any(c.isspace() or c in ',;"' for c in text):
        raise SettingValueError(f"{text!r} is not a usable https URI")
    parse_domain_name(parts.hostname)
    return text


def _split_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise SettingValueError("has an empty entry (two commas in a row, or a trailing comma)")
    return items


def parse_public_ipv4(text: str) -> ipaddress.IPv4Address:
    """Parse the server's public IPv4 address; a non-global one is accepted with a warning."""
    address = _parse_ip(text)
    if not isinstance(address, ipaddress.IPv4Address):
        raise SettingValueError(f"{text!r} is an IPv6 address; put it in PUBLIC_IPV6")
    return address


def parse_public_ipv6(text: str) -> ipaddress.IPv6Address:
    """Parse the server's public IPv6 address; a non-global one is accepted with a warning."""
    address = _parse_ip(text)
    if not isinstance(address, ipaddress.IPv6Address):
        raise SettingValueError(f"{text!r} is an IPv4 address; put it in PUBLIC_IPV4")
    if address.ipv4_mapped is not None:
        raise SettingValueError(f"{text!r} is an IPv4-mapped address; put the IPv4 in PUBLIC_IPV4")
    return address


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = text.strip().strip("[]")
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        if "/" in raw:
            raise SettingValueError(f"{text!r} is a network; give the single address") from None
        raise SettingValueError(f"{text!r} is not an IP address") from None
    if address.is_unspecified or address.is_multicast:
        raise SettingValueError(f"{text!r} can't be a server's address")
    return address


def ip_warning(name: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Explain why a non-global address will not work on the internet, or None if it is global."""
    if address.is_global:
        return None
    return (
        f"{name}: {address} is not a public address, so other mail servers can't reach it; "
        "that is fine for a test setup, otherwise give the address the internet sees"
    )


def parse_https_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise SettingValueError(f"{text!r} is not an https:// URL")
    return text.strip()


def parse_absolute_file(text: str) -> Path:
    path = Path(text.strip())
    if not path.is_absolute():
        raise SettingValueError(f"{text!r} is a relative path; give the absolute path inside the "
                                "container (where the file is mounted)")
    return path


def parse_eab_hmac_key(text: str) -> str:
    """RFC 8555 §7.3.4: the CA hands out the MAC key base64url-encoded."""
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", value):
        raise SettingValueError("is not base64url text (letters, digits, - and _)")
    try:
        base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise SettingValueError("is not valid base64url") from None
    return value


def parse_token(text: str) -> str:
    value = text.strip()
    if not value or any(c.isspace() for c in value):
        raise SettingValueError("is empty or contains white space")
    return value


def parse_resolvers(text: str) -> tuple[tuple[str, int], ...]:
    """`ip[:port]` or `[ipv6]:port`, comma-separated."""
    resolvers = []
    for item in _split_list(text):
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 53
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            if not port_text.isdigit():
                raise SettingValueError(f"{item!r} has a port that is not a number")
            port = int(port_text)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise SettingValueError(f"{item!r} is not an IP address and optional port") from None
        if not 0 < port < 65536:
            raise SettingValueError(f"{item!r} has a port outside 1-65535")
        resolvers.append((host, port))
    return tuple(resolvers)


# Submission ports a relay may listen on; 465 speaks TLS from the first byte (RFC 8314).
RELAY_DEFAULT_PORT = 587


def parse_relay_host(text: str) -> tuple[str, int]:
    """`host[:port]` or `[ipv6]:port`; a name or an address, port 587 unless given."""
    item = text.strip()
    host, port_text = item, ""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise SettingValueError(f"{text!r} is not host[:port]")
        port_text = rest[1:]
    elif item.count(":") == 1:
        host, _, port_text = item.partition(":")
    if port_text and not port_text.isdigit():
        raise SettingValueError(f"{text!r} has a port that is not a number")
    port = int(port_text) if port_text else RELAY_DEFAULT_PORT
    if not 0 < port < 65536:
        raise SettingValueError(f"{text!r} has a port outside 1-65535")
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    try:
        return parse_domain_name(host), port
    except SettingValueError as error:
        raise SettingValueError(f"{text!r} is not host[:port] ({error})") from None


def parse_relay_user(text: str) -> str:
    """Postfix's password table splits `user:password` at the first colon (SASL_README)."""
    value = parse_token(text)
    if ":" in value:
        raise SettingValueError("contains a colon, which SMTP AUTH user names can't carry here")
    return value


def parse_password(text: str) -> str:
    """Kept verbatim: spaces may belong to it; only line breaks can't be stored."""
    value = text.rstrip("\r\n")
    if "\n" in value or "\r" in value:
        raise SettingValueError("contains a line break")
    return value


def parse_spf_include(text: str) -> str:
    """A domain for SPF's include: mechanism (RFC 7208 §5.2), as the relay provider documents."""
    value = text.strip().lower().removesuffix(".")
    value = value.removeprefix("include:")
    labels = value.split(".")
    # Not a host name: labels such as _spf are common here (RFC 7208 §7.1, RFC 8552).
    if len(labels) < 2 or not all(_SPF_LABEL.match(label) for label in labels):
        raise SettingValueError(f"{text!r} is not a valid domain name for include: (letters, "
                                "digits, hyphens and underscores, at least two labels)")
    if len(value) > 253:
        raise SettingValueError(f"{text!r} is longer than 253 characters")
    return value


_SPF_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?$")


def parse_duration(text: str) -> int:
    """Seconds, or a number with a unit (s, m, h, d, w); at least 1 second."""
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise SettingValueError(f"{text!r} is not a duration (seconds, or a number with s/m/h/d/w)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# Below this, one household's phones and laptops already run out (Thunderbird alone opens up to
# 5 connections per account); above it, the file descriptors of one container.
MIN_IMAP_CONNECTIONS, MAX_IMAP_CONNECTIONS = 10, 100_000


def parse_connection_limit(text: str) -> int:
    """A whole number of concurrent connections, within what one container can hold."""
    value = text.strip().replace("_", "")
    if not value.isdigit():
        raise SettingValueError(f"{text!r} is not a whole number")
    count = int(value)
    if not MIN_IMAP_CONNECTIONS <= count <= MAX_IMAP_CONNECTIONS:
        raise SettingValueError(f"{text!r} is outside {MIN_IMAP_CONNECTIONS} to "
                                f"{MAX_IMAP_CONNECTIONS}")
    return count


def parse_data_dir(text: str) -> Path:
    path = Path(text.strip())
    if not path.is_absolute():
        raise SettingValueError(f"{text!r} is a relative path; give an absolute one")
    return path


def _choice(options: type[E]) -> Callable[[str], E]:
    def parse(text: str) -> E:
        value = text.strip().lower()
        try:
            return options(value)
        except ValueError:
            names = ", ".join(option.value for option in options)
            raise SettingValueError(f"{text!r} is not one of {names}") from None

    return parse


_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_max_age(text: str) -> int:
    """Seconds, or a number with a unit (s, m, h, d, w); 1 second to about a year."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise SettingValueError(f"{text!r} is not a duration (seconds, or a number with s/m/h/d/w)")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 1 <= seconds <= MTA_STS_MAX_AGE_LIMIT:
        raise SettingValueError(
            f"{text!r} is outside 1 second to {MTA_STS_MAX_AGE_LIMIT} seconds (RFC 8461 §3.2)"
        )
    return seconds


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One environment variable: how to read it and how to document it."""

    name: str
    field: str  # attribute of Settings it fills
    parse: Callable[[str], Any]
    default: str | None  # raw text parsed like user input; None: unset unless derived
    default_doc: str  # the default as shown to users
    doc: str
    example: str
    required: bool = False
    secret: bool = False


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
        "mail.example.com",
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
        "DATA_DIR", "data_dir", parse_data_dir, "/data", "`/data`",
        "Where every piece of state lives (DKIM keys, certificates, mailboxes, the queue).",
        "/data",
    ),
    Setting(
        "DMARC_POLICY", "dmarc_policy", _choice(DmarcPolicy), "reject", "`reject`",
        "What receivers should do with mail that fails DMARC: none, quarantine or reject.",
        "quarantine",
    ),
    Setting(
        "DMARC_RUA", "dmarc_rua", parse_mailto_list, None, "unset",
        "Comma-separated addresses for DMARC aggregate reports (the record's rua tag).",
        "dmarc-reports@example.com",
    ),
    Setting(
        "TLSRPT_RUA", "tlsrpt_rua", parse_tlsrpt_list, None, "`postmaster@<primary>`",
        "Comma-separated addresses or https URIs for TLS reports (RFC 8460).",
        "tls-reports@example.com",
    ),
    Setting(
        "MTA_STS_MODE", "mta_sts_mode", _choice(MtaStsMode), "enforce", "`enforce`",
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
        "TLS_MODE", "tls_mode", _choice(TlsMode), "acme", "`acme`",
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
        "First wait after a failed certificate attempt; it doubles up to an hour.",
        "2m",
    ),
    Setting(
        "DNS_CHECK", "dns_check", _choice(DnsCheckMode), "warn", "`warn`",
        "Check the published DNS records: warn (at boot and in the background until all are "
        "in place), strict (the boot fails while required records are missing) or off.",
        "strict",
    ),
    Setting(
        "DNS_CHECK_INTERVAL", "dns_check_interval", parse_duration, "1m", "`1m`",
        "First wait between background DNS checks while records are missing; it doubles up to "
        "an hour, and the check runs daily once everything is in place.",
        "30s",
    ),
    Setting(
        "DNS_RESOLVERS", "dns_resolvers", parse_resolvers, None, "unset",
        "DNS servers (ip[:port], comma-separated) to ask instead of the domains' own name "
        "servers, for the checks mailboot makes.",
        "192.0.2.53:53",
    ),
    Setting(
        "IMAP_MAX_CONNECTIONS", "imap_max_connections", parse_connection_limit, "1000", "`1000`",
        "How many IMAP connections may be open at once, over all mailboxes (each phone or "
        "laptop holds one to five). Dovecot's login and IMAP limits are sized from it.",
        "2000",
    ),
    Setting(
        "RELAY_HOST", "relay_host", parse_relay_host, None, "unset (direct delivery by MX)",
        "Send outbound mail through this smarthost (host[:port], port 587 unless given; 465 "
        "means TLS from the start), for providers that block outbound port 25. TLS is required "
        "on the way there.",
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
)

SETTINGS_BY_NAME = {setting.name: setting for setting in TABLE}


@dataclass(frozen=True)
class Settings:
    """Validated settings; built only by `load_settings`, whose defaults come from `TABLE`."""

    domains: tuple[str, ...]
    hostname: str
    public_ipv4: ipaddress.IPv4Address | None
    public_ipv6: ipaddress.IPv6Address | None
    data_dir: Path
    dmarc_policy: DmarcPolicy
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
    acme_eab_hmac_key: str | None
    acme_retry_interval: int
    dns_check: DnsCheckMode
    dns_check_interval: int
    dns_resolvers: tuple[tuple[str, int], ...]
    imap_max_connections: int
    relay_host: tuple[str, int] | None
    relay_user: str | None
    relay_password: str | None
    relay_password_file: Path | None
    relay_spf_include: str | None
    warnings: tuple[str, ...]

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
    _derive_defaults(values)
    values["warnings"] = tuple(_warnings(environ, values))
    return Settings(**values)


def _combination_problems(environ: Mapping[str, str], values: dict[str, Any]) -> list[str]:
    """Settings that are fine alone but not together."""
    problems = []
    if values.get("tls_mode") == "manual":
        problems += [f"{name}: is required with TLS_MODE=manual (example: {name}="
                     f"{SETTINGS_BY_NAME[name].example})"
                     for name in ("TLS_CERT_FILE", "TLS_KEY_FILE")
                     if not environ.get(name, "").strip()]
    eab = [name for name in ("ACME_EAB_KID", "ACME_EAB_HMAC_KEY") if environ.get(name, "").strip()]
    if len(eab) == 1:
        missing = "ACME_EAB_HMAC_KEY" if eab == ["ACME_EAB_KID"] else "ACME_EAB_KID"
        problems.append(f"{missing}: is required when {eab[0]} is set; the CA gives both "
                        f"(example: {missing}={SETTINGS_BY_NAME[missing].example})")
    return problems + _relay_problems(values)


def _relay_problems(values: dict[str, Any]) -> list[str]:
    """The relay's credentials come together, with a relay to use them on, and are readable."""
    # Judged on the values that parsed: a bad value has its own problem reported already.
    given = {setting.name for setting in TABLE
             if setting.name.startswith("RELAY_") and values.get(setting.field) is not None}
    problems = []
    if given - {"RELAY_HOST"} and "RELAY_HOST" not in given:
        problems.append("RELAY_HOST: is required when RELAY_USER or a relay password is set "
                        f"(example: RELAY_HOST={SETTINGS_BY_NAME['RELAY_HOST'].example})")
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
    path = values.get("relay_password_file")
    if path is not None and "RELAY_PASSWORD_FILE" in given:
        try:
            values["relay_password"] = parse_password(path.read_text(encoding="utf-8"))
        except OSError as error:
            problems.append(f"RELAY_PASSWORD_FILE: {path} can't be read ({error.strerror}); "
                            "mount the file into the container, readable by root")
        except (SettingValueError, UnicodeDecodeError) as error:
            problems.append(f"RELAY_PASSWORD_FILE: {path} {error}; it must hold the password "
                            "alone, on one line")
        else:
            if not values["relay_password"]:
                problems.append(f"RELAY_PASSWORD_FILE: {path} is empty; put the password in it")
    return problems


def _problem(setting: Setting, reason: str) -> str:
    return f"{setting.name}: {reason} (example: {setting.name}={setting.example})"


def _derive_defaults(values: dict[str, Any]) -> None:
    primary = values["domains"][0]
    if values["hostname"] is None:
        values["hostname"] = f"mail.{primary}"
    values["dmarc_rua"] = values["dmarc_rua"] or ()
    values["dns_resolvers"] = values["dns_resolvers"] or ()
    # RFC 2142 makes postmaster@ a mailbox every mail domain has, so reports always land somewhere.
    values["tlsrpt_rua"] = values["tlsrpt_rua"] or (f"mailto:postmaster@{primary}",)


def _warnings(environ: Mapping[str, str], values: dict[str, Any]) -> list[str]:
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
