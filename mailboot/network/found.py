"""The public addresses as the settings give them or the last boot found them: light enough
for the processes that only read (the HTTP child's records page, `status`), as it asks no DNS.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

from mailboot.base.paths import Paths
from mailboot.settings.table import Settings
from mailboot.settings.values import IPAddress

FAMILIES = (4, 6)


def address_in(text: str, family: int) -> IPAddress | None:
    """The address a TXT or address answer carries, if it is one a server can have."""
    try:
        address = ipaddress.ip_address(text.strip().strip('"'))
    except ValueError:
        return None  # Google adds "edns0-client-subnet ..." for some resolvers: not ours
    if address.version != family or address.is_unspecified or address.is_multicast \
            or address.is_loopback:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return None
    return address


def configured(settings: Settings, family: int) -> IPAddress | None:
    return settings.public_ipv4 if family == 4 else settings.public_ipv6


def read_found(paths: Paths) -> dict[int, dict[str, str]]:
    """The addresses kept by the last boot, by family: {"address", "how", "found"}."""
    try:
        kept = json.loads(paths.found_addresses.read_text())
    except (OSError, ValueError):
        return {}
    result = {}
    for family in FAMILIES:
        entry = kept.get(f"ipv{family}") if isinstance(kept, dict) else None
        if isinstance(entry, dict) and address_in(str(entry.get("address", "")), family):
            result[family] = {key: str(value) for key, value in entry.items()}
    return result


def effective_settings(settings: Settings, paths: Paths) -> Settings:
    """`settings` with the addresses the boot found where none is configured (a configured
    address always wins; with PUBLIC_ADDRESS_DISCOVERY=off nothing found is used)."""
    if settings.address_discovery == "off":
        return settings
    kept = read_found(paths)
    values: dict[str, Any] = {}
    for family, field in ((4, "public_ipv4"), (6, "public_ipv6")):
        if configured(settings, family) is None and family in kept:
            values[field] = ipaddress.ip_address(kept[family]["address"])
    return dataclasses.replace(settings, **values) if values else settings
