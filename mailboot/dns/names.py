"""Which host names exist: the one place that says what names this server answers for.

The records, the certificate, DANE and the client-settings server all ask here, so a name added
(or a zone chosen) for one of them is added for all.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailboot.base.sockets import SMTP_PORT
from mailboot.settings.table import Settings


def hostname_zone(hostname: str, domains: Sequence[str]) -> str:
    """The zone that holds MAIL_HOSTNAME: the longest mail domain containing it, or its parent."""
    holders = [d for d in domains if hostname == d or hostname.endswith("." + d)]
    if holders:
        return max(holders, key=len)
    return hostname.split(".", 1)[1]


def client_hosts(domains: Sequence[str]) -> list[str]:
    """The names clients look for: autoconfig.<domain> (Thunderbird) and autodiscover.<domain>
    (Outlook) for each domain."""
    return [f"{prefix}.{domain}" for domain in domains for prefix in ("autoconfig", "autodiscover")]


def mta_sts_host(domain: str) -> str:
    """Where senders fetch a domain's MTA-STS policy (RFC 8461 §3.3)."""
    return f"mta-sts.{domain}"


def tlsa_name(hostname: str) -> str:
    """`_25._tcp.<MAIL_HOSTNAME>` (RFC 6698 §3, RFC 7672 §3)."""
    return f"_{SMTP_PORT}._tcp.{hostname}"


def tls_names(settings: Settings) -> list[str]:
    """The names our certificate covers: MAIL_HOSTNAME first, then the MTA-STS policy host of
    every domain (RFC 8461 §3.3), then the names mail clients fetch their settings from."""
    return [settings.hostname, *(mta_sts_host(domain) for domain in settings.domains),
            *client_hosts(settings.domains)]
