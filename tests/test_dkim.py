"""DKIM keys: created once with mode 0600, reused byte for byte, never overwritten."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailboot.base.errors import StateError
from mailboot.base.paths import Paths
from mailboot.dkim import keys as dkim
from tests.conftest import NOW, snapshot


def test_first_run_creates_one_rsa_2048_key_per_domain_with_mode_0600(data_dir: Path) -> None:
    keys = dkim.ensure_keys(Paths(data_dir), ["example.com", "example.org"], NOW)
    assert [k.domain for k in keys] == ["example.com", "example.org"]
    for domain_keys in keys:
        (key,) = domain_keys.keys
        assert key.selector == "mb20261125"
        assert key.path == data_dir / "dkim" / domain_keys.domain / "mb20261125.key"
        assert key.path.stat().st_mode & 0o777 == 0o600
        assert key.path.parent.stat().st_mode & 0o777 == 0o700
        private = serialization.load_pem_private_key(key.path.read_bytes(), password=None)
        assert isinstance(private, rsa.RSAPrivateKey)
        assert private.key_size == 2048
    assert keys[0].signing.public_key_b64 != keys[1].signing.public_key_b64


def test_second_run_reuses_the_key_and_changes_no_byte(data_dir: Path) -> None:
    first = dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)
    before = snapshot(data_dir)
    later = NOW + timedelta(days=40)  # another day would give another selector if it made a key
    second = dkim.ensure_keys(Paths(data_dir), ["example.com"], later)
    assert snapshot(data_dir) == before
    assert second == first


def test_public_key_is_derived_from_the_private_key(data_dir: Path) -> None:
    (domain_keys,) = dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)
    key = domain_keys.signing
    private = serialization.load_pem_private_key(key.path.read_bytes(), password=None)
    public = serialization.load_der_public_key(base64.b64decode(key.public_key_b64))
    assert public.public_numbers() == private.public_key().public_numbers()  # type: ignore[union-attr]
    assert key.record_name == "mb20261125._domainkey.example.com"


def test_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "mb20261125.key"
    target.write_bytes(b"precious")
    assert dkim.create_key_file(tmp_path, "mb20261125") == target
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mb20261125.key"]


def test_half_written_key_from_a_killed_start_is_removed(data_dir: Path) -> None:
    directory = data_dir / "dkim" / "example.com"
    directory.mkdir(parents=True)
    (directory / ".mb20261124.key.tmp-0badc0de").write_bytes(b"-----BEGIN PRIV")
    (domain_keys,) = dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)
    assert sorted(p.name for p in directory.iterdir()) == ["mb20261125.key"]
    assert domain_keys.signing.selector == "mb20261125"


def test_corrupt_key_is_an_error_that_leaves_the_file_alone(data_dir: Path) -> None:
    directory = data_dir / "dkim" / "example.com"
    directory.mkdir(parents=True)
    corrupt = directory / "mb20261101.key"
    corrupt.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    before = snapshot(data_dir)
    with pytest.raises(StateError) as caught:
        dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)
    assert str(corrupt) in str(caught.value)
    assert "move it out of the way" in str(caught.value)
    assert caught.value.exit_code == 78
    assert snapshot(data_dir) == before


def test_non_rsa_key_is_refused(data_dir: Path) -> None:
    directory = data_dir / "dkim" / "example.com"
    directory.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / "mb20261101.key").write_bytes(pem)
    with pytest.raises(StateError, match="not an RSA key of at least 1024 bits"):
        dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)


def test_key_brought_from_another_server_is_used_under_its_own_selector(data_dir: Path) -> None:
    directory = data_dir / "dkim" / "example.com"
    directory.mkdir(parents=True)
    (directory / "default.key").write_bytes(dkim.generate_private_key_pem())
    (domain_keys,) = dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)
    assert [k.selector for k in domain_keys.keys] == ["default"]


def test_newest_own_selector_signs_and_every_key_is_listed(data_dir: Path) -> None:
    directory = data_dir / "dkim" / "example.com"
    directory.mkdir(parents=True)
    for name in ("mb20260101.key", "default.key", "mb20261001.key"):
        (directory / name).write_bytes(dkim.generate_private_key_pem())
    (domain_keys,) = dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)
    assert [k.selector for k in domain_keys.keys] == ["default", "mb20260101", "mb20261001"]
    assert domain_keys.signing.selector == "mb20261001"


def test_file_name_that_cannot_be_a_selector_is_an_error(data_dir: Path) -> None:
    directory = data_dir / "dkim" / "example.com"
    directory.mkdir(parents=True)
    (directory / "My Key.key").write_bytes(b"x")
    with pytest.raises(StateError, match="can't be a DKIM selector"):
        dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)


def test_key_readable_by_others_is_made_private(data_dir: Path) -> None:
    (domain_keys,) = dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)
    path = domain_keys.signing.path
    path.chmod(0o644)
    content = path.read_bytes()
    dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == content


def test_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("not a directory")
    with pytest.raises(StateError, match="DATA_DIR must be a directory"):
        dkim.ensure_keys(Paths(data_dir), ["example.com"], NOW)
    assert data_dir.read_text() == "not a directory"
