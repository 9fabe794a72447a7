"""The self-test: our mail judged as a receiver judges it, against DNS written as data."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from mailboot.base.paths import Paths
from mailboot.diagnose import selftest
from mailboot.dkim.keys import DomainKeys, ensure_keys
from mailboot.dns.answer import Answer
from mailboot.mailboxes import accounts
from mailboot.records.build import all_records, build_record_groups
from mailboot.settings.table import Settings
from mailboot.standards import dmarc
from mailboot.standards.publicsuffix import parse_rules
from tests.conftest import NOW

IP4, IP6, OTHER = "203.0.113.5", "2001:db8::5", "192.0.2.99"
RULES = parse_rules(["com", "org", "co.uk"])
MakeSettings = Callable[..., Settings]
MakeKeys = Callable[[Settings], tuple[DomainKeys, ...]]


class Dns:
    """The authoritative answers as data: (name, type) -> values; names in `broken` fail."""

    def __init__(self, records: dict[tuple[str, str], tuple[str, ...]]) -> None:
        self.records = records
        self.broken: set[str] = set()

    def __call__(self, name: str, rtype: str) -> Answer:
        if name in self.broken:
            return Answer(error=f"the name servers of {name} did not answer")
        values = self.records.get((name.lower(), rtype), ())
        exists = any(known == name.lower() for known, _ in self.records)
        return Answer(values=values, nxdomain=not exists)

    def remove(self, name: str, rtype: str) -> None:
        del self.records[(name, rtype)]


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(MAIL_DOMAINS="example.com", MAIL_HOSTNAME="mail.example.com",
                         PUBLIC_IPV4=IP4, PUBLIC_IPV6=IP6)


@pytest.fixture
def keys(settings: Settings, make_keys: MakeKeys) -> tuple[DomainKeys, ...]:
    return make_keys(settings)


def published(settings: Settings, keys: tuple[DomainKeys, ...]) -> Dns:
    """Every record exactly as printed, published (what the user pastes into the zone)."""
    records: dict[tuple[str, str], tuple[str, ...]] = {}
    for record in all_records(build_record_groups(settings, keys)):
        if record.value is not None and not record.is_placeholder:
            key = (record.name, record.rtype)
            records[key] = (*records.get(key, ()), record.value)
    return Dns(records)


def evaluate(settings: Settings, keys: tuple[DomainKeys, ...], dns: Dns,
             senders: dict[str, str] | None = None) -> selftest.Report:
    return selftest.evaluate(settings, keys, senders or {"example.com": "alice@example.com"},
                             dns, NOW, RULES)


def results(report: selftest.Report, address: str = IP4) -> dict[str, str]:
    (verdict,) = [v for v in report.verdicts if v.address == address]
    return {check.method: check.result for check in verdict.checks}


def check(report: selftest.Report, method: str, address: str = IP4) -> selftest.Check:
    (verdict,) = [v for v in report.verdicts if v.address == address]
    return next(c for c in verdict.checks if c.method == method)


def test_the_printed_records_published_pass_for_every_address(
        settings: Settings, keys: tuple[DomainKeys, ...]) -> None:
    report = evaluate(settings, keys, published(settings, keys))
    assert report.ok
    assert [(v.domain, v.address) for v in report.verdicts] == [("example.com", IP4),
                                                               ("example.com", IP6)]
    for address in (IP4, IP6):
        assert results(report, address) == {"dkim": "pass", "spf": "pass", "dmarc": "pass"}
    assert [check.result for _, check in report.helo] == ["pass", "pass"]
    text = selftest.report_text(report, settings.hostname)
    assert "example.com: PASS - mail from alice@example.com arriving from 203.0.113.5" in text
    assert "fix:" not in text
    assert text.endswith("selftest: PASS - 2 of 2 domain and address pairs pass\n")


def test_without_the_dkim_record_dkim_fails_naming_the_record(
        settings: Settings, keys: tuple[DomainKeys, ...]) -> None:
    dns = published(settings, keys)
    name = keys[0].signing.record_name
    dns.remove(name, "TXT")
    report = evaluate(settings, keys, dns)
    assert not report.ok
    assert results(report) == {"dkim": "fail", "spf": "pass", "dmarc": "pass"}
    failed = check(report, "dkim")
    assert failed.fix is not None and failed.fix.name == name
    assert failed.fix.value == f"v=DKIM1; k=rsa; t=s; p={keys[0].signing.public_key_b64}"
    text = selftest.report_text(report, settings.hostname)
    assert f"no key record at {name}" in text
    assert f"fix: publish {name}." in text


def test_a_dkim_record_with_another_key_fails(settings: Settings, keys: tuple[DomainKeys, ...],
                                              tmp_path: Path) -> None:
    dns = published(settings, keys)
    other = ensure_keys(Paths(tmp_path / "other"), ["example.com"], NOW)
    name = keys[0].signing.record_name
    dns.records[(name, "TXT")] = (f"v=DKIM1; k=rsa; p={other[0].signing.public_key_b64}",)
    failed = check(evaluate(settings, keys, dns), "dkim")
    assert failed.result == "fail" and failed.fix is not None
    assert f"the key published at {name} does not verify" in failed.reason


def test_spf_naming_another_address_fails_naming_spf(
        settings: Settings, keys: tuple[DomainKeys, ...]) -> None:
    dns = published(settings, keys)
    dns.records[("example.com", "TXT")] = (f"v=spf1 ip4:{OTHER} -all",)
    report = evaluate(settings, keys, dns)
    assert not report.ok
    assert results(report) == {"dkim": "pass", "spf": "fail", "dmarc": "pass"}
    failed = check(report, "spf")
    assert failed.fix is not None and failed.fix.name == "example.com"
    assert failed.fix.value == "v=spf1 a mx -all"
    assert f'("v=spf1 ip4:{OTHER} -all") does not allow {IP4} (decided by -all)' in failed.reason
    assert 'fix: publish example.com.' in selftest.report_text(report, settings.hostname)


def test_both_broken_dmarc_fails_too(settings: Settings, keys: tuple[DomainKeys, ...]) -> None:
    dns = published(settings, keys)
    dns.remove(keys[0].signing.record_name, "TXT")
    dns.records[("example.com", "TXT")] = (f"v=spf1 ip4:{OTHER} -all",)
    report = evaluate(settings, keys, dns)
    for address in (IP4, IP6):
        assert results(report, address) == {"dkim": "fail", "spf": "fail", "dmarc": "fail"}
    assert "neither SPF nor DKIM passes for example.com (p=reject at _dmarc.example.com)" in (
        check(report, "dmarc").reason)
    text = selftest.report_text(report, settings.hostname)
    assert "  DMARC fail" in text and "  DKIM  fail" in text and "  SPF   fail" in text
    assert text.endswith("selftest: FAIL - 0 of 2 domain and address pairs pass\n")


def test_without_a_dmarc_record_dmarc_names_it(settings: Settings,
                                               keys: tuple[DomainKeys, ...]) -> None:
    dns = published(settings, keys)
    dns.remove("_dmarc.example.com", "TXT")
    failed = check(evaluate(settings, keys, dns), "dmarc")
    assert failed.result == "none"
    assert failed.fix is not None and failed.fix.name == "_dmarc.example.com"


def test_dmarc_is_found_at_the_organizational_domain(make_settings: MakeSettings,
                                                     make_keys: MakeKeys) -> None:
    settings = make_settings(MAIL_DOMAINS="shop.example.co.uk", MAIL_HOSTNAME="mx.example.co.uk",
                             PUBLIC_IPV4=IP4)
    keys = make_keys(settings)
    dns = published(settings, keys)
    dns.remove("_dmarc.shop.example.co.uk", "TXT")
    dns.records[("_dmarc.example.co.uk", "TXT")] = ("v=DMARC1; p=quarantine",)
    dns.records[("shop.example.co.uk", "TXT")] = ("v=spf1 -all",)
    report = evaluate(settings, keys, dns, {"shop.example.co.uk": "bob@shop.example.co.uk"})
    dmarc = check(report, "dmarc")
    assert dmarc.result == "pass"
    assert "aligned DKIM pass (p=quarantine at _dmarc.example.co.uk)" in dmarc.reason


def test_alignment_strict_and_relaxed() -> None:
    assert selftest.aligned("mail.example.com", "example.com", "r", RULES)
    assert not selftest.aligned("mail.example.com", "example.com", "s", RULES)
    assert selftest.aligned("Example.COM.", "example.com", "s", RULES)
    assert not selftest.aligned("example.co.uk", "other.co.uk", "r", RULES)


def test_records_that_are_not_a_dmarc_policy_are_skipped() -> None:
    dns = Dns({("_dmarc.example.com", "TXT"): ("v=spf1 -all", "p=reject; v=DMARC1")})
    found = dmarc.discover("example.com", dns, RULES)
    assert found.outcome == "none" and not found.has_policy
    # A DMARC record (v=DMARC1 first) without a valid p= is no policy: a permanent error, as
    # OpenDMARC reports it, not a record to skip (RFC 7489 §6.6.3 steps 2 and 6).
    dns.records[("_dmarc.example.com", "TXT")] += ("v=DMARC1; p=maybe",)
    found = dmarc.discover("example.com", dns, RULES)
    assert found.outcome == "permerror" and not found.has_policy
    dns.records[("_dmarc.example.com", "TXT")] = ("v=DMARC1; p=reject", "v=DMARC1; p=none")
    assert "has 2 DMARC records" in dmarc.discover("example.com", dns, RULES).reason


@pytest.mark.parametrize("values", [
    ("v=DMARC1; p=reject; adkim=s; aspf=s", "v=DMARC1; p=none"),  # two: as good as none
    ("v=DMARC1; adkim=s; aspf=s",),  # no p=
    ("v=DMARC1; p=rejekt; adkim=s; aspf=s",),  # no valid p=
])
def test_a_dmarc_record_receivers_ignore_fails_the_selftest_with_its_fix(
        settings: Settings, keys: tuple[DomainKeys, ...], values: tuple[str, ...]) -> None:
    """Signed and aligned, but DMARC can't pass: receivers find no policy to pass."""
    dns = published(settings, keys)
    dns.records[("_dmarc.example.com", "TXT")] = values
    report = evaluate(settings, keys, dns)
    failed = check(report, "dmarc")
    assert failed.result in ("none", "permerror") and not failed.ok and not report.ok
    assert "receivers apply none" in failed.reason or "no DMARC policy" in failed.reason
    assert failed.fix is not None and failed.fix.name == "_dmarc.example.com"
    assert check(report, "dkim").ok and check(report, "spf").ok


def test_a_failed_lookup_is_a_temperror_not_a_verdict(
        settings: Settings, keys: tuple[DomainKeys, ...]) -> None:
    dns = published(settings, keys)
    dns.broken |= {keys[0].signing.record_name, "_dmarc.example.com"}
    report = evaluate(settings, keys, dns)
    assert check(report, "dkim").result == "temperror"
    assert check(report, "dkim").fix is None
    assert "did not answer" in check(report, "dkim").reason
    assert check(report, "dmarc").result == "temperror"
    assert not report.ok


def test_a_wrong_helo_record_fails(settings: Settings, keys: tuple[DomainKeys, ...]) -> None:
    dns = published(settings, keys)
    dns.records[("mail.example.com", "TXT")] = (f"v=spf1 ip4:{OTHER} -all",)
    report = evaluate(settings, keys, dns)
    assert all(v.ok for v in report.verdicts)
    assert not report.ok
    address, helo = report.helo[0]
    assert address == IP4
    assert helo.result == "fail" and helo.fix is not None
    assert helo.fix.name == "mail.example.com" and helo.fix.value == "v=spf1 a -all"
    dns.remove("mail.example.com", "TXT")  # the HELO record is optional
    assert evaluate(settings, keys, dns).ok


def test_without_a_public_address_nothing_is_evaluated(make_settings: MakeSettings,
                                                       make_keys: MakeKeys) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com")
    keys = make_keys(settings)
    report = evaluate(settings, keys, Dns({}))
    assert not report.ok and report.verdicts == ()
    assert "PUBLIC_IPV4" in selftest.report_text(report, settings.hostname)
    assert "nothing evaluated" in selftest.summary_line(report)


def test_the_message_is_signed_by_the_live_key_with_our_canonicalization(
        keys: tuple[DomainKeys, ...]) -> None:
    signed = selftest.sign(selftest.build_message("alice@example.com", "alice@example.com", NOW),
                           keys[0].signing)
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    assert header.startswith("DKIM-Signature:")
    flat = " ".join(header.split())
    assert f"s={keys[0].signing.selector};" in flat and "d=example.com;" in flat
    assert "c=relaxed/simple;" in flat
    assert "Date: Wed, 25 Nov 2026 12:00:00 +0000" in header
    assert b"\n" not in signed.replace(b"\r\n", b"")


def test_the_sender_is_the_domains_first_mailbox_or_postmaster(
        make_settings: MakeSettings) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com,example.org")
    paths = Paths(settings.data_dir)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    hashed = "{SHA512-CRYPT}$6$x$y"
    accounts.write_accounts(paths, [accounts.Account("zoe@example.org", hashed),
                                    accounts.Account("bob@example.org", hashed)], owner=None)
    assert selftest.senders_for(settings, paths) == {"example.com": "postmaster@example.com",
                                                     "example.org": "zoe@example.org"}


def test_log_summary_says_pass_in_one_line(settings: Settings, keys: tuple[DomainKeys, ...],
                                           caplog: pytest.LogCaptureFixture) -> None:
    dns = published(settings, keys)
    with caplog.at_level(logging.INFO, logger="mailboot.diagnose.selftest"):
        report = selftest.log_summary(settings, Paths(settings.data_dir), dns, NOW, RULES)
    assert report is not None and report.ok
    (line,) = caplog.messages
    assert line == ("selftest: PASS - receivers will find DKIM, SPF and DMARC passing for "
                    f"example.com from {IP4}, {IP6}")


def test_log_summary_names_what_fails_and_the_records(
        settings: Settings, keys: tuple[DomainKeys, ...],
        caplog: pytest.LogCaptureFixture) -> None:
    dns = published(settings, keys)
    dns.remove(keys[0].signing.record_name, "TXT")
    with caplog.at_level(logging.INFO, logger="mailboot.diagnose.selftest"):
        selftest.log_summary(settings, Paths(settings.data_dir), dns, NOW, RULES)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    name = keys[0].signing.record_name
    assert record.getMessage().startswith(
        f"selftest: FAIL - receivers will find problems with our mail: example.com from {IP4}: "
        f"dkim=fail (fix {name} TXT); example.com from {IP6}: dkim=fail (fix {name} TXT); ")


def test_log_summary_never_raises(settings: Settings, keys: tuple[DomainKeys, ...],
                                  caplog: pytest.LogCaptureFixture) -> None:
    accounts.passwd_path(Paths(settings.data_dir)).parent.mkdir(parents=True, exist_ok=True)
    accounts.passwd_path(Paths(settings.data_dir)).write_text("garbage\n")
    with caplog.at_level(logging.INFO, logger="mailboot.diagnose.selftest"):
        assert selftest.log_summary(settings, Paths(settings.data_dir), Dns({}), NOW,
                                    RULES) is None
    assert caplog.messages[0].startswith("selftest: could not run: ")


def test_dkimpy_verifies_what_we_sign(keys: tuple[DomainKeys, ...]) -> None:
    """The same message and key through dkimpy alone, as a receiver would run it."""
    key = keys[0].signing
    signed = selftest.sign(selftest.build_message("a@example.com", "b@example.net", NOW), key)
    record = f"v=DKIM1; k=rsa; t=s; p={key.public_key_b64}".encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
