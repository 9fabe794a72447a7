"""The background worker: the certificate keeper, the DNS checks, the DKIM rotation, the
network checks, the alerts by mail (`alerts`), as short runs (`python3 -P -m
mailboot.worker.tasks --once`).

The supervisor starts a run when a task is due (the state file's `next_run`), when a file a task
watches changes (a rollover request, a DKIM rotation, the mounted certificate), and on SIGUSR1.
A run restores each task's memory from the state file in the run directory, steps the tasks
that are due, saves their memory and ends: the ACME client, cryptography and dnspython are in
memory only for the seconds a run takes. The mail never waits for it: the daemons start on
whatever certificate is live (a temporary self-signed one on a first start), and the keeper
swaps in a real one when it can, then has the daemons reload it. A task that fails is logged
and tried again later; nothing it does can stop the mail.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import dns.resolver

from mailboot import render
from mailboot.acme.issuer import AcmeConfig, AcmeIssuer
from mailboot.acme.keeper import AcmeKeeper, Keeper, keeper_for
from mailboot.acme.precheck import fetch_http, make_resolver
from mailboot.base.errors import MailbootError
from mailboot.base.files import write_atomically
from mailboot.base.formats import human_time
from mailboot.base.logs import configure_logging
from mailboot.base.paths import Paths
from mailboot.base.taskstate import (
    JsonObject,
    Saved,
    StateUnreadable,
    read_object,
    read_text,
    read_time,
    time_value,
)
from mailboot.daemons import opendkim, postfix, registry
from mailboot.daemons.on_demand import fingerprint
from mailboot.diagnose import problems, selftest
from mailboot.diagnose import queue as mail_queue
from mailboot.dkim import keys as dkim
from mailboot.dns.answer import Lookup
from mailboot.dns.lookup import DnsLookup, local_lookup
from mailboot.mailboxes import accounts
from mailboot.network import address as publicaddress
from mailboot.network import found as found_addresses
from mailboot.network import outbound as netcheck
from mailboot.network import reputation
from mailboot.records import doctor, zonefile
from mailboot.records.build import Record, Where, all_records, ptr_record
from mailboot.records.published import published_groups
from mailboot.records.watch import DnsWatcher
from mailboot.rotation import tls_key as rollover
from mailboot.rotation.dkim import DkimRotation
from mailboot.settings.table import DnsCheckMode, OnOff, Settings, TlsMode, load_settings
from mailboot.tls import certificates, dane
from mailboot.tls import keys as tlskeys
from mailboot.web import recordspage
from mailboot.web.challenges import ChallengeStore
from mailboot.worker import alerts

log = logging.getLogger("mailboot.worker")

# After a task raised: try it again this much later (its own backoff is lost with the error).
RETRY_AFTER_CRASH = timedelta(minutes=5)
# A nudge (the DNS watcher saw a record change) steps the nudged task again in the same run;
# this many passes at most, so two tasks that kept nudging each other could not loop.
MAX_PASSES = 3
STATE_VERSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


class Task(Protocol):
    def step(self, now: datetime) -> datetime: ...

    def state(self) -> JsonObject: ...

    def restore(self, saved: Saved) -> None: ...


@dataclass
class Nudges:
    """Tasks another task asked to step again in this run (by name)."""

    names: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Run:
    """What one run ends with: each task's next due time and memory, and the files whose change
    should bring the next run forward (path -> fingerprint, per task)."""

    due: dict[str, datetime]
    states: dict[str, JsonObject]
    watched: dict[str, dict[str, str]]

    @property
    def next_due(self) -> datetime | None:
        return min(self.due.values(), default=None)


def run_once(tasks: Mapping[str, Task], saved: Run | None, watch: Mapping[str, Sequence[Path]],
             nudges: Nudges, now: datetime, force: bool = False) -> Run:
    """Step each task that is due (or forced, or whose watched files changed), again when
    nudged; return what the next run needs. `saved` is the last run's (None: a first run,
    every task is due)."""
    due: dict[str, datetime] = {}
    watched = {name: fingerprints(watch.get(name, ())) for name in tasks}
    for name, task in tasks.items():
        restore(name, task, saved)
        changed = saved is not None and saved.watched.get(name) != watched[name]
        before = None if saved is None or force or changed else saved.due.get(name)
        due[name] = before if before is not None else now
    for _ in range(MAX_PASSES):
        for name, task in tasks.items():
            if due[name] <= now:
                due[name] = run_step(task, now)
        if not nudges.names & tasks.keys():
            break
        for name in nudges.names & tasks.keys():
            due[name] = now
        nudges.names.clear()
    return Run(due, {name: task.state() for name, task in tasks.items()}, watched)


def restore(name: str, task: Task, saved: Run | None) -> None:
    """Give a task back its memory; one that can't be read is started afresh (and said so)."""
    if saved is None or name not in saved.states:
        return
    try:
        task.restore(saved.states[name])
    except StateUnreadable as error:
        log.info("worker: starting %s afresh: its saved state can't be read (%s)", name, error)


def run_step(task: Task, now: datetime) -> datetime:
    """One step of a task; a task that raises is logged and tried again later, and the other
    tasks (and the mail daemons) go on."""
    try:
        return task.step(now)
    except Exception as error:
        retry = now + RETRY_AFTER_CRASH
        log.error("worker: %s failed: %s: %s; trying again at %s. Mail is not affected; if "
                  "this repeats, report it with the lines above", type(task).__name__,
                  type(error).__name__, error, human_time(retry), exc_info=True)
        return retry


def fingerprints(paths: Sequence[Path]) -> dict[str, str]:
    return {str(path): fingerprint(path) for path in paths}


# --- the state file: what the supervisor and the next run read ------------------------------


def state_json(run: Run, now: datetime) -> str:
    """The state file's text. `next_run` and `watch` (path -> fingerprint) are for the
    supervisor, in seconds since the epoch; `tasks` for the next run."""
    next_due = run.next_due
    watch = {path: mark for marks in run.watched.values() for path, mark in marks.items()}
    return json.dumps({
        "version": STATE_VERSION,
        "ran": now.timestamp(),
        "next_run": None if next_due is None else next_due.timestamp(),
        "watch": watch,
        "tasks": {name: {"due": time_value(run.due[name]), "state": run.states[name],
                         "watched": run.watched[name]} for name in run.due},
    }, indent=1, sort_keys=True) + "\n"


def read_run(text: str) -> Run:
    """The last run's state from the state file's text. Raises StateUnreadable (not a state
    file, or one of another version)."""
    try:
        saved = json.loads(text)
        if (version := saved.get("version")) != STATE_VERSION:
            raise StateUnreadable(f"its version is {version!r}; this one reads {STATE_VERSION}")
        tasks = read_object(saved["tasks"])
        due = {name: read_time(read_object(entry)["due"]) for name, entry in tasks.items()}
        return Run({name: when for name, when in due.items() if when is not None},
                   {name: dict(read_object(entry["state"])) for name, entry in tasks.items()},
                   {name: {str(k): str(v) for k, v in read_object(entry["watched"]).items()}
                    for name, entry in tasks.items()})
    except StateUnreadable:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise StateUnreadable(f"{type(error).__name__}: {error}") from None


def load_run(path: Path) -> Run | None:
    """The last run's state; None when there is none (the first run) or it can't be read (then
    the log says why): every task is then due, and starts afresh."""
    try:
        return read_run(path.read_text())
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("worker: can't read the last run's state %s (%s); every task runs now and "
                    "starts afresh", path, error.strerror or error)
    except StateUnreadable as error:
        # Harmless (a task starting afresh says again what it said before): after an upgrade
        # that changed the file, for one run.
        log.info("worker: the last run's state %s can't be read (%s); every task runs now and "
                 "starts afresh", path, error)
    return None


class DnsTask:
    """The DNS watcher and the TLSA source its records take: each remembers what it said, so
    a run says again only what changed."""

    def __init__(self, watcher: DnsWatcher, tlsa: dane.TlsaSource) -> None:
        self.watcher, self.tlsa = watcher, tlsa

    def step(self, now: datetime) -> datetime:
        return self.watcher.step(now)

    def state(self) -> JsonObject:
        return {"watcher": self.watcher.state(), "tlsa_told": self.tlsa.told}

    def restore(self, saved: Saved) -> None:
        """Raises StateUnreadable."""
        self.watcher.restore(read_object(saved.get("watcher", {})))
        self.tlsa.told = read_text(saved.get("tlsa_told"))


def dns_watcher(settings: Settings, paths: Paths, on_change: Callable[[], None],
                on_ready_too: Callable[[], None] = lambda: None) -> DnsTask:
    tlsa = dane.TlsaSource(settings, paths, DnsLookup(settings.dns_resolvers))

    def records() -> list[Record]:
        # Read again each time: a DKIM rotation adds and retires keys while we run.
        keys = dkim.ensure_keys(paths, settings.domains, _now(), settings.dkim_algorithms)
        return all_records(published_groups(settings, paths, keys, _now(), tlsa()))

    lookup = DnsLookup(settings.dns_resolvers)

    def on_ready() -> None:
        # What receivers will make of our mail, against the records now published.
        selftest.log_summary(settings, paths, lookup, _now())
        on_ready_too()

    watcher = DnsWatcher(records, lookup, [str(a) for a in settings.public_addresses],
                         settings.domains, timedelta(seconds=settings.dns_check_interval),
                         on_change=on_change, on_ready=on_ready)
    return DnsTask(watcher, tlsa)


def dkim_rotation(settings: Settings, paths: Paths) -> DkimRotation:
    """Switches DKIM keys once their records are served; retires the replaced ones."""

    def apply() -> None:
        keys = dkim.ensure_keys(paths, settings.domains, _now(), settings.dkim_algorithms)
        render.write_files(render.render_dkim_tables(keys, paths))
        opendkim.prepare(paths)  # a key made by `mailboot dkim` is root's until now
        opendkim.reload(paths)

    return DkimRotation(paths, settings.domains, settings.dkim_algorithms,
                        DnsLookup(settings.dns_resolvers),
                        timedelta(seconds=settings.dns_check_interval),
                        timedelta(seconds=settings.dkim_rotation_grace), apply)


def on_dns_change(keeper: Keeper, nudges: Nudges) -> Callable[[], None]:
    """An address, MX or CNAME record changed: names waiting for DNS are looked at now (the
    keeper is stepped again in this run)."""

    def changed() -> None:
        if isinstance(keeper, AcmeKeeper):
            keeper.nudge()
            nudges.names.add(KEEPER)

    return changed


def on_ready(check: reputation.ReputationCheck | None, nudges: Nudges) -> Callable[[], None]:
    """Every required record is in place (READY): ask the lists again, in this run; the PTR
    may just have been set."""

    def ready() -> None:
        if check is not None:
            check.nudge()
            nudges.names.add(REPUTATION)

    return ready


def network_checks(configured: Settings, settings: Settings, paths: Paths) -> dict[str, Task]:
    """Can mail leave by port 25 (or reach the relay)? Is the address the one the internet
    sees? Each at start, then daily."""
    tasks: dict[str, Task] = {}
    if settings.outbound_check != "off":
        tasks["outbound"] = netcheck.outbound_task(settings.outbound_check, settings.relay_host,
                                                   local_lookup(), paths.outbound_check_state)
    if settings.address_discovery != "off":
        # Through the container's resolver (Unbound) to find the echo server; then asked directly.
        find = publicaddress.make_discover(settings.address_discovery, dns.resolver.Resolver())
        tasks["address"] = publicaddress.AddressCheck(configured, settings, find)
    return tasks


REPUTATION = "reputation"
# The end of a sentence in a hint: a dot, a space and a word (not the dot of a name, as in
# `mail.example.com. at` or `ip6.arpa. PTR`).
FIRST_SENTENCE = re.compile(r"\.\s+(?=[A-Z][a-z])")


def reputation_task(configured: Settings, settings: Settings,
                    paths: Paths) -> reputation.ReputationCheck | None:
    """Our addresses and domains on Spamhaus's lists (unless REPUTATION_CHECK=off), through our
    own resolver (or DNS_RESOLVERS); and, with PUBLIC_IPV6 and no relay, whether mail may leave
    over IPv6 (its PTR confirmed). None: nothing to do."""
    asked = reputation.subjects(settings) if settings.reputation_check is OnOff.ON else []
    ipv6 = None
    if configured.public_ipv6 is not None and configured.relay_host is None:
        ipv6 = reputation.Ipv6Sending(configured.public_ipv6, configured.hostname,
                                      ptr_check(configured.hostname, configured.public_ipv6,
                                                DnsLookup(configured.dns_resolvers)),
                                      ipv6_switch(configured, paths))
    if not asked and ipv6 is None:
        return None
    lookup: Lookup = DnsLookup(settings.dns_resolvers) if settings.dns_resolvers \
        else local_lookup()
    return reputation.ReputationCheck(asked, lookup, paths.reputation_state, ipv6)


def ptr_check(hostname: str, address: ipaddress.IPv6Address,
              lookup: Lookup) -> Callable[[], reputation.PtrCheck]:
    """The DNS doctor's PTR check (forward-confirmed reverse DNS), through `lookup`: the zones'
    own servers like the other records (or DNS_RESOLVERS)."""

    def check() -> reputation.PtrCheck:
        finding = doctor.check_record(ptr_record(hostname, address), lookup)
        if finding.status is doctor.Status.OK:
            return reputation.PtrCheck(True, "")
        # The hint's first sentence: what is wrong and where it is fixed (the DNS doctor and
        # `mailboot dns --check` tell the rest).
        detail = f"{finding.status.value}: {FIRST_SENTENCE.split(finding.hint, 1)[0]}"
        if finding.status is doctor.Status.UNKNOWN:
            return reputation.PtrCheck(None, detail)
        return reputation.PtrCheck(False, detail)

    return check


def ipv6_switch(configured: Settings, paths: Paths) -> Callable[[bool], None]:
    """Let Postfix's SMTP client use IPv6 or not: the marker `postfix.smtp_ipv4_only` reads,
    then Postfix's files rendered again (as the boot renders them) and reloaded if they
    changed."""

    def apply(allowed: bool) -> None:
        if allowed:
            write_atomically(paths.ipv6_confirmed, f"{configured.public_ipv6}\n".encode(),
                             mode=0o644)
        else:
            paths.ipv6_confirmed.unlink(missing_ok=True)
        if render_postfix(configured, paths):
            postfix.check(paths)
            postfix.reload(paths)

    return apply


def render_postfix(configured: Settings, paths: Paths) -> bool:
    """Postfix's files rendered from the configured settings as the boot renders them; True
    when any changed. Nothing before the boot has made a certificate (it renders them then)."""
    certificate = certificates.read_live(paths)
    if certificate is None:
        return False
    keys = dkim.ensure_keys(paths, configured.domains, _now(), configured.dkim_algorithms)
    maps = accounts.postfix_maps(configured.domains, accounts.read_accounts(paths),
                                 accounts.read_aliases(paths))
    values = render.context(configured, paths, keys, certificate, maps)
    files = [f for f in render.render_all(values, paths) if f.template.startswith("postfix/")]
    return bool(render.write_files(files))


KEEPER = "keeper"
ALERTS = "alerts"


def build_tasks(configured: Settings, settings: Settings, paths: Paths,
                nudges: Nudges) -> dict[str, Task]:
    """The tasks for these settings, by name, in the order they are stepped."""
    store = ChallengeStore(paths.acme_challenges)
    config = AcmeConfig(settings.acme_directory, settings.acme_email, settings.acme_ca_bundle,
                        settings.acme_eab_kid, settings.acme_eab_hmac_key)
    keeper = keeper_for(settings, paths, lambda: AcmeIssuer(config, paths, store),
                        make_resolver(DnsLookup(settings.dns_resolvers)), fetch_http, store,
                        lambda: registry.reload_all(paths))
    tasks: dict[str, Task] = {KEEPER: rollover.for_keeper(settings, paths, keeper)}
    ours = reputation_task(configured, settings, paths)
    if settings.dns_check is not DnsCheckMode.OFF:
        tasks["dns"] = dns_watcher(settings, paths, on_dns_change(keeper, nudges),
                                   on_ready_too=on_ready(ours, nudges))
    tasks |= network_checks(configured, settings, paths)
    if ours is not None:
        tasks[REPUTATION] = ours
    tasks["dkim"] = dkim_rotation(settings, paths)
    if settings.alert_to != "off":
        # Last: it reads what the tasks before it found in this run (the blocklists, say).
        dns_task = tasks.get("dns")
        tasks[ALERTS] = alerts.alert_task(
            settings, paths, dns_task.watcher if isinstance(dns_task, DnsTask) else None,
            DnsLookup(settings.dns_resolvers))
    return tasks


def watched_files(settings: Settings, paths: Paths) -> dict[str, list[Path]]:
    """Files whose change should run a task at once, by task: the mounted certificate
    (TLS_MODE=manual), the key rollover's request, the DKIM keys' directories (`mailboot dkim
    rotate` and `import` write there). The supervisor looks at them every few seconds, which
    costs a stat each instead of a Python process."""
    keeper = [paths.tls_keys_dir / tlskeys.REQUEST]
    if settings.tls_mode is TlsMode.MANUAL:
        keeper += [p for p in (settings.tls_cert_file, settings.tls_key_file) if p is not None]
    return {KEEPER: keeper,
            "dkim": [paths.dkim_domain_dir(domain) for domain in settings.domains]}


# --- the records page's snapshot -----------------------------------------------------------------


def page_record(finding: doctor.Finding) -> recordspage.PageRecord:
    """A record as the page shows it: the web-form table's line, and its state."""
    record = finding.record
    return recordspage.PageRecord(
        None if record.where is Where.PROVIDER else record.zone, record.relative_name,
        record.fqdn, record.rtype, zonefile.form_value(record), record.required, record.purpose,
        finding.status.value, finding.found, finding.hint, record.placeholder or record.hold or "")


def page_snapshot(previous: recordspage.Snapshot, dns_task: Task | None,
                  read_queue: Callable[[], mail_queue.Queue],
                  now: datetime) -> recordspage.Snapshot:
    """What the records page shows after this run: the DNS findings when this run checked the
    records (when no lookup got an answer, the last findings, marked so), else the last ones;
    the queue as it is now."""
    dns_state = previous.dns
    watcher = dns_task.watcher if isinstance(dns_task, DnsTask) else None
    if watcher is not None and watcher.findings is not None:
        if watcher.failing is not None and previous.dns is not None:
            dns_state = recordspage.DnsState(previous.dns.checked, previous.dns.ready,
                                             watcher.failing, previous.dns.records)
        else:
            dns_state = recordspage.DnsState(now, watcher.ready, watcher.failing,
                                             tuple(map(page_record, watcher.findings)))
    return recordspage.Snapshot(dns_state, queue_state(read_queue, now))


def queue_state(read_queue: Callable[[], mail_queue.Queue],
                now: datetime) -> recordspage.QueueState:
    try:
        queue = read_queue()
    except (MailbootError, OSError, ValueError) as error:
        return recordspage.QueueState(now, 0, 0, 0, None, str(error) or type(error).__name__)
    oldest = queue.oldest_deferred
    text = None if oldest is None else (f"since {human_time(oldest.arrival)}, for "
                                        f"{oldest.recipient}: {oldest.reason}")
    return recordspage.QueueState(now, queue.active, queue.deferred, queue.hold, text, None)


def keep_page_snapshot(paths: Paths, tasks: Mapping[str, Task], now: datetime) -> None:
    """Write the records page's snapshot; a failure costs only the page its freshness."""
    snapshot = page_snapshot(recordspage.read_state(paths.page_state), tasks.get("dns"),
                             mail_queue.read_queue, now)
    try:
        recordspage.write_state(paths.page_state, snapshot)
    except OSError as error:
        log.warning("worker: can't write the records page's state %s: %s", paths.page_state,
                    error.strerror or error)


def main(argv: Sequence[str] | None = None) -> int:
    """One run: step what is due, save the state, and leave (the supervisor runs it again at
    the state file's `next_run`)."""
    parser = argparse.ArgumentParser(prog="python3 -m mailboot.worker.tasks")
    parser.add_argument("--once", action="store_true", required=True,
                        help="step the due tasks once and exit (the only mode)")
    parser.add_argument("--all", action="store_true",
                        help="step every task now, due or not (SIGUSR1 to the supervisor)")
    arguments = parser.parse_args(argv)
    configure_logging()
    configured = load_settings(os.environ)  # the boot has validated them already
    paths = Paths(configured.data_dir)
    problems.keep_problems(paths.worker_problems)  # for `mailboot status`; appends
    settings = found_addresses.effective_settings(configured, paths)  # with what the boot found
    nudges = Nudges()
    tasks = build_tasks(configured, settings, paths, nudges)
    now = _now()
    run = run_once(tasks, load_run(paths.worker_state), watched_files(settings, paths), nudges,
                   now, force=arguments.all)
    write_atomically(paths.worker_state, state_json(run, now).encode(), mode=0o600)
    keep_page_snapshot(paths, tasks, now)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
