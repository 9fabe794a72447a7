"""CAA records (RFC 8659, RFC 8657): the CA of ACME_DIRECTORY, bound to our account once it
exists, parsed back with dnspython and judged by the DNS doctor."""

from __future__ import annotations

import json
from collections.abc import Callable

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from mailboot.acme import caa
from mailboot.base.errors import ConfigError
from mailboot.base.paths import Paths
from mailboot.dkim.keys import DomainKeys
from mailboot.dns.answer import Answer
from mailboot.records import doctor, zonefile
from mailboot.records.build import Kind, Record, all_records, build_record_groups
from mailboot.records.doctor import Status
from mailboot.settings.table import Settings

ACCOUNT = "https://acme-v02.api.letsencrypt.org/acme/acct/123456789"


def caa_records(settings: Settings, keys: tuple[DomainKeys, ...]) -> list[Record]:
    value = caa.value_for(settings, Paths(settings.data_dir))
    return [r for r in all_records(build_record_groups(settings, keys, caa=value))
            if r.kind is Kind.CAA]


def store_account(settings: Settings, uri: str) -> None:
    directory = Paths(settings.data_dir).acme_account_dir(settings.acme_directory)
    directory.mkdir(parents=True)
    (directory / "account.json").write_text(json.dumps({"uri": uri}))


@pytest.mark.parametrize(("directory", "issuer"), [
    ("https://acme-v02.api.letsencrypt.org/directory", "letsencrypt.org"),
    ("https://acme-staging-v02.api.letsencrypt.org/directory", "letsencrypt.org"),
    ("https://acme.zerossl.com/v2/DV90", "sectigo.com"),
    ("https://api.buypass.com/acme/directory", "buypass.com"),
    ("https://dv.acme-v02.api.pki.goog/directory", "pki.goog"),
])
def test_the_record_names_the_ca_of_the_directory(
    make_settings: Callable[..., Settings],
    make_keys: Callable[[Settings], tuple[DomainKeys, ...]], directory: str, issuer: str,
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com", ACME_DIRECTORY=directory)
    [record] = caa_records(settings, make_keys(settings))
    assert record.name == "mail.example.com" and not record.required
    assert record.value == f'0 issue "{issuer}; validationmethods=http-01"'


def test_once_the_account_exists_the_record_is_bound_to_it_and_parses(
    make_settings: Callable[..., Settings],
    make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com,example.org")
    store_account(settings, ACCOUNT)
    keys = make_keys(settings)
    groups = build_record_groups(settings, keys, caa=caa.value_for(settings, Paths(
        settings.data_dir)))
    zone = dns.zone.from_text(zonefile.zone_text(groups[:1]), origin="example.com",
                              relativize=False, check_origin=False)
    rdataset = zone.find_rdataset("mail.example.com.", dns.rdatatype.CAA)
    [rdata] = list(rdataset)
    assert (rdata.flags, rdata.tag, rdata.value) == (
        0, b"issue", f"letsencrypt.org; accounturi={ACCOUNT}; validationmethods=http-01".encode())
    # One record only: the mta-sts. names are CNAMEs to the host, which CAA lookups follow.
    assert len(caa_records(settings, keys)) == 1


def test_an_unknown_ca_gets_no_record_and_a_reason_unless_caa_issuer_names_it(
    make_settings: Callable[..., Settings],
    make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
) -> None:
    unknown = make_settings(MAIL_DOMAINS="example.com",
                            ACME_DIRECTORY="https://ca.internal.example/directory")
    assert caa_records(unknown, make_keys(unknown)) == []
    assert "set CAA_ISSUER" in (caa.why_none(unknown) or "")
    named = make_settings(MAIL_DOMAINS="example.com", CAA_ISSUER="ca.internal.example",
                          ACME_DIRECTORY="https://ca.internal.example/directory")
    [record] = caa_records(named, make_keys(named))
    assert record.value == '0 issue "ca.internal.example; validationmethods=http-01"'
    off = make_settings(MAIL_DOMAINS="example.com", CAA_ISSUER="off")
    assert caa_records(off, make_keys(off)) == [] and caa.why_none(off) is None
    manual = make_settings(MAIL_DOMAINS="example.com", TLS_MODE="self-signed")
    assert caa_records(manual, make_keys(manual)) == []


def test_a_bad_caa_issuer_is_a_clear_error(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as raised:
        make_settings(MAIL_DOMAINS="example.com", CAA_ISSUER="not a domain")
    assert "CAA_ISSUER:" in str(raised.value.problems)


def test_an_account_uri_that_would_break_the_record_is_left_out(
    make_settings: Callable[..., Settings],
    make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com")
    store_account(settings, 'https://ca.example/acct/1"; x=y')
    [record] = caa_records(settings, make_keys(settings))
    assert "accounturi" not in (record.value or "")


def test_the_doctor_judges_the_published_caa(
    make_settings: Callable[..., Settings],
    make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com")
    store_account(settings, ACCOUNT)
    [record] = caa_records(settings, make_keys(settings))

    def published(*values: str) -> doctor.Finding:
        return doctor.check_record(record, lambda name, rtype: Answer(values))

    right = f'0 issue "letsencrypt.org;accounturi={ACCOUNT};  validationmethods=http-01"'
    assert published(right, '0 iodef "mailto:x@example.com"').status is Status.OK
    assert published(right, '0 issue "sectigo.com"').status is Status.OK  # a second CA too
    stale = published('0 issue "letsencrypt.org"')
    assert stale.status is Status.WRONG and "accounturi" in stale.hint
    assert published('0 iodef "mailto:x@example.com"').status is Status.MISSING

