"""Accounts and aliases: validation, changes, files, and the tables Postfix looks up."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailboot import accounts
from mailboot.accounts import Account, Alias
from mailboot.errors import AccountError, StateError
from mailboot.paths import Paths

DOMAINS = ("example.com", "example.org")
HASH = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"


def test_addresses_are_normalised_and_must_be_ours() -> None:
    assert accounts.normalise_address("Alice@Example.COM", DOMAINS) == "alice@example.com"
    with pytest.raises(AccountError, match="not at one of the mail domains"):
        accounts.normalise_address("alice@example.net", DOMAINS)
    with pytest.raises(AccountError, match="not an email address"):
        accounts.normalise_address("alice", DOMAINS)


def test_passwords_must_be_long_enough() -> None:
    accounts.check_password("correct horse")
    with pytest.raises(AccountError, match="shorter than 10"):
        accounts.check_password("short")
    with pytest.raises(AccountError, match="control characters"):
        accounts.check_password("long enough\x00")


def test_changes() -> None:
    current = accounts.add_account([], [], "alice@example.com", HASH)
    with pytest.raises(AccountError, match="already exists"):
        accounts.add_account(current, [], "alice@example.com", HASH)
    aliases = accounts.add_alias([], current, "info@example.com", ("alice@example.com",))
    with pytest.raises(AccountError, match="is a mailbox"):
        accounts.add_alias(aliases, current, "alice@example.com", ("x@example.net",))
    with pytest.raises(AccountError, match="is an alias"):
        accounts.add_account(current, aliases, "info@example.com", HASH)
    changed = accounts.set_password(current, "alice@example.com", "{ARGON2ID}new")
    assert changed == [Account("alice@example.com", "{ARGON2ID}new")]
    assert accounts.remove_account(changed, "alice@example.com") == []
    with pytest.raises(AccountError, match="is not an account"):
        accounts.remove_account([], "alice@example.com")
    assert accounts.remove_alias(aliases, "info@example.com") == []


def test_files_round_trip(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    written = [Account("alice@example.com", HASH), Account("bob@example.org", HASH)]
    with accounts.locked(paths):
        accounts.write_accounts(paths, written, owner=None)
        accounts.write_aliases(paths, [Alias("info@example.com", ("a@example.com", "b@x.net"))])
    assert accounts.read_accounts(paths) == written
    assert accounts.read_aliases(paths) == [Alias("info@example.com", ("a@example.com", "b@x.net"))]
    passwd = (tmp_path / "accounts" / "passwd")
    assert passwd.read_text() == f"alice@example.com:{HASH}::::::\nbob@example.org:{HASH}::::::\n"
    assert passwd.stat().st_mode & 0o777 == 0o640


def test_corrupt_passwd_line_is_reported(tmp_path: Path) -> None:
    (tmp_path / "accounts").mkdir()
    (tmp_path / "accounts" / "passwd").write_text("alice@example.com:plaintext::::::\n")
    with pytest.raises(StateError, match="line 1 is not"):
        accounts.read_accounts(Paths(tmp_path))


def test_role_addresses_reach_a_real_mailbox() -> None:
    current = [Account("bob@example.org", HASH), Account("alice@example.com", HASH)]
    user_aliases = [Alias("abuse@example.com", ("security@example.net",))]
    maps = accounts.postfix_maps(DOMAINS, current, user_aliases)
    assert dict(maps.aliases) == {
        "abuse@example.com": "security@example.net",  # the user's own choice wins
        "postmaster@example.com": "alice@example.com",
        "postmaster@example.org": "bob@example.org",
        "abuse@example.org": "bob@example.org",
    }
    assert maps.mailboxes == (("bob@example.org", "OK"), ("alice@example.com", "OK"))
    senders = dict(maps.senders)
    assert senders["alice@example.com"] == "alice@example.com"
    assert senders["postmaster@example.com"] == "alice@example.com"
    assert "abuse@example.com" not in senders  # goes elsewhere, nobody here may send as it


def test_no_mailbox_means_no_role_aliases() -> None:
    assert accounts.postfix_maps(DOMAINS, [], []).aliases == ()


def test_role_address_of_a_domain_without_mailbox_goes_to_the_first_mailbox() -> None:
    maps = accounts.postfix_maps(DOMAINS, [Account("alice@example.com", HASH)], [])
    assert dict(maps.aliases)["postmaster@example.org"] == "alice@example.com"
