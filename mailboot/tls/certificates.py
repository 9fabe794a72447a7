"""TLS material below DATA_DIR/tls: the certificate the daemons serve, switched atomically.

Layout:
    tls/<name>/key.pem, tls/<name>/fullchain.pem   one directory per certificate, never modified
    tls/live -> <name>                              the one the daemons serve

A certificate directory is written completely under a temporary name and renamed into place; the
`live` link is replaced with one rename. A daemon therefore never sees a key with another
certificate's chain, and a crash at any moment leaves the previous certificate serving.

Until a real certificate exists (from the CA, or mounted), the daemons serve a self-signed one for
MAIL_HOSTNAME: mail on port 25 keeps flowing, since senders don't verify MX certificates unless
MTA-STS or DANE tell them to (RFC 8461 §4.2, RFC 7672).
"""

from __future__ import annotations

import logging
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailboot.base.errors import StateError
from mailboot.base.files import (
    fsync_directory,
    remove_stale_temp_files,
    temp_path_for,
    write_new_file,
)
from mailboot.base.paths import Paths

log = logging.getLogger(__name__)

KEY_FILE = "key.pem"
CHAIN_FILE = "fullchain.pem"
SELF_SIGNED_PREFIX = "self-signed-"
SOURCES = ("self-signed", "acme", "manual")
SELF_SIGNED_LIFETIME = timedelta(days=365)
# Replace a certificate this long before it expires, so no client ever meets an expired one.
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class Certificate:
    """The certificate the daemons serve."""

    directory: Path
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    self_signed: bool
    issuer: str

    @property
    def source(self) -> str:
        """How it was made: `self-signed`, `acme` or `manual` (its directory's name says)."""
        return next((s for s in SOURCES if self.directory.name.startswith(s + "-")), "unknown")

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def chain_path(self) -> Path:
        return self.directory / CHAIN_FILE


def ensure_certificate(paths: Paths, names: Sequence[str], now: datetime,
                       key_pem: bytes | None = None) -> Certificate:
    """Return the live certificate, making a self-signed one when none is usable for `names`.

    A live certificate is kept while it is valid beyond RENEW_BEFORE and names MAIL_HOSTNAME
    (`names[0]`). A new one is made with `key_pem` when given (the kept key, so that a TLSA
    record stays true for the temporary certificate too), else a fresh key. Raises StateError
    when the TLS directory can't be written.
    """
    remove_stale_temp_files(paths.tls_dir)
    current = read_live(paths)
    if current is not None and is_usable(current, names[0], now):
        return current
    reason = "none yet" if current is None else "the current one is expiring or names other hosts"
    try:
        directory = write_self_signed(paths.tls_dir, names, now, key_pem)
        switch_live(paths, directory)
    except OSError as error:
        raise StateError(
            f"can't write the TLS certificate below {paths.tls_dir}: {error.strerror}. "
            "Make DATA_DIR writable by the container."
        ) from error
    log.info("tls: made a temporary self-signed certificate for %s (%s)", names[0], reason)
    certificate = read_live(paths)
    if certificate is None:  # pragma: no cover - we just wrote it
        raise StateError(f"the certificate just written to {directory} can't be read back")
    return certificate


def is_usable(certificate: Certificate, hostname: str, now: datetime) -> bool:
    """A self-signed certificate is replaced a month early; one from a CA (possibly valid for
    days only) is kept while valid: renewing it is the worker's job, with the CA."""
    return hostname in certificate.names and usable_until(certificate) > now


def usable_until(certificate: Certificate) -> datetime:
    """When the boot stops keeping it (`is_usable`): a month early for a self-signed one."""
    return certificate.not_after - (RENEW_BEFORE if certificate.self_signed else timedelta(0))


def read_live(paths: Paths, slot: int = 0) -> Certificate | None:
    """The certificate `live` (or `live-N`) points at, or None when there is none or it can't
    be used."""
    link = paths.tls_slot(slot)
    if not link.is_symlink():
        return None
    directory = link.resolve()
    try:
        chain = (directory / CHAIN_FILE).read_bytes()
        key_pem = (directory / KEY_FILE).read_bytes()
    except OSError:
        log.warning("tls: %s points at %s, which is incomplete; replacing it", link, directory)
        return None
    try:
        leaf = x509.load_pem_x509_certificates(chain)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        log.warning("tls: the certificate or key in %s is unreadable; replacing it", directory)
        return None
    if key.public_key() != leaf.public_key():
        log.warning("tls: the key in %s does not match its certificate; replacing it", directory)
        return None
    return Certificate(directory, _dns_names(leaf), leaf.not_valid_before_utc,
                       leaf.not_valid_after_utc, leaf.issuer == leaf.subject,
                       leaf.issuer.rfc4514_string())


def _dns_names(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(extension.value.get_values_for_type(x509.DNSName))


def write_self_signed(tls_dir: Path, names: Sequence[str], now: datetime,
                      key_pem: bytes | None = None) -> Path:
    """Write a new self-signed certificate directory (with `key_pem`, or a fresh EC key) and
    return its final path."""
    key = (ec.generate_private_key(ec.SECP256R1()) if key_pem is None
           else _private_key(key_pem))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + SELF_SIGNED_LIFETIME)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    name = f"{SELF_SIGNED_PREFIX}{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
    return install_directory(tls_dir, name, key_pem,
                             certificate.public_bytes(serialization.Encoding.PEM))


def _private_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise StateError("the kept certificate key is not an EC key")
    return key


def install_directory(tls_dir: Path, name: str, key_pem: bytes, chain_pem: bytes) -> Path:
    """Write key and chain into a temporary directory, then rename it to `tls_dir/name`."""
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = tls_dir / name
    temp = temp_path_for(final)
    temp.mkdir(mode=0o700)
    try:
        write_new_file(temp / KEY_FILE, key_pem, mode=0o600)
        write_new_file(temp / CHAIN_FILE, chain_pem, mode=0o644)
        fsync_directory(temp)
        temp.rename(final)
    finally:
        if temp.exists():
            shutil.rmtree(temp)
    fsync_directory(tls_dir)
    return final


def switch_live(paths: Paths, directory: Path, slot: int = 0) -> None:
    """Point a slot's link at `directory` with one atomic rename; then remove certificate
    directories no link points at, except the one this slot served before (other directories,
    such as the kept keys, are not certificates)."""
    target = paths.tls_slot(slot)
    previous = target.resolve().name if target.is_symlink() else None
    link = temp_path_for(target)
    link.symlink_to(directory.name)
    link.replace(target)
    fsync_directory(paths.tls_dir)
    in_use = {p.resolve().name for p in paths.tls_dir.iterdir() if p.is_symlink()}
    for old in paths.tls_dir.iterdir():
        if old.is_dir() and not old.is_symlink() and old.name not in in_use | {previous} \
                and old.name.startswith(tuple(s + "-" for s in SOURCES)):
            shutil.rmtree(old, ignore_errors=True)


def install(paths: Paths, source: str, key_pem: bytes, chain_pem: bytes,
            now: datetime, slot: int = 0) -> Certificate:
    """Install a key and chain (`acme` or `manual`) as the live certificate, atomically.

    Raises StateError when the key does not belong to the chain's first certificate.
    """
    check_pair(key_pem, chain_pem, source)
    name = f"{source}-{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"  # unique, even for two slots
    directory = install_directory(paths.tls_dir, name, key_pem, chain_pem)
    switch_live(paths, directory, slot)
    certificate = read_live(paths, slot)
    if certificate is None:  # pragma: no cover - checked above
        raise StateError(f"the certificate installed in {directory} can't be read back")
    return certificate


def live_certificates(paths: Paths) -> list[Certificate]:
    """The usable certificate of every slot in use (live, live-2, ...), in slot order."""
    found = []
    slot = 0
    while paths.tls_slot(slot).is_symlink():
        certificate = read_live(paths, slot)
        if certificate is not None:
            found.append(certificate)
        slot += 1
    return found


def names_with_real_certificates(paths: Paths, now: datetime) -> set[str]:
    """Names covered by a valid certificate from a CA (or mounted), in any slot."""
    return {name for certificate in live_certificates(paths)
            if not certificate.self_signed and certificate.not_after > now
            for name in certificate.names}


def check_pair(key_pem: bytes, chain_pem: bytes, source: str) -> None:
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as error:
        raise StateError(f"the {source} certificate or key is not PEM ({error})") from None
    if key.public_key() != leaf.public_key():
        raise StateError(f"the {source} private key does not belong to its certificate; give the "
                         "key that was made with it")


def install_manual(paths: Paths, cert_file: Path, key_file: Path, now: datetime) -> bool:
    """Serve the mounted files (TLS_MODE=manual) unless they are already live; True if changed.

    Raises StateError when the files can't be read or don't belong together.
    """
    try:
        chain_pem, key_pem = cert_file.read_bytes(), key_file.read_bytes()
    except OSError as error:
        raise StateError(f"can't read {error.filename}: {error.strerror}. Mount the certificate "
                         "and key files into the container (TLS_CERT_FILE, TLS_KEY_FILE)") from None
    live = read_live(paths)
    if live is not None and live.source == "manual" and (
        live.chain_path.read_bytes(), live.key_path.read_bytes()) == (chain_pem, key_pem):
        return False
    install(paths, "manual", key_pem, chain_pem, now)
    return True
