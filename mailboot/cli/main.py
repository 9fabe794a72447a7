"""The `mailboot` command: subcommands, and the one place where errors become exit codes.

Production defaults for the clock, the DNS lookup and the daemons' checks are chosen here and
handed down, so every other module can be driven by tests without patching.

What loads dnspython (DnsLookup, the public address, the records, status) is imported inside
the commands that use it: `run` reaches the daemons without it, about 80 ms sooner
(BENCHMARKS.md, Bare daemons); tests/test_cli.py holds that.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from mailboot import __version__
from mailboot.base.errors import ConfigError, MailbootError, UsageError
from mailboot.base.logs import configure_logging
from mailboot.base.paths import Paths
from mailboot.boot import run
from mailboot.cli import accounts as cli_accounts
from mailboot.cli import backup as cli_backup
from mailboot.cli import bans as cli_bans
from mailboot.cli import dkim as cli_dkim
from mailboot.cli import reports as cli_reports
from mailboot.diagnose import health
from mailboot.dns import names
from mailboot.settings.table import Settings, load_settings, settings_markdown
from mailboot.settings.values import SettingValueError, parse_domain_name, parse_email_address
from mailboot.tls import keys as tlskeys

if TYPE_CHECKING:
    from mailboot.records.build import RecordGroup

log = logging.getLogger("mailboot")


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run one subcommand; return the process exit code."""
    arguments = _parser().parse_args(argv)
    out = stdout or sys.stdout
    configure_logging()
    try:
        if arguments.command == "settings":
            out.write(settings_markdown())
            return 0
        if arguments.command in cli_backup.COMMANDS:  # DATA_DIR alone: no mail settings needed
            return int(arguments.run(arguments, os.environ if environ is None else environ))
        settings = _load(os.environ if environ is None else environ)
        return int(arguments.run(arguments, settings, out))
    except ConfigError as error:
        print("mailboot: the settings have problems; nothing was changed:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return error.exit_code
    except MailbootError as error:
        print(f"mailboot: {error}", file=sys.stderr)
        return error.exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailboot", description="Turn a server and a domain into a working mail server."
    )
    # Exits before a command is required: `docker run <image> --version` needs no settings.
    parser.add_argument("--version", action="version", version=f"mailboot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dns = commands.add_parser("dns", help="print the DNS records to publish")
    form = dns.add_mutually_exclusive_group()
    form.add_argument("--zone", action="store_true", help="only the zone file")
    form.add_argument("--json", action="store_true", help="a JSON array, one object per record")
    dns.add_argument("--check", action="store_true",
                     help="look each record up where it is published; exit 1 unless every "
                          "required record is in place")
    dns.add_argument(
        "--domain", metavar="ZONE",
        help="only the records of this zone (with --zone: a file that zone's server loads)",
    )
    dns.set_defaults(run=run_dns)
    commands.add_parser("settings", help="print the table of settings (environment variables)")
    run = commands.add_parser("run", help="boot and run the mail server (the container's command)")
    run.set_defaults(run=run_server)
    health = commands.add_parser("health", help="exit 0 when SMTP and IMAP answer (HEALTHCHECK)")
    health.set_defaults(run=run_health)
    test = commands.add_parser("selftest", help="judge our mail as receivers will (DKIM, SPF, "
                               "DMARC against the published records); exit 1 unless all pass")
    test.add_argument("--to", metavar="ADDRESS",
                      help="also send a test message per domain to ADDRESS (an external checker)")
    test.set_defaults(run=run_selftest)
    status = commands.add_parser("status", help="is everything in place? certificate, DNS, "
                                 "DKIM, queue, mailboxes, disk, worker; exit 1 unless all is")
    status.add_argument("--json", action="store_true", help="a JSON object (fields in README)")
    link = status.add_mutually_exclusive_group()
    link.add_argument("--link", action="store_true",
                      help="print the records page's secret link, and nothing else")
    link.add_argument("--new-link", action="store_true",
                      help="replace the records page's secret link (the old one stops working)")
    status.set_defaults(run=run_status)
    tls = commands.add_parser("tls", help="the certificate's key (DANE)")
    tls_actions = tls.add_subparsers(dest="action", required=True, metavar="ACTION")
    tls_actions.add_parser("rollover", help="switch to the next key once its TLSA record is "
                           "served").set_defaults(run=run_tls_rollover)
    _account_parsers(commands)
    cli_backup.add_parsers(commands)
    cli_dkim.add_parsers(commands)
    cli_bans.add_parsers(commands)
    cli_reports.add_parsers(commands)
    return parser


def _account_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    account = commands.add_parser("account", help="add, remove, list mailboxes; passwords, app "
                                  "passwords, quotas; import many")
    actions = account.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a mailbox")
    password = actions.add_parser("password", help="set a new password, or add or remove an "
                                  "app password")
    for action in (add, password):
        action.add_argument("address")
        action.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of standard input")
        action.set_defaults(run=cli_accounts.run_account)
    add.add_argument("--quota", type=cli_accounts.parse_quota_option, default=None,
                     help="its storage limit (500M, 5G, unlimited); default: MAILBOX_QUOTA")
    apps = password.add_mutually_exclusive_group()
    apps.add_argument("--add-app", metavar="NAME", help="add a password for one device or app "
                      "(the main password keeps working)")
    apps.add_argument("--remove-app", metavar="NAME", help="revoke that device's password")
    quota = actions.add_parser("quota", help="set a mailbox's storage limit")
    quota.add_argument("address")
    quota.add_argument("--quota", type=cli_accounts.parse_quota_option, required=True,
                       help="500M, 5G, unlimited, or default (MAILBOX_QUOTA)")
    quota.set_defaults(run=cli_accounts.run_account)
    remove = actions.add_parser("remove", help="delete a mailbox's login and app passwords (its "
                                "mail is kept)")
    remove.add_argument("address")
    remove.set_defaults(run=cli_accounts.run_account)
    release = actions.add_parser("release", help="let a login held by its sending limits send "
                                 "again today (forgets today's counts)")
    release.add_argument("address")
    release.set_defaults(run=cli_accounts.run_release)
    listing = actions.add_parser("list", help="mailboxes with use, limit and app passwords")
    listing.add_argument("--json", action="store_true", help="a JSON list")
    listing.set_defaults(run=cli_accounts.run_account)
    bulk = actions.add_parser("import", help="create many mailboxes from standard input: lines "
                              "of address<TAB>password (plain or {SCHEME}hash)")
    bulk.add_argument("--skip-invalid", action="store_true",
                      help="import the good lines even when some are refused")
    bulk.set_defaults(run=cli_accounts.run_account)
    alias = commands.add_parser("alias", help="add, remove, list aliases")
    alias_actions = alias.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = alias_actions.add_parser("add", help="deliver mail for SOURCE to DESTINATIONS")
    add.add_argument("source")
    add.add_argument("destinations", help="comma-separated addresses")
    add.set_defaults(run=cli_accounts.run_alias)
    remove_alias = alias_actions.add_parser("remove", help="delete an alias")
    remove_alias.add_argument("source")
    remove_alias.set_defaults(run=cli_accounts.run_alias)
    alias_actions.add_parser("list", help="list aliases").set_defaults(run=cli_accounts.run_alias)


def _load(environ: Mapping[str, str]) -> Settings:
    settings = load_settings(environ)
    for warning in settings.warnings:
        log.warning("%s", warning)
    return settings


def run_dns(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Print the records (creating DKIM keys first where a domain has none)."""
    from mailboot.dkim import keys as dkim
    from mailboot.dns.lookup import DnsLookup
    from mailboot.network import found as found_addresses
    from mailboot.records import zonefile
    from mailboot.records.published import check_published, published_groups
    from mailboot.tls import dane

    paths, now = Paths(settings.data_dir), datetime.now(UTC)
    settings = found_addresses.effective_settings(settings, paths)  # what the boot found
    keys = dkim.ensure_keys(paths, settings.domains, now, settings.dkim_algorithms)
    tlsa = dane.TlsaSource(settings, paths, DnsLookup(settings.dns_resolvers))()
    groups = published_groups(settings, paths, keys, now, tlsa)
    if arguments.domain:
        groups = _select_zone(groups, arguments.domain)
    findings = None
    if arguments.check:
        findings = check_published(groups, settings, DnsLookup(settings.dns_resolvers))
    if arguments.json:
        out.write(zonefile.json_text(groups, findings))
    elif arguments.zone:
        out.write(zonefile.zone_text(groups, findings))
    else:
        out.write(zonefile.zone_text(groups, findings) + "\n"
                  + zonefile.table_text(groups, findings))
    if findings is None:
        return 0
    return 1 if any(f.required_and_not_ok for f in findings.values()) else 0


def _select_zone(groups: tuple[RecordGroup, ...], domain: str) -> tuple[RecordGroup, ...]:
    try:
        zone = parse_domain_name(domain)
    except SettingValueError as error:
        raise UsageError(f"--domain: {error}") from None
    selected = tuple(group for group in groups if group.zone == zone)
    if not selected:
        zones = ", ".join(group.zone for group in groups if group.zone)
        raise UsageError(f"--domain: no records belong in the zone {zone!r}; the zones are {zones}")
    return selected


def run_server(_arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """The full boot, then the daemons (`boot.run`: one story for cold and warm starts)."""
    run.start_cold(settings, out)
    return 0  # only where the hand-over is stubbed (tests)


def run_selftest(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Print the verdicts per domain and address; with --to, send the test messages too."""
    recipient = None
    if arguments.to:
        try:
            recipient = parse_email_address(arguments.to)
        except SettingValueError as error:
            raise UsageError(f"--to: {error}") from None
    # Imported here, not at the top: dkimpy and pyspf would slow every boot (this module is
    # the entrypoint's) for a command run by hand.
    from mailboot.diagnose import selftest
    from mailboot.dns.lookup import DnsLookup
    from mailboot.network import found as found_addresses

    paths, now = Paths(settings.data_dir), datetime.now(UTC)
    settings = found_addresses.effective_settings(settings, paths)  # what the boot found
    report = selftest.run(settings, paths, DnsLookup(settings.dns_resolvers), now)
    out.write(selftest.report_text(report, settings.hostname))
    if recipient is not None:
        for sender in selftest.senders_for(settings, paths).values():
            selftest.send(sender, recipient, now)
            out.write(f"sent a test message from {sender} to {recipient}\n")
    return 0 if report.ok else 1


def run_status(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """One look at every part; exit 1 when any is not in place (the text says which). With
    --link or --new-link: the records page's link only."""
    if arguments.link or arguments.new_link:
        return run_page_link(settings, out, new=arguments.new_link)
    from mailboot.cli.status_view import status_json, status_text
    from mailboot.diagnose.status import gather, production_sources
    from mailboot.network import found as found_addresses

    paths, now = Paths(settings.data_dir), datetime.now(UTC)
    settings = found_addresses.effective_settings(settings, paths)  # what the boot found
    level = log.level
    log.setLevel(logging.WARNING)  # the screen says it all; warnings on stderr still show
    try:
        report = gather(settings, paths, now, production_sources(settings, paths, now))
    finally:
        log.setLevel(level)
    out.write(status_json(report) if arguments.json else status_text(report))
    return 1 if report.not_in_place else 0


def run_page_link(settings: Settings, out: TextIO, new: bool) -> int:
    """Print the records page's link (made if there is none yet), or a new one."""
    from mailboot.web import recordspage

    paths = Paths(settings.data_dir)
    if new:
        token = recordspage.new_token(paths.page_token)
        log.info("page: the records page has a new link; the old one no longer works")
    else:
        token = recordspage.ensure_token(paths.page_token)
    out.write(recordspage.page_link(settings.hostname, token) + "\n")
    return 0


def run_tls_rollover(_arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Ask the worker for a key rollover; it switches once the next key's TLSA is served."""
    if settings.tls_mode != "acme":
        raise UsageError(f"TLS_MODE={settings.tls_mode}: the certificate key is not kept by "
                         "mailboot, so there is no key to roll over")

    keys = tlskeys.request_rollover(Paths(settings.data_dir))
    name = names.tlsa_name(settings.hostname)
    out.write(f"key rollover requested: the worker switches to the next key once {name} TLSA "
              f"{keys.next} is served by the DNS (publish it now if it is not); the log says "
              "when, and which record to remove after\n")
    return 0


def run_health(_arguments: argparse.Namespace, _settings: Settings, _out: TextIO) -> int:
    problems = health.check_local_services()
    for problem in problems:
        log.error("health: %s", problem)
    return 1 if problems else 0
