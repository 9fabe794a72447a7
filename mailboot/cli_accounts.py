"""`mailboot account ...` and `mailboot alias ...`: change mailboxes while the server runs.

Each change is made under a lock, written atomically, rendered into Postfix's tables and applied
with `postfix reload`; Dovecot re-reads its passwd-file by itself. No restart is needed.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import math
import sys
import time
from typing import TextIO

from mailboot import accounts, render
from mailboot.daemons import dovecot, postfix
from mailboot.errors import AccountError
from mailboot.paths import Paths
from mailboot.settings import Settings

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
        for account in accounts.read_accounts(paths):
            out.write(account.address + "\n")
        return 0
    address = accounts.normalise_address(arguments.address, settings.domains)
    password_hash = None
    if arguments.action in ("add", "password"):
        password_hash = dovecot.hash_password(read_password(arguments.password_stdin))
    with accounts.locked(paths):
        current = accounts.read_accounts(paths)
        aliases = accounts.read_aliases(paths)
        if arguments.action == "add" and password_hash:
            changed = accounts.add_account(current, aliases, address, password_hash)
        elif arguments.action == "password" and password_hash:
            changed = accounts.set_password(current, address, password_hash)
        else:
            changed = accounts.remove_account(current, address)
        accounts.write_accounts(paths, changed, owner=dovecot.passwd_owner())
        apply(settings, paths, changed, aliases)
    log.info("account: %s %s", address, {"add": "created", "password": "has a new password",
                                          "remove": "removed (its mail is kept)"}[arguments.action])
    return 0


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

