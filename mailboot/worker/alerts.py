"""Alerts by mail: the owner is told when something turns bad, reminded daily while it lasts,
and told when it is good again, at ALERT_TO (unless `off`).

Each check (a worker task, every `CHECK_EVERY`, and on SIGUSR1) looks at what `mailboot status`
looks at: the published records where they are published, the certificate, our blocklist
state, the queue, the free space of DATA_DIR, the logins held at their sending limits. Each
condition (`CONDITIONS`: one entry per kind) turns that into keys, each bad (with what was found
and what to do), good, or unsure (no answer now: what we knew is kept). `decide` compares them
with the memory kept in DATA_DIR (which keys are bad since when, when each was last mailed) and
says what to mail: an alert when a key turns bad, a reminder when it is still bad a day after
the last mail, a recovery note when a key that was alerted about is good again. At most one
alert or reminder per key a day: a key that flaps is mailed about again a day after its last
alert. What one check has to say goes out as one message per kind (alerts, reminders,
recoveries): an MX record gone also breaks the SPF record that says `mx`, and that is one
mistake, told in one message. A published record counts only once it has been seen in place
(a new server's records are the boot's business, not an alert's).

The mail goes through Postfix's sendmail, so OpenDKIM (the non-SMTP milter) signs it like all
our mail, From postmaster@ of the primary domain (ours, so DKIM aligns, RFC 7489 §3.1). Mail to
one of our domains is delivered locally (virtual mailbox delivery): it never depends on port 25
or the queue it may be reporting on, and sendmail's maildrop takes it even while Postfix is
down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import textwrap
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from mailboot.base import programs
from mailboot.base.errors import MailbootError, StateError
from mailboot.base.files import write_atomically
from mailboot.base.formats import format_size, human_time
from mailboot.base.paths import Paths
from mailboot.base.taskstate import (
    JsonObject,
    Saved,
    StateUnreadable,
    read_object,
    read_text,
    read_texts,
    read_time,
    time_value,
)
from mailboot.diagnose import status
from mailboot.diagnose.queue import Queue, read_queue
from mailboot.dns.answer import Lookup
from mailboot.inbound.reports import Overview, called_out_text
from mailboot.mailboxes import accounts
from mailboot.records import doctor
from mailboot.records.build import Record
from mailboot.records.doctor import Finding, Status
from mailboot.records.watch import DnsWatcher
from mailboot.settings.table import Settings, TlsMode

log = logging.getLogger("mailboot.alerts")

# How often the conditions are looked at: a record gone or mail stuck is mailed about within
# this (plus the condition's own hour, for the queue); every look costs one short worker run.
CHECK_EVERY = timedelta(minutes=30)
# At most one alert or reminder per condition in this span.
REMIND_EVERY = timedelta(days=1)
# Certificate: fewer days left than this means renewal (at a third of the lifetime, or a month
# before for a self-signed one) has failed for weeks, or a mounted one is about to lapse.
FEW_DAYS_LEFT = timedelta(days=14)
# Certificate: renewal this long past its planned time is failing, not a passing CA hiccup.
RENEWAL_LATE = timedelta(days=1)
MIN_FREE_SHARE = 0.10  # of the volume holding DATA_DIR
# Seconds the records' lookups may take in a check of its own (a run without the DNS watch's);
# a record not answered by then is unsure.
DNS_BUDGET = 10.0
SENDMAIL = "/usr/sbin/sendmail"
WRAP = 72  # characters per line of the mail's text
MEMORY_VERSION = 1

T = TypeVar("T")


# --- what a condition sees ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A key that is bad: in words, for the mail."""

    title: str  # the problem, a sentence without its full stop: "the MX record of x is missing"
    fixed: str  # its end: "the MX record of x is in place again"
    found: str  # what exactly was found
    advice: str  # what to do


class Plain(StrEnum):
    GOOD = "good"
    UNSURE = "unsure"  # no answer now: what was known is kept


GOOD, UNSURE = Plain.GOOD, Plain.UNSURE
Seen = Bad | Plain


@dataclass(frozen=True)
class Facts:
    """What the conditions look at: the parts `mailboot status` reads, gathered once per check.
    A part that could not be read is None (its conditions are unsure)."""

    now: datetime
    hostname: str
    tls_mode: TlsMode
    certificate: status.CertificateState | None
    findings: Mapping[Record, Finding] | None  # None: not checked (DNS_CHECK=off, no answer)
    queue: Queue | None
    disk: status.Disk | None
    reputation: status.Reputation | None
    sending: status.Sending | None
    reports: Overview | None = None  # the DMARC reports of the last days


@dataclass(frozen=True)
class Condition:
    """One kind of trouble: `look` gives each of its keys' state, or None when it can't tell at
    all now (every key of the family keeps its state). A key it no longer gives is good."""

    family: str
    look: Callable[[Facts], Mapping[str, Seen] | None]
    # A key counts as bad only once it was seen good: a published record (a new server's
    # missing records are what the boot's printed records are for).
    after_good: bool = False


def _records(facts: Facts) -> dict[str, Seen] | None:
    if facts.findings is None:
        return None
    return {record_key(finding.record): record_seen(finding)
            for finding in facts.findings.values()}


def record_key(record: Record) -> str:
    """By value too: a DKIM rotation's new key and the current and next TLSA share a name."""
    digest = hashlib.sha256((record.value or "").encode()).hexdigest()[:12]
    return f"{record.name} {record.rtype} {digest}"


def record_seen(finding: Finding) -> Seen:
    record = finding.record
    what = f"the {record.rtype} record of {record.name}"
    fixed = f"{what} is in place again"
    if finding.status is Status.OK:
        return GOOD
    if finding.status is Status.MISSING:
        return Bad(f"{what} is missing", fixed, "its name servers answer that there is none",
                   finding.hint)
    if finding.status is Status.WRONG:
        served = "; ".join(finding.found) or "nothing usable"
        return Bad(f"{what} is wrong", fixed, f"its name servers serve: {served}",
                   finding.hint)
    return UNSURE


def _certificate(facts: Facts) -> dict[str, Seen] | None:
    certificate, now = facts.certificate, facts.now
    if certificate is None:
        return None
    if certificate.self_signed and facts.tls_mode is TlsMode.ACME:
        # The temporary certificate until the CA's first: the records are what is missing.
        return {"certificate": GOOD}
    what = f"the certificate of {facts.hostname}"
    fixed = f"{what} is renewed"
    valid = f"valid until {human_time(certificate.not_after)} ({certificate.issuer})"
    advice = {TlsMode.MANUAL: "mount a renewed certificate at TLS_CERT_FILE and TLS_KEY_FILE "
                              "(the worker installs it within minutes)",
              }.get(facts.tls_mode, "the log's lines starting with `tls:` and `mailboot status` "
                                    "say why it could not be renewed (often a DNS record or "
                                    "port 80); SIGUSR1 to the container tries again at once")
    if certificate.not_after <= now:
        return {"certificate": Bad(f"{what} has expired", fixed, valid, advice)}
    if certificate.not_after - now < FEW_DAYS_LEFT:
        days = (certificate.not_after - now).days
        return {"certificate": Bad(f"{what} expires in {days} days", fixed, valid, advice)}
    if certificate.renewal is not None and now - certificate.renewal > RENEWAL_LATE:
        return {"certificate": Bad(
            f"{what} has not been renewed for over a day", fixed,
            f"renewal was due at {human_time(certificate.renewal)} ({certificate.renewal_plan}); "
            f"the current one is {valid}", advice)}
    return {"certificate": GOOD}


def _blocklists(facts: Facts) -> dict[str, Seen] | None:
    if facts.reputation is None:
        return None
    seen: dict[str, Seen] = {}
    for listing in facts.reputation.findings:
        key = f"{listing.blocklist} {listing.subject}"
        if listing.verdict == "listed":
            seen[key] = Bad(f"{listing.subject} is listed on {listing.blocklist}",
                            f"{listing.subject} is no longer listed on {listing.blocklist}",
                            listing.detail, "many receivers refuse or junk our mail while it "
                            f"lasts; why, and how to ask for removal: {listing.page}")
        else:
            seen[key] = GOOD if listing.verdict == "clean" else UNSURE
    return seen


def _queue(facts: Facts) -> dict[str, Seen] | None:
    if facts.queue is None:
        return None
    oldest = facts.queue.oldest_deferred
    if oldest is None or facts.now - oldest.arrival <= status.DEFERRED_TOO_LONG:
        return {"deferred": GOOD}
    return {"deferred": Bad(
        "mail has waited in the queue for over an hour",
        "no mail waits in the queue for over an hour any more",
        f"{facts.queue.deferred} deferred message(s); the oldest, for {oldest.recipient}, since "
        f"{human_time(oldest.arrival)}: {oldest.reason}",
        "the reason is what the receiving side said, or why it could not be reached (a "
        "timeout on port 25: see OUTBOUND_CHECK and RELAY_HOST); `mailboot status` shows the "
        "queue, `postqueue -p` in the container every message; Postfix keeps trying for 5 days")}


def _disk(facts: Facts) -> dict[str, Seen] | None:
    disk = facts.disk
    if disk is None:
        return None
    if disk.free_share >= MIN_FREE_SHARE:
        return {"free": GOOD}
    return {"free": Bad(
        f"only {disk.free_share:.1%} of {disk.path} is free",
        f"{disk.path} has more than {MIN_FREE_SHARE:.0%} free again",
        f"{format_size(disk.free_bytes)} free of {format_size(disk.total_bytes)}",
        "mail is refused when it is full: give the volume more space, delete old mail, or set "
        "MAILBOX_QUOTA")}


def _held(facts: Facts) -> dict[str, Seen] | None:
    if facts.sending is None:
        return None
    return {held.login: Bad(
        f"{held.login} is held at its sending limit", f"{held.login} may send again",
        f"it reached its limit of {held.maximum} {held.limit} today; held until "
        f"{human_time(held.until)}",
        "a stolen password is the usual reason: if that wasn't its owner, change its "
        f"password; `mailboot account release {held.login}` lets it send again")
        for held in facts.sending.held}


def _forgers(facts: Facts) -> dict[str, Seen] | None:
    """Senders that DMARC reports show failing DMARC as one of our domains from an address that
    isn't ours, in the days `status` sums up (so one gone from the reports is good again)."""
    if facts.reports is None:
        return None
    return {f"{source.domain} {source.address}": Bad(
        f"{source.address} sent mail as {source.domain} that failed DMARC",
        f"no report of the last {facts.reports.days} days shows {source.address} failing "
        f"DMARC as {source.domain}",
        called_out_text(source),
        "if it is a service of yours (a newsletter, a shop, a CRM), have it sign with DKIM for "
        "your domain or send through this server; if not, it is forgery, which DMARC's "
        "p=reject has receivers turn away (`mailboot reports` shows the details)")
        for source in facts.reports.called_out}


# Each kind of trouble, one entry each (a new one: a field in Facts, a function, an entry).
CONDITIONS: tuple[Condition, ...] = (
    Condition("dns", _records, after_good=True),
    Condition("certificate", _certificate),
    Condition("blocklist", _blocklists),
    Condition("queue", _queue),
    Condition("disk", _disk),
    Condition("limits", _held),
    Condition("reports", _forgers),
)


def after_good(conditions: Sequence[Condition] = CONDITIONS) -> frozenset[str]:
    return frozenset(condition.family for condition in conditions if condition.after_good)


def observe(facts: Facts, conditions: Sequence[Condition] = CONDITIONS
            ) -> tuple[dict[str, Seen], frozenset[str]]:
    """Every key's state (`family:key`), and the families that can't tell at all now."""
    seen: dict[str, Seen] = {}
    unsure: set[str] = set()
    for condition in conditions:
        found = condition.look(facts)
        if found is None:
            unsure.add(condition.family)
        else:
            seen |= {f"{condition.family}:{key}": value for key, value in found.items()}
    return seen, frozenset(unsure)


# --- the decision (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Tracked:
    """One key's memory: bad since when (None: good now), when it was last mailed about (an
    alert or a reminder), and whether its bad spell was mailed (then its end is too)."""

    bad_since: datetime | None
    mailed: datetime | None
    told: bool
    title: str
    fixed: str


@dataclass(frozen=True)
class Memory:
    tracked: Mapping[str, Tracked] = field(default_factory=dict)
    seen_good: frozenset[str] = frozenset()  # keys seen good while they were looked at


class MailKind(StrEnum):
    ALERT = "alert"
    REMINDER = "reminder"
    RECOVERY = "recovery"


@dataclass(frozen=True)
class Mail:
    key: str
    kind: MailKind
    since: datetime  # when the bad spell began
    bad: Bad | None  # alerts and reminders: what is wrong now
    title: str  # the problem's sentence
    fixed: str  # its end's sentence

    @property
    def headline(self) -> str:
        return self.fixed if self.kind is MailKind.RECOVERY else self.title


@dataclass(frozen=True)
class Decision:
    memory: Memory  # as it stands once every mail is sent
    mails: tuple[Mail, ...]


def decide(memory: Memory, seen: Mapping[str, Seen], unsure: Set[str], now: datetime,
           after_good: Set[str] = frozenset()) -> Decision:
    """What to mail, and what to remember, for what the conditions see at `now`. A key the
    conditions no longer give is good, unless its family is `unsure`; a key of an `after_good`
    family is bad only once it has been seen good (only those are remembered good)."""
    tracked = dict(memory.tracked)
    seen_good = {key for key in memory.seen_good if key in seen or family(key) in unsure}
    mails: list[Mail] = []
    # In the conditions' order (the MX record before the SPF record it breaks), then the keys
    # no longer given.
    for key in [*seen, *(key for key in memory.tracked if key not in seen)]:
        state = seen.get(key, UNSURE if family(key) in unsure else GOOD)
        before = memory.tracked.get(key)
        if state is UNSURE:
            continue
        if isinstance(state, Bad):
            mail = _still_bad(key, state, before, family(key) in after_good
                              and key not in seen_good, now, tracked)
        else:
            if family(key) in after_good:
                seen_good.add(key)
            mail = _good(key, before, now, tracked)
        if mail is not None:
            mails.append(mail)
    return Decision(Memory(tracked, frozenset(seen_good)), tuple(mails))


def _still_bad(key: str, bad: Bad, before: Tracked | None, never_good: bool, now: datetime,
               tracked: dict[str, Tracked]) -> Mail | None:
    ongoing = before is not None and before.bad_since is not None
    if not ongoing and never_good:
        return None
    since = before.bad_since if before is not None and before.bad_since is not None else now
    mailed = before.mailed if before is not None else None
    told = ongoing and before is not None and before.told
    if mailed is not None and now - mailed < REMIND_EVERY:
        tracked[key] = Tracked(since, mailed, told, bad.title, bad.fixed)
        return None
    tracked[key] = Tracked(since, now, True, bad.title, bad.fixed)
    kind = MailKind.REMINDER if told else MailKind.ALERT
    return Mail(key, kind, since, bad, bad.title, bad.fixed)


def _good(key: str, before: Tracked | None, now: datetime,
          tracked: dict[str, Tracked]) -> Mail | None:
    if before is None:
        return None
    # The last mail is remembered for a day: a key that turns bad again within it waits.
    if before.mailed is not None and now - before.mailed < REMIND_EVERY:
        tracked[key] = Tracked(None, before.mailed, False, before.title, before.fixed)
    else:
        del tracked[key]
    if before.bad_since is None or not before.told:
        return None
    return Mail(key, MailKind.RECOVERY, before.bad_since, None, before.title, before.fixed)


def family(key: str) -> str:
    return key.partition(":")[0]


def unsent(decision: Decision, before: Memory, key: str) -> Memory:
    """The memory after a mail about `key` could not be sent: that key as it was (so the next
    check mails it again)."""
    tracked = dict(decision.memory.tracked)
    if key in before.tracked:
        tracked[key] = before.tracked[key]
    else:
        tracked.pop(key, None)
    return replace(decision.memory, tracked=tracked)


# --- the memory in DATA_DIR ----------------------------------------------------------------------


def memory_json(memory: Memory) -> str:
    return json.dumps({
        "version": MEMORY_VERSION,
        "tracked": {key: {"bad_since": time_value(t.bad_since), "mailed": time_value(t.mailed),
                          "told": t.told, "title": t.title, "fixed": t.fixed}
                    for key, t in memory.tracked.items()},
        "seen_good": sorted(memory.seen_good),
    }, indent=1, sort_keys=True) + "\n"


def read_memory(text: str) -> Memory:
    """Raises StateUnreadable."""
    try:
        parsed = json.loads(text)
    except ValueError as error:
        raise StateUnreadable(f"not JSON: {error}") from None
    saved = read_object(parsed)
    if (version := saved.get("version")) != MEMORY_VERSION:
        raise StateUnreadable(f"its version is {version!r}; this one reads {MEMORY_VERSION}")
    tracked = {}
    for key, entry in read_object(saved.get("tracked", {})).items():
        entry = read_object(entry)
        tracked[str(key)] = Tracked(read_time(entry.get("bad_since")),
                                    read_time(entry.get("mailed")), entry.get("told") is True,
                                    read_text(entry.get("title")) or "",
                                    read_text(entry.get("fixed")) or "")
    return Memory(tracked, frozenset(read_texts(saved.get("seen_good", []))))


def load_memory(path: Path) -> Memory:
    """What the last check left; empty the first time, or (said in the log) when it can't be
    read: then a problem still there is mailed about again, which is harmless."""
    try:
        return read_memory(path.read_text())
    except FileNotFoundError:
        return Memory()
    except (OSError, StateUnreadable) as error:
        log.warning("alerts: can't read %s (%s); starting afresh: a problem still there is "
                    "mailed about again", path, getattr(error, "strerror", None) or error)
        return Memory()


# --- the mail ----------------------------------------------------------------------------------


def sender_address(settings: Settings) -> str:
    """postmaster@ of the primary domain: a domain we sign for, so the signature aligns with
    the From domain (RFC 7489 §3.1.1), and an address that exists (RFC 2142)."""
    return f"postmaster@{settings.primary_domain}"


def batches(mails: Sequence[Mail]) -> list[tuple[Mail, ...]]:
    """The mails of one check as messages: one per kind (alerts, reminders, recoveries), in the
    order the conditions gave them. One mistake often shows in several records (an MX record
    gone also breaks an SPF record that says `mx`; a zone deleted takes every record along):
    its owner gets one message about it, not one per record."""
    return [grouped for kind in MailKind
            if (grouped := tuple(mail for mail in mails if mail.kind is kind))]


def subject(hostname: str, batch: Sequence[Mail]) -> str:
    """`[mailboot] mail.example.com: the MX record of example.com is missing`, with `(and 2
    more)` when the message tells of more."""
    first = batch[0]
    prefix = "still: " if first.kind is MailKind.REMINDER else ""
    more = f" (and {len(batch) - 1} more)" if len(batch) > 1 else ""
    return f"[mailboot] {hostname}: {prefix}{first.headline}{more}"


def body(hostname: str, batch: Sequence[Mail], now: datetime) -> str:
    """Plain text, wrapped (so it goes as 7bit, readable as it is)."""
    paragraphs: list[str] = []
    for mail in batch:
        if mail.bad is None:
            paragraphs += [_sentence(mail.fixed), _wrap(
                f"The problem: {mail.title}. It began at {human_time(mail.since)} and was "
                f"over at this check, {human_time(now)}.")]
            continue
        opening = _sentence(mail.title) if mail.kind is MailKind.ALERT else \
            f"Still: {mail.title}."
        paragraphs += [_wrap(opening), "\n".join(_field(name, value) for name, value in (
            ("Since:", human_time(mail.since)), ("Found:", mail.bad.found),
            ("What to do:", mail.bad.advice)))]
    every = int(CHECK_EVERY.total_seconds() // 60)
    footer = _wrap(f"mailboot on {hostname} looks at this every {every} minutes and mails once "
                   "when a problem begins, at most once a day while it lasts, and once when it "
                   "is over. To stop these mails, set ALERT_TO=off (or ALERT_TO to another "
                   "address) and restart the container.")
    return "\n\n".join(paragraphs) + f"\n\n-- \n{footer}\n"


def _wrap(text: str, indent: str = "") -> str:
    # Addresses, URLs and commands are not broken: a line may then run longer.
    return textwrap.fill(text, WRAP, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def _field(name: str, value: str) -> str:
    return _wrap(f"{name:<12}{value}", " " * 12)


def _sentence(text: str) -> str:
    return f"{text[:1].upper()}{text[1:]}."


def message(settings: Settings, batch: Sequence[Mail], now: datetime) -> EmailMessage:
    made = EmailMessage()
    made["From"] = f"mailboot <{sender_address(settings)}>"
    made["To"] = str(settings.alert_to)
    made["Subject"] = subject(settings.hostname, batch)
    made["Date"] = format_datetime(now)
    made["Message-ID"] = make_msgid("alert", settings.hostname)
    # RFC 3834 §5: made by a machine; no vacation responder answers it.
    made["Auto-Submitted"] = "auto-generated"
    made["X-Mailboot-Alert"] = str(batch[0].kind)  # for the owner's filters
    made.set_content(body(settings.hostname, batch, now))
    return made


def missing_mailbox(settings: Settings, paths: Paths) -> str | None:
    """Why ALERT_TO, an address of ours, can't be delivered (no mailbox or alias has it: before
    the first `mailboot account add`, postmaster@ goes nowhere); None when it can be, or is
    not ours. Raises AccountError or StateError when the accounts can't be read."""
    recipient = str(settings.alert_to).lower()
    domain = recipient.rpartition("@")[2]
    if domain not in settings.domains:
        return None
    maps = accounts.postfix_maps(settings.domains, accounts.read_accounts(paths),
                                 accounts.read_aliases(paths))
    known = {key.lower() for key, _ in (*maps.mailboxes, *maps.aliases)}
    if recipient in known or f"@{domain}" in known:
        return None
    return (f"{recipient} has no mailbox and no alias yet; add a mailbox (`mailboot account "
            f"add`, postmaster@ then goes to it) or an alias (`mailboot alias add {recipient} "
            "you@example.net`)")


def submit(sender: str, recipient: str, made: EmailMessage) -> None:
    """Through Postfix's sendmail (pickup, then the non-SMTP milters: OpenDKIM signs it).
    Raises CommandError."""
    programs.run([SENDMAIL, "-i", "-f", sender, "--", recipient], stdin=made.as_string())


# --- the worker task -----------------------------------------------------------------------------


CheckRecords = Callable[[datetime], Sequence[Finding] | None]


def records_check(watcher: DnsWatcher, lookup: Lookup, ours: Sequence[str]) -> CheckRecords:
    """The records the DNS watch checks, as they are now: what the watch found if it looked in
    this run (at this `now`), else asked again (the watch asks only daily once all is in
    place). None: no lookup got an answer (the watch says so in the log)."""

    def check(now: datetime) -> Sequence[Finding] | None:
        if watcher.checked == now:
            return None if watcher.failing is not None else watcher.findings
        found = doctor.check_records(watcher.records(), lookup, ours, budget=DNS_BUDGET)
        return None if doctor.shared_failure(found) is not None else found

    return check


def gather(settings: Settings, paths: Paths, check_records: CheckRecords | None,
           now: datetime) -> Facts:
    """The parts the conditions look at, as `mailboot status` reads them."""
    found = None if check_records is None else check_records(now)
    return Facts(
        now, settings.hostname, settings.tls_mode,
        _read(lambda: status.certificate_state(settings, paths)),
        None if found is None else {finding.record: finding for finding in found},
        _read(read_queue),
        _read(lambda: status.Disk(paths.data_dir, *status.disk_space(paths.data_dir))),
        status.reputation_state(paths), _read(lambda: status.sending_state(settings, paths, now)),
        _read(lambda: status.reports_overview(settings, paths, now)))


def _read(part: Callable[[], T]) -> T | None:
    try:
        return part()
    except (MailbootError, OSError, ValueError) as error:
        log.info("alerts: can't read a part (%s); its conditions keep their state", error)
        return None


Send = Callable[[str, str, EmailMessage], None]


class AlertTask:
    """The worker's task: look, decide, mail, remember (in DATA_DIR; the worker's own state
    holds nothing of it)."""

    def __init__(self, settings: Settings, paths: Paths, look: Callable[[datetime], Facts],
                 send: Send = submit) -> None:
        self.settings, self.paths, self.look, self.send = settings, paths, look, send

    def state(self) -> JsonObject:
        return {}

    def restore(self, saved: Saved) -> None:
        pass

    def step(self, now: datetime) -> datetime:
        before = load_memory(self.paths.alerts_state)
        seen, unsure = observe(self.look(now))
        decision = decide(before, seen, unsure, now, after_good())
        memory = decision.memory
        recipient, sender = str(self.settings.alert_to), sender_address(self.settings)
        for batch in batches(decision.mails):
            told = "; ".join(mail.headline for mail in batch)
            try:
                # Postfix would take it, then bounce it to postmaster@, who is missing too.
                if (missing := missing_mailbox(self.settings, self.paths)) is not None:
                    raise StateError(missing)
                self.send(sender, recipient, message(self.settings, batch, now))
            except MailbootError as error:
                log.warning("alerts: can't mail the %s \"%s\" to %s: %s; trying again at the "
                            "next check", batch[0].kind, told, recipient, error)
                for mail in batch:
                    memory = unsent(replace(decision, memory=memory), before, mail.key)
                continue
            log.info("alerts: mailed %s to %s: %s", _article(batch[0].kind), recipient, told)
        if memory != Memory() or self.paths.alerts_state.exists():
            # Nothing to remember, nothing written: DATA_DIR stays as the boot left it.
            write_atomically(self.paths.alerts_state, memory_json(memory).encode(), mode=0o600)
        return now + CHECK_EVERY


def _article(kind: MailKind) -> str:
    return {MailKind.ALERT: "an alert", MailKind.REMINDER: "a reminder",
            MailKind.RECOVERY: "a recovery note"}[kind]


def alert_task(settings: Settings, paths: Paths, watcher: DnsWatcher | None,
               lookup: Lookup) -> AlertTask:
    """The task for ALERT_TO (not `off`); `watcher`: the DNS watch, whose records it looks at
    (None with DNS_CHECK=off: no record is looked at)."""
    check = None if watcher is None else records_check(
        watcher, lookup, [str(a) for a in settings.public_addresses])
    return AlertTask(settings, paths, lambda now: gather(settings, paths, check, now))
