"""The value parsers of the settings table: text from the environment -> a checked value.

Each parser takes the raw text of one variable and returns the value `Settings` holds, or raises
`SettingValueError` saying what is wrong. The message leaves out the variable's name and an
example: `settings.load_settings` adds both, so the same parser serves every variable that uses
it (and the account commands, for addresses and domains). A parser of a secret never quotes it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import idna

from mailboot.base.sockets import SMTP_PORT

E = TypeVar("E", bound=StrEnum)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class SettingValueError(ValueError):
    """A value that a parser rejects; the message says what is wrong, without the variable name."""


# --- domain names and addresses -------------------------------------------------------------------

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


def parse_alert_to(text: str) -> str | Literal["off"]:
    """Where the worker mails its alerts: one address, or `off` (no alert mail)."""
    if text.strip().lower() == "off":
        return "off"
    return parse_email_address(text)


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
    """An https URI that fits in a TLSRPT record: a host name, and no `,` `;` `"` or space."""
    parts = urlsplit(text)
    if not parts.hostname or any(c.isspace() or c in ',;"' for c in text):
        raise SettingValueError(f"{text!r} is not a usable https URI")
    parse_domain_name(parts.hostname)
    return text


def off_or(parse: Callable[[str], tuple[str, ...]]) -> Callable[[str], tuple[str, ...]]:
    """`parse`, or `off` for none at all (a default the user turns off)."""

    def parse_or_off(text: str) -> tuple[str, ...]:
        return () if text.strip().lower() == "off" else parse(text)

    return parse_or_off


def _split_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise SettingValueError("has an empty entry (two commas in a row, or a trailing comma)")
    return items


# --- IP addresses and host:port -------------------------------------------------------------------


def parse_public_ipv4(text: str) -> ipaddress.IPv4Address:
    """Parse the server's public IPv4 address (a non-global one is left to a warning)."""
    address = _parse_server_ip(text)
    if not isinstance(address, ipaddress.IPv4Address):
        raise SettingValueError(f"{text!r} is an IPv6 address; put it in PUBLIC_IPV6")
    return address


def parse_public_ipv6(text: str) -> ipaddress.IPv6Address:
    """Parse the server's public IPv6 address (a non-global one is left to a warning)."""
    address = _parse_server_ip(text)
    if not isinstance(address, ipaddress.IPv6Address):
        raise SettingValueError(f"{text!r} is an IPv4 address; put it in PUBLIC_IPV4")
    if address.ipv4_mapped is not None:
        raise SettingValueError(f"{text!r} is an IPv4-mapped address; put the IPv4 in PUBLIC_IPV4")
    return address


def _parse_server_ip(text: str) -> IPAddress:
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


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated addresses or networks in CIDR form (192.0.2.0/24, 2001:db8::/48); `none`
    for none. Host bits set in a network are an error: 192.0.2.7/24 is likely a typo."""
    if text.strip().lower() == "none":
        return ()
    networks = []
    for item in _split_list(text):
        try:
            networks.append(ipaddress.ip_network(item.strip("[]")))
        except ValueError as error:
            raise SettingValueError(f"{item!r} is not an address or a network ({error})") from None
    return tuple(networks)


DNS_PORT = 53
# RFC 6409 §3.1: submission; 465 (TLS from the first byte, RFC 8314 §3.3) must be given.
RELAY_DEFAULT_PORT = 587


def parse_resolvers(text: str) -> tuple[tuple[str, int], ...]:
    """Comma-separated name servers, each an IP address with an optional port (53 unless given)."""
    return tuple(parse_host_port(item, default_port=DNS_PORT, names=False)
                 for item in _split_list(text))


def parse_relay_host(text: str) -> tuple[str, int]:
    """The smarthost: a domain name or an IP address, with an optional port (587 unless given)."""
    return parse_host_port(text, default_port=RELAY_DEFAULT_PORT, names=True)


def parse_host_port(text: str, *, default_port: int, names: bool) -> tuple[str, int]:
    """Parse `host[:port]`, `[host]:port`, `[host]` or a bare IPv6 address (which has no port).

    The host is an IP address or, with `names`, also a domain name; it comes back normalised
    (compressed IPv6, lower-case ASCII name). Brackets may hold a name too, as in Postfix's
    `relayhost = [smtp.example.net]:587`. Raises SettingValueError saying what is wrong.
    """
    item = text.strip()
    if "://" in item:
        raise SettingValueError(f"{item!r} looks like a URL; give only host[:port]")
    host, port_text = _split_host_port(item)
    port = default_port if port_text is None else _parse_port(item, port_text)
    return _parse_host(item, host, names=names), port


def _split_host_port(item: str) -> tuple[str, str | None]:
    """The host and the port text (None when there is no port) of a host:port item."""
    if item.startswith("["):
        host, closed, rest = item[1:].partition("]")
        if not closed:
            raise SettingValueError(f"{item!r} opens '[' without closing it; write an IPv6 "
                                    "address with a port as [address]:port")
        if rest and not rest.startswith(":"):
            raise SettingValueError(f"{item!r} has {rest!r} after ']', where only :port may "
                                    "follow")
        return host, rest[1:] if rest else None
    if item.count(":") > 1:
        # An IPv6 address is full of colons (RFC 4291 §2.2): a port needs the address in
        # brackets (RFC 3986 §3.2.2), so several colons without brackets are all the address.
        return item, None
    host, colon, port_text = item.partition(":")
    return host, port_text if colon else None


def _parse_port(item: str, port_text: str) -> int:
    if not port_text:
        raise SettingValueError(f"{item!r} ends in ':' with no port; give the port or drop "
                                "the ':'")
    port = _ascii_whole_number(port_text)
    if port is None:
        raise SettingValueError(f"{item!r} has a port that is not a number")
    if not 0 < port < 65536:
        raise SettingValueError(f"{item!r} has a port outside 1-65535")
    return port


def _parse_host(item: str, host: str, *, names: bool) -> str:
    if not host:
        raise SettingValueError(f"{item!r} has no host before the port")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if ":" in host:
        raise SettingValueError(f"{item!r} is neither an IPv6 address nor host:port; write an "
                                "IPv6 address with a port as [address]:port")
    if not names:
        raise SettingValueError(f"{item!r} is not an IP address (name servers are given by "
                                "address, with an optional :port)")
    try:
        return parse_domain_name(host)
    except SettingValueError as error:
        raise SettingValueError(f"{item!r} is not host[:port]: the host {error}") from None


# --- the network self-checks ---------------------------------------------------------------------

# RFC 5321 §4.5.4.1: servers deliver to each other on port 25.


@dataclass(frozen=True)
class OutboundTarget:
    """Where the outbound port-25 check connects: the MX hosts of `host` (`by_mx`), or `host`
    itself (a name or an IP address) on `port`."""

    host: str
    port: int = SMTP_PORT
    by_mx: bool = False

    def __str__(self) -> str:
        if self.by_mx:
            return f"the MX hosts of {self.host}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_outbound_check(text: str) -> OutboundTarget | Literal["off"]:
    """`off`; a domain, whose MX hosts are tried on port 25; or `host:port`, `[ipv6]:port` or
    an IP address, tried itself (port 25 unless given)."""
    value = text.strip()
    if value.lower() == "off":
        return "off"
    if not value:
        raise SettingValueError("is empty; give a domain, host:port, or off")
    host, port = parse_host_port(value, default_port=SMTP_PORT, names=True)
    has_port = value.startswith("[") or (value.count(":") == 1)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return OutboundTarget(host, port, by_mx=not has_port)
    return OutboundTarget(host, port)


@dataclass(frozen=True)
class EchoServer:
    """A DNS name whose authoritative server answers with the asker's own address, and that
    server (a name or an IP address, and a port)."""

    name: str
    server: str
    port: int = DNS_PORT

    def __str__(self) -> str:
        at = f"[{self.server}]" if ":" in self.server else self.server
        return f"{self.name}@{at}" + (f":{self.port}" if self.port != DNS_PORT else "")


def parse_address_discovery(text: str) -> EchoServer | Literal["off"]:
    """`off`, or `NAME@SERVER[:PORT]`: the name to ask and the authoritative server to ask it of
    directly (a recursive resolver would answer with its own address, not ours)."""
    value = text.strip()
    if value.lower() == "off":
        return "off"
    name, at, server = value.partition("@")
    if not at or not name.strip() or not server.strip():
        raise SettingValueError(f"{text!r} is not NAME@SERVER[:PORT] (the name that answers "
                                "with the asker's address, @ the server to ask), or off")
    try:
        ascii_name = parse_domain_name(name)
    except SettingValueError as error:
        raise SettingValueError(f"{text!r}: the name {error}") from None
    host, port = parse_host_port(server, default_port=DNS_PORT, names=True)
    return EchoServer(ascii_name, host, port)


# --- DNS blocklists ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DnsblSite:
    """One entry of postscreen_dnsbl_sites: a list's zone, which replies count, and their weight.

    The filter is postscreen's own (postconf(5) postscreen_dnsbl_sites): four dot-separated
    octets, each a number or a bracketed set such as [2..11] or [2;4;6]. Without a filter, any
    reply counts, including the 127.255.255.x codes some lists use for "query refused".
    """

    zone: str
    filter: str | None
    weight: int

    def postscreen_form(self, zone: str | None = None) -> str:
        filtered = f"{zone or self.zone}" + (f"={self.filter}" if self.filter else "")
        return filtered + (f"*{self.weight}" if self.weight != 1 else "")


_DNSBL_ENTRY = re.compile(
    r"^(?P<zone>[^=*\s]+)(?:=(?P<filter>[^*\s]+))?(?:\*(?P<weight>-?[0-9]+))?$")
_OCTET = r"(?:[0-9]{1,3}|\[[0-9]{1,3}(?:\.\.[0-9]{1,3}|(?:;[0-9]{1,3})*)\])"
_DNSBL_FILTER = re.compile(rf"^{_OCTET}(?:\.{_OCTET}){{3}}$")
# postscreen adds the weights of the lists that list a client; |weight| beyond this is a typo.
MAX_DNSBL_WEIGHT = 100


def parse_dnsbl(text: str) -> tuple[DnsblSite, ...]:
    """postscreen's `zone=filter*weight` entries, separated by commas or spaces; `off`: none."""
    if text.strip().lower() == "off":
        return ()
    entries = text.replace(",", " ").split()
    if not entries:
        raise SettingValueError("is empty; give the lists, or off")
    return tuple(_dnsbl_site(entry) for entry in entries)


def _dnsbl_site(entry: str) -> DnsblSite:
    match = _DNSBL_ENTRY.match(entry)
    if match is None:
        raise SettingValueError(f"{entry!r} is not zone[=filter][*weight]")
    try:
        zone = parse_spf_include(match.group("zone"))
    except SettingValueError:
        raise SettingValueError(f"{entry!r}: {match.group('zone')!r} is not a DNS zone") from None
    filter_text = match.group("filter")
    if filter_text is not None and not _DNSBL_FILTER.match(filter_text):
        raise SettingValueError(f"{entry!r}: the filter {filter_text!r} is not four octets such "
                                "as 127.0.0.[2..11]")
    weight = int(match.group("weight") or "1")
    if abs(weight) > MAX_DNSBL_WEIGHT:
        raise SettingValueError(f"{entry!r}: the weight is outside -{MAX_DNSBL_WEIGHT} to "
                                f"{MAX_DNSBL_WEIGHT}")
    return DnsblSite(zone, filter_text, weight)


_DQS_KEY = re.compile(r"^[a-z0-9]{10,64}$")


def parse_dqs_key(text: str) -> str:
    """A Spamhaus Data Query Service key: letters and digits (26 of them today). Never quoted."""
    value = text.strip().lower()
    if not _DQS_KEY.match(value):
        raise SettingValueError("is not a Spamhaus DQS key (10 to 64 letters and digits, as "
                                "shown in your Spamhaus account)")
    return value


def parse_caa_issuer(text: str) -> str:
    """A CA's CAA issuer domain (RFC 8659 §4.2, e.g. `letsencrypt.org`), or `off`."""
    if text.strip().lower() == "off":
        return "off"
    try:
        return parse_domain_name(text)
    except SettingValueError as error:
        raise SettingValueError(f"{error}; give the domain your CA documents for CAA records "
                                "(e.g. letsencrypt.org), or off") from None


# --- URLs, files, tokens and secrets --------------------------------------------------------------


def parse_https_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise SettingValueError(f"{text!r} is not an https:// URL")
    return text.strip()


def parse_absolute_file(text: str) -> Path:
    """A file mounted into the container, named by its absolute path there."""
    return _absolute_path(text, "give the absolute path inside the container (where the file "
                                "is mounted)")


def parse_ca_file(text: str) -> Path:
    """A mounted PEM file of CA certificates, readable by every user (the policy process and
    Postfix's smtp read it; CA certificates are public)."""
    path = parse_absolute_file(text)
    try:
        content = path.read_bytes()
    except OSError as error:
        raise SettingValueError(f"{path} can't be read ({error.strerror}); mount the PEM file "
                                "there, readable by everyone") from error
    if b"-----BEGIN CERTIFICATE-----" not in content:
        raise SettingValueError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); "
                                "give the CA certificates in PEM form")
    if not path.stat().st_mode & 0o004:
        raise SettingValueError(f"{path} is not readable by everyone; the mail daemons read it "
                                "as their own users (chmod 644: CA certificates are public)")
    return path


def parse_data_dir(text: str) -> Path:
    return _absolute_path(text, "give an absolute one")


def _absolute_path(text: str, hint: str) -> Path:
    path = Path(text.strip())
    if not path.is_absolute():
        raise SettingValueError(f"{text!r} is a relative path; {hint}")
    return path


def parse_eab_hmac_key(text: str) -> str:
    """RFC 8555 §7.3.4: the CA hands out the MAC key base64url-encoded. Secret: never quoted."""
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", value):
        raise SettingValueError("is not base64url text (letters, digits, - and _)")
    try:
        base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise SettingValueError("is not valid base64url") from None
    return value


def parse_token(text: str) -> str:
    """One word without white space (an ACME key id, a user name)."""
    value = text.strip()
    if not value or any(c.isspace() for c in value):
        raise SettingValueError("is empty or contains white space")
    return value


def parse_relay_user(text: str) -> str:
    """Postfix's password table splits `user:password` at the first colon (SASL_README)."""
    value = parse_token(text)
    if ":" in value:
        raise SettingValueError("contains a colon, which SMTP AUTH user names can't carry here")
    return value


def parse_password(text: str) -> str:
    """Kept verbatim: spaces may belong to it; only line breaks can't be stored. Never quoted."""
    value = text.rstrip("\r\n")
    if "\n" in value or "\r" in value:
        raise SettingValueError("contains a line break")
    return value


_SPF_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?$")


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


# --- numbers and durations ------------------------------------------------------------------------

_TOO_LARGE = sys.maxsize  # beyond every limit below


def _ascii_whole_number(text: str) -> int | None:
    """The number `text` writes in the digits 0-9, or None if it isn't one.

    str.isdigit() takes superscripts that int() then refuses, int() takes other scripts' digits,
    and int() refuses more than 4300 digits: only 0-9 count here, and a long number is just large.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    return int(significant or "0") if len(significant) <= 18 else _TOO_LARGE


# Below this, one household's phones and laptops already run out (Thunderbird alone opens up to
# 5 connections per account); above it, the file descriptors of one container.
MIN_IMAP_CONNECTIONS, MAX_IMAP_CONNECTIONS = 10, 100_000


def parse_connection_limit(text: str) -> int:
    """A whole number of concurrent connections, within what one container can hold."""
    count = _ascii_whole_number(text.strip().replace("_", ""))
    if count is None:
        raise SettingValueError(f"{text!r} is not a whole number")
    if not MIN_IMAP_CONNECTIONS <= count <= MAX_IMAP_CONNECTIONS:
        raise SettingValueError(f"{text!r} is outside {MIN_IMAP_CONNECTIONS} to "
                                f"{MAX_IMAP_CONNECTIONS}")
    return count


# A day's sending limit beyond this is no limit: say `off` instead.
MAX_DAILY_LIMIT = 10_000_000


def parse_daily_limit(text: str) -> int | Literal["off"]:
    """How many a day (a whole number from 1), or `off` (no limit)."""
    value = text.strip().replace("_", "")
    if value.lower() == "off":
        return "off"
    count = _ascii_whole_number(value)
    if count is None:
        raise SettingValueError(f"{text!r} is not a whole number; give one, or off")
    if not 1 <= count <= MAX_DAILY_LIMIT:
        raise SettingValueError(f"{text!r} is outside 1 to {MAX_DAILY_LIMIT:,}; for no limit, "
                                "say off")
    return count


# Ports the container serves or keeps on loopback for its own daemons: the metrics can't share
# them (the Dovecot stats listener, 8896, is where the metrics child fetches Dovecot's page).
PORTS_IN_USE = frozenset({25, 53, 80, 110, 143, 443, 465, 587, 993, 995, 4190, 8895, 8896})


def parse_metrics_port(text: str) -> int | Literal["off"]:
    """A TCP port for the metrics (1 to 65535, none of PORTS_IN_USE), or `off`."""
    value = text.strip()
    if value.lower() == "off":
        return "off"
    port = _ascii_whole_number(value)
    if port is None or not 1 <= port <= 65535:
        raise SettingValueError(f"{text!r} is not a TCP port (1 to 65535) nor off")
    if port in PORTS_IN_USE:
        raise SettingValueError(f"port {port} is taken by the mail services; choose another, "
                                "such as 9166")
    return port


_DURATION = re.compile(r"^([0-9]+)\s*([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The retry and check waits double up to an hour (renewal.MAX_RETRY); a first wait beyond it
# means nothing, and a huge one would overflow the date arithmetic of the worker.
LONGEST_FIRST_WAIT = 3600
# RFC 8461 §3.2: max_age is at most 31557600 seconds (about a year).
MTA_STS_MAX_AGE_LIMIT = 31_557_600


def _seconds(text: str) -> int:
    """Seconds, or a number with a unit (s, m, h, d, w)."""
    match = _DURATION.match(text.strip().lower())
    number = _ascii_whole_number(match.group(1)) if match else None
    if match is None or number is None:
        raise SettingValueError(f"{text!r} is not a duration (seconds, or a number with s/m/h/d/w)")
    return number * _UNIT_SECONDS[match.group(2)]


def parse_duration(text: str) -> int:
    """A first wait between attempts: 1 second to an hour, in seconds or with a unit."""
    seconds = _seconds(text)
    if not 1 <= seconds <= LONGEST_FIRST_WAIT:
        raise SettingValueError(f"{text!r} is outside 1 second to 1 hour (1h), the longest wait "
                                "between attempts")
    return seconds


def parse_max_age(text: str) -> int:
    """Seconds, or a number with a unit (s, m, h, d, w); 1 second to about a year."""
    seconds = _seconds(text)
    if not 1 <= seconds <= MTA_STS_MAX_AGE_LIMIT:
        raise SettingValueError(
            f"{text!r} is outside 1 second to {MTA_STS_MAX_AGE_LIMIT} seconds (RFC 8461 §3.2)"
        )
    return seconds


# A replaced DKIM key stays published this long at most (a year); at least a second (tests).
LONGEST_DKIM_GRACE = 366 * 86400


def parse_grace(text: str) -> int:
    """Seconds, or a number with a unit (s, m, h, d, w); 1 second to a year."""
    seconds = _seconds(text)
    if not 1 <= seconds <= LONGEST_DKIM_GRACE:
        raise SettingValueError(f"{text!r} is outside 1 second to 366 days (366d)")
    return seconds


# Login bans: at least 3 failures (one mistyped password on a phone retried by its mail app
# and the laptop's is 2), at most a thousand; the window and the ban within a day and 30 days.
FEWEST_BAN_FAILURES, MOST_BAN_FAILURES = 3, 1000
LONGEST_BAN_WINDOW, LONGEST_BAN = 86400, 30 * 86400


def parse_ban_failures(text: str) -> int | Literal["off"]:
    """A number of failed logins, or `off` (no bans)."""
    value = text.strip().lower()
    if value == "off":
        return "off"
    count = _ascii_whole_number(value)
    if count is None:
        raise SettingValueError(f"{text!r} is not a whole number (or off)")
    if not FEWEST_BAN_FAILURES <= count <= MOST_BAN_FAILURES:
        raise SettingValueError(f"{text!r} is outside {FEWEST_BAN_FAILURES} to "
                                f"{MOST_BAN_FAILURES}")
    return count


def parse_ban_window(text: str) -> int:
    """Seconds, or a number with a unit (s, m, h, d, w); 1 second to a day."""
    seconds = _seconds(text)
    if not 1 <= seconds <= LONGEST_BAN_WINDOW:
        raise SettingValueError(f"{text!r} is outside 1 second to a day (1d)")
    return seconds


def parse_ban_duration(text: str) -> int:
    """Seconds, or a number with a unit (s, m, h, d, w); 1 second to 30 days."""
    seconds = _seconds(text)
    if not 1 <= seconds <= LONGEST_BAN:
        raise SettingValueError(f"{text!r} is outside 1 second to 30 days (30d)")
    return seconds


def parse_dkim_algorithms(text: str) -> tuple[str, ...]:
    """`rsa` or `rsa,ed25519` (RFC 8463 §4: Ed25519 only beside RSA, which every receiver
    verifies; those that don't know Ed25519 ignore its signature)."""
    names = [name.lower() for name in _split_list(text)]
    unknown = [name for name in names if name not in ("rsa", "ed25519")]
    if unknown:
        raise SettingValueError(f"{unknown[0]!r} is not a DKIM algorithm (rsa, ed25519)")
    if "rsa" not in names:
        raise SettingValueError(f"{text!r} leaves out rsa: many receivers verify only RSA "
                                "signatures (RFC 8463 §4), so rsa always signs; use rsa,ed25519")
    return tuple(name for name in ("rsa", "ed25519") if name in names)


_SIZE = re.compile(r"^([0-9]+)\s*([kmgt]?)i?b?$")
_UNIT_BYTES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int | None:
    """A storage size in bytes, or a number with K, M, G or T (binary: 5G is 5 GiB);
    `none` for no limit (None)."""
    value = text.strip().lower().replace("_", "")
    if value in ("none", "unlimited"):
        return None
    match = _SIZE.match(value)
    number = _ascii_whole_number(match.group(1)) if match else None
    if match is None or number is None or number == 0:
        raise SettingValueError(f"{text!r} is not a size (like 500M, 5G or 1T; none for no limit)")
    return number * _UNIT_BYTES[match.group(2)]


def choice(options: type[E]) -> Callable[[str], E]:
    """A parser for one of a StrEnum's values, any case."""

    def parse(text: str) -> E:
        value = text.strip().lower()
        try:
            return options(value)
        except ValueError:
            names = ", ".join(option.value for option in options)
            raise SettingValueError(f"{text!r} is not one of {names}") from None

    return parse
