"""`mailboot account import`: many mailboxes from one list, in one write.

Each line is `address<TAB>password`, where the password is either a hash Dovecot knows
(`{SCHEME}...`, as another server's passwd-file or database holds it: move users without
resetting their passwords) or a plain password, which is hashed here. Every line is checked
before anything is written: one bad line refuses the whole list (naming the line), unless
`--skip-invalid` imports the others.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from mailboot.base.errors import AccountError
from mailboot.mailboxes.accounts import (
    MIN_PASSWORD_LENGTH,
    Account,
    check_password,
    normalise_address,
)

# Dovecot's password schemes whose hashes may be imported (`doveadm pw -l`). Plain-text schemes
# (PLAIN, CLEARTEXT) and unsalted ones (MD5, SHA, PLAIN-MD5) are refused: they would keep the
# password readable, or crackable in seconds, on the volume.
STRONG_SCHEMES = frozenset({"BLF-CRYPT", "ARGON2I", "ARGON2ID", "SHA512-CRYPT",
                            "SHA256-CRYPT", "PBKDF2", "SCRAM-SHA-256"})
# Salted but fast: accepted, so users of an old server keep their passwords, and warned about.
# (DES CRYPT is refused: it reads only the first 8 characters of a password.)
WEAK_SCHEMES = frozenset({"SSHA512", "SSHA256", "SSHA", "MD5-CRYPT", "SMD5", "SCRAM-SHA-1"})
_SCHEME = re.compile(r"^\{([A-Z0-9.-]+)\}(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Entry:
    """One accepted line: its number, the address and either a hash or a plain password."""

    line: int
    address: str
    password_hash: str | None
    plain: str | None

    @property
    def weak(self) -> bool:
        scheme = _SCHEME.match(self.password_hash or "")
        return scheme is not None and scheme.group(1) in WEAK_SCHEMES


@dataclass(frozen=True)
class Refusal:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Parsed:
    entries: tuple[Entry, ...]
    refusals: tuple[Refusal, ...]


def parse_lines(lines: Iterable[str], domains: Sequence[str],
                taken: Collection[str]) -> Parsed:
    """Check every line; `taken`: addresses that are already accounts or aliases."""
    entries: list[Entry] = []
    refusals: list[Refusal] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.removesuffix("\n").removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        try:
            entry = parse_line(number, line, domains)
        except AccountError as error:
            refusals.append(Refusal(number, str(error)))
            continue
        if entry.address in taken:
            refusals.append(Refusal(number, f"{entry.address} already exists (an account or "
                                            "alias); remove it from the list"))
        elif entry.address in seen:
            refusals.append(Refusal(number, f"{entry.address} is also on line "
                                            f"{seen[entry.address]}"))
        else:
            seen[entry.address] = number
            entries.append(entry)
    return Parsed(tuple(entries), tuple(refusals))


def parse_line(number: int, line: str, domains: Sequence[str]) -> Entry:
    """`address<TAB>hash-or-password`; raises AccountError saying what is wrong."""
    address_text, tab, secret = line.partition("\t")
    if not tab:
        raise AccountError("no TAB between the address and the password")
    address = normalise_address(address_text.strip(), domains)
    scheme = _SCHEME.match(secret)
    if scheme is None:
        try:
            check_password(secret)
        except AccountError as error:
            raise AccountError(f"{error} (plain passwords need {MIN_PASSWORD_LENGTH} or more "
                               "characters; a hash starts with {SCHEME})") from None
        return Entry(number, address, None, secret)
    name, value = scheme.groups()
    if name not in STRONG_SCHEMES | WEAK_SCHEMES:
        known = ", ".join(sorted(STRONG_SCHEMES | WEAK_SCHEMES))
        raise AccountError(f"{{{name}}} is not a password scheme that can be imported ({known})")
    if not value or any(c in value for c in ": \t") or not value.isprintable():
        raise AccountError(f"the {{{name}}} hash is empty or holds a colon, blank or control "
                           "character")
    return Entry(number, address, secret, None)


def accounts_from(entries: Sequence[Entry], hashes: dict[int, str]) -> list[Account]:
    """The new accounts, in the list's order; `hashes`: line -> hash of each plain password."""
    return [Account(e.address, e.password_hash or hashes[e.line]) for e in entries]
