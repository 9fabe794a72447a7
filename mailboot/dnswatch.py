"""Background DNS checks: often at first, backing off, daily once complete; log only changes.

The one line users wait for, "every required DNS record is in place", is logged the moment it
becomes true, without a restart. When no lookup gets an answer (DNS unreachable), that is said
in one line, once, and the records keep the statuses they had.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from mailboot import dnscheck
from mailboot.dnsanswer import Lookup
from mailboot.dnscheck import Finding, Status
from mailboot.dnsrecords import Kind, Record
from mailboot.tls import renewal

log = logging.getLogger("mailboot.dns")

COMPLETE_RECHECK = timedelta(days=1)
READY_LINE = ("dns: READY - every required DNS record is in place; mail for {domains} can be "
              "delivered, signed and trusted")


class DnsWatcher:
    """Re-checks the records and reports what changed; real state (the last findings)."""

    def __init__(self, records: Callable[[], Sequence[Record]], lookup: Lookup,
                 ours: Sequence[str], domains: Sequence[str], first_interval: timedelta) -> None:
        # A function: the record set changes (the _mta-sts hold ends with a real certificate).
        self.records, self.lookup, self.ours = records, lookup, list(ours)
        self.domains = ", ".join(domains)
        self.first_interval = first_interval
        self.delay: timedelta | None = None
        self.previous: dict[tuple[str, Kind], Status] = {}
        self.ready = False
        self.failing: str | None = None  # why no lookup got an answer last time

    def step(self, now: datetime) -> datetime:
        findings = dnscheck.check_records(self.records(), self.lookup, self.ours)
        failure = dnscheck.shared_failure(findings)
        if failure is not None:
            # Nothing was learnt about any record: say why once, and keep what we knew.
            if failure != self.failing:
                log.warning("dns: can't check the DNS records: %s", failure)
            self.failing = failure
            self.delay = renewal.next_retry(self.delay, self.first_interval)
            return now + self.delay
        if self.failing is not None:
            log.info("dns: DNS lookups get answers again")
            self.failing = None
        self._log_changes(findings)
        complete = not any(f.required_and_not_ok for f in findings)
        if complete and not self.ready:
            log.info(READY_LINE.format(domains=self.domains))
        elif self.ready and not complete:
            log.warning("dns: a required record is no longer in place (see above)")
        self.ready = complete
        if complete:
            self.delay = None
            return now + COMPLETE_RECHECK
        self.delay = renewal.next_retry(self.delay, self.first_interval)
        return now + self.delay

    def _log_changes(self, findings: Sequence[Finding]) -> None:
        first = not self.previous
        for finding in findings:
            key = (finding.record.name, finding.record.kind)
            before = self.previous.get(key)
            self.previous[key] = finding.status
            if finding.status is before or (first and finding.status is Status.OK):
                continue
            what = f"{finding.record.name} {finding.record.rtype}"
            if finding.status is Status.OK:
                log.info("dns: %s is now in place", what)
            elif finding.record.required or not first:
                log.info("dns: %s is %s: %s", what, finding.status.value, finding.hint)
