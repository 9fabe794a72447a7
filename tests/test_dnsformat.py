"""The printed forms: the zone parses back record for record, and all three forms agree."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable

import dkim as dkimpy
import dns.name
import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization

from mailboot.dkim.keys import DomainKeys
from mailboot.records.build import Kind, RecordGroup, Where, all_records, build_record_groups
from mailboot.records.zonefile import (
    MAX_TXT_STRING,
    json_text,
    quote_txt,
    table_text,
    txt_strings,
    zone_text,
)
from mailboot.settings.table import Settings

MakeSettings = Callable[..., Settings]
MakeKeys = Callable[[Settings], tuple[DomainKeys, ...]]

SETUPS = {
    "one domain, dual stack": {"MAIL_DOMAINS": "example.com", "PUBLIC_IPV4": "203.0.113.25",
                               "PUBLIC_IPV6": "2001:db8::25"},
    "several domains, IDN, reports": {"MAIL_DOMAINS": "example.com,example.org,bücher.de",
                                      "PUBLIC_IPV4": "203.0.113.25",
                                      "DMARC_RUA": "reports@dmarc.example.net"},
    "IPv6 only, hostname elsewhere": {"MAIL_DOMAINS": "example.com",
                                      "MAIL_HOSTNAME": "mx.hosting.example.net",
                                      "PUBLIC_IPV6": "2001:db8::25"},
    "no address": {"MAIL_DOMAINS": "example.com"},
}


@pytest.fixture(params=list(SETUPS))
def groups(
    request: pytest.FixtureRequest, make_settings: MakeSettings, make_keys: MakeKeys
) -> tuple[RecordGroup, ...]:
    settings = make_settings(**SETUPS[request.param])
    return build_record_groups(settings, make_keys(settings))


Triple = tuple[str, str, str]


def zone_records(groups: tuple[RecordGroup, ...]) -> set[Triple]:
    """What a DNS server should load: records set in a zone, with a known value."""
    return {
        (r.fqdn, r.rtype, r.value)
        for r in all_records(groups)
        if r.where is Where.ZONE and r.value is not None
    }


def parse_zone(text: str) -> set[Triple]:
    zone = dns.zone.from_text(text, origin=dns.name.root, relativize=False, check_origin=False)
    parsed = set()
    for name, rdataset in zone.iterate_rdatasets():
        for rdata in rdataset:
            if rdataset.rdtype == dns.rdatatype.TXT:
                value = b"".join(rdata.strings).decode("ascii")
            else:
                value = rdata.to_text()
            parsed.add((name.to_text(), dns.rdatatype.to_text(rdataset.rdtype), value))
    return parsed


def test_zone_parses_back_record_for_record(groups: tuple[RecordGroup, ...]) -> None:
    assert parse_zone(zone_text(groups)) == zone_records(groups)


def test_no_txt_string_exceeds_255_bytes(groups: tuple[RecordGroup, ...]) -> None:
    zone = dns.zone.from_text(zone_text(groups), origin=dns.name.root, relativize=False,
                              check_origin=False)
    strings = [
        s
        for _, rdataset in zone.iterate_rdatasets(dns.rdatatype.TXT)
        for rdata in rdataset
        for s in rdata.strings
    ]
    assert strings and max(len(s) for s in strings) <= MAX_TXT_STRING
    dkim_lines = [line for line in zone_text(groups).splitlines() if "._domainkey." in line
                  and not line.startswith(";")]
    assert dkim_lines and all(line.count('" "') == 1 for line in dkim_lines)


def test_dkim_record_matches_the_key_on_disk_and_verifies_a_signature(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4="203.0.113.25")
    keys = make_keys(settings)
    published = {
        name: value for name, rtype, value in parse_zone(zone_text(build_record_groups(settings,
                                                                                       keys)))
        if rtype == "TXT"
    }
    key = keys[0].signing
    record = published[key.record_name + "."]
    p_value = re.search(r"(?:^|;)\s*p=([^;]+)", record)
    assert p_value is not None
    private_pem = key.path.read_bytes()
    on_disk = serialization.load_pem_private_key(private_pem, password=None).public_key()
    from_dns = serialization.load_der_public_key(base64.b64decode(p_value.group(1)))
    assert from_dns.public_numbers() == on_disk.public_numbers()  # type: ignore[union-attr]

    # dkimpy, a third-party verifier, signs with the key on disk and checks against the record.
    message = (b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\nhi\r\n")
    signature = dkimpy.sign(message, key.selector.encode(), b"example.com", private_pem,
                            include_headers=[b"from", b"to", b"subject"])

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return published.get(name.decode(), "").encode()

    assert dkimpy.verify(signature + message, dnsfunc=dnsfunc)


def parse_table(text: str) -> set[Triple]:
    """Read the web-form table back: (absolute name, type, value) for rows with a known value."""
    rows: set[Triple] = set()
    zone = ""
    for line in text.splitlines():
        if line.startswith("== "):
            zone = line[3:].split(":")[0].split(" ")[0]
        elif zone and line and not line.startswith((" ", "NAME ", "<")):
            name, rtype, _need, value = line.split(maxsplit=3)
            if value.startswith("<"):
                continue
            absolute = name if name.endswith(".") else (
                zone + "." if name == "@" else f"{name}.{zone}.")
            rows.add((absolute, rtype, value))
    return rows


def test_json_and_both_text_forms_describe_the_same_records(
    groups: tuple[RecordGroup, ...],
) -> None:
    from_json = json.loads(json_text(groups))
    json_zone = {
        (o["name"], o["type"], o["value"]) for o in from_json
        if o["where"] == "zone" and o["value"] is not None
    }
    assert json_zone == parse_zone(zone_text(groups))

    def bare(triples: set[Triple]) -> set[Triple]:  # web forms take host names without the dot
        return {(n, t, v.removesuffix(".") if v != "0 0 0 ." else v) for n, t, v in triples}

    json_known = {(o["name"], o["type"], o["value"]) for o in from_json
                  if o["value"] is not None and not o["placeholder"]}
    assert bare(json_known) == parse_table(table_text(groups))
    assert len(from_json) == len(all_records(groups))
    assert [o["kind"] for o in from_json] == [str(r.kind) for r in all_records(groups)]
    for obj in from_json:
        assert set(obj) >= {"name", "kind", "type", "value", "purpose", "where"}
        assert Kind(obj["kind"]).rtype == obj["type"]
        assert obj["where"] in ("zone", "provider")
        if not obj["placeholder"]:
            assert obj["name"].endswith(".")


def test_provider_records_and_placeholders_are_comments_in_the_zone(
    make_settings: MakeSettings, make_keys: MakeKeys
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com")
    text = zone_text(build_record_groups(settings, make_keys(settings)))
    assert re.search(r"^; NOT KNOWN YET: set PUBLIC_IPV4 .*\n; mail\.example\.com\. +3600 IN A +"
                     r"<PUBLIC_IPV4>$", text, re.MULTILINE)
    assert re.search(r"^; <reverse name of the server's public address> +3600 IN PTR", text,
                     re.MULTILINE)
    table = table_text(build_record_groups(settings, make_keys(settings)))
    assert re.search(r"^mail +A +required +<PUBLIC_IPV4>$", table, re.MULTILINE)
    assert "note for mail A: set PUBLIC_IPV4" in table


def test_every_zone_record_has_a_comment_saying_what_it_is_for(
    groups: tuple[RecordGroup, ...],
) -> None:
    lines = zone_text(groups).splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith(";"):
            assert lines[index - 1].startswith("; "), line


def test_txt_splitting_and_quoting() -> None:
    assert txt_strings("a" * 600) == ["a" * 255, "a" * 255, "a" * 90]
    assert txt_strings("a" * 255) == ["a" * 255]
    assert quote_txt('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'
    assert quote_txt("") == '""'
