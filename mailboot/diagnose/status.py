"""`mailboot status`: is everything in place? One look at each part, then the verdict.

Each part is read where the worker and the daemons keep it (DATA_DIR, the run directory) or
asked of its source (the DNS, Postfix's queue) through `Sources`, so tests can fake the network
and Postfix. A part that can't be read is `Unavailable`, with the reason, and counts as not in
place. `not_in_place` judges the whole: `mailboot status` exits 0 only when it finds nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from mailboot.acme import ari
from mailboot.base.errors import MailbootError
from mailboot.base.formats import human_time
from mailboot.base.paths import Paths
from mailboot.diagnose import problems
from mailboot.diagnose import queue as mail_queue
from mailboot.diagnose.problems import Problem
from mailboot.diagnose.queue import Queue
from mailboot.dkim import keys as dkim
from mailboot.dkim.keys import DomainKeys
from mailboot.dns.lookup import DnsLookup
from mailboot.inbound import reports
from mailboot.logins.bans import Ban, BanStore, current_bans
from mailboot.mailboxes import accounts
from mailboot.network import outbound as netcheck
from mailboot.network import reputation
from mailboot.outbound.limits import Held, Limits, held_logins, state_directory
from mailboot.records.build import Kind, Record, RecordGroup
from mailboot.records.doctor import Finding, Status
from mailboot.records.published import check_published, published_groups
from mailboot.settings.table import Settings, TlsMode
from mailboot.tls import certificates, dane, renewal

# Less than this share of its lifetime left: renewal (planned at a third) has failed so far.
NEAR_EXPIRY_SHARE = 0.1
# A message deferred longer than this is not a passing hiccup (Postfix retries within minutes).
DEFERRED_TOO_LONG = timedelta(hours=1)
MIN_FREE_SHARE = 0.05  # of the volume holding DATA_DIR
# Twice the longest the worker waits between two reports of a lasting problem (its retries
# and reminders are at most hourly): a problem that lasts never drops out between reports.
RECENT = timedelta(hours=2)
# Seconds for each of the DNS questions (is the zone signed? are the records published?): a
# record not answered by then is `unknown`.
DNS_BUDGET = 4.0
CLOSED = frozenset({netcheck.PortStatus.BLOCKED, netcheck.PortStatus.REFUSED,
                    netcheck.PortStatus.UNREACHABLE})

T = TypeVar("T")


@dataclass(frozen=True)
class Unavailable:
    """A part that could not be read, and why."""

    reason: str


@dataclass(frozen=True)
class CertificateState:
    source: str  # acme, manual, self-signed
    self_signed: bool
    issuer: str
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    renewal: datetime | None  # when the worker replaces it; None: not by a date
    renewal_plan: str  # in words: why then, or who replaces it


@dataclass(frozen=True)
class RecordState:
    """A record that is not (yet) as it should be."""

    name: str
    rtype: str
    status: str  # missing, wrong, unknown
    required: bool
    hint: str


@dataclass(frozen=True)
class ZoneDns:
    zone: str  # the zone, or the group's title for the hosting provider's records (PTR)
    records: int
    ok: int
    not_ok: tuple[RecordState, ...]

    @property
    def ready(self) -> bool:
        return not any(record.required for record in self.not_ok)


@dataclass(frozen=True)
class SigningKey:
    selector: str
    algorithm: str  # rsa, ed25519
    record: str  # the status of its DNS record: ok, missing, wrong, unknown


@dataclass(frozen=True)
class DkimState:
    domain: str
    signing: tuple[SigningKey, ...]  # empty: no key signs


@dataclass(frozen=True)
class Mailboxes:
    count: int
    total_bytes: int  # everything below DATA_DIR/mail


@dataclass(frozen=True)
class Disk:
    path: Path
    total_bytes: int
    free_bytes: int  # available to unprivileged users, as df shows

    @property
    def free_share(self) -> float:
        return self.free_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True)
class Outbound:
    """The worker's last outbound check (port 25, or the relay with RELAY_HOST)."""

    status: str  # netcheck.PortStatus
    target: str
    detail: str
    via_relay: str | None
    checked: datetime | None  # None: the state file doesn't say (or not readably)


@dataclass(frozen=True)
class Listing:
    """What one blocklist said about one of our addresses or domains, at the last check."""

    blocklist: str
    subject: str
    verdict: str  # reputation.Verdict: listed, clean, can't tell
    codes: tuple[str, ...]
    detail: str
    page: str  # the list's page about it: why, and how to ask for removal


@dataclass(frozen=True)
class Reputation:
    """The worker's last check of our own name (`network.reputation`)."""

    checked: datetime | None
    findings: tuple[Listing, ...]
    ipv6_address: str | None  # None: no IPv6 sending to decide (no PUBLIC_IPV6, or a relay)
    ipv6_sends: bool  # mail leaves over IPv6 too (its PTR is confirmed)
    ipv6_detail: str  # why not, when not

    @property
    def listed(self) -> tuple[Listing, ...]:
        return tuple(f for f in self.findings if f.verdict == reputation.Verdict.LISTED)


@dataclass(frozen=True)
class WorkerRun:
    """When the worker's last run finished, and when it asked to run next (its state file)."""

    ran: datetime
    next_run: datetime | None


# The supervisor runs the worker at least every 12 hours, and retries a failed run within an
# hour: a last run older than this means the runs fail.
WORKER_STALE = timedelta(hours=13)


def worker_run(paths: Paths) -> WorkerRun | None:
    """The worker's last finished run; None before the first (or when it can't be read)."""
    try:
        saved = json.loads(paths.worker_state.read_text())
        ran = datetime.fromtimestamp(float(saved["ran"]), UTC)
        asked = saved.get("next_run")
        next_run = None if asked is None else datetime.fromtimestamp(float(asked), UTC)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return None
    return WorkerRun(ran, next_run)


@dataclass(frozen=True)
class Sending:
    """The sending limits in force, the logins held by them now, and the counters' files that
    can't be read (they count from zero again at the login's next message)."""

    limits: Limits
    held: tuple[Held, ...]
    unreadable: tuple[str, ...]


def sending_state(settings: Settings, paths: Paths, now: datetime) -> Sending:
    current = Limits(*settings.sending_limits)
    held, unreadable = held_logins(state_directory(paths.policy_state), current, now)
    return Sending(current, tuple(held), tuple(unreadable))


@dataclass(frozen=True)
class StatusReport:
    checked: datetime
    hostname: str
    tls_mode: str
    certificate: CertificateState | None
    dns: tuple[ZoneDns, ...] | Unavailable
    dkim: tuple[DkimState, ...] | Unavailable
    queue: Queue | Unavailable
    mailboxes: Mailboxes | Unavailable
    disk: Disk | Unavailable
    outbound: Outbound | None  # None: not checked (yet, or OUTBOUND_CHECK=off)
    worker_problems: tuple[Problem, ...]
    worker: WorkerRun | None = None  # None: no run has finished yet
    reputation: Reputation | None = None  # None: not checked (yet, or nothing to check)
    # Addresses banned for failed logins now, soonest ending first; None: LOGIN_BAN_FAILURES=off.
    bans: Mapping[str, Ban] | Unavailable | None = None
    sending: Sending | Unavailable | None = None  # None: not looked at
    # The DMARC and TLS reports of the last REPORT_DAYS; None: not looked at.
    reports: reports.Overview | Unavailable | None = None

    @property
    def not_in_place(self) -> tuple[str, ...]:
        return judge(self)


DnsCheck = Callable[[Sequence[DomainKeys]],
                    tuple[Sequence[RecordGroup], Mapping[Record, Finding]]]


@dataclass(frozen=True)
class Sources:
    """What status asks beyond files: production ones in `production_sources`, fakes in tests."""

    keys: Callable[[], Sequence[DomainKeys]]
    check_dns: DnsCheck  # the record groups for these keys, and what the DNS says of each
    queue: Callable[[], Queue]
    disk: Callable[[Path], tuple[int, int]]  # (total, free) bytes of the volume holding a path


def production_sources(settings: Settings, paths: Paths, now: datetime) -> Sources:
    """The DKIM keys on disk, the DNS as `mailboot dns --check` asks it, Postfix's queue."""
    lookup = DnsLookup(settings.dns_resolvers)

    def check_dns(keys: Sequence[DomainKeys]) -> tuple[Sequence[RecordGroup],
                                                       Mapping[Record, Finding]]:
        tlsa = dane.TlsaSource(settings, paths, lookup, budget=DNS_BUDGET)()
        groups = published_groups(settings, paths, keys, now, tlsa)
        return groups, check_published(groups, settings, lookup, budget=DNS_BUDGET)

    return Sources(lambda: dkim.ensure_keys(paths, settings.domains, now,
                                            settings.dkim_algorithms),
                   check_dns, mail_queue.read_queue, disk_space)


def disk_space(path: Path) -> tuple[int, int]:
    """statvfs(3): total and available bytes (f_bavail: what non-root users may still use)."""
    found = os.statvfs(path)
    return found.f_blocks * found.f_frsize, found.f_bavail * found.f_frsize


def gather(settings: Settings, paths: Paths, now: datetime, sources: Sources) -> StatusReport:
    """Look at every part; never raises for a part that can't be read (it is Unavailable)."""
    dns, dkim = _dns_and_dkim(sources)
    return StatusReport(
        now, settings.hostname, str(settings.tls_mode), certificate_state(settings, paths),
        dns, dkim, _attempt(sources.queue), _attempt(lambda: mailboxes(paths)),
        _attempt(lambda: Disk(paths.data_dir, *sources.disk(paths.data_dir))),
        outbound_state(paths), problems.read_problems(paths.worker_problems), worker_run(paths),
        reputation_state(paths),
        None if settings.login_ban_failures == "off" else
        _attempt(lambda: current_bans(BanStore(paths.policy_state).read(), now)),
        _attempt(lambda: sending_state(settings, paths, now)),
        _attempt(lambda: reports_overview(settings, paths, now)))


# The reports' days `mailboot status` sums up (receivers send one report a day per domain).
REPORT_DAYS = 7


def reports_overview(settings: Settings, paths: Paths, now: datetime) -> reports.Overview:
    """The last REPORT_DAYS of reports; senders judged against our public addresses
    (configured, else found at the last boot). A sender called out is shown, never a problem
    of ours: forgers are turned away by our p=reject, and the owner decides whether it is a
    service of theirs that needs DKIM."""
    from mailboot.network.found import effective_settings

    addresses = {str(a) for a in effective_settings(settings, paths).public_addresses}
    summaries = reports.recent_summaries(reports.reports_directory(paths.policy_state),
                                         now.date(), REPORT_DAYS)
    return reports.overview(summaries, addresses, REPORT_DAYS)


def _dns_and_dkim(sources: Sources) -> tuple[tuple[ZoneDns, ...] | Unavailable,
                                              tuple[DkimState, ...] | Unavailable]:
    keys = _attempt(lambda: tuple(sources.keys()))
    if isinstance(keys, Unavailable):
        return keys, keys
    checked = _attempt(lambda: sources.check_dns(keys))
    if isinstance(checked, Unavailable):
        return checked, dkim_states(keys, {})
    groups, findings = checked
    return zone_states(groups, findings), dkim_states(keys, findings)


def _attempt(read: Callable[[], T]) -> T | Unavailable:
    try:
        return read()
    except (MailbootError, OSError, ValueError) as error:
        return Unavailable(str(error) or type(error).__name__)


def certificate_state(settings: Settings, paths: Paths) -> CertificateState | None:
    """The certificate naming MAIL_HOSTNAME and when (and why then) it is replaced."""
    live = certificates.read_live(paths)
    if live is None:
        return None
    plan = "replaced when TLS_CERT_FILE and TLS_KEY_FILE change"
    at: datetime | None = None
    if live.self_signed and settings.tls_mode is TlsMode.ACME:
        plan = "replaced by one from the CA as soon as the names are ready"
    elif live.self_signed and settings.tls_mode is TlsMode.SELF_SIGNED:
        plan = "a new self-signed one a month before expiry"
        at = live.not_after - certificates.RENEW_BEFORE
    elif live.source == "acme":
        memo = ari.read_memo(paths.renewal_info(0))
        suggested = memo.suggested if memo and memo.certificate == live.directory.name else None
        at = renewal.renew_at(live.not_before, live.not_after, suggested)
        plan = ("when a third of its lifetime remains" if suggested is None
                else "as the CA suggests (ARI, RFC 9773)" if at == suggested
                else "capped: the CA's suggestion reaches too close to expiry")
    return CertificateState(live.source, live.self_signed, live.issuer, live.names,
                            live.not_before, live.not_after, at, plan)


def zone_states(groups: Sequence[RecordGroup],
                findings: Mapping[Record, Finding]) -> tuple[ZoneDns, ...]:
    states = []
    for group in groups:
        not_ok = []
        for record in group.records:
            finding = findings.get(record)
            if finding is None:
                not_ok.append(RecordState(record.name, record.rtype, Status.UNKNOWN.value,
                                          record.required, "not checked"))
            elif finding.status is not Status.OK:
                not_ok.append(RecordState(record.name, record.rtype, finding.status.value,
                                          record.required, finding.hint))
        states.append(ZoneDns(group.zone or group.title, len(group.records),
                              len(group.records) - len(not_ok), tuple(not_ok)))
    return tuple(states)


def dkim_states(keys: Sequence[DomainKeys],
                findings: Mapping[Record, Finding]) -> tuple[DkimState, ...]:
    """Per domain, the keys that sign (the one place that asks the DKIM keys which)."""
    found = {record.name: finding.status.value for record, finding in findings.items()
             if record.kind is Kind.DKIM}
    return tuple(
        DkimState(domain_keys.domain, tuple(
            SigningKey(key.selector, key.algorithm,
                       found.get(key.record_name, Status.UNKNOWN.value))
            for key in domain_keys.signers))
        for domain_keys in keys)


def mailboxes(paths: Paths) -> Mailboxes:
    """How many mailboxes, and the bytes below DATA_DIR/mail (files that move while we walk,
    as Maildir's do, are skipped)."""
    total = 0
    for directory, _, files in os.walk(paths.mail_dir):
        for name in files:
            try:
                total += (Path(directory) / name).lstat().st_size
            except OSError:
                continue
    return Mailboxes(len(accounts.read_accounts(paths)), total)


def outbound_state(paths: Paths) -> Outbound | None:
    state = netcheck.read_state(paths.outbound_check_state)
    if state is None:
        return None
    relay = state.get("via_relay")
    return Outbound(str(state.get("status", "")), str(state.get("target", "")),
                    str(state.get("detail", "")), None if relay is None else str(relay),
                    _checked(state.get("checked")))


def reputation_state(paths: Paths) -> Reputation | None:
    """The worker's last check of our addresses and domains; entries it can't read are left
    out."""
    state = reputation.read_state(paths.reputation_state)
    if state is None:
        return None
    findings = []
    entries = state.get("findings")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        codes = entry.get("codes")
        findings.append(Listing(str(entry.get("blocklist", "")), str(entry.get("subject", "")),
                                str(entry.get("verdict", "")),
                                tuple(map(str, codes)) if isinstance(codes, list) else (),
                                str(entry.get("detail", "")), str(entry.get("page", ""))))
    ipv6 = state.get("ipv6")
    ipv6 = ipv6 if isinstance(ipv6, dict) else {}
    address = ipv6.get("address")
    return Reputation(_checked(state.get("checked")), tuple(findings),
                      None if address is None else str(address), ipv6.get("sends") is True,
                      str(ipv6.get("detail", "")))


def _checked(value: object) -> datetime | None:
    """The check's time as the worker wrote it (`Z`; versions before wrote `+00:00`)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return None


# --- the verdict ---------------------------------------------------------------------------------


def judge(report: StatusReport) -> tuple[str, ...]:
    """What is not in place, one line each (what, and what to do); empty when all is."""
    return (*_certificate_problems(report), *_dns_problems(report), *_queue_problems(report),
            *_storage_problems(report), *_outbound_problems(report.outbound),
            *_reputation_problems(report.reputation), *_worker_problems(report),
            *_sending_problems(report.sending))


def _certificate_problems(report: StatusReport) -> list[str]:
    certificate, now = report.certificate, report.checked
    if certificate is None:
        return ["certificate: none is served (the boot makes one: is the container running?)"]
    if certificate.self_signed:
        why = {"acme": "no certificate from the CA yet (see the DNS records and the worker's "
                       "problems)",
               "self-signed": "TLS_MODE=self-signed; mail clients can't verify it"}
        return ["certificate: self-signed, " + why.get(report.tls_mode, "as mounted")]
    if report.hostname not in certificate.names:
        return [f"certificate: does not name MAIL_HOSTNAME {report.hostname}"]
    if certificate.not_after <= now:
        return [f"certificate: expired at {human_time(certificate.not_after)}"]
    lifetime = certificate.not_after - certificate.not_before
    if certificate.not_after - now < lifetime * NEAR_EXPIRY_SHARE:
        return [f"certificate: expires at {human_time(certificate.not_after)}, and it should have "
                "been renewed by now (see the worker's problems)"]
    return []


def _dns_problems(report: StatusReport) -> list[str]:
    found: list[str] = []
    for part, states in (("dns", report.dns), ("dkim", report.dkim)):
        if isinstance(states, Unavailable):
            found.append(f"{part}: can't be read: {states.reason}")
    if isinstance(report.dns, tuple):
        for zone in report.dns:
            if not zone.ready:
                records = ", ".join(f"{r.name} {r.rtype} ({r.status})" for r in zone.not_ok
                                    if r.required)
                found.append(f"dns: {zone.zone}: required records not in place: {records}; "
                             "`mailboot dns --check` shows what to publish")
    if isinstance(report.dkim, tuple):
        found += [f"dkim: {state.domain} has no key that signs" for state in report.dkim
                  if not state.signing]
    return found


def _queue_problems(report: StatusReport) -> list[str]:
    queue = report.queue
    if isinstance(queue, Unavailable):
        return [f"queue: can't be read: {queue.reason}"]
    oldest = queue.oldest_deferred
    if oldest is not None and report.checked - oldest.arrival > DEFERRED_TOO_LONG:
        return [f"queue: a message for {oldest.recipient} has waited since "
                f"{human_time(oldest.arrival)}: {oldest.reason}"]
    return []


def _storage_problems(report: StatusReport) -> list[str]:
    found = []
    if isinstance(report.mailboxes, Unavailable):
        found.append(f"mailboxes: can't be read: {report.mailboxes.reason}")
    elif report.mailboxes.count == 0:
        found.append("mailboxes: none yet; add one with `mailboot account add`")
    if isinstance(report.disk, Unavailable):
        found.append(f"disk: can't be read: {report.disk.reason}")
    elif report.disk.free_share < MIN_FREE_SHARE:
        found.append(f"disk: only {report.disk.free_share:.1%} of {report.disk.path} is free "
                     f"(less than {MIN_FREE_SHARE:.0%}); mail stops when it is full")
    return found


def _outbound_problems(outbound: Outbound | None) -> list[str]:
    if outbound is None or outbound.status not in CLOSED:
        return []
    if outbound.via_relay is not None:
        return [f"outbound: the relay {outbound.via_relay} can't be reached ({outbound.detail}); "
                "outbound mail queues until it can"]
    return [f"outbound: port 25 to other mail servers is {outbound.status} here "
            f"({outbound.target}: {outbound.detail}); outbound mail queues and does not leave: "
            f"{netcheck.RELAY_HINT}"]


def _reputation_problems(found: Reputation | None) -> list[str]:
    """Each listing; "can't tell" is not one (the log and the details say why)."""
    if found is None:
        return []
    return [f"reputation: {listing.subject} is listed on {listing.blocklist} ({listing.detail}); "
            f"see {listing.page}" for listing in found.listed]


def _sending_problems(sending: Sending | Unavailable | None) -> list[str]:
    """A held login is worth a look: a stolen password is the usual reason."""
    if not isinstance(sending, Sending):
        return []
    return [f"limits: {held.login} is held: it reached its limit of {held.maximum} {held.limit} "
            f"today; if that wasn't its owner, change its password; `mailboot account release "
            f"{held.login}` lets it send again (else at {human_time(held.until)})"
            for held in sending.held]


def recent_problems(report: StatusReport) -> tuple[Problem, ...]:
    return tuple(p for p in report.worker_problems if report.checked - p.time < RECENT)


def _worker_problems(report: StatusReport) -> list[str]:
    found = []
    if report.worker is not None and report.checked - report.worker.ran > WORKER_STALE:
        found.append(f"worker: its last run finished at {human_time(report.worker.ran)}; the runs "
                     "since have failed (the log says why; mail is not affected)")
    recent = recent_problems(report)
    if not recent:
        return found
    hours = RECENT.total_seconds() / 3600
    return [*found, f"worker: {len(recent)} problem(s) logged in the last {hours:g} hours; the "
            f"latest: {recent[-1].message}"]
