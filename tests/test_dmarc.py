"""DMARC records and policy discovery (RFC 7489 §6.3, §6.6.3), with DNS written as data; and the
tag lists they are written in (RFC 6376 §3.2)."""

from __future__ import annotations

import pytest

from mailboot.dns.answer import Answer
from mailboot.settings.table import DmarcDisposition
from mailboot.standards import dmarc
from mailboot.standards.dmarc import Outcome
from mailboot.standards.publicsuffix import parse_rules
from mailboot.standards.taglist import first_tag, parse_tags, squeezed

RULES = parse_rules(["com", "co.uk"])


class Dns:
    """A resolver as data: (name, type) -> values; names in `broken` answer SERVFAIL."""

    def __init__(self, records: dict[str, tuple[str, ...]]) -> None:
        self.records = records  # name -> TXT values
        self.broken: set[str] = set()
        self.asked: list[str] = []

    def __call__(self, name: str, rtype: str) -> Answer:
        assert rtype == "TXT"
        self.asked.append(name)
        if name in self.broken:
            return Answer(error="SERVFAIL from every name server")
        values = self.records.get(name, ())
        return Answer(values, nxdomain=not values)


# --- tag lists ------------------------------------------------------------------------------


def test_a_tag_list_is_read_whatever_the_spacing_and_case_of_names() -> None:
    assert parse_tags(" v = DMARC1 ;P=reject;; rua=mailto:a@example.com ; ") == {
        "v": "DMARC1", "p": "reject", "rua": "mailto:a@example.com"}
    assert parse_tags("v=DKIM1; k=rsa; p=MIIB AQAB") == {"v": "DKIM1", "k": "rsa",
                                                        "p": "MIIB AQAB"}
    assert squeezed("MIIB AQ\tAB ") == "MIIBAQAB"


def test_a_tag_list_skips_parts_without_a_name_and_keeps_the_first_of_two() -> None:
    assert parse_tags("v=DMARC1; junk; =x; p=none; p=reject") == {"v": "DMARC1", "p": "none"}
    assert parse_tags("") == {}


def test_the_first_tag_is_the_first_part_only() -> None:
    assert first_tag("v = STSv1; id=1") == ("v", "STSv1")
    assert first_tag("junk; v=DMARC1") is None
    assert first_tag("p=reject; v=DMARC1") == ("p", "reject")


# --- records --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["v=DMARC1; p=reject", "V = dmarc1;p=Reject",
                                  "v=DMARC1;p=reject;", "v=DMARC1 ; p=reject; foo=bar"])
def test_a_dmarc_record_starts_with_v_dmarc1(text: str) -> None:
    record = dmarc.parse_record(text)
    assert record is not None and record.problem is None and record.disposition == "reject"


@pytest.mark.parametrize("text", ["p=reject; v=DMARC1", "v=spf1 -all", "v=DMARC10; p=reject",
                                  "x v=DMARC1; p=reject", "", "google-site-verification=x"])
def test_other_txt_values_are_not_dmarc_records(text: str) -> None:
    assert dmarc.parse_record(text) is None and not dmarc.is_dmarc_record(text)


@pytest.mark.parametrize(("text", "problem"), [
    ("v=DMARC1", "has no p= tag"),
    ("v=DMARC1; rua=mailto:reports@example.com", "has no p= tag"),
    ("v=DMARC1; p=rejct", "has p=rejct, which is none of none, quarantine or reject"),
    ("v=DMARC1; p=", "has p=, which is none"),
    ("v=DMARC1; p=reject; sp=drop", "has sp=drop, which is none of none, quarantine or reject"),
])
def test_a_record_without_a_valid_p_is_no_policy(text: str, problem: str) -> None:
    record = dmarc.parse_record(text)
    assert record is not None and record.problem is not None and problem in record.problem


def test_alignment_defaults_to_relaxed() -> None:
    record = dmarc.parse_record("v=DMARC1; p=none; adkim=S; aspf=x")
    assert record is not None
    assert record.alignment("dkim") == "s" and record.alignment("spf") == "r"


def test_every_disposition_we_publish_is_one_receivers_accept() -> None:
    """DMARC_POLICY's choices are p= values this module reads as a policy."""
    assert {str(choice) for choice in DmarcDisposition} <= dmarc.DISPOSITIONS
    for choice in DmarcDisposition:
        record = dmarc.parse_record(f"v=DMARC1; p={choice}")
        assert record is not None and record.problem is None


# --- discovery ------------------------------------------------------------------------------


def test_the_record_at_the_domain_applies() -> None:
    dns = Dns({"_dmarc.example.com": ("v=spf1 -all", "v=DMARC1; p=quarantine")})
    found = dmarc.discover("Example.COM.", dns, RULES)
    assert found.outcome is Outcome.POLICY and found.has_policy
    assert found.name == "_dmarc.example.com" and found.record is not None
    assert found.record.disposition == "quarantine" and found.records == 1
    assert dns.asked == ["_dmarc.example.com"]


def test_without_one_at_the_domain_the_organizational_domains_applies() -> None:
    dns = Dns({"_dmarc.example.co.uk": ("v=DMARC1; p=reject",),
               "_dmarc.shop.example.co.uk": ("v=spf1 -all",)})  # no DMARC record: look above
    found = dmarc.discover("shop.example.co.uk", dns, RULES)
    assert found.has_policy and found.name == "_dmarc.example.co.uk"
    assert dns.asked == ["_dmarc.shop.example.co.uk", "_dmarc.example.co.uk"]


def test_no_record_anywhere_is_none() -> None:
    found = dmarc.discover("shop.example.co.uk", Dns({}), RULES)
    assert found.outcome is Outcome.NONE and not found.has_policy
    assert found.reason == ("no DMARC record at _dmarc.shop.example.co.uk nor at "
                            "_dmarc.example.co.uk")
    assert found.name == "_dmarc.shop.example.co.uk"
    assert dmarc.discover("example.com", Dns({}), RULES).reason == (
        "no DMARC record at _dmarc.example.com")


def test_two_records_are_none_and_discovery_stops_there() -> None:
    """RFC 7489 §6.6.3 step 5: the organizational domain's record is not asked for."""
    dns = Dns({"_dmarc.shop.example.com": ("v=DMARC1; p=reject", "v=DMARC1; p=reject"),
               "_dmarc.example.com": ("v=DMARC1; p=reject",)})
    found = dmarc.discover("shop.example.com", dns, RULES)
    assert found.outcome is Outcome.NONE and found.record is None and found.records == 2
    assert found.reason == ("_dmarc.shop.example.com has 2 DMARC records; receivers apply "
                            "none of them (RFC 7489 §6.6.3)")
    assert dns.asked == ["_dmarc.shop.example.com"]


def test_two_records_at_the_organizational_domain_are_none_too() -> None:
    dns = Dns({"_dmarc.example.com": ("v=DMARC1; p=reject", "v=DMARC1; p=none")})
    found = dmarc.discover("shop.example.com", dns, RULES)
    assert found.outcome is Outcome.NONE and found.name == "_dmarc.example.com"


def test_one_record_without_a_valid_p_is_no_policy_and_discovery_stops_there() -> None:
    dns = Dns({"_dmarc.shop.example.com": ("v=DMARC1; rua=mailto:r@example.com",),
               "_dmarc.example.com": ("v=DMARC1; p=reject",)})
    found = dmarc.discover("shop.example.com", dns, RULES)
    assert found.outcome is Outcome.PERMERROR and not found.has_policy
    assert found.reason == ('the DMARC record at _dmarc.shop.example.com ("v=DMARC1; '
                            'rua=mailto:r@example.com") has no p= tag, so receivers apply no '
                            "DMARC policy (RFC 7489 §6.6.3)")
    assert dns.asked == ["_dmarc.shop.example.com"]


@pytest.mark.parametrize("broken", ["_dmarc.shop.example.com", "_dmarc.example.com"])
def test_a_servfail_is_a_temperror_not_none(broken: str) -> None:
    dns = Dns({})
    dns.broken.add(broken)
    found = dmarc.discover("shop.example.com", dns, RULES)
    assert found.outcome is Outcome.TEMPERROR and not found.has_policy
    assert found.name == broken
    assert found.reason == f"no answer for {broken} TXT: SERVFAIL from every name server"


def test_at_name_is_none_only_without_a_dmarc_record() -> None:
    assert dmarc.at_name("_dmarc.example.com", Answer(("v=spf1 -all",))) is None
    assert dmarc.at_name("_dmarc.example.com", Answer(nxdomain=True)) is None
    found = dmarc.at_name("_dmarc.example.com", Answer(("v=DMARC1; p=none",)))
    assert found is not None and found.has_policy
