"""The background worker: the port-80 and port-443 servers, the certificate keeper, DNS checks.

It runs beside the daemons under the supervisor (`python3 -m mailboot.worker`). The mail never
waits for it: the daemons start on whatever certificate is live (a temporary self-signed one on
a first start), and the keeper swaps in a real one when it can, then has the daemons reload it.
A task that fails is logged and tried again later; nothing it does can stop the mail.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Protocol

import dns.resolver

from mailboot import (
    clientconfig,
    dane,
    dkim,
    netcheck,
    problems,
    publicaddress,
    publicsuffix,
    render,
    selftest,
    smtp_policy,
)
from mailboot.daemons import opendkim, registry
from mailboot.daemons.postfix import POLICY_SOCKET
from mailboot.dkimrotation import DkimRotation
from mailboot.dnslookup import DnsLookup
from mailboot.dnsrecords import Record, all_records, build_record_groups
from mailboot.dnswatch import DnsWatcher
from mailboot.inbound import Blocklist, InboundPolicy, default_gateway
from mailboot.paths import Paths
from mailboot.settings import DnsCheckMode, Settings, load_settings
from mailboot.tls import caa, certificates, http_server, mtasts, policy_server, rollover
from mailboot.tls.acme_issuer import AcmeConfig, AcmeIssuer, ChallengeStore
from mailboot.tls.keeper import AcmeKeeper, Keeper, keeper_for
from mailboot.tls.precheck import fetch_http, make_resolver
from mailboot.users import user_ids

log = logging.getLogger("mailboot.worker")

Clock = Callable[[], datetime]
# After a task raised: try it again this much later (its own backoff is lost with the error).
RETRY_AFTER_CRASH = timedelta(minutes=5)


def _now() -> datetime:
    return datetime.now(UTC)


class Task(Protocol):
    def step(self, now: datetime) -> datetime: ...


class Wake:
    """Sleeps until a time, a stop, or a nudge (a task learnt something another task needs)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.nudged = threading.Event()
        self._either = threading.Condition()

    def request_stop(self) -> None:
        with self._either:
            self.stop.set()
            self._either.notify_all()

    def nudge(self) -> None:
        with self._either:
            self.nudged.set()
            self._either.notify_all()

    def sleep(self, seconds: float) -> None:
        with self._either:
            if not (self.stop.is_set() or self.nudged.is_set()):
                self._either.wait(seconds)


def run(tasks: Sequence[Task], wake: Wake, clock: Clock = _now) -> None:
    """Run each task when it is due; sleep until the next one is (or a stop is asked).

    A nudge steps every task at once: each task's `step` returns its own next time unchanged
    when called early, so only those with something new to do act on it.
    """
    due = {index: clock() for index in range(len(tasks))}
    while not wake.stop.is_set():
        if wake.nudged.is_set():
            wake.nudged.clear()
            due = {index: min(when, clock()) for index, when in due.items()}
        for index, task in enumerate(tasks):
            if due[index] <= clock():
                due[index] = run_step(task, clock())
        wake.sleep(max(0.0, (min(due.values()) - clock()).total_seconds()))


def run_step(task: Task, now: datetime) -> datetime:
    """One step of a task; a task that raises is logged and tried again later, and the worker
    (with the mail daemons beside it) keeps running."""
    try:
        return task.step(now)
    except Exception as error:
        retry = now + RETRY_AFTER_CRASH
        log.error("worker: %s failed: %s: %s; trying again at %s. Mail is not affected; if "
                  "this repeats, report it with the lines above", type(task).__name__,
                  type(error).__name__, error, retry.strftime("%Y-%m-%d %H:%M:%S UTC"),
                  exc_info=True)
        return retry


def dns_watcher(settings: Settings, paths: Paths, on_change: Callable[[], None]) -> DnsWatcher:
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

    return DnsWatcher(records, lookup, [str(a) for a in settings.public_addresses],
                      settings.domains, timedelta(seconds=settings.dns_check_interval),
                      on_change=on_change, on_ready=on_ready)


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


def inbound_policy(settings: Settings) -> InboundPolicy:
    # The address blocklists postscreen asks (the DBL lists domains, not addresses).
    zones = dict.fromkeys(site.zone for site in settings.dnsbl)
    blocklists = [Blocklist(settings.blocklist_zone(zone), zone) for zone in zones]
    try:
        routes = Path("/proc/net/route").read_text()
    except OSError:
        routes = ""
    return InboundPolicy(DnsLookup([LOCAL_RESOLVER]), publicsuffix.load_rules(), blocklists,
                         default_gateway(routes))


def start_policy_service(settings: Settings, paths: Paths) -> smtp_policy.PolicyServer | None:
    """Postfix's port 25 asks us about each recipient; without Postfix's queue, nobody asks."""
    socket_path = paths.postfix_queue / POLICY_SOCKET
    if not socket_path.parent.is_dir():
        return None
    return smtp_policy.start(socket_path, inbound_policy(settings).decide, user_ids("postfix"))


def on_dns_change(keeper: Keeper, wake: Wake) -> Callable[[], None]:
    """An address, MX or CNAME record changed: names waiting for DNS are looked at now."""

    def changed() -> None:
        if isinstance(keeper, AcmeKeeper):
            keeper.nudge()
            wake.nudge()

    return changed


def network_checks(configured: Settings, settings: Settings, paths: Paths) -> list[Task]:
    """Can mail leave by port 25 (or reach the relay)? Is the address the one the internet
    sees? Each at start, then daily."""
    tasks: list[Task] = []
    if settings.outbound_check != "off":
        tasks.append(netcheck.outbound_task(settings.outbound_check, settings.relay_host,
                                            DnsLookup([LOCAL_RESOLVER]),
                                            paths.outbound_check_state))
    if settings.address_discovery != "off":
        # Through the container's resolver (Unbound) to find the echo server; then asked directly.
        find = publicaddress.make_discover(settings.address_discovery, dns.resolver.Resolver())
        tasks.append(publicaddress.AddressCheck(configured, settings, find))
    return tasks


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="mailboot: %(message)s")
    configured = load_settings(os.environ)  # the boot has validated them already
    paths = Paths(configured.data_dir)
    problems.keep_problems(paths.worker_problems)  # for `mailboot status`
    settings = publicaddress.effective_settings(configured, paths)  # with what the boot found
    store = ChallengeStore()
    names = certificates.tls_names(settings)
    server = http_server.start(80, store, names)
    policies = policy_server.start(443, paths, mtasts.policy_hosts(settings),
                                   service=clientconfig.service_for(settings))
    inbound = start_policy_service(settings, paths)
    config = AcmeConfig(settings.acme_directory, settings.acme_email, settings.acme_ca_bundle,
                        settings.acme_eab_kid, settings.acme_eab_hmac_key)
    keeper = keeper_for(settings, paths, lambda: AcmeIssuer(config, paths, store),
                        make_resolver(DnsLookup(settings.dns_resolvers)), fetch_http, store,
                        lambda: registry.reload_all(paths))
    wake = Wake()
    tasks: list[Task] = [rollover.for_keeper(settings, paths, keeper)]
    if settings.dns_check is not DnsCheckMode.OFF:
        tasks.append(dns_watcher(settings, paths, on_dns_change(keeper, wake)))
    tasks += network_checks(configured, settings, paths)
    tasks.append(dkim_rotation(settings, paths))

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        wake.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    run(tasks, wake)
    server.shutdown()
    policies.shutdown()
    if inbound is not None:
        inbound.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
