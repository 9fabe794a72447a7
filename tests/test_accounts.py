"""Accounts and aliases: validation, changes, files, and the tables Postfix looks up."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailboot.base.errors import AccountError, StateError
from mailboot.base.paths import Paths
from mailboot.mailboxes import accounts
from mailboot.mailboxes.accounts import Account, Alias

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


def test_quota_is_kept_in_the_passwd_line(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    written = [Account("alice@example.com", HASH, 1 << 20),
               Account("bob@example.org", HASH, accounts.UNLIMITED),
               Account("carol@example.org", HASH)]
    accounts.write_accounts(paths, written, owner=None)
    lines = (tmp_path / "accounts" / "passwd").read_text().splitlines()
    assert lines[0] == f"alice@example.com:{HASH}::::::{accounts.QUOTA_FIELD}=1048576"
    assert lines[1] == f"bob@example.org:{HASH}::::::{accounts.QUOTA_FIELD}=unlimited"
    assert lines[2] == f"carol@example.org:{HASH}::::::"
    assert accounts.read_accounts(paths) == written
    changed = accounts.set_password(written, "alice@example.com", "{BLF-CRYPT}new")
    assert changed[0].quota == 1 << 20  # a new password keeps the quota
    assert accounts.set_quota(changed, "alice@example.com", None)[0].quota is None
    with pytest.raises(AccountError, match="is not an account"):
        accounts.set_quota(changed, "dave@example.com", 5)


def test_malformed_quota_field_is_reported(tmp_path: Path) -> None:
    (tmp_path / "accounts").mkdir()
    (tmp_path / "accounts" / "passwd").write_text(
        f"alice@example.com:{HASH}::::::{accounts.QUOTA_FIELD}=5G\n")
    with pytest.raises(StateError, match="line 1 is not"):
        accounts.read_accounts(Paths(tmp_path))


def test_app_passwords_take_the_first_free_slot_and_round_trip(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    owners = [Account("alice@example.com", HASH), Account("bob@example.org", HASH)]
    apps = accounts.add_app_password([], owners, "alice@example.com", "phone", "{BLF-CRYPT}a")
    apps = accounts.add_app_password(apps, owners, "alice@example.com", "laptop", "{BLF-CRYPT}b")
    apps = accounts.add_app_password(apps, owners, "bob@example.org", "phone", "{BLF-CRYPT}c")
    assert [(p.address, p.name, p.slot) for p in apps] == [
        ("alice@example.com", "phone", 1), ("alice@example.com", "laptop", 2),
        ("bob@example.org", "phone", 1)]
    apps = accounts.remove_app_password(apps, "alice@example.com", "phone")
    apps = accounts.add_app_password(apps, owners, "alice@example.com", "tablet", "{BLF-CRYPT}d")
    assert [(p.name, p.slot) for p in apps if p.address == "alice@example.com"] == [
        ("laptop", 2), ("tablet", 1)]  # the freed slot is taken again
    accounts.write_app_passwords(paths, apps, owner=None)
    assert (tmp_path / "accounts/app-passwords/1").read_text() == (
        "bob@example.org:{BLF-CRYPT}c:::phone:::\nalice@example.com:{BLF-CRYPT}d:::tablet:::\n")
    assert (tmp_path / "accounts/app-passwords/3").read_text() == ""
    assert sorted(accounts.read_app_passwords(paths), key=str) == sorted(apps, key=str)


def test_app_password_refusals() -> None:
    owners = [Account("alice@example.com", HASH)]
    apps: list[accounts.AppPassword] = []
    with pytest.raises(AccountError, match="is not an account"):
        accounts.add_app_password(apps, owners, "bob@example.com", "phone", HASH)
    for number in range(accounts.APP_PASSWORD_SLOTS):
        apps = accounts.add_app_password(apps, owners, "alice@example.com", f"d{number}", HASH)
    with pytest.raises(AccountError, match="already has an app password named d1"):
        accounts.add_app_password(apps, owners, "alice@example.com", "d1", HASH)
    with pytest.raises(AccountError, match="10 app passwords already"):
        accounts.add_app_password(apps, owners, "alice@example.com", "one-more", HASH)
    with pytest.raises(AccountError, match="no app password named tv"):
        accounts.remove_app_password(apps, "alice@example.com", "tv")
    for bad in ("", "my phone", "a:b", "-x", "x" * 41):
        with pytest.raises(AccountError, match="is not an app name"):
            accounts.check_app_name(bad)
    assert accounts.check_app_name("laptop-2.home_1") == "laptop-2.home_1"
