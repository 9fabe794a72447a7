"""TLS material: a self-signed certificate on first start, kept on restart, switched atomically."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cryptography import x509

from mailboot.base.paths import Paths
from mailboot.tls import certificates
from tests.conftest import NOW, FakeCa, snapshot

NAMES = ["mail.example.com", "mta-sts.example.com"]


def test_first_start_makes_a_self_signed_certificate_for_every_name(data_dir: Path) -> None:
    paths = Paths(data_dir)
    certificate = certificates.ensure_certificate(paths, NAMES, NOW)
    assert certificate.self_signed
    assert certificate.names == tuple(NAMES)
    assert paths.tls_live.is_symlink()
    assert certificate.directory == paths.tls_live.resolve()
    assert certificate.key_path.stat().st_mode & 0o777 == 0o600
    leaf = x509.load_pem_x509_certificate(certificate.chain_path.read_bytes())
    assert leaf.subject.rfc4514_string() == "CN=mail.example.com"
    assert certificate.not_after == NOW + certificates.SELF_SIGNED_LIFETIME


def test_restart_keeps_the_certificate_and_changes_no_byte(data_dir: Path) -> None:
    paths = Paths(data_dir)
    first = certificates.ensure_certificate(paths, NAMES, NOW)
    before = snapshot(data_dir)
    assert certificates.ensure_certificate(paths, NAMES, NOW + timedelta(days=100)) == first
    assert snapshot(data_dir) == before


def test_expiring_certificate_is_replaced_keeping_only_the_previous_one(data_dir: Path) -> None:
    paths = Paths(data_dir)
    first = certificates.ensure_certificate(paths, NAMES, NOW)
    later = NOW + certificates.SELF_SIGNED_LIFETIME - timedelta(days=10)
    second = certificates.ensure_certificate(paths, NAMES, later)
    assert second.directory != first.directory
    third = certificates.ensure_certificate(paths, NAMES, later + certificates.SELF_SIGNED_LIFETIME)
    kept = sorted(p.name for p in paths.tls_dir.iterdir() if not p.is_symlink())
    assert kept == sorted([second.directory.name, third.directory.name])


def test_new_hostname_gets_a_new_certificate(data_dir: Path) -> None:
    paths = Paths(data_dir)
    certificates.ensure_certificate(paths, NAMES, NOW)
    other = certificates.ensure_certificate(paths, ["mx.example.com"], NOW + timedelta(seconds=1))
    assert other.names == ("mx.example.com",)


def test_mismatched_key_or_missing_file_is_replaced(data_dir: Path) -> None:
    paths = Paths(data_dir)
    first = certificates.ensure_certificate(paths, NAMES, NOW)
    stray = certificates.write_self_signed(paths.tls_dir, NAMES, NOW + timedelta(seconds=1))
    first.key_path.chmod(0o600)
    first.key_path.write_bytes((stray / certificates.KEY_FILE).read_bytes())
    assert certificates.read_live(paths) is None
    replaced = certificates.ensure_certificate(paths, NAMES, NOW + timedelta(seconds=2))
    assert replaced.directory not in (first.directory, stray)


def test_half_written_certificate_directory_is_cleaned_up(data_dir: Path) -> None:
    paths = Paths(data_dir)
    leftover = paths.tls_dir / ".self-signed-20261125000000.tmp-deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "key.pem").write_text("half")
    certificates.ensure_certificate(paths, NAMES, NOW)
    assert not leftover.exists()


def test_a_short_lived_ca_certificate_is_kept_while_valid(data_dir: Path) -> None:
    paths = Paths(data_dir)
    issued = FakeCa().issue(["mail.example.com"])  # valid 90 days from NOW, from a CA
    installed = certificates.install(paths, "acme", issued.key_pem, issued.chain_pem, NOW)
    almost_expired = NOW + timedelta(days=89, hours=23)
    assert certificates.ensure_certificate(paths, ["mail.example.com"], almost_expired) == (
        installed)
    expired = NOW + timedelta(days=91)
    assert certificates.ensure_certificate(paths, ["mail.example.com"], expired).self_signed
