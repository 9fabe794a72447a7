"""DANE for inbound mail (RFC 7672): the TLSA records of port 25, printed only where they work.

A TLSA record means something to senders only in a DNSSEC-signed zone (RFC 7672 §2.2): they
ignore it otherwise. So the records are printed when the zone that holds MAIL_HOSTNAME has a DS
record at its parent (the parent vouches for the zone's key, RFC 4035 §5), and otherwise the log
says why, once. The certificate's key is kept across renewals (`tls.tlskeys`), so the records
change only with a rollover.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mailboot.base.files import write_atomically
from mailboot.base.paths import Paths
from mailboot.dns.answer import Lookup
from mailboot.dns.names import hostname_zone
from mailboot.settings.table import Settings, TlsMode
from mailboot.tls import keys as tlskeys
from mailboot.tls.keys import TlsaKeys

log = logging.getLogger("mailboot.dns")

class Signing(StrEnum):
    SIGNED = "signed"
    UNSIGNED = "unsigned"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ZoneSigning:
    state: Signing
    why: str  # for UNSIGNED and UNKNOWN: in plain words


def zone_signing(zone: str, lookup: Lookup) -> ZoneSigning:
    """Whether `zone` is DNSSEC-signed: a DS record for it at its parent (RFC 4034 §5)."""
    answer = lookup(zone, "DS")
    if answer.error is not None:
        # The lookup's error is logged by the record check; said again here it would be noise.
        return ZoneSigning(Signing.UNKNOWN, f"whether {zone} is DNSSEC-signed is unknown: the "
                                            "question for its DS record got no answer")
    if answer.values:
        return ZoneSigning(Signing.SIGNED, "")
    return ZoneSigning(Signing.UNSIGNED, _unsigned_why(zone))


def _unsigned_why(zone: str) -> str:
    return (f"{zone} is not DNSSEC-signed (no DS at its parent); sign the zone at your DNS "
            "provider to let senders verify our certificate")


def remembered(paths: Paths, zone: str) -> ZoneSigning | None:
    """The last definite answer for `zone` (the worker and `mailboot dns` keep it), so a restart
    prints the TLSA records without waiting on name servers."""
    try:
        kept = json.loads(_memo(paths).read_text())
        if kept["zone"] == zone and kept["state"] in (Signing.SIGNED, Signing.UNSIGNED):
            state = Signing(kept["state"])
            return ZoneSigning(state, "" if state is Signing.SIGNED else _unsigned_why(zone))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def remember(paths: Paths, zone: str, signing: ZoneSigning) -> None:
    if signing.state is Signing.UNKNOWN or remembered(paths, zone) == signing:
        return
    try:  # a memo, not state: the worker asks again
        write_atomically(_memo(paths), json.dumps({"zone": zone, "state": signing.state})
                         .encode(), mode=0o644)
    except OSError as error:
        log.info("dns: can't keep whether %s is signed: %s", zone, error)


def _memo(paths: Paths) -> Path:
    return paths.tls_dir / "zone-signing.json"


def within(budget: float | None, zone: str, lookup: Lookup) -> ZoneSigning:
    """`zone_signing`, giving up after `budget` seconds (the boot must not wait)."""
    if budget is None:
        return zone_signing(zone, lookup)
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(zone_signing, zone, lookup)
    pool.shutdown(wait=False)
    try:
        return future.result(timeout=budget)
    except FutureTimeout:
        return ZoneSigning(Signing.UNKNOWN, f"whether {zone} is DNSSEC-signed is not known yet "
                                            "(no answer in time; the worker asks again)")


class TlsaSource:
    """The TLSA values to print for MAIL_HOSTNAME, or None where they would not work; logs why
    not once per reason. Real state (the reason last told), so a class."""

    def __init__(self, settings: Settings, paths: Paths, lookup: Lookup | None,
                 budget: float | None = None) -> None:
        self.settings, self.paths, self.lookup, self.budget = settings, paths, lookup, budget
        self.told: str | None = None

    def __call__(self) -> TlsaKeys | None:
        keys, why = self._decide()
        if why is not None and why != self.told:
            log.info("dns: no TLSA (DANE) records: %s", why)
        self.told = why
        return keys

    def _decide(self) -> tuple[TlsaKeys | None, str | None]:
        if self.settings.tls_mode is not TlsMode.ACME:
            return None, (f"TLS_MODE={self.settings.tls_mode}: mailboot keeps no certificate "
                          "key of its own to publish")
        if self.lookup is None:
            return None, ("the DNS is not asked (DNS_CHECK=off), so whether the zone is signed "
                          "is unknown")
        zone = hostname_zone(self.settings.hostname, self.settings.domains)
        # With a budget (the boot), what was learnt before is enough; without, ask again.
        signing = remembered(self.paths, zone) if self.budget is not None else None
        if signing is None:
            signing = within(self.budget, zone, self.lookup)
            remember(self.paths, zone, signing)
        if signing.state is not Signing.SIGNED:
            return None, signing.why
        return tlskeys.ensure_keys(self.paths), None
