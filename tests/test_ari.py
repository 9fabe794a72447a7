"""ACME Renewal Information (RFC 9773) where the acme library can't ask: the certificate id, the
window, and the request through the library's network client (a fake one here; Pebble in the
container test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from acme import client as acme_client
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailboot.acme import ari
from tests.conftest import NOW


def issued(serial: int, with_aki: bool = True) -> x509.Certificate:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.test")]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=90)))
    if with_aki:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
    return builder.sign(ca_key, hashes.SHA256())


@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0xFF, 0x0123456789ABCDEF, 2**159 - 1,
                                    0x87654321FEDCBA98])
def test_certificate_id_matches_the_acme_librarys_own(serial: int) -> None:
    """acme 5.x computes the same id; ours must agree byte for byte (a leading zero octet when
    the serial's top bit is set, RFC 9773 §4.1's example)."""
    own = getattr(acme_client, "_renewal_info_path_component", None)
    assert own is not None, "the test environment has acme 5.x from PyPI"
    certificate = issued(serial)
    assert ari.certificate_id(certificate) == own(certificate)


def test_certificate_id_follows_the_rfc_example_encoding() -> None:
    # RFC 9773 §4.1: serial 0x87654321... has its top bit set, so its octets start with 0x00.
    certificate = issued(0x87654321)
    assert ari.certificate_id(certificate).split(".")[1] == "AIdlQyE"


def test_a_certificate_without_authority_key_identifier_has_no_id() -> None:
    with pytest.raises(ValueError, match="no Authority Key Identifier"):
        ari.certificate_id(issued(5, with_aki=False))


def test_the_window_is_read_with_nanoseconds_and_zones() -> None:
    window = ari.parse_window({"suggestedWindow": {"start": "2026-12-20T10:00:00.123456789Z",
                                                   "end": "2026-12-22T12:00:00+02:00"}})
    assert window.start == datetime(2026, 12, 20, 10, 0, 0, 123456, tzinfo=UTC)
    assert window.end == datetime(2026, 12, 22, 10, 0, tzinfo=UTC)
    assert ari.moment_in(window, 0.0) == window.start
    assert ari.moment_in(window, 1.0) == window.end


@pytest.mark.parametrize(("body", "reason"), [
    ({}, "no suggestedWindow"),
    ({"suggestedWindow": "soon"}, "no suggestedWindow"),
    ({"suggestedWindow": {"start": "2026-12-22T00:00:00Z", "end": "2026-12-20T00:00:00Z"}},
     "ends before it starts"),
    ({"suggestedWindow": {"start": "2026-12-22T00:00:00", "end": "2026-12-23T00:00:00"}},
     "no time zone"),
    ({"suggestedWindow": {"start": 5, "end": "2026-12-23T00:00:00Z"}}, "not a time"),
])
def test_a_malformed_window_is_refused(body: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ari.parse_window(body)


class FakeResponse:
    def __init__(self, body: object) -> None:
        self.body = body

    def json(self) -> object:
        return self.body


class FakeNet:
    def __init__(self, body: object) -> None:
        self.body = body
        self.asked: list[tuple[str, str]] = []

    def get(self, url: str, content_type: str, **_: Any) -> FakeResponse:
        self.asked.append((url, content_type))
        return FakeResponse(self.body)


def test_the_ca_is_asked_for_this_certificate_and_a_moment_in_its_window_is_chosen() -> None:
    certificate = issued(0x1234)
    chain = certificate.public_bytes(serialization.Encoding.PEM)
    net = FakeNet({"suggestedWindow": {"start": "2027-01-01T00:00:00Z",
                                       "end": "2027-01-03T00:00:00Z"}})
    moment = ari.ask_ca(net, "https://ca.test/renewal-info/", chain, fraction=lambda: 0.25)
    assert moment == datetime(2027, 1, 1, 12, tzinfo=UTC)
    assert net.asked == [(f"https://ca.test/renewal-info/{ari.certificate_id(certificate)}",
                          "application/json")]
