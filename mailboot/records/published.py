"""The record set this server publishes, built in one place, and checked where it is published.

Every reader of "the records" (the boot's announcement, `mailboot dns`, `mailboot status`, the
worker's DNS watch) asks here, so they can't drift apart: the same DKIM keys, the same names
that have a real certificate (their A/AAAA records become required), the same TLSA keys (only
where the zone is DNSSEC-signed) and the same CAA value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from mailboot.acme import caa
from mailboot.base.paths import Paths
from mailboot.dkim.keys import DomainKeys
from mailboot.dns.answer import Lookup
from mailboot.records import doctor
from mailboot.records.build import Record, RecordGroup, all_records, build_record_groups
from mailboot.settings.table import Settings
from mailboot.tls import certificates
from mailboot.tls.keys import TlsaKeys

log = logging.getLogger("mailboot.dns")


def published_groups(settings: Settings, paths: Paths, keys: Sequence[DomainKeys],
                     now: datetime, tlsa: TlsaKeys | None) -> tuple[RecordGroup, ...]:
    """Every record to publish, grouped by zone, as things stand at `now`.

    `tlsa` comes from a `dane.TlsaSource` the caller keeps (it remembers what it told)."""
    return build_record_groups(settings, keys,
                               certificates.names_with_real_certificates(paths, now), tlsa,
                               caa.value_for(settings, paths))


def check_published(groups: Sequence[RecordGroup], settings: Settings, lookup: Lookup,
                    budget: float | None = None) -> dict[Record, doctor.Finding]:
    """Look every record up where it is published (at the zone's own name servers); when no
    lookup could be answered, for one reason, that reason is logged once."""
    checked = doctor.check_records(all_records(groups), lookup,
                                   [str(a) for a in settings.public_addresses], budget=budget)
    failure = doctor.shared_failure(checked)
    if failure is not None:
        log.warning("dns: can't check the DNS records: %s", failure)
    return {finding.record: finding for finding in checked}
