"""Mailboxes and aliases, kept below DATA_DIR/accounts.

- `passwd`: Dovecot's passwd-file, `address:{SCHEME}hash::::::` per line, in creation order. It
  holds only strong hashes; Dovecot re-reads it when it changes, so no restart is needed.
- `aliases`: `source destination[,destination...]` per line, as the user added them.
- `app-passwords/1` .. `/10`: each device's own password, passwd-file lines with the app's name
  in the gecos field, at most one per address in each file (Dovecot has one passdb per file:
  a passwd-file keeps only the first line of a user).

From these two, `postfix_maps` derives what Postfix looks up (rendered into /etc/postfix): which
addresses exist, where aliases go, and which login may send as which address. RFC 2142 requires
`postmaster@` and `abuse@` at every mail domain: unless the user made them mailboxes or aliases,
they go to the domain's first mailbox (or the first mailbox of all).
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailboot.base.errors import AccountError, StateError
from mailboot.base.files import write_atomically
from mailboot.base.paths import Paths
from mailboot.settings.values import SettingValueError, parse_email_address

ROLE_ADDRESSES = ("postmaster", "abuse")  # RFC 2142 §2 and §4
MIN_PASSWORD_LENGTH = 10
# App passwords per address: Dovecot tries one passdb per slot after the main password, so each
# slot costs a bcrypt check on a login with a later slot's password.
APP_PASSWORD_SLOTS = 10
# The userdb extra field (passwd-file) that overrides MAILBOX_QUOTA for one mailbox, in bytes.
QUOTA_FIELD = "userdb_quota_storage_size"
_HASH = re.compile(r"^\{[A-Z0-9-]+\}\S+$")

Hasher = Callable[[str], str]


# Account.quota: the mailbox's own limit in bytes; None follows MAILBOX_QUOTA, UNLIMITED none.
UNLIMITED = 0
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


@dataclass(frozen=True)
class Account:
    address: str
    password_hash: str
    quota: int | None = None


@dataclass(frozen=True)
class AppPassword:
    """A device's own password: it logs in as `address` and can be revoked alone."""

    address: str
    name: str
    password_hash: str
    slot: int  # which of the APP_PASSWORD_SLOTS files (and Dovecot passdbs) holds it


@dataclass(frozen=True)
class Alias:
    source: str
    destinations: tuple[str, ...]


@dataclass(frozen=True)
class PostfixMaps:
    """Postfix lookup tables as (key, value) rows."""

    mailboxes: tuple[tuple[str, str], ...]
    aliases: tuple[tuple[str, str], ...]
    senders: tuple[tuple[str, str], ...]


def normalise_address(text: str, domains: Sequence[str]) -> str:
    """`Alice@Bücher.de` -> `alice@xn--bcher-kva.de`; the domain must be one of ours."""
    try:
        address = parse_email_address(text)
    except SettingValueError as error:
        raise AccountError(f"{error}; give an address like alice@{domains[0]}") from None
    local, _, domain = address.rpartition("@")
    if domain not in domains:
        raise AccountError(
            f"{text!r} is not at one of the mail domains ({', '.join(domains)}); "
            "add its domain to MAIL_DOMAINS first"
        )
    return f"{local.lower()}@{domain}"


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password is shorter than {MIN_PASSWORD_LENGTH} characters")
    if any(ord(character) < 32 for character in password):
        raise AccountError("the password contains control characters")


# --- reading and writing -------------------------------------------------------------------------


def passwd_path(paths: Paths) -> Path:
    return paths.passwd_file


def aliases_path(paths: Paths) -> Path:
    return paths.accounts_dir / "aliases"


def read_accounts(paths: Paths) -> list[Account]:
    accounts = []
    for number, line in _lines(passwd_path(paths)):
        address, password_hash, _gecos, extra = _passwd_fields(line)
        quota = _quota_field(extra)
        if not address or not _HASH.match(password_hash) or quota == -1:
            raise StateError(f"{passwd_path(paths)} line {number} is not `address:{{SCHEME}}hash"
                             f"::::::` (with `{QUOTA_FIELD}=bytes` at the end for a mailbox's "
                             "own quota); fix or remove that line")
        accounts.append(Account(address, password_hash, quota))
    return accounts


def read_app_passwords(paths: Paths) -> list[AppPassword]:
    """Every app password, slot by slot."""
    found = []
    for slot in range(1, APP_PASSWORD_SLOTS + 1):
        path = paths.app_password_file(slot)
        for number, line in _lines(path):
            address, password_hash, name, _extra = _passwd_fields(line)
            if not address or not _HASH.match(password_hash) or not _APP_NAME.match(name):
                raise StateError(f"{path} line {number} is not `address:{{SCHEME}}hash:::name:::`;"
                                 " fix or remove that line")
            found.append(AppPassword(address, name, password_hash, slot))
    return found


def _passwd_fields(line: str) -> tuple[str, str, str, str]:
    """address, hash, gecos and the extra fields of a passwd-file line
    (`user:password:uid:gid:gecos:home:shell:extra`, Dovecot's passwd-file format)."""
    fields = line.split(":", 7) + [""] * 7
    return fields[0], fields[1], fields[4], fields[7]


def _quota_field(extra: str) -> int | None:
    """The quota in the extra fields: bytes, UNLIMITED, None when absent, -1 when malformed."""
    for field in extra.split():
        name, _, value = field.partition("=")
        if name == QUOTA_FIELD:
            if value == "unlimited":
                return UNLIMITED
            return int(value) if value.isascii() and value.isdigit() and int(value) else -1
    return None


def read_aliases(paths: Paths) -> list[Alias]:
    aliases = []
    for number, line in _lines(aliases_path(paths)):
        fields = line.split()
        if len(fields) != 2:
            raise StateError(f"{aliases_path(paths)} line {number} is not `source destinations`")
        aliases.append(Alias(fields[0], tuple(fields[1].split(","))))
    return aliases


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except OSError as error:
        raise StateError(f"can't read {path}: {error.strerror}") from error
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.startswith("#"):
            yield number, line.strip()


def write_accounts(
    paths: Paths, accounts: Sequence[Account], owner: tuple[int, int] | None
) -> None:
    # Dovecot's passwd-file keeps the other fields empty: uid, gid and home come from its userdb.
    text = "".join(f"{a.address}:{a.password_hash}::::::{_quota_text(a.quota)}\n"
                   for a in accounts)
    _write_passwd_file(passwd_path(paths), text, owner)


def _quota_text(quota: int | None) -> str:
    """The userdb field that overrides MAILBOX_QUOTA for this mailbox (Dovecot reads the extra
    fields of a passwd-file line as userdb fields)."""
    if quota is None:
        return ""
    return f"{QUOTA_FIELD}={'unlimited' if quota == UNLIMITED else quota}"


def write_app_passwords(paths: Paths, passwords: Sequence[AppPassword],
                        owner: tuple[int, int] | None) -> None:
    """One file per slot; the app's name rides in the gecos field, which Dovecot ignores."""
    for slot in range(1, APP_PASSWORD_SLOTS + 1):
        text = "".join(f"{p.address}:{p.password_hash}:::{p.name}:::\n"
                       for p in passwords if p.slot == slot)
        _write_passwd_file(paths.app_password_file(slot), text, owner)


def _write_passwd_file(path: Path, text: str, owner: tuple[int, int] | None) -> None:
    previous = path.stat().st_mtime if path.exists() else 0.0
    if write_atomically(path, text.encode(), mode=0o640, owner=owner):
        # Dovecot notices a changed passwd-file by its mtime (in seconds) and size; a new hash of
        # the same length written within the same second would go unnoticed.
        stamp = max(time.time(), math.floor(previous) + 1.0)
        os.utime(path, (stamp, stamp))


def write_aliases(paths: Paths, aliases: Sequence[Alias]) -> None:
    text = "".join(f"{a.source} {','.join(a.destinations)}\n" for a in aliases)
    write_atomically(aliases_path(paths), text.encode(), mode=0o644)


@contextmanager
def locked(paths: Paths) -> Iterator[None]:
    """Serialise changes: two `docker exec` calls at once must not lose one's update."""
    paths.accounts_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    with (paths.accounts_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --- changes -------------------------------------------------------------------------------------


def add_account(accounts: list[Account], aliases: Sequence[Alias], address: str,
                password_hash: str, quota: int | None = None) -> list[Account]:
    if any(a.address == address for a in accounts):
        raise AccountError(f"{address} already exists; use `mailboot account password` to change "
                           "its password")
    if any(a.source == address for a in aliases):
        raise AccountError(f"{address} is an alias; remove the alias first")
    return [*accounts, Account(address, password_hash, quota)]


def set_quota(accounts: list[Account], address: str, quota: int | None) -> list[Account]:
    if not any(a.address == address for a in accounts):
        raise AccountError(f"{address} is not an account (see `mailboot account list`)")
    return [Account(a.address, a.password_hash, quota) if a.address == address else a
            for a in accounts]


def check_app_name(name: str) -> str:
    if not _APP_NAME.match(name):
        raise AccountError(f"{name!r} is not an app name: use 1 to 40 letters, digits, dots, "
                           "dashes or underscores, like phone or laptop-2")
    return name


def add_app_password(passwords: list[AppPassword], accounts: Sequence[Account], address: str,
                     name: str, password_hash: str) -> list[AppPassword]:
    """Into the first slot this address doesn't use yet."""
    if not any(a.address == address for a in accounts):
        raise AccountError(f"{address} is not an account (see `mailboot account list`)")
    own = [p for p in passwords if p.address == address]
    if any(p.name == name for p in own):
        raise AccountError(f"{address} already has an app password named {name}; remove it "
                           "first with --remove-app")
    used = {p.slot for p in own}
    free = [slot for slot in range(1, APP_PASSWORD_SLOTS + 1) if slot not in used]
    if not free:
        raise AccountError(f"{address} has {APP_PASSWORD_SLOTS} app passwords already, the most "
                           "there can be; remove one first with --remove-app")
    return [*passwords, AppPassword(address, name, password_hash, free[0])]


def remove_app_password(passwords: list[AppPassword], address: str,
                        name: str) -> list[AppPassword]:
    remaining = [p for p in passwords if (p.address, p.name) != (address, name)]
    if len(remaining) == len(passwords):
        raise AccountError(f"{address} has no app password named {name} (see `mailboot account "
                           "list`)")
    return remaining


def remove_account(accounts: list[Account], address: str) -> list[Account]:
    remaining = [a for a in accounts if a.address != address]
    if len(remaining) == len(accounts):
        raise AccountError(f"{address} is not an account (see `mailboot account list`)")
    return remaining


def set_password(accounts: list[Account], address: str, password_hash: str) -> list[Account]:
    if not any(a.address == address for a in accounts):
        raise AccountError(f"{address} is not an account (see `mailboot account list`)")
    return [Account(a.address, password_hash, a.quota) if a.address == address else a
            for a in accounts]


def add_alias(aliases: list[Alias], accounts: Sequence[Account], source: str,
              destinations: tuple[str, ...]) -> list[Alias]:
    if any(a.address == source for a in accounts):
        raise AccountError(f"{source} is a mailbox; an alias can't have the same address")
    if any(a.source == source for a in aliases):
        raise AccountError(f"{source} is already an alias; remove it first to change it")
    return [*aliases, Alias(source, destinations)]


def remove_alias(aliases: list[Alias], source: str) -> list[Alias]:
    remaining = [a for a in aliases if a.source != source]
    if len(remaining) == len(aliases):
        raise AccountError(f"{source} is not an alias (see `mailboot alias list`)")
    return remaining


def parse_destinations(text: str) -> tuple[str, ...]:
    """Alias targets may be anywhere (forwarding), so only their syntax is checked."""
    destinations = []
    for item in text.split(","):
        try:
            destinations.append(parse_email_address(item).lower())
        except SettingValueError as error:
            raise AccountError(f"alias destination {error}") from None
    return tuple(destinations)


# --- what Postfix looks up -----------------------------------------------------------------------


def role_aliases(domains: Sequence[str], accounts: Sequence[Account],
                 aliases: Sequence[Alias]) -> list[Alias]:
    """postmaster@ and abuse@ of each domain, unless the user already defined them."""
    taken = {a.address for a in accounts} | {a.source for a in aliases}
    implicit = []
    for domain in domains:
        target = _first_mailbox(domain, accounts)
        if target is None:
            continue
        implicit += [Alias(f"{role}@{domain}", (target,)) for role in ROLE_ADDRESSES
                     if f"{role}@{domain}" not in taken]
    return implicit


def _first_mailbox(domain: str, accounts: Sequence[Account]) -> str | None:
    same_domain = [a.address for a in accounts if a.address.endswith("@" + domain)]
    if same_domain:
        return same_domain[0]
    return accounts[0].address if accounts else None


def postfix_maps(domains: Sequence[str], accounts: Sequence[Account],
                 aliases: Sequence[Alias]) -> PostfixMaps:
    every_alias = [*aliases, *role_aliases(domains, accounts, aliases)]
    mailbox_rows = tuple((a.address, "OK") for a in accounts)
    alias_rows = tuple((a.source, ",".join(a.destinations)) for a in every_alias)
    # Each login may send as its own address and as every alias that delivers to it.
    senders: dict[str, list[str]] = {a.address: [a.address] for a in accounts}
    for alias in every_alias:
        owners = [d for d in alias.destinations if d in senders]
        if owners:
            senders.setdefault(alias.source, []).extend(owners)
    sender_rows = tuple((address, ",".join(owners)) for address, owners in senders.items())
    return PostfixMaps(mailbox_rows, alias_rows, sender_rows)
