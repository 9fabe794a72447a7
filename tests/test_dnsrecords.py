"""The record set as data: one domain, several, IPv4 only, IPv6 only, no address, odd hostnames."""

from __future__ import annotations

from collections.abc import Callable

from mailboot.dkim.keys import DomainKeys
from mailboot.records.build import (
    Kind,
    Record,
    RecordGroup,
    Where,
    all_records,
    build_record_groups,
    caa_records,
    tlsa_records,
)
from mailboot.settings.table import Settings
from mailboot.standards import mtasts
from mailboot.tls.keys import TlsaKeys

MakeSettings = Callable[..., Settings]
MakeKeys = Callable[[Settings], tuple[DomainKeys, ...]]


# Signed zones only (dane.TlsaSource decides): the current and the next key's values.
TLSA = TlsaKeys("3 1 1 " + "ab" * 32, "3 1 1 " + "cd" * 32)


def groups_for(
    make_settings: MakeSettings, make_keys: MakeKeys, **variables: str
) -> tuple[RecordGroup, ...]:
    settings = make_settings(**variables)
    return build_record_groups(settings, make_keys(settings))


def find(groups: tuple[RecordGroup, ...], name: str, rtype: str) -> list[Record]:
    return [r for r in all_records(groups) if r.name == name and r.rtype == rtype]


def value(groups: tuple[RecordGroup, ...], name: str, rtype: str) -> str | None:
    (record,) = find(groups, name, rtype)
    return record.value


def test_one_domain_dual_stack(make_settings: MakeSettings, make_keys: MakeKeys) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com",
                        PUBLIC_IPV4="203.0.113.25", PUBLIC_IPV6="2001:db8::25")
    assert [g.zone for g in groups] == ["example.com", None]
    assert value(groups, "example.com", "MX") == "10 mail.example.com."
    assert value(groups, "mail.example.com", "A") == "203.0.113.25"
    assert value(groups, "mail.example.com", "AAAA") == "2001:db8::25"
    assert value(groups, "example.com", "TXT") == "v=spf1 a mx -all"
    assert value(groups, "mail.example.com", "TXT") == "v=spf1 a -all"
    assert value(groups, "_dmarc.example.com", "TXT") == (
        "v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc-reports@example.com")
    dkim_value = value(groups, "mb20261125._domainkey.example.com", "TXT")
    assert dkim_value is not None and dkim_value.startswith("v=DKIM1; k=rsa; t=s; p=MIIB")
    assert value(groups, "_smtp._tls.example.com", "TXT") == (
        "v=TLSRPTv1; rua=mailto:tls-reports@example.com"
    )
    assert value(groups, "mta-sts.example.com", "CNAME") == "mail.example.com."
    sts = value(groups, "_mta-sts.example.com", "TXT")
    assert sts is not None and sts.startswith("v=STSv1; id=")
    assert value(groups, "_submissions._tcp.example.com", "SRV") == "0 1 465 mail.example.com."
    assert value(groups, "_submission._tcp.example.com", "SRV") == "10 1 587 mail.example.com."
    assert value(groups, "_imaps._tcp.example.com", "SRV") == "0 1 993 mail.example.com."
    assert value(groups, "_imap._tcp.example.com", "SRV") == "0 0 0 ."
    assert value(groups, "_autodiscover._tcp.example.com", "SRV") == "0 1 443 mail.example.com."
    assert value(groups, "_sieve._tcp.example.com", "SRV") == "0 1 4190 mail.example.com."
    for client_host in ("autoconfig.example.com", "autodiscover.example.com"):
        (cname,) = find(groups, client_host, "CNAME")
        assert (cname.kind, cname.value, cname.required) == (
            Kind.CLIENT_HOST, "mail.example.com.", False)
        assert f"https://{client_host}" in cname.purpose and "certificate" in cname.purpose
    ptrs = {r.name: r for r in groups[-1].records}
    assert set(ptrs) == {
        "25.113.0.203.in-addr.arpa",
        "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
    }
    assert all(r.where is Where.PROVIDER and r.value == "mail.example.com." for r in ptrs.values())
    assert not any(r.is_placeholder for r in all_records(groups))


def test_record_order_and_relative_names(make_settings: MakeSettings, make_keys: MakeKeys) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com",
                        PUBLIC_IPV4="203.0.113.25")
    names = [(r.relative_name, r.rtype) for r in groups[0].records]
    assert names[:4] == [("@", "MX"), ("mail", "A"), ("mail", "TXT"), ("@", "TXT")]
    assert ("_dmarc", "TXT") in names
    assert ("mb20261125._domainkey", "TXT") in names
    assert groups[-1].records[0].relative_name == "25.113.0.203.in-addr.arpa."


def test_several_domains_share_one_host(make_settings: MakeSettings, make_keys: MakeKeys) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com,example.org,bücher.de",
                        PUBLIC_IPV4="203.0.113.25")
    assert [g.zone for g in groups] == ["example.com", "example.org", "xn--bcher-kva.de", None]
    assert groups[2].title == "xn--bcher-kva.de (bücher.de)"
    for domain in ("example.com", "example.org", "xn--bcher-kva.de"):
        assert value(groups, domain, "MX") == "10 mail.example.com."
        assert value(groups, f"_dmarc.{domain}", "TXT") is not None
        assert len(find(groups, f"mb20261125._domainkey.{domain}", "TXT")) == 1
    # The host's own records exist once, in the zone that holds it.
    assert len(find(groups, "mail.example.com", "A")) == 1
    assert {r.zone for r in find(groups, "mail.example.com", "A")} == {"example.com"}
    dkim_values = {value(groups, f"mb20261125._domainkey.{d}", "TXT")
                   for d in ("example.com", "example.org", "xn--bcher-kva.de")}
    assert len(dkim_values) == 3
    # Reports of every domain go to the primary's report addresses, which the server reads;
    # the primary agrees to take the others' DMARC reports (RFC 7489 §7.1).
    assert value(groups, "_smtp._tls.example.org", "TXT") == (
        "v=TLSRPTv1; rua=mailto:tls-reports@example.com"
    )
    assert value(groups, "_dmarc.example.org", "TXT") == (
        "v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc-reports@example.com")
    for other in ("example.org", "xn--bcher-kva.de"):
        (authorisation,) = find(groups, f"{other}._report._dmarc.example.com", "TXT")
        assert (authorisation.value, authorisation.zone) == ("v=DMARC1", "example.com")


def test_reports_turned_off(make_settings: MakeSettings, make_keys: MakeKeys) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com,example.org",
                        PUBLIC_IPV4="203.0.113.25", DMARC_RUA="off", TLSRPT_RUA="OFF")
    assert value(groups, "_dmarc.example.org", "TXT") == "v=DMARC1; p=reject; adkim=s; aspf=s"
    assert find(groups, "_smtp._tls.example.com", "TXT") == []
    assert find(groups, "example.org._report._dmarc.example.com", "TXT") == []


def test_ipv4_only(make_settings: MakeSettings, make_keys: MakeKeys) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com",
                        PUBLIC_IPV4="203.0.113.25")
    assert value(groups, "mail.example.com", "A") == "203.0.113.25"
    assert find(groups, "mail.example.com", "AAAA") == []
    assert [r.name for r in groups[-1].records] == ["25.113.0.203.in-addr.arpa"]


def test_ipv6_only(make_settings: MakeSettings, make_keys: MakeKeys) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com",
                        PUBLIC_IPV6="2001:db8::25")
    assert find(groups, "mail.example.com", "A") == []
    assert value(groups, "mail.example.com", "AAAA") == "2001:db8::25"
    (ptr,) = groups[-1].records
    assert ptr.name.endswith(".8.b.d.0.1.0.0.2.ip6.arpa")
    assert not any(r.is_placeholder for r in all_records(groups))


def test_no_address_gives_placeholders_that_say_where_to_look(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com")
    (a,) = find(groups, "mail.example.com", "A")
    (aaaa,) = find(groups, "mail.example.com", "AAAA")
    assert a.value is None and a.required and a.placeholder is not None
    assert "PUBLIC_IPV4" in a.placeholder and "hosting provider" in a.placeholder
    assert aaaa.value is None and not aaaa.required and aaaa.placeholder is not None
    assert "PUBLIC_IPV6" in aaaa.placeholder
    (ptr,) = groups[-1].records
    assert ptr.is_placeholder and ptr.where is Where.PROVIDER
    assert ptr.value == "mail.example.com."
    placeholders = [r for r in all_records(groups) if r.is_placeholder]
    assert placeholders == [a, aaaa, ptr]


def test_hostname_outside_the_mail_domains(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com",
                        MAIL_HOSTNAME="mx1.hosting.example.net", PUBLIC_IPV4="203.0.113.25")
    assert [g.zone for g in groups] == ["example.com", "hosting.example.net", None]
    (a,) = find(groups, "mx1.hosting.example.net", "A")
    assert a.zone == "hosting.example.net" and a.relative_name == "mx1"
    assert "not one of the mail domains" in groups[1].note
    assert value(groups, "example.com", "MX") == "10 mx1.hosting.example.net."


def test_hostname_equal_to_a_mail_domain_gets_no_second_spf(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com",
                        MAIL_HOSTNAME="example.com", PUBLIC_IPV4="203.0.113.25")
    # Two SPF records at one name are a permanent error (RFC 7208 §4.5).
    assert len(find(groups, "example.com", "TXT")) == 1
    assert value(groups, "example.com", "A") == "203.0.113.25"


def test_hostname_in_a_sub_domain_zone_goes_to_the_longest_match(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com,mail.example.org",
                        MAIL_HOSTNAME="mx.mail.example.org", PUBLIC_IPV4="203.0.113.25")
    (a,) = find(groups, "mx.mail.example.org", "A")
    assert a.zone == "mail.example.org" and a.relative_name == "mx"


def test_dmarc_reports(make_settings: MakeSettings, make_keys: MakeKeys) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com,example.org",
                        DMARC_POLICY="quarantine",
                        DMARC_RUA="dmarc@example.com,reports@dmarc.example.net")
    assert value(groups, "_dmarc.example.org", "TXT") == (
        "v=DMARC1; p=quarantine; adkim=s; aspf=s; "
        "rua=mailto:dmarc@example.com,mailto:reports@dmarc.example.net"
    )
    # RFC 7489 §7.1: each report domain outside the policy's own domain must agree.
    authorisations = sorted(r.name for r in all_records(groups) if "._report._dmarc." in r.name)
    assert authorisations == [
        "example.com._report._dmarc.dmarc.example.net",
        "example.org._report._dmarc.dmarc.example.net",
        "example.org._report._dmarc.example.com",
    ]
    (in_ours,) = find(groups, "example.org._report._dmarc.example.com", "TXT")
    assert in_ours.zone == "example.com" and in_ours.value == "v=DMARC1"
    external = [g for g in groups if g.zone == "dmarc.example.net"]
    assert len(external) == 1 and len(external[0].records) == 2


def test_required_records_are_the_ones_mail_depends_on(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com",
                        PUBLIC_IPV4="203.0.113.25")
    required = {(r.relative_name, r.rtype) for r in all_records(groups) if r.required}
    assert required == {
        ("@", "MX"), ("mail", "A"), ("@", "TXT"), ("mb20261125._domainkey", "TXT"),
        ("_dmarc", "TXT"), ("25.113.0.203.in-addr.arpa.", "PTR"),
    }


def sts_id(make_settings: MakeSettings, make_keys: MakeKeys, **variables: str) -> str | None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com", **variables)
    return value(groups, "_mta-sts.example.com", "TXT")


def test_mta_sts_id_changes_exactly_when_the_policy_changes(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    base = sts_id(make_settings, make_keys)
    assert base == sts_id(make_settings, make_keys, PUBLIC_IPV4="203.0.113.25", DMARC_POLICY="none")
    assert base != sts_id(make_settings, make_keys, MTA_STS_MODE="testing")
    assert base != sts_id(make_settings, make_keys, MAIL_HOSTNAME="mx.example.com")
    assert base != sts_id(make_settings, make_keys, MTA_STS_MAX_AGE="4w")


def test_mta_sts_policy_text() -> None:
    policy = mtasts.policy_text("enforce", ["mail.example.com"], 86400)
    assert policy == "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 86400\r\n"
    policy_id = mtasts.policy_id(policy)
    assert policy_id.isalnum() and 1 <= len(policy_id) <= 32  # RFC 8461 §3.1


def test_a_relays_spf_include_goes_into_every_domains_spf(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com,example.org",
                        RELAY_HOST="smtp.relay.example.net",
                        RELAY_SPF_INCLUDE="_spf.relay.example.net")
    for domain in ("example.com", "example.org"):
        assert value(groups, domain, "TXT") == "v=spf1 a mx include:_spf.relay.example.net -all"


def test_every_record_has_a_kind_its_type_and_tag_follow_from(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    groups = groups_for(make_settings, make_keys, MAIL_DOMAINS="example.com,example.org",
                        MAIL_HOSTNAME="mx.hosting.example.net", PUBLIC_IPV4="203.0.113.25",
                        PUBLIC_IPV6="2001:db8::25", DMARC_RUA="reports@dmarc.example.net")
    records = (all_records(groups) + tlsa_records("mx.hosting.example.net", "example.net", TLSA)
               + caa_records("mx.hosting.example.net", "example.net", '0 issue "ca.example"'))
    assert {r.kind for r in records} == set(Kind)  # every kind is made by some builder
    for record in records:
        assert record.rtype == record.kind.rtype
        assert record.where is (Where.PROVIDER if record.kind is Kind.PTR else Where.ZONE)
        if record.kind.tag is not None:
            assert record.rtype == "TXT"
            assert (record.value or "").startswith(record.kind.tag)

    def kind(name: str, rtype: str) -> Kind:
        (record,) = find(groups, name, rtype)
        return record.kind

    assert kind("example.com", "TXT") is Kind.SPF
    assert kind("mx.hosting.example.net", "TXT") is Kind.HELO_SPF
    assert kind("_mta-sts.example.org", "TXT") is Kind.MTA_STS
    assert kind("mta-sts.example.org", "CNAME") is Kind.MTA_STS_HOST
    assert kind("example.org._report._dmarc.dmarc.example.net", "TXT") is Kind.DMARC_REPORT_AUTH
    assert kind("_dmarc.example.org", "TXT") is Kind.DMARC
    assert kind("_smtp._tls.example.org", "TXT") is Kind.TLSRPT


def test_the_mta_sts_record_announces_the_policy_the_policy_server_serves(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com", MTA_STS_MODE="testing")
    groups = build_record_groups(settings, make_keys(settings))
    assert value(groups, "_mta-sts.example.com", "TXT") == mtasts.record_value(
        mtasts.policy_for(settings))
