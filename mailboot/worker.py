"""The background worker: answers ACME challenges on port 80 and keeps the certificate current.

It runs beside the daemons under the supervisor (`python3 -m mailboot.worker`). The mail never
waits for it: the daemons start on whatever certificate is live (a temporary self-signed one on
a first start), and the worker swaps in a real one when it can, then has Postfix and Dovecot
reload it. Failures are logged with the reason and the time of the next try; they never stop
the container.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Protocol

from acme import client as acme_client

from mailboot import certificates, dkim, http_server, mtasts, policy_server, renewal, system
from mailboot.acme_issuer import AcmeConfig, AcmeIssuer, ChallengeStore, Issued, IssueError
from mailboot.certificates import Certificate
from mailboot.dnslookup import DnsLookup
from mailboot.dnsrecords import Record, all_records, build_record_groups
from mailboot.dnswatch import DnsWatcher
from mailboot.errors import MailbootError
from mailboot.paths import Paths
from mailboot.precheck import Fetch, Resolve, check_names, fetch_http, make_resolver
from mailboot.settings import Settings, load_settings

log = logging.getLogger("mailboot.worker")

ARI_REFRESH = timedelta(hours=6)  # how often to ask the CA's renewal info (RFC 9773 §4.3)
IDLE_WAKEUP = timedelta(hours=12)  # re-evaluate at least this often
MANUAL_POLL = timedelta(seconds=5)
# Let's Encrypt puts at most 100 names in one certificate.
MAX_NAMES_PER_CERTIFICATE = 100
Clock = Callable[[], datetime]


class Issuer(Protocol):
    """What the keeper needs of a CA (AcmeIssuer in production, a fake in tests)."""

    def connect(self) -> None: ...

    def issue(self, names: Sequence[str]) -> Issued: ...

    def renewal_time(self, chain_pem: bytes) -> datetime | None: ...


@dataclass
class Slot:
    """One certificate and its retry state. Slot 0 names MAIL_HOSTNAME (the daemons serve it);
    further slots take the mta-sts names that don't fit in one certificate."""

    number: int
    names: list[str] = field(default_factory=list)
    delay: timedelta | None = None
    next_try: datetime | None = None


def certificate_groups(names: Sequence[str],
                       limit: int = MAX_NAMES_PER_CERTIFICATE) -> list[list[str]]:
    """Split the names over certificates of at most `limit` names, MAIL_HOSTNAME in the first."""
    return [list(names[i:i + limit]) for i in range(0, len(names), limit)]


class TlsKeeper:
    """Decides, for each wake-up, what to do about the certificate; holds the retry state."""

    def __init__(self, settings: Settings, paths: Paths, issuer: Callable[[], Issuer],
                 resolve: Resolve, fetch: Fetch, store: ChallengeStore,
                 reload: Callable[[], None]) -> None:
        self.settings, self.paths, self.store = settings, paths, store
        self.make_issuer, self.resolve, self.fetch, self.reload = issuer, resolve, fetch, reload
        self._issuer: Issuer | None = None
        self.slots: dict[int, Slot] = {}
        self.announced: set[str] = set()
        self.last_error: str | None = None

    def step(self, now: datetime) -> datetime:
        """Do what is due now; return when to wake up next."""
        if self.settings.tls_mode == "manual":
            return self._manual(now)
        if self.settings.tls_mode == "self-signed":
            return self._self_signed(now)
        return self._acme(now)

    # --- acme ---------------------------------------------------------------------------------
    def _acme(self, now: datetime) -> datetime:
        groups = certificate_groups(certificates.tls_names(self.settings))
        for number, names in enumerate(groups):
            slot = self.slots.setdefault(number, Slot(number))
            slot.names = names
        return min(self._acme_slot(now, self.slots[n]) for n in range(len(groups)))

    def _acme_slot(self, now: datetime, slot: Slot) -> datetime:
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
        if slot.number == 0:
            return self.settings.hostname in live.names
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
            return self._failed(now, "; ".join(readiness.problems), None, live, slot)
        if self._is_current(live, now, slot) and live is not None and (
                set(readiness.ready) <= set(live.names)) and now < self._renew_time(
                    live, now, slot):
            return self._schedule(now, None, slot)  # nothing new is ready yet: look again later
        try:
            issued = self._get_issuer().issue(readiness.ready)
            installed = certificates.install(self.paths, "acme", issued.key_pem,
                                             issued.chain_pem, now, slot.number)
        except (IssueError, MailbootError, OSError) as error:
            return self._failed(now, str(error), getattr(error, "retry_at", None), live, slot)
        if slot.number == 0:  # the daemons serve the certificate that names MAIL_HOSTNAME
            self.reload()
        self._forget_ari(slot)
        log.info("tls: certificate valid until %s for %s, from %s (ordered, validated and "
                 "installed in %.2f s)", _when(installed.not_after), ", ".join(installed.names),
                 installed.issuer, time.monotonic() - started)
        self._announce_mta_sts(installed)
        slot.delay, slot.next_try = None, None
        if readiness.problems:
            log.info("tls: left out for now: %s", "; ".join(readiness.problems))
            return self._schedule(now, None, slot)
        return min(self._renew_time(installed, now, slot), now + IDLE_WAKEUP)

    def _announce_mta_sts(self, installed: Certificate) -> None:
        """The policy host has a real certificate: the _mta-sts record can go out now."""
        policy = mtasts.policy_text(self.settings.mta_sts_mode, [self.settings.hostname],
                                    self.settings.mta_sts_max_age)
        record = f"v=STSv1; id={mtasts.policy_id(policy)}"
        for name in installed.names:
            if name.startswith("mta-sts.") and name not in self.announced:
                self.announced.add(name)
                log.info("mta-sts: %s has a certificate from the CA now: publish _%s TXT \"%s\"",
                         name, name, record)

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
        log.warning("tls: %s: %s; next try at %s", state, why, _when(wake))
        return wake

    def _schedule(self, now: datetime, retry_at: datetime | None, slot: Slot) -> datetime:
        first = timedelta(seconds=self.settings.acme_retry_interval)
        slot.delay = renewal.next_retry(slot.delay, first)
        slot.next_try = renewal.retry_time(now, slot.delay, retry_at)
        return slot.next_try

    def _renew_time(self, live: Certificate, now: datetime, slot: Slot) -> datetime:
        return renewal.renew_at(live.not_before, live.not_after, self._ari(live, now, slot))

    def _ari(self, live: Certificate, now: datetime, slot: Slot) -> datetime | None:
        """The CA's renewal suggestion, asked at most every 6 hours and remembered on disk,
        so that a restart with a valid certificate sends the CA no request at all."""
        if not hasattr(acme_client.ClientV2, "renewal_time"):
            return None  # acme < 5 (Debian's 4.0): a third of the lifetime
        memo = self._ari_memo(slot)
        try:
            saved = json.loads(memo.read_text())
            if saved["directory"] == live.directory.name and (
                    now - datetime.fromisoformat(saved["checked"]) < ARI_REFRESH):
                return datetime.fromisoformat(saved["suggested"]) if saved["suggested"] else None
        except (OSError, ValueError, KeyError):
            pass
        try:
            suggested = self._get_issuer().renewal_time(live.chain_path.read_bytes())
        except IssueError as error:
            log.info("tls: renewal information unavailable: %s", error)
            suggested = None
        memo.write_text(json.dumps({"directory": live.directory.name, "checked": now.isoformat(),
                                    "suggested": suggested.isoformat() if suggested else None}))
        return suggested

    def _ari_memo(self, slot: Slot) -> Path:
        return self.paths.tls_dir / f"renewal-info-{slot.number}.json"

    def _forget_ari(self, slot: Slot) -> None:
        self._ari_memo(slot).unlink(missing_ok=True)

    # --- manual and self-signed --------------------------------------------------------------
    def _manual(self, now: datetime) -> datetime:
        cert_file, key_file = self.settings.tls_cert_file, self.settings.tls_key_file
        if cert_file is None or key_file is None:  # pragma: no cover - settings require both
            return now + IDLE_WAKEUP
        try:
            changed = certificates.install_manual(self.paths, cert_file, key_file, now)
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
                log.info("tls: now serving %s (valid until %s, for %s)", cert_file,
                         _when(live.not_after), ", ".join(live.names))
        return now + MANUAL_POLL

    def _self_signed(self, now: datetime) -> datetime:
        before = certificates.read_live(self.paths)
        names = certificates.tls_names(self.settings)
        after = certificates.ensure_certificate(self.paths, names, now)
        if before is None or after.directory != before.directory:
            self.reload()
        return now + IDLE_WAKEUP


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _now() -> datetime:
    return datetime.now(UTC)


class Task(Protocol):
    def step(self, now: datetime) -> datetime: ...


def run(tasks: Sequence[Task], stop: threading.Event, clock: Clock = _now) -> None:
    """Run each task when it is due; sleep until the next one is (or a stop is asked)."""
    due = {index: clock() for index in range(len(tasks))}
    while not stop.is_set():
        for index, task in enumerate(tasks):
            if due[index] <= clock():
                due[index] = task.step(clock())
        stop.wait(max(0.0, (min(due.values()) - clock()).total_seconds()))


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="mailboot: %(message)s")
    settings = load_settings(os.environ)  # the boot has validated them already
    paths = Paths(settings.data_dir)
    store = ChallengeStore()
    server = http_server.start(80, store)
    policies = policy_server.start(443, paths, policy_server.policies_for(
        settings.hostname, list(settings.domains), settings.mta_sts_mode,
        settings.mta_sts_max_age))
    config = AcmeConfig(settings.acme_directory, settings.acme_email, settings.acme_ca_bundle,
                        settings.acme_eab_kid, settings.acme_eab_hmac_key)
    keeper = TlsKeeper(settings, paths, lambda: AcmeIssuer(config, paths, store),
                       make_resolver(settings.dns_resolvers), fetch_http, store,
                       lambda: system.reload_tls(paths))
    tasks: list[Task] = [keeper]
    if settings.dns_check != "off":
        keys = dkim.ensure_keys(paths, settings.domains, _now())

        def records() -> list[Record]:
            real = certificates.names_with_real_certificates(paths, _now())
            return all_records(build_record_groups(settings, keys, real))

        tasks.append(DnsWatcher(records, DnsLookup(settings.dns_resolvers),
                                [str(a) for a in settings.public_addresses], settings.domains,
                                timedelta(seconds=settings.dns_check_interval)))
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    run(tasks, stop)
    server.shutdown()
    policies.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
