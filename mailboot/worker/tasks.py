"""The background worker: the certificate keeper, the DNS checks, the DKIM rotation, the
network checks, as short runs (`python3 -P -m mailboot.worker.tasks --once`).

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
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import dns.resolver

from mailboot import render
from mailboot.acme import caa
from mailboot.acme.issuer import AcmeConfig, AcmeIssuer
from mailboot.acme.keeper import AcmeKeeper, Keeper, keeper_for
from mailboot.acme.precheck import fetch_http, make_resolver
from mailboot.base import logs
from mailboot.base.files import write_atomically
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
from mailboot.daemons import opendkim, registry
from mailboot.daemons.children import fingerprint
from mailboot.diagnose import problems, selftest
from mailboot.dkim import keys as dkim
from mailboot.dns.lookup import DnsLookup
from mailboot.network import address as publicaddress
from mailboot.network import outbound as netcheck
from mailboot.records.build import Record, all_records, build_record_groups
from mailboot.records.watch import DnsWatcher
from mailboot.rotation import tls_key as rollover
from mailboot.rotation.dkim import DkimRotation
from mailboot.settings.table import DnsCheckMode, Settings, TlsMode, load_settings
from mailboot.tls import certificates, dane
from mailboot.tls import keys as tlskeys
from mailboot.web.challenges import ChallengeStore

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
                  type(error).__name__, error, retry.strftime("%Y-%m-%d %H:%M:%S UTC"),
                  exc_info=True)
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


def read_run(text: str) -> Run | None:
    """The last run's state from the state file's text; None when it can't be read (a first
    run, or another version): every task is then due."""
    try:
        saved = json.loads(text)
        if saved.get("version") != STATE_VERSION:
            return None
        tasks = read_object(saved["tasks"])
        due = {name: read_time(read_object(entry)["due"]) for name, entry in tasks.items()}
        return Run({name: when for name, when in due.items() if when is not None},
                   {name: dict(read_object(entry["state"])) for name, entry in tasks.items()},
                   {name: {str(k): str(v) for k, v in read_object(entry["watched"]).items()}
                    for name, entry in tasks.items()})
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def load_run(path: Path) -> Run | None:
    try:
        return read_run(path.read_text())
    except OSError:
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


def dns_watcher(settings: Settings, paths: Paths, on_change: Callable[[], None]) -> DnsTask:
    tlsa = dane.TlsaSource(settings, paths, DnsLookup(settings.dns_resolvers))

    def records() -> list[Record]:
        real = certificates.names_with_real_certificates(paths, _now())
        # Read again each time: a DKIM rotation adds and retires keys while we run.
        keys = dkim.ensure_keys(paths, settings.domains, _now(), settings.dkim_algorithms)
        return all_records(build_record_groups(settings, keys, real, tlsa(),
                                               caa.value_for(settings, paths)))

    lookup = DnsLookup(settings.dns_resolvers)

    def on_ready() -> None:
        # What receivers will make of our mail, against the records now published.
        selftest.log_summary(settings, paths, lookup, _now())

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


# The container's own resolver (Unbound): recursive, validating, and what blocklists accept.
LOCAL_RESOLVER = ("127.0.0.1", 53)


def on_dns_change(keeper: Keeper, nudges: Nudges) -> Callable[[], None]:
    """An address, MX or CNAME record changed: names waiting for DNS are looked at now (the
    keeper is stepped again in this run)."""

    def changed() -> None:
        if isinstance(keeper, AcmeKeeper):
            keeper.nudge()
            nudges.names.add(KEEPER)

    return changed


def network_checks(configured: Settings, settings: Settings, paths: Paths) -> dict[str, Task]:
    """Can mail leave by port 25 (or reach the relay)? Is the address the one the internet
    sees? Each at start, then daily."""
    tasks: dict[str, Task] = {}
    if settings.outbound_check != "off":
        tasks["outbound"] = netcheck.outbound_task(settings.outbound_check, settings.relay_host,
                                                   DnsLookup([LOCAL_RESOLVER]),
                                                   paths.outbound_check_state)
    if settings.address_discovery != "off":
        # Through the container's resolver (Unbound) to find the echo server; then asked directly.
        find = publicaddress.make_discover(settings.address_discovery, dns.resolver.Resolver())
        tasks["address"] = publicaddress.AddressCheck(configured, settings, find)
    return tasks


KEEPER = "keeper"


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
    if settings.dns_check is not DnsCheckMode.OFF:
        tasks["dns"] = dns_watcher(settings, paths, on_dns_change(keeper, nudges))
    tasks |= network_checks(configured, settings, paths)
    tasks["dkim"] = dkim_rotation(settings, paths)
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


def main(argv: Sequence[str] | None = None) -> int:
    """One run: step what is due, save the state, and leave (the supervisor runs it again at
    the state file's `next_run`)."""
    parser = argparse.ArgumentParser(prog="python3 -m mailboot.worker.tasks")
    parser.add_argument("--once", action="store_true", required=True,
                        help="step the due tasks once and exit (the only mode)")
    parser.add_argument("--all", action="store_true",
                        help="step every task now, due or not (SIGUSR1 to the supervisor)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(handlers=[logs.stderr_handler()], level=logging.INFO)
    configured = load_settings(os.environ)  # the boot has validated them already
    paths = Paths(configured.data_dir)
    problems.keep_problems(paths.worker_problems)  # for `mailboot status`; appends
    settings = publicaddress.effective_settings(configured, paths)  # with what the boot found
    nudges = Nudges()
    tasks = build_tasks(configured, settings, paths, nudges)
    now = _now()
    run = run_once(tasks, load_run(paths.worker_state), watched_files(settings, paths), nudges,
                   now, force=arguments.all)
    write_atomically(paths.worker_state, state_json(run, now).encode(), mode=0o600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
