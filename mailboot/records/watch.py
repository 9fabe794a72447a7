"""Background DNS checks: every poll interval while a required record is missing, daily once
all are in place; log only changes.

The one line users wait for, "every required DNS record is in place", is logged the moment it
becomes true, without a restart: the poll does not back off, so a record published hours after
the first start is seen within one interval. The lookups go to the zones' own name servers,
which cost nothing to ask (and the poll stretches with the number of records, so a thousand
domains are not asked about every minute). When an address, MX or CNAME record changes, the
certificate keeper is told at once (`on_change`). When no lookup gets an answer (DNS
unreachable), that is said in one line, once, and the records keep the statuses they had.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from mailboot.base.taskstate import JsonObject, Saved, StateUnreadable, read_text
from mailboot.dns.answer import Lookup
from mailboot.records import doctor
from mailboot.records.build import Kind, Record
from mailboot.records.doctor import Finding, Status

log = logging.getLogger("mailboot.dns")

COMPLETE_RECHECK = timedelta(days=1)
# At most this many records checked per second of the poll interval, on average: with many
# domains the poll stretches rather than hammering the name servers.
RECORDS_PER_SECOND = 10
READY_LINE = ("dns: READY - every required DNS record is in place; mail for {domains} can be "
              "delivered, signed and trusted")
# What the certificate keeper's pre-checks read: a change may make a name ready.
ADDRESSING_KINDS = frozenset({Kind.A, Kind.AAAA, Kind.MX, Kind.MTA_STS_HOST, Kind.CLIENT_HOST})


def _nothing() -> None:
    return None


class DnsWatcher:
    """Re-checks the records and reports what changed; real state (the last findings).

    `step` is a no-op before the time it last returned, so the worker may step it early.
    """

    def __init__(self, records: Callable[[], Sequence[Record]], lookup: Lookup,
                 ours: Sequence[str], domains: Sequence[str], poll: timedelta,
                 on_change: Callable[[], None] = _nothing,
                 on_ready: Callable[[], None] = _nothing) -> None:
        # A function: the record set changes (the _mta-sts hold ends with a real certificate).
        self.records, self.lookup, self.ours = records, lookup, list(ours)
        self.domains = ", ".join(domains)
        self.poll = poll
        self.on_change, self.on_ready = on_change, on_ready
        self.due: datetime | None = None
        # By value too: the current and the next key's TLSA records share a name and a kind.
        self.previous: dict[tuple[str, Kind, str | None], Status] = {}
        self.ready = False
        self.failing: str | None = None  # why no lookup got an answer last time
        # What this process's last check found, and when (not kept between runs): the records
        # page shows it, the alerts read it rather than ask again. `failing` says whether any
        # lookup got an answer.
        self.findings: tuple[Finding, ...] | None = None
        self.checked: datetime | None = None

    def state(self) -> JsonObject:
        return {"previous": [[name, kind.value, value, status.value] for (name, kind, value),
                             status in self.previous.items()],
                "ready": self.ready, "failing": self.failing}

    def restore(self, saved: Saved) -> None:
        """Raises StateUnreadable."""
        previous: dict[tuple[str, Kind, str | None], Status] = {}
        try:
            for name, kind, value, status in saved.get("previous", []):
                previous[(str(name), Kind(kind), read_text(value))] = Status(status)
        except (TypeError, ValueError) as error:
            raise StateUnreadable(f"dns findings: {error}") from None
        self.previous, self.ready = previous, saved.get("ready") is True
        self.failing = read_text(saved.get("failing"))

    def step(self, now: datetime) -> datetime:
        if self.due is not None and now < self.due:
            return self.due
        records = self.records()
        self.checked = now
        self.due = now + self._interval(records, self._check(records))
        return self.due

    def _interval(self, records: Sequence[Record], complete: bool) -> timedelta:
        if complete:
            return COMPLETE_RECHECK
        return max(self.poll, timedelta(seconds=len(records) / RECORDS_PER_SECOND))

    def _check(self, records: Sequence[Record]) -> bool:
        """Look every record up, say what changed; True when every required one is in place."""
        findings = doctor.check_records(records, self.lookup, self.ours)
        self.findings = tuple(findings)
        failure = doctor.shared_failure(findings)
        if failure is not None:
            # Nothing was learnt about any record: say why once, and keep what we knew.
            if failure != self.failing:
                log.warning("dns: can't check the DNS records: %s", failure)
            self.failing = failure
            return False
        if self.failing is not None:
            log.info("dns: DNS lookups get answers again")
            self.failing = None
        if self._log_changes(findings):
            self.on_change()
        complete = not any(f.required_and_not_ok for f in findings)
        if complete and not self.ready:
            log.info(READY_LINE.format(domains=self.domains))
        elif self.ready and not complete:
            log.warning("dns: a required record is no longer in place (see above)")
        was_ready, self.ready = self.ready, complete
        if complete and not was_ready:
            self.on_ready()
        return complete

    def _log_changes(self, findings: Sequence[Finding]) -> bool:
        """Log each record whose status changed; True when an addressing record did."""
        first = not self.previous
        addressing_changed = False
        for finding in findings:
            key = (finding.record.name, finding.record.kind, finding.record.value)
            before = self.previous.get(key)
            self.previous[key] = finding.status
            if finding.status is before or (first and finding.status is Status.OK):
                continue
            if not first and finding.record.kind in ADDRESSING_KINDS:
                addressing_changed = True
            what = f"{finding.record.name} {finding.record.rtype}"
            if finding.status is Status.OK:
                log.info("dns: %s is now in place", what)
            elif finding.record.required or not first:
                log.info("dns: %s is %s: %s", what, finding.status.value, finding.hint)
        return addressing_changed
