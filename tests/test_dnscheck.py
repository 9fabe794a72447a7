"""The DNS doctor with DNS state written as data: every status and its hint."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from mailboot.dkim.keys import DomainKeys
from mailboot.dns.answer import Answer
from mailboot.records.build import Kind, Record, all_records, build_record_groups
from mailboot.records.doctor import (
    PROPAGATION,
    SHARED_FAILURE_HINT,
    Finding,
    Status,
    check_records,
    shared_failure,
)
from mailboot.settings.table import Settings
from mailboot.tls.keys import TlsaKeys

HOST_IP = "203.0.113.25"


@pytest.fixture
def records(
    make_settings: Callable[..., Settings], make_keys: Callable[[Settings], tuple[DomainKeys, ...]]
) -> list[Record]:
    settings = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4=HOST_IP,
                             DMARC_RUA="dmarc@example.com")
    return all_records(build_record_groups(settings, make_keys(settings)))


def published(records: list[Record]) -> dict[tuple[str, str], Answer]:
    """A DNS holding exactly what we print (the PTR set at the provider too)."""
    dns: dict[tuple[str, str], list[str]] = {}
    for record in records:
        if record.value is not None:
            dns.setdefault((record.name, record.rtype), []).append(record.value)
    dns[("example.com", "TXT")].append("google-site-verification=abc")  # unrelated TXT
    return {key: Answer(tuple(values)) for key, values in dns.items()}


def lookup_from(dns: dict[tuple[str, str], Answer]) -> Callable[[str, str], Answer]:
    def lookup(name: str, rtype: str) -> Answer:
        return dns.get((name.rstrip("."), rtype), Answer(nxdomain=True))
    return lookup


def finding(findings: list[Finding], name: str, rtype: str) -> Finding:
    (found,) = [f for f in findings if f.record.name == name and f.record.rtype == rtype]
    return found


def run(records: list[Record], dns: dict[tuple[str, str], Answer]) -> list[Finding]:
    return check_records(records, lookup_from(dns), [HOST_IP])


def test_everything_published_is_ok(records: list[Record]) -> None:
    findings = run(records, published(records))
    assert {f.status for f in findings} == {Status.OK}
    assert not any(f.required_and_not_ok for f in findings)


def test_missing_record_says_what_to_add_where_and_why(records: list[Record]) -> None:
    dns = published(records)
    del dns[("_dmarc.example.com", "TXT")]
    result = finding(run(records, dns), "_dmarc.example.com", "TXT")
    assert result.status is Status.MISSING and result.required_and_not_ok
    assert result.hint.startswith("Add _dmarc TXT v=DMARC1; p=reject; adkim=s; aspf=s; "
                                  "rua=mailto:dmarc@example.com at the DNS provider of example.com")
    assert "receivers apply no policy to forged mail" in result.hint
    assert "minutes" in result.hint


def test_dkim_is_compared_by_key_whatever_the_splitting_and_spaces(records: list[Record]) -> None:
    dns = published(records)
    key = next(r for r in records if "._domainkey." in r.name)
    value = key.value or ""
    spaced = value.replace("p=", "p= ", 1)[:120] + " " + value.replace("p=", "p= ", 1)[120:]
    dns[(key.name, "TXT")] = Answer((spaced.replace("; ", ";"),))
    assert finding(run(records, dns), key.name, "TXT").status is Status.OK
    dns[(key.name, "TXT")] = Answer((value[:-8] + "AAAAAAAA",))
    changed = finding(run(records, dns), key.name, "TXT")
    assert changed.status is Status.WRONG
    assert "not the key this server signs with" in changed.hint


# What other names publish: a relay that sends for us, one that doesn't, one ending in ~all.
OTHERS = {
    ("_spf.relay.example.net", "TXT"): Answer(("v=spf1 ip4:203.0.113.0/24 -all",)),
    ("_spf.other.example.net", "TXT"): Answer(("v=spf1 ip4:198.51.100.0/24 -all",)),
    ("_spf.lenient.example.net", "TXT"): Answer(("v=spf1 ip4:203.0.113.0/24 ~all",)),
    ("_spf.down.example.net", "TXT"): Answer(error="timed out"),
    ("other.example.com", "A"): Answer(("198.51.100.7",)),
}
ELEVEN_LOOKUPS = "v=spf1 " + "a:other.example.com " * 11 + "mx -all"


@pytest.mark.parametrize(("spf", "status", "words"), [
    ("v=spf1 mx a -all", Status.OK, ""),
    ("v=spf1 ip4:203.0.113.25 -all", Status.OK, ""),
    ("v=spf1 a:mail.example.com -all", Status.OK, ""),
    # Relays and providers: authorised through another name's record.
    ("v=spf1 include:_spf.relay.example.net -all", Status.OK, ""),
    ("v=spf1 redirect=_spf.relay.example.net", Status.OK, ""),
    ("v=spf1 a mx ~all", Status.WRONG,
     "does not end in -all: other hosts get softfail (from ~all)"),
    ("v=spf1 redirect=_spf.lenient.example.net", Status.WRONG, "does not end in -all"),
    ("v=spf1 a mx", Status.WRONG, "other hosts get neutral"),
    ("v=spf1 mx +all", Status.WRONG, "lets any host send as example.com"),
    ("v=spf1 include:_spf.other.example.net -all", Status.WRONG,
     "does not authorise this server (203.0.113.25): SPF result fail, decided by -all"),
    ("v=spf1 -ip4:203.0.113.0/24 mx -all", Status.WRONG,
     "SPF result fail, decided by -ip4:203.0.113.0/24"),
    ("v=spf1 include:_spf.nothing.example.net -all", Status.WRONG,
     "SPF permerror: No valid SPF record for included domain: _spf.nothing.example.net"),
    ("v=spf1 a:x1.example.net a:x2.example.net a:x3.example.net mx -all", Status.WRONG,
     "SPF permerror: Void lookup limit of 2 exceeded"),  # RFC 7208 §4.6.4
    (ELEVEN_LOOKUPS, Status.WRONG, "SPF permerror: Too many DNS lookups"),
    ("v=spf1 mx moo -all", Status.WRONG, "SPF permerror: Unknown mechanism found: moo"),
    ("v=spf1 include:_spf.down.example.net -all", Status.UNKNOWN,
     "a lookup it needs got no answer (timed out)"),
])
def test_spf_is_evaluated_for_our_address_and_any_other(
    records: list[Record], spf: str, status: Status, words: str
) -> None:
    dns = published(records) | OTHERS
    dns[("example.com", "TXT")] = Answer((spf, "other=thing"))
    result = finding(run(records, dns), "example.com", "TXT")
    assert result.status is status, result.hint
    assert words in result.hint
    if status is Status.WRONG:
        assert "Change it to v=spf1 a mx -all at the DNS provider of example.com" in result.hint


def test_the_helo_names_spf_is_evaluated_too(
    make_settings: Callable[..., Settings], make_keys: Callable[[Settings], tuple[DomainKeys, ...]]
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com", MAIL_HOSTNAME="mx.hosting.example.net",
                             PUBLIC_IPV4=HOST_IP)
    records = all_records(build_record_groups(settings, make_keys(settings)))
    helo = next(r for r in records if r.kind is Kind.HELO_SPF)
    assert (helo.name, helo.value) == ("mx.hosting.example.net", "v=spf1 a -all")
    dns = lookup_from({(r.name, r.rtype): Answer((r.value,)) for r in records if r.value})
    assert check_records([helo], dns, [HOST_IP])[0].status is Status.OK
    elsewhere = lookup_from({("mx.hosting.example.net", "TXT"): Answer((helo.value or "",)),
                             ("mx.hosting.example.net", "A"): Answer(("198.51.100.7",))})
    (wrong,) = check_records([helo], elsewhere, [HOST_IP])
    assert wrong.status is Status.WRONG and "does not authorise this server" in wrong.hint
    assert "can't check this server's bounces by SPF" in wrong.hint


def test_without_a_public_address_spf_is_compared_by_its_terms(
    make_settings: Callable[..., Settings], make_keys: Callable[[Settings], tuple[DomainKeys, ...]]
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com")
    (spf,) = [r for r in all_records(build_record_groups(settings, make_keys(settings)))
              if r.kind is Kind.SPF]

    def status(published: str) -> Finding:
        dns = lookup_from({("example.com", "TXT"): Answer((published,))} | OTHERS)
        return check_records([spf], dns, [])[0]

    assert status("v=spf1 mx a -all").status is Status.OK
    assert "does not end in -all" in status("v=spf1 a mx ~all").hint
    # Which host the include authorises can't be told without knowing our address.
    assert "does not authorise this server" in status(
        "v=spf1 include:_spf.relay.example.net -all").hint


def test_two_spf_records_are_wrong(records: list[Record]) -> None:
    dns = published(records)
    dns[("example.com", "TXT")] = Answer(("v=spf1 a mx -all", "v=spf1 -all"))
    assert "exactly one" in finding(run(records, dns), "example.com", "TXT").hint


def test_mx_by_host_and_preference(records: list[Record]) -> None:
    dns = published(records)
    dns[("example.com", "MX")] = Answer(("20 mail.example.com.",))
    assert finding(run(records, dns), "example.com", "MX").status is Status.OK
    dns[("example.com", "MX")] = Answer(("10 mx.oldhost.example.",))
    wrong = finding(run(records, dns), "example.com", "MX")
    assert wrong.status is Status.WRONG and "not to mail.example.com" in wrong.hint
    assert wrong.found == ("10 mx.oldhost.example.",)
    dns[("example.com", "MX")] = Answer(("10 mail.example.com.", "5 mx.oldhost.example."))
    assert "preferred over ours" in finding(run(records, dns), "example.com", "MX").hint


def test_dmarc_by_tags(records: list[Record]) -> None:
    dns = published(records)
    dns[("_dmarc.example.com", "TXT")] = Answer(
        ("v=DMARC1;aspf=s; adkim=s ;p=reject; rua=mailto:dmarc@example.com",))
    assert finding(run(records, dns), "_dmarc.example.com", "TXT").status is Status.OK
    dns[("_dmarc.example.com", "TXT")] = Answer(("v=DMARC1; p=none",))
    wrong = finding(run(records, dns), "_dmarc.example.com", "TXT")
    assert wrong.status is Status.WRONG and "p=none instead of p=reject" in wrong.hint


@pytest.mark.parametrize("value", [
    "v=DMARC1; p=reject; adkim=s; aspf=s",
    "v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:x@dmarc.example"])
def test_where_dmarc_reports_go_is_the_owners_choice(records: list[Record], value: str) -> None:
    """A record asking for no reports, or for reports elsewhere, still does its job (upgrades
    from before reports were read keep their READY)."""
    dns = published(records)
    dns[("_dmarc.example.com", "TXT")] = Answer((value,))
    dns[("_smtp._tls.example.com", "TXT")] = Answer(("v=TLSRPTv1; rua=mailto:tls@x.example",))
    assert finding(run(records, dns), "_dmarc.example.com", "TXT").status is Status.OK
    assert finding(run(records, dns), "_smtp._tls.example.com", "TXT").status is Status.OK


@pytest.mark.parametrize(("values", "why"), [
    (("v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc@example.com", "v=DMARC1; p=none"),
     "has 2 DMARC records; receivers apply none of them"),
    (("v=DMARC1; adkim=s; aspf=s; rua=mailto:dmarc@example.com",), "has no p= tag"),
    (("v=DMARC1; p=rejected; adkim=s; aspf=s; rua=mailto:dmarc@example.com",),
     "has p=rejected, which is none of none, quarantine or reject"),
])
def test_dmarc_records_receivers_ignore_are_wrong(
        records: list[Record], values: tuple[str, ...], why: str) -> None:
    """Judged as receivers discover them (RFC 7489 §6.6.3): no policy at all."""
    dns = published(records)
    dns[("_dmarc.example.com", "TXT")] = Answer(values)
    wrong = finding(run(records, dns), "_dmarc.example.com", "TXT")
    assert wrong.status is Status.WRONG and why in wrong.hint
    assert wrong.hint.endswith(PROPAGATION + ".")
    if len(values) == 1:
        assert "receivers apply no DMARC policy" in wrong.hint
        assert "p=reject" in wrong.hint  # and what p= should be


def test_a_dmarc_record_not_first_tagged_v_is_not_one(records: list[Record]) -> None:
    dns = published(records)
    dns[("_dmarc.example.com", "TXT")] = Answer(("p=reject; v=DMARC1",))
    assert finding(run(records, dns), "_dmarc.example.com", "TXT").status is Status.MISSING


def test_address_pointing_elsewhere(records: list[Record]) -> None:
    dns = published(records)
    dns[("mail.example.com", "A")] = Answer(("198.51.100.7",))
    wrong = finding(run(records, dns), "mail.example.com", "A")
    assert wrong.status is Status.WRONG and "points to 198.51.100.7" in wrong.hint


def test_no_answer_is_could_not_tell(records: list[Record]) -> None:
    dns = published(records)
    dns[("example.com", "MX")] = Answer(error="timed out")
    result = finding(run(records, dns), "example.com", "MX")
    assert result.status is Status.UNKNOWN and "timed out" in result.hint


def test_ptr_must_name_the_host_and_the_host_must_resolve_back(records: list[Record]) -> None:
    reverse = "25.113.0.203.in-addr.arpa"
    dns = published(records)
    assert finding(run(records, dns), reverse, "PTR").status is Status.OK
    del dns[(reverse, "PTR")]
    missing = finding(run(records, dns), reverse, "PTR")
    assert missing.status is Status.MISSING and "at your hosting provider" in missing.hint
    dns = published(records)
    dns[(reverse, "PTR")] = Answer(("static-25.isp.example.",))
    assert "names static-25.isp.example." in finding(run(records, dns), reverse, "PTR").hint
    dns = published(records)
    dns[("mail.example.com", "A")] = Answer(("198.51.100.7",))
    unconfirmed = finding(run(records, dns), reverse, "PTR")
    assert unconfirmed.status is Status.WRONG and "does not resolve back" in unconfirmed.hint


def test_ptr_whose_forward_lookup_got_no_answer_is_unknown(records: list[Record]) -> None:
    dns = published(records)
    dns[("mail.example.com", "A")] = Answer(error="timed out")
    result = finding(run(records, dns), "25.113.0.203.in-addr.arpa", "PTR")
    assert result.status is Status.UNKNOWN
    assert "whether mail.example.com resolves back to 203.0.113.25 is unknown" in result.hint
    assert "timed out" in result.hint and result.failure == "timed out"


def test_mta_sts_id_must_match_the_policy_we_serve(records: list[Record]) -> None:
    dns = published(records)
    dns[("_mta-sts.example.com", "TXT")] = Answer(("v=STSv1; id=20200101",))
    wrong = finding(run(records, dns), "_mta-sts.example.com", "TXT")
    assert wrong.status is Status.WRONG and "id=20200101 instead of id=" in wrong.hint


def test_slow_name_servers_leave_records_unknown_when_the_budget_runs_out(
    make_settings: Callable[..., Settings], make_keys: Callable[[Settings], tuple[DomainKeys, ...]]
) -> None:
    # More records than worker threads: some are still queued (then cancelled) at the deadline.
    settings = make_settings(MAIL_DOMAINS=",".join(f"d{i}.example.com" for i in range(5)),
                             PUBLIC_IPV4=HOST_IP)
    many = all_records(build_record_groups(settings, make_keys(settings)))
    assert len(many) > 16
    release = threading.Event()

    def hanging(name: str, rtype: str) -> Answer:
        release.wait(5)
        return Answer(nxdomain=True)

    try:
        findings = check_records(many, hanging, [HOST_IP], budget=0.2)
    finally:
        release.set()
    assert len(findings) == len(many)
    assert {f.status for f in findings} == {Status.UNKNOWN}


def test_nothing_published_every_record_says_what_its_absence_costs(
    make_settings: Callable[..., Settings], make_keys: Callable[[Settings], tuple[DomainKeys, ...]]
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com", MAIL_HOSTNAME="mx.hosting.example.net",
                             PUBLIC_IPV4=HOST_IP, PUBLIC_IPV6="2001:db8::25",
                             DMARC_RUA="reports@dmarc.example.net")
    tlsa = TlsaKeys("3 1 1 " + "ab" * 32, "3 1 1 " + "cd" * 32)  # as for a signed zone
    many = all_records(build_record_groups(settings, make_keys(settings), None, tlsa,
                                           '0 issue "letsencrypt.org"'))
    findings = check_records(many, lookup_from({}), [HOST_IP])
    assert {f.record.kind for f in findings} == set(Kind)
    assert {f.status for f in findings} == {Status.MISSING}
    consequences = {f.record.kind: f.hint.split("Without it, ")[1].split(";")[0]
                    for f in findings}
    assert len(set(consequences.values())) == len(Kind)  # each kind's own
    assert consequences[Kind.DMARC_REPORT_AUTH] == "that domain's reports for us are dropped"


def test_one_reason_for_every_failed_lookup_is_shared_and_hints_stay_short(
    records: list[Record]
) -> None:
    reason = "no DNS server answered (10.0.0.2: timed out): can this container reach ..."

    def unreachable(name: str, rtype: str) -> Answer:
        return Answer(error=reason)

    findings = run_with(records, unreachable)
    assert shared_failure(findings) == reason
    looked_up = [f for f in findings if not f.record.is_placeholder]
    assert {f.hint for f in looked_up} == {SHARED_FAILURE_HINT}
    assert {f.status for f in looked_up} == {Status.UNKNOWN}


def test_failures_for_different_reasons_are_told_per_record(records: list[Record]) -> None:
    dns = published(records)
    dns[("example.com", "MX")] = Answer(error="the name servers of example.com did not answer")
    findings = run(records, dns)
    assert shared_failure(findings) is None
    mx = finding(findings, "example.com", "MX")
    assert mx.hint == ("no answer: the name servers of example.com did not answer; checked again "
                       "later")
    dns = {key: Answer(error=f"no answer for {key[0]}") for key in dns}
    assert shared_failure(run(records, dns)) is None


def run_with(records: list[Record], lookup: Callable[[str, str], Answer]) -> list[Finding]:
    return check_records(records, lookup, [HOST_IP])
