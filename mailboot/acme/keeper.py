"""Keeping the served certificate current: one small keeper per TLS_MODE, chosen once at start.

- `AcmeKeeper`: asks the CA for names that are ready (pre-checked locally first), renews at the
  CA's suggestion (ARI) or when a third of the lifetime remains. Names that are not ready yet are
  looked at again every poll interval (and at once when the DNS doctor sees their records change),
  however long they have been missing: the pre-checks cost the CA nothing. Only failures that
  reached the CA back off, doubling up to an hour (its rate limits count those);
- `ManualKeeper`: serves the mounted files and follows their changes;
- `SelfSignedKeeper`: replaces the self-signed certificate before it expires.

Each has `step(now) -> next wake-up`; the worker calls it when due. Failures are logged with the
reason and the time of the next try; they never stop mail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from mailboot.acme import ari
from mailboot.acme.issuer import Issued
from mailboot.acme.precheck import Fetch, Resolve, check_names
from mailboot.base.errors import IssueError, MailbootError
from mailboot.base.formats import human_time
from mailboot.base.paths import Paths
from mailboot.base.taskstate import (
    JsonObject,
    Saved,
    read_object,
    read_span,
    read_text,
    read_texts,
    read_time,
    span_value,
    time_value,
)
from mailboot.dns import names
from mailboot.settings.table import Settings, TlsMode
from mailboot.standards import mtasts
from mailboot.tls import certificates, renewal
from mailboot.tls import keys as tlskeys
from mailboot.tls.certificates import Certificate
from mailboot.web.challenges import ChallengeStore

log = logging.getLogger("mailboot.tls")

IDLE_WAKEUP = timedelta(hours=12)  # re-evaluate at least this often
# The mounted files are watched by the supervisor (a stat every few seconds), which runs the
# worker when they change: the keeper itself looks again only this late.
MANUAL_POLL = IDLE_WAKEUP
WAITING_REMINDER = timedelta(hours=1)  # a name still not ready is mentioned again this often
# Let's Encrypt puts at most 100 names in one certificate.
MAX_NAMES_PER_CERTIFICATE = 100
Reload = Callable[[], None]


class Issuer(Protocol):
    """What the keeper needs of a CA (AcmeIssuer in production, a fake in tests)."""

    def connect(self) -> None: ...

    def issue(self, names: Sequence[str]) -> Issued: ...

    def renewal_time(self, chain_pem: bytes) -> datetime | None: ...


class Keeper(Protocol):
    paths: Paths

    def step(self, now: datetime) -> datetime: ...

    def state(self) -> JsonObject:
        """What the next run of the worker needs to go on where this one stopped."""
        ...

    def restore(self, saved: Saved) -> None:
        """Take back `state()`'s value. Raises StateUnreadable (the keeper then starts afresh)."""
        ...


def keeper_for(settings: Settings, paths: Paths, issuer: Callable[[], Issuer], resolve: Resolve,
               fetch: Fetch, store: ChallengeStore, reload: Reload) -> Keeper:
    """The keeper for the configured TLS_MODE."""
    if settings.tls_mode is TlsMode.MANUAL:
        return ManualKeeper(settings, paths, reload)
    if settings.tls_mode is TlsMode.SELF_SIGNED:
        return SelfSignedKeeper(settings, paths, reload)
    return AcmeKeeper(settings, paths, issuer, resolve, fetch, store, reload)


# The keeper's times in its log lines; rotation/tls_key imports it under this name.
when = human_time


def _span(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


class ManualKeeper:
    """TLS_MODE=manual: serve TLS_CERT_FILE and TLS_KEY_FILE, reloading when they change."""

    def __init__(self, settings: Settings, paths: Paths, reload: Reload) -> None:
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            raise MailbootError("TLS_MODE=manual needs TLS_CERT_FILE and TLS_KEY_FILE")
        self.cert_file, self.key_file = settings.tls_cert_file, settings.tls_key_file
        self.paths, self.reload = paths, reload
        self.last_error: str | None = None

    def state(self) -> JsonObject:
        return {"last_error": self.last_error}

    def restore(self, saved: Saved) -> None:
        self.last_error = read_text(saved.get("last_error"))

    def step(self, now: datetime) -> datetime:
        try:
            changed = certificates.install_manual(self.paths, self.cert_file, self.key_file, now)
        except MailbootError as error:
            if str(error) != self.last_error:
                log.warning("tls: keeping the current certificate: %s", error)
            self.last_error = str(error)
            return now + MANUAL_POLL
        self.last_error = None
        if changed:
            self.reload()
            live = certificates.read_live(self.paths)
            if live is not None:
                log.info("tls: now serving %s (valid until %s, for %s)", self.cert_file,
                         when(live.not_after), ", ".join(live.names))
        return now + MANUAL_POLL


class SelfSignedKeeper:
    """TLS_MODE=self-signed: a new self-signed certificate a month before the old one expires."""

    def __init__(self, settings: Settings, paths: Paths, reload: Reload) -> None:
        self.names = names.tls_names(settings)
        self.paths, self.reload = paths, reload

    def state(self) -> JsonObject:
        return {}  # everything it needs is on disk

    def restore(self, saved: Saved) -> None:
        pass

    def step(self, now: datetime) -> datetime:
        before = certificates.read_live(self.paths)
        after = certificates.ensure_certificate(self.paths, self.names, now)
        if before is None or after.directory != before.directory:
            self.reload()
        return now + IDLE_WAKEUP


@dataclass
class Slot:
    """One certificate and its retry state. Slot 0 names MAIL_HOSTNAME (the daemons serve it);
    further slots take the mta-sts and client names that don't fit in one certificate."""

    number: int
    names: list[str] = field(default_factory=list)
    delay: timedelta | None = None  # the CA backoff: grows only with failures that reached the CA
    next_try: datetime | None = None
    polling: bool = False  # next_try is a pre-check poll (a nudge may bring it forward)
    told: str | None = None  # the last renewal plan logged, so each plan is logged once
    waiting_for: str | None = None  # the last "not ready" reason logged
    waiting_told: datetime | None = None

    def state(self) -> JsonObject:
        return {"delay": span_value(self.delay), "next_try": time_value(self.next_try),
                "polling": self.polling, "told": self.told, "waiting_for": self.waiting_for,
                "waiting_told": time_value(self.waiting_told)}

    def restore(self, saved: Saved) -> None:
        """Raises StateUnreadable."""
        self.delay, self.next_try = read_span(saved.get("delay")), read_time(saved.get("next_try"))
        self.polling = saved.get("polling") is True
        self.told, self.waiting_for = read_text(saved.get("told")), read_text(
            saved.get("waiting_for"))
        self.waiting_told = read_time(saved.get("waiting_told"))


def announcement(name: str, mta_sts_record: str) -> str | None:
    """The news for users when `name` first has a certificate from the CA; None: no news.

    The policy host: the `_mta-sts` record, held back until now, can go out (RFC 8461 §3.3).
    The client hosts: clients fetch their settings over HTTPS and refuse a self-signed
    certificate, so only now do they configure themselves."""
    if name.startswith("mta-sts."):
        return (f"mta-sts: {name} has a certificate from the CA now: publish _{name} TXT "
                f"\"{mta_sts_record}\"")
    if name.startswith(("autoconfig.", "autodiscover.")):
        return (f"autoconfig: {name} has a certificate from the CA now: mail clients can "
                "configure themselves")
    return None


def certificate_groups(names: Sequence[str],
                       limit: int = MAX_NAMES_PER_CERTIFICATE) -> list[list[str]]:
    """Split the names over certificates of at most `limit` names, MAIL_HOSTNAME in the first."""
    return [list(names[i:i + limit]) for i in range(0, len(names), limit)]


class AcmeKeeper:
    """TLS_MODE=acme: decides, for each wake-up, what to do about each certificate slot."""

    def __init__(self, settings: Settings, paths: Paths, issuer: Callable[[], Issuer],
                 resolve: Resolve, fetch: Fetch, store: ChallengeStore, reload: Reload) -> None:
        self.settings, self.paths, self.store = settings, paths, store
        self.make_issuer, self.resolve, self.fetch, self.reload = issuer, resolve, fetch, reload
        self._issuer: Issuer | None = None
        self.slots = {number: Slot(number, names) for number, names in
                      enumerate(certificate_groups(names.tls_names(settings)))}
        self.announced: set[str] = set()
        self.first_retry = timedelta(seconds=settings.acme_retry_interval)
        self.poll = timedelta(seconds=settings.dns_check_interval)

    def state(self) -> JsonObject:
        # By names, not numbers: a slot whose names changed (new settings) starts afresh.
        return {"slots": {",".join(slot.names): slot.state() for slot in self.slots.values()},
                "announced": sorted(self.announced)}

    def restore(self, saved: Saved) -> None:
        """Raises StateUnreadable."""
        slots = read_object(saved.get("slots", {}))
        for slot in self.slots.values():
            kept = slots.get(",".join(slot.names))
            if kept is not None:
                slot.restore(read_object(kept))
        self.announced = set(read_texts(saved.get("announced", [])))

    def nudge(self) -> None:
        """The DNS changed (the doctor saw an A, AAAA, MX or CNAME record change): names waiting
        for their records are looked at on the next step. A CA backoff is kept."""
        for slot in self.slots.values():
            if slot.polling:
                slot.next_try = None

    def step(self, now: datetime) -> datetime:
        return min(self._step_slot(now, slot) for slot in self.slots.values())

    def _step_slot(self, now: datetime, slot: Slot) -> datetime:
        live = certificates.read_live(self.paths, slot.number)
        if live is not None and self._is_current(live, now, slot):
            renew = self._renew_time(live, now, slot)
            missing = [n for n in slot.names if n not in live.names]
            if now < renew and (not missing or (slot.next_try and now < slot.next_try)):
                return min(renew, now + IDLE_WAKEUP, slot.next_try or now + IDLE_WAKEUP)
        elif slot.next_try is not None and now < slot.next_try:
            return slot.next_try
        return self._attempt(now, slot, live)

    def _is_current(self, live: Certificate | None, now: datetime, slot: Slot) -> bool:
        if live is None or live.source != "acme" or live.not_after <= now:
            return False
        if slot.number == 0:  # and made with the kept key: a rollover switched it (DANE)
            return self.settings.hostname in live.names and tlskeys.is_current_key(
                self.paths, live.key_path.read_bytes())
        return any(name in live.names for name in slot.names)

    def _attempt(self, now: datetime, slot: Slot, live: Certificate | None) -> datetime:
        started = time.monotonic()
        try:  # a wrong directory, CA bundle or EAB key shows on the first start, not days later
            self._get_issuer().connect()
        except IssueError as error:
            return self._failed(now, str(error), error.retry_at, live, slot)
        ours = {str(a) for a in self.settings.public_addresses}
        readiness = check_names(slot.names, ours, self.resolve, self.fetch, self.store)
        needed = self.settings.hostname if slot.number == 0 else None
        if not readiness.ready or (needed and needed not in readiness.ready):
            return self._not_ready(now, "; ".join(readiness.problems), live, slot)
        if self._is_current(live, now, slot) and live is not None and (
                set(readiness.ready) <= set(live.names)) and now < self._renew_time(
                    live, now, slot):
            return self._poll_again(now, slot)  # nothing new is ready yet: look again soon
        try:
            issued = self._get_issuer().issue(readiness.ready)
            installed = certificates.install(self.paths, "acme", issued.key_pem,
                                             issued.chain_pem, now, slot.number)
        except (MailbootError, OSError) as error:
            return self._failed(now, str(error), getattr(error, "retry_at", None), live, slot)
        if slot.number == 0:  # the daemons serve the certificate that names MAIL_HOSTNAME
            self.reload()
        self._ari_memo(slot).unlink(missing_ok=True)
        log.info("tls: certificate valid until %s for %s, from %s (ordered, validated and "
                 "installed in %.2f s)", when(installed.not_after), ", ".join(installed.names),
                 installed.issuer, time.monotonic() - started)
        self._announce(installed)
        slot.delay, slot.next_try, slot.polling = None, None, False
        slot.waiting_for = None
        if readiness.problems:
            log.info("tls: left out for now (looked at again every %s): %s",
                     _span(self.poll), "; ".join(readiness.problems))
            return self._poll_again(now, slot)
        return min(self._renew_time(installed, now, slot), now + IDLE_WAKEUP)

    def _announce(self, installed: Certificate) -> None:
        """Say once what a name's first certificate from the CA makes possible."""
        record = mtasts.record_value(mtasts.policy_for(self.settings))
        for name in installed.names:
            line = announcement(name, record)
            if line is not None and name not in self.announced:
                self.announced.add(name)
                log.info("%s", line)

    def _get_issuer(self) -> Issuer:
        if self._issuer is None:
            self._issuer = self.make_issuer()
        return self._issuer

    def _failed(self, now: datetime, why: str, retry_at: datetime | None,
                live: Certificate | None, slot: Slot) -> datetime:
        self._issuer = None  # reconnect next time (the directory or account may have changed)
        wake = self._schedule(now, retry_at, slot)
        state = ("keeping the current certificate" if self._is_current(live, now, slot)
                 else "serving a temporary certificate")
        log.warning("tls: %s: %s; next try at %s", state, why, when(wake))
        return wake

    def _not_ready(self, now: datetime, why: str, live: Certificate | None,
                   slot: Slot) -> datetime:
        """A name is not ready (no record yet, pointing elsewhere): nothing was asked of the CA,
        so look again at the next poll, not after a backoff. Said when the reason changes, and
        again every hour while it lasts."""
        wake = self._poll_again(now, slot)
        if why != slot.waiting_for or slot.waiting_told is None or (
                now - slot.waiting_told >= WAITING_REMINDER):
            slot.waiting_for, slot.waiting_told = why, now
            state = ("keeping the current certificate" if self._is_current(live, now, slot)
                     else "serving a temporary certificate")
            log.warning("tls: %s: %s; looking again every %s, and as soon as the DNS records "
                        "change", state, why, _span(self.poll))
        return wake

    def _poll_again(self, now: datetime, slot: Slot) -> datetime:
        # Never sooner than the CA backoff of an earlier failure that reached the CA.
        backoff_ends = slot.next_try if (slot.next_try and not slot.polling) else now
        slot.next_try, slot.polling = max(now + self.poll, backoff_ends), True
        return slot.next_try

    def _schedule(self, now: datetime, retry_at: datetime | None, slot: Slot) -> datetime:
        slot.delay = renewal.next_retry(slot.delay, self.first_retry)
        slot.next_try = renewal.retry_time(now, slot.delay, retry_at)
        slot.polling = False
        return slot.next_try

    def _renew_time(self, live: Certificate, now: datetime, slot: Slot) -> datetime:
        suggested = self._ari(live, now, slot)
        renew = renewal.renew_at(live.not_before, live.not_after, suggested)
        why = ("as the CA suggests (ARI, RFC 9773)" if suggested is not None and renew == suggested
               else "when a third of its lifetime remains" if suggested is None
               else "capped: the CA's suggestion reaches too close to expiry")
        plan = f"{live.directory.name} {when(renew)} {why}"
        if plan != slot.told:  # once per certificate and plan: a decision users can see
            slot.told = plan
            log.info("tls: the certificate for %s is current until %s; renewal at %s, %s",
                     ", ".join(live.names), when(live.not_after), when(renew), why)
        return renew

    def _ari(self, live: Certificate, now: datetime, slot: Slot) -> datetime | None:
        """The CA's renewal suggestion, asked at most every few hours and remembered on disk."""
        memo_path = self._ari_memo(slot)
        memo = ari.read_memo(memo_path)
        if memo is not None and memo.is_fresh_for(live.directory.name, now):
            return memo.suggested
        try:
            suggested = self._get_issuer().renewal_time(live.chain_path.read_bytes())
        except (IssueError, OSError) as error:
            log.info("tls: renewal information unavailable: %s", error)
            suggested = None
        ari.write_memo(memo_path, ari.Memo(live.directory.name, now, suggested))
        return suggested

    def _ari_memo(self, slot: Slot) -> Path:
        return self.paths.renewal_info(slot.number)
