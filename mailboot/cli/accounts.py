"""`mailboot account ...` and `mailboot alias ...`: change mailboxes while the server runs.

Each change is made under a lock, written atomically, rendered into Postfix's tables and applied
with `postfix reload`; Dovecot re-reads its passwd-file by itself. No restart is needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import logging
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from mailboot import render
from mailboot.base.errors import AccountError, CommandError
from mailboot.base.formats import format_size
from mailboot.base.paths import Paths
from mailboot.daemons import dovecot, postfix
from mailboot.mailboxes import accounts
from mailboot.mailboxes import bulk_import as account_import
from mailboot.outbound import limits
from mailboot.settings.table import Settings
from mailboot.settings.values import SettingValueError, parse_size

log = logging.getLogger(__name__)


def read_password(from_stdin: bool) -> str:
    """The first line of stdin, or a prompt (twice) on a terminal; never a command-line argument."""
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise AccountError("the two passwords differ")
    else:
        raise AccountError("give the password on standard input with --password-stdin")
    accounts.check_password(password)
    return password


def run_account(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    paths = Paths(settings.data_dir)
    if arguments.action == "list":
        return list_accounts(paths, settings, arguments.json, out)
    if arguments.action == "import":
        return import_accounts(arguments, settings, paths, sys.stdin, out)
    address = accounts.normalise_address(arguments.address, settings.domains)
    if arguments.action == "password" and (arguments.add_app or arguments.remove_app):
        return change_app_password(arguments, settings, paths, address)
    password_hash = None
    if arguments.action in ("add", "password"):
        password_hash = dovecot.hash_password(read_password(arguments.password_stdin))
    with accounts.locked(paths):
        current = accounts.read_accounts(paths)
        aliases = accounts.read_aliases(paths)
        if arguments.action == "add" and password_hash:
            changed = accounts.add_account(current, aliases, address, password_hash,
                                           arguments.quota)
        elif arguments.action == "password" and password_hash:
            changed = accounts.set_password(current, address, password_hash)
        elif arguments.action == "quota":
            changed = accounts.set_quota(current, address, arguments.quota)
        else:
            changed = accounts.remove_account(current, address)
            _remove_app_passwords_of(paths, address)
        accounts.write_accounts(paths, changed, owner=dovecot.passwd_owner())
        apply(settings, paths, changed, aliases)
    if arguments.action == "quota":
        log.info("account: %s has a new quota (%s)", address,
                 describe_quota(arguments.quota, settings))
    else:
        log.info("account: %s %s", address, {
            "add": "created", "password": "has a new password",
            "remove": "removed with its app passwords (its mail is kept)"}[arguments.action])
    return 0


def run_release(arguments: argparse.Namespace, settings: Settings, _out: TextIO) -> int:
    """Forget today's sending counts of an account, so it sends again at once (the policy
    process reads them at every recipient). Raises AccountError for an address that is not an
    account."""
    paths = Paths(settings.data_dir)
    address = accounts.normalise_address(arguments.address, settings.domains)
    if all(account.address != address for account in accounts.read_accounts(paths)):
        raise AccountError(f"{address} is not an account here, so it has no sending limits to "
                           "release; `mailboot account list` shows the accounts")
    before = limits.release(limits.state_directory(paths.policy_state), address,
                            datetime.now(UTC))
    log.info("account: %s released: today's counts (%d messages, %d first-time recipients) are "
             "forgotten; it may send again", address, before.messages, before.first_time)
    return 0


def describe_quota(quota: int | None, settings: Settings) -> str:
    limit = _limit(quota, settings)
    shown = "unlimited" if limit is None else format_size(limit)
    return f"MAILBOX_QUOTA: {shown}" if quota is None else shown


def parse_quota_option(text: str) -> int | None:
    """--quota: a size (5G), `unlimited`, or `default` (MAILBOX_QUOTA applies)."""
    value = text.strip().lower()
    if value == "default":
        return None
    try:
        size = parse_size(value)
    except SettingValueError as error:
        raise argparse.ArgumentTypeError(f"{error}; or default (MAILBOX_QUOTA), "
                                         "unlimited") from None
    return accounts.UNLIMITED if size is None else size


def _remove_app_passwords_of(paths: Paths, address: str) -> None:
    """A removed account's devices must not log in either (its address may come back)."""
    passwords = accounts.read_app_passwords(paths)
    kept = [p for p in passwords if p.address != address]
    if len(kept) != len(passwords):
        accounts.write_app_passwords(paths, kept, owner=dovecot.passwd_owner())


def change_app_password(arguments: argparse.Namespace, settings: Settings, paths: Paths,
                        address: str) -> int:
    """--add-app NAME (password on stdin) or --remove-app NAME; the main password stays."""
    name = accounts.check_app_name(arguments.add_app or arguments.remove_app)
    password_hash = None
    if arguments.add_app:
        password_hash = dovecot.hash_password(read_password(arguments.password_stdin))
    with accounts.locked(paths):
        passwords = accounts.read_app_passwords(paths)
        if password_hash:
            changed = accounts.add_app_password(passwords, accounts.read_accounts(paths),
                                                address, name, password_hash)
        else:
            changed = accounts.remove_app_password(passwords, address, name)
        accounts.write_app_passwords(paths, changed, owner=dovecot.passwd_owner())
    wait_for_dovecot()
    log.info("account: %s app password %s %s", address, name,
             "added" if password_hash else "removed (it no longer logs in)")
    return 0


@dataclass(frozen=True)
class AccountRow:
    address: str
    used_bytes: int | None  # None: Dovecot couldn't say
    limit_bytes: int | None  # None: unlimited
    app_passwords: tuple[str, ...]


def list_accounts(paths: Paths, settings: Settings, as_json: bool, out: TextIO) -> int:
    """Each mailbox with its use, its limit and its app passwords' names."""
    rows = account_rows(paths, settings)
    if as_json:
        json.dump([dataclasses.asdict(row) for row in rows], out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        return 0
    width = max(len(row.address) for row in rows)
    out.write(f"{'ADDRESS':<{width}}  {'USED':>10}  {'LIMIT':>10}  APP PASSWORDS\n")
    for row in rows:
        used = "?" if row.used_bytes is None else format_size(row.used_bytes)
        limit = "unlimited" if row.limit_bytes is None else format_size(row.limit_bytes)
        out.write(f"{row.address:<{width}}  {used:>10}  {limit:>10}  "
                  f"{', '.join(row.app_passwords) or '-'}\n")
    return 0


def account_rows(paths: Paths, settings: Settings) -> list[AccountRow]:
    current = accounts.read_accounts(paths)
    apps: dict[str, list[str]] = {}
    for password in accounts.read_app_passwords(paths):
        apps.setdefault(password.address, []).append(password.name)
    try:
        usage = dovecot.quota_usage()
    except CommandError as error:  # Dovecot not running: the list still helps
        log.warning("account: can't read quota use from Dovecot (%s)", error)
        usage = {}
    rows = []
    for account in current:
        use = usage.get(account.address)
        rows.append(AccountRow(account.address, use.used_bytes if use else None,
                               use.limit_bytes if use else _limit(account.quota, settings),
                               tuple(sorted(apps.get(account.address, [])))))
    return rows


def _limit(quota: int | None, settings: Settings) -> int | None:
    if quota is None:
        return settings.mailbox_quota
    return None if quota == accounts.UNLIMITED else quota


def import_accounts(arguments: argparse.Namespace, settings: Settings, paths: Paths,
                    source: TextIO, out: TextIO) -> int:
    """Create every account of the list in one write; nothing when a line is bad (unless
    --skip-invalid). Raises AccountError naming each refused line."""
    lines = source.readlines()
    with accounts.locked(paths):
        current = accounts.read_accounts(paths)
        aliases = accounts.read_aliases(paths)
        taken = {a.address for a in current} | {a.source for a in aliases}
        parsed = account_import.parse_lines(lines, settings.domains, taken)
        for refusal in parsed.refusals:
            log.error("account import: %s", refusal)
        if parsed.refusals and not arguments.skip_invalid:
            raise AccountError(f"{len(parsed.refusals)} line(s) refused (above), so nothing was "
                               "imported; fix them, or import the others with --skip-invalid")
        plain = [entry for entry in parsed.entries if entry.plain is not None]
        hashes = hash_all({entry.line: str(entry.plain) for entry in plain})
        changed = [*current, *account_import.accounts_from(parsed.entries, hashes)]
        accounts.write_accounts(paths, changed, owner=dovecot.passwd_owner())
        apply(settings, paths, changed, aliases)
    weak = sum(entry.weak for entry in parsed.entries)
    out.write(f"imported {len(parsed.entries)} account(s) ({len(plain)} plain password(s) "
              f"hashed); {len(parsed.refusals)} line(s) skipped\n")
    if weak:
        log.warning("account import: %d account(s) came with a fast hash (SSHA, MD5-CRYPT, ...): "
                    "ask them to set a new password (`mailboot account password`), which is "
                    "hashed with bcrypt", weak)
    return 0


def hash_all(passwords: dict[int, str]) -> dict[int, str]:
    """bcrypt hashes of many passwords, on every core (each costs about 0.25 s of CPU)."""
    if not passwords:
        return {}
    workers = max(1, len(os.sched_getaffinity(0)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashed = pool.map(dovecot.hash_password, passwords.values())
        return dict(zip(passwords, hashed, strict=True))


def run_alias(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    paths = Paths(settings.data_dir)
    if arguments.action == "list":
        for alias in accounts.read_aliases(paths):
            out.write(f"{alias.source} -> {', '.join(alias.destinations)}\n")
        return 0
    source = accounts.normalise_address(arguments.source, settings.domains)
    with accounts.locked(paths):
        current = accounts.read_accounts(paths)
        aliases = accounts.read_aliases(paths)
        if arguments.action == "add":
            destinations = accounts.parse_destinations(arguments.destinations)
            changed = accounts.add_alias(aliases, current, source, destinations)
        else:
            changed = accounts.remove_alias(aliases, source)
        accounts.write_aliases(paths, changed)
        apply(settings, paths, current, changed)
    log.info("alias: %s %s", source, "added" if arguments.action == "add" else "removed")
    return 0


def apply(settings: Settings, paths: Paths, current: list[accounts.Account],
          aliases: list[accounts.Alias]) -> None:
    maps = accounts.postfix_maps(settings.domains, current, aliases)
    values = {"mailboxes": maps.mailboxes, "aliases": maps.aliases, "senders": maps.senders}
    render.write_files(render.render_maps(values, paths))
    postfix.reload(paths)
    wait_for_dovecot()


def wait_for_dovecot() -> None:
    """Return only once the change is in effect: Dovecot looks at its passwd-file at most once
    per wall-clock second, so a lookup in this second may still see the old file."""
    now = time.time()
    time.sleep(math.floor(now) + 1.05 - now)

