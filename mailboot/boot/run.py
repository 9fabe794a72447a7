"""`mailboot run`: one story for every start of the container, cold or warm.

1. **Warm** (`start_warm`, tried first by the entrypoint): the last full boot left a plan
   (`warmstart`) and nothing it depended on changed. DATA_DIR's check and the daemons'
   preparation run, then the daemons start and this process becomes their supervisor (which
   takes them over: its own start stands beside them); the full boot runs beside the daemons
   (`boot_beside`), writes nothing when nothing changed, and announces the records.
2. **Cold** (`start_cold`, from the command line once the settings are loaded): the full boot
   (`stages.prepare`: keys, certificate, accounts, configuration, the daemons' own checks),
   then the records are announced beside the daemons (before them with DNS_CHECK=strict, which
   may refuse the start), the plan for the next warm start is written, and the supervisor
   takes over the process.

Both paths end in the same hand-over with the same supervisor command line and announce the
records the same way. In both, Postfix's own integrity checks run beside the daemons, once its
master listens (`postfix.check_beside`): the banner doesn't wait for them.

This module imports only what the warm start needs at its top: the boot's libraries
(cryptography, jinja2, dnspython) are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mailboot.base.logs import configure_logging
from mailboot.base.paths import Paths
from mailboot.base.users import user_ids
from mailboot.boot import datadir, handover, warmstart
from mailboot.daemons import dovecot, postfix, registry

if TYPE_CHECKING:
    from mailboot.boot.stages import Prepared
    from mailboot.dkim.keys import DomainKeys
    from mailboot.settings.table import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmStart:
    """What a warm start does beyond files: injected so tests can stub the daemons."""

    prepare: Callable[[Paths], None]  # the daemons' preparation
    beside: Callable[[], None]  # the full boot, beside the daemons
    # start the daemons of the supervisor's argv; the options that hand them over to it
    start_daemons: Callable[[Sequence[str]], list[str]]
    hand_over: Callable[[Sequence[str]], None]  # exec the supervisor (never returns in production)


def start_warm(environ: Mapping[str, str]) -> None:
    """`mailboot run`'s first step in the container: start warm, and never return; or return,
    and the full boot runs. Production's choices are made here, as the command line makes them
    for the cold start: the command line itself is what a warm start doesn't import."""
    configure_logging()
    plan = warmstart.plan_to_start_on(Path("/"), environ, datetime.now(UTC))
    if plan is None:
        return
    platform = WarmStart(
        prepare=registry.prepare_all,
        beside=lambda: handover.beside_the_daemons(lambda: boot_beside(environ),
                                                  "the boot beside the daemons",
                                                  after=postfix.wait_until_listening),
        start_daemons=handover.start_the_daemons, hand_over=handover.hand_over)
    try:
        start_on_plan(plan, Path("/"), platform)
    except Exception as error:  # nothing has started: the full boot says what is wrong
        log.warning("boot: the warm start failed (%s: %s); a full boot", type(error).__name__,
                    error)


def start_on_plan(plan: warmstart.Plan, config_root: Path, platform: WarmStart) -> None:
    """Start the daemons on the plan; raises what DATA_DIR's check, a preparation or a daemon's
    start raises (then nothing has started, or what had is stopped, and the full boot can run)."""
    paths = Paths(Path(plan.data_dir), config_root=config_root, run_dir=Path(plan.run_dir))
    log.info("boot: nothing changed since this container last started (settings, keys, "
             "accounts, certificate, configuration): the daemons start now; the boot checks "
             "beside them")
    for warning in plan.warnings:
        log.warning("%s", warning)
    datadir.begin(paths)
    platform.prepare(paths)
    handed = platform.start_daemons(plan.supervisor)
    platform.beside()
    platform.hand_over([*plan.supervisor, *handed])


def boot_beside(environ: Mapping[str, str]) -> None:
    """The full boot, beside the daemons the warm start started: the same stages, which write
    nothing when nothing changed, then the records. Should a file differ after all, the daemons
    reload it, and the next start boots in full."""
    from mailboot.boot import stages
    from mailboot.settings.table import load_settings

    settings = load_settings(environ)  # its warnings were said before the daemons started
    paths, now = Paths(settings.data_dir), datetime.now(UTC)
    postfix.check_beside(paths)
    platform = stages.BootPlatform(prepare=lambda _paths: None, validate=registry.check_all)
    prepared = stages.prepare(settings, paths, now, platform)
    if prepared.changed:
        warmstart.forget_plan(paths)
        log.warning("boot: the last start left other configuration than this boot makes (%s); "
                    "the daemons reload it", ", ".join(map(str, prepared.changed)))
        registry.reload_all(paths)
    announce_records(settings, paths, now, prepared.keys, sys.stdout)


def start_cold(settings: Settings, out: TextIO) -> None:
    """Boot, then replace this process with the supervisor (a fresh, small Python).

    The records are announced beside the daemons (they wait on the network), except when
    DNS_CHECK=strict: then missing records stop the start before any daemon runs. The boot
    ends with the plan a restart with nothing changed starts on (`warmstart`).
    """
    from mailboot.boot import stages

    paths, now = Paths(settings.data_dir), datetime.now(UTC)
    datadir.begin(paths)
    warmstart.forget_plan(paths)
    platform = stages.BootPlatform(prepare=registry.prepare_all, validate=registry.check_all)
    prepared = stages.prepare(settings, paths, now, platform)
    argv = supervisor_argv(settings, paths)
    strict = settings.dns_check == "strict"
    if strict:
        announce_records(settings, paths, now, prepared.keys, out)

    def beside() -> None:
        postfix.check_beside(paths)
        if not strict:
            announce_records(settings, paths, now, prepared.keys, out)

    handover.beside_the_daemons(
        beside, "Postfix's own checks, or printing the DNS records (`mailboot dns` prints them)",
        after=postfix.wait_until_listening)
    if not strict:
        warmstart.write_plan(paths, warm_start_plan(settings, paths, prepared, argv))
    handover.hand_over(argv)


def announce_records(settings: Settings, paths: Paths, now: datetime,
                     keys: Sequence[DomainKeys], out: TextIO) -> None:
    """The public address, how mail leaves, and the records with their state
    (`records_and_address`)."""
    from mailboot.boot import records_and_address

    network = records_and_address.production_network(settings)
    records_and_address.announce(settings, paths, now, keys, network, out)
    announce_page_link(settings, paths)


def announce_page_link(settings: Settings, paths: Paths) -> None:
    """The records page's secret link, made on the first start, said at every start."""
    from mailboot.web import recordspage

    try:
        token = recordspage.ensure_token(paths.page_token)
    except OSError as error:
        log.warning("page: no records page: can't keep its link in %s (%s)", paths.page_token,
                    error.strerror or error)
        return
    log.info("page: the records page is at %s (`mailboot status --link` prints it, "
             "`--new-link` replaces it)", recordspage.page_link(settings.hostname, token))


def supervisor_argv(settings: Settings, paths: Paths) -> list[str]:
    """The supervisor's command line, after the interpreter. -S: no `site` (Debian's adds the
    system's packages to the path, and its sitecustomize): the supervisor uses only the standard
    library and our package, and what it loads stays resident (supervisor.py)."""
    from mailboot.daemons import supervisor  # the cold start's: a warm one reads the plan

    daemons = supervisor.programs_json([supervisor.Program(d.name, d.argv, d.stop_argv)
                                        for d in registry.DAEMONS if d.wanted(settings)])
    return ["-P", "-S", "-m", "mailboot.daemons.supervisor", f"--daemons={daemons}",
            f"--worker-state={paths.worker_state}", "--http-port=80", "--https-port=443",
            *policy_arguments(settings, paths), *metrics_arguments(settings, paths)]


def metrics_arguments(settings: Settings, paths: Paths) -> list[str]:
    """With METRICS_PORT: the port the supervisor serves the metrics on, on demand, and where
    it counts Postfix's log lines (the log passes through it then). Without: nothing."""
    if settings.metrics_port == "off":
        return []
    return [f"--metrics-port={settings.metrics_port}",
            f"--postfix-log-counts={paths.postfix_log_counts}"]


def policy_arguments(settings: Settings, paths: Paths) -> list[str]:
    """How the supervisor serves Postfix's port-25 policy socket on demand: the socket (owned by
    Postfix, whose smtpd connects), the user the policy process runs as, and its command."""
    owner, user = user_ids("postfix"), user_ids(postfix.POLICY_USER)
    if owner is None or user is None:  # outside the image: nothing to serve
        return []
    sockets = [f"--policy-socket={name}={path}"
               for name, path in postfix.policy_sockets(settings, paths).items()]
    auth = dovecot.auth_policy_address(settings)  # Dovecot's auth policy: the login bans
    if auth is not None:
        sockets.append(f"--policy-tcp=auth={auth}")
    command = [*postfix.policy_command(settings, paths),
               *dovecot.login_ban_arguments(settings, paths)]
    return [*sockets, f"--policy-owner={owner[0]}:{owner[1]}", f"--policy-user={user[0]}:{user[1]}",
            "--policy-command=" + json.dumps(command)]


def warm_start_plan(settings: Settings, paths: Paths, prepared: Prepared,
                    argv: Sequence[str]) -> warmstart.Plan:
    """Everything this boot read or made, so a restart can tell whether it would change any."""
    from mailboot.tls import certificates

    named = [path for path in (settings.tls_cert_file, settings.tls_key_file,
                               settings.relay_password_file) if path is not None]
    watched = {
        "DATA_DIR's DKIM keys, accounts and certificate": [
            paths.dkim_dir, paths.accounts_dir, paths.tls_keys_dir,
            *sorted(paths.tls_dir.glob("live*"))],
        "the files the settings name": named,
        "the rendered configuration": [*prepared.rendered, paths.validated_mark],
    }
    return warmstart.make_plan(paths, argv, certificates.usable_until(prepared.certificate),
                               settings.warnings, watched, os.environ)
