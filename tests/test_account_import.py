"""`mailboot account import`: every line checked before anything is written."""

from __future__ import annotations

from mailboot.mailboxes import bulk_import as account_import
from mailboot.mailboxes.bulk_import import Refusal

DOMAINS = ("example.com", "example.org")
BCRYPT = "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuu5Z0vS1x6kq0Wq7wJm2uYV3o9l0G6b7S"


def test_hashes_and_plain_passwords_are_told_apart() -> None:
    parsed = account_import.parse_lines(
        [f"Alice@Example.com\t{BCRYPT}\n", "# a comment\n", "\n",
         "bob@example.org\ta plain password\n",
         "carol@example.org\t{SSHA512}c2FsdGVkaGFzaA==\r\n"], DOMAINS, taken=())
    assert parsed.refusals == ()
    alice, bob, carol = parsed.entries
    assert (alice.line, alice.address, alice.password_hash, alice.plain) == (
        1, "alice@example.com", BCRYPT, None)
    assert (bob.line, bob.password_hash, bob.plain) == (4, None, "a plain password")
    assert (carol.weak, alice.weak) == (True, False)
    created = account_import.accounts_from(parsed.entries, {4: "{BLF-CRYPT}bob"})
    assert [a.password_hash for a in created] == [BCRYPT, "{BLF-CRYPT}bob",
                                                  "{SSHA512}c2FsdGVkaGFzaA=="]


def test_every_bad_line_is_named() -> None:
    parsed = account_import.parse_lines([
        f"alice@example.com\t{BCRYPT}",
        "no-tab@example.com a password here",
        "dave@example.net\tlong enough password",
        "eve@example.com\tshort",
        "frank@example.com\t{PLAIN}secret-in-clear",
        "grace@example.com\t{SHA512-CRYPT}has:colon",
        f"ALICE@example.com\t{BCRYPT}",
        f"taken@example.com\t{BCRYPT}",
        "not an address\tlong enough password",
    ], DOMAINS, taken={"taken@example.com"})
    assert [e.address for e in parsed.entries] == ["alice@example.com"]
    reasons = {r.line: r.reason for r in parsed.refusals}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "no TAB" in reasons[2]
    assert "not at one of the mail domains" in reasons[3]
    assert "shorter than 10" in reasons[4]
    assert "{PLAIN} is not a password scheme that can be imported" in reasons[5]
    assert "colon" in reasons[6]
    assert "also on line 1" in reasons[7]
    assert "already exists" in reasons[8]
    assert "not an email address" in reasons[9]
    assert str(Refusal(2, "x")) == "line 2: x"


def test_ten_thousand_lines_are_each_checked() -> None:
    lines = [f"user{n}@example.com\t{BCRYPT}\n" for n in range(10_000)]
    parsed = account_import.parse_lines(lines, DOMAINS, taken=())
    assert len(parsed.entries) == 10_000 and parsed.refusals == ()
