"""TLS without a CA: mounted certificates (manual mode) and bad ACME settings."""

from __future__ import annotations

import shutil
import smtplib
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.container.clients import served_certificate
from tests.container.containers import Container, insecure_context
from tests.polling import eventually

pytestmark = pytest.mark.container

MakeContainer = Callable[..., Container]
HOST = "mail.example.com"


class PrivateCa:
    """A private CA that signs certificates for the test, as a user's own PKI would."""

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailboot test CA")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.pem_path = directory / "ca.pem"
        self.pem_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, names: list[str]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=20))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .sign(self.key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return key_pem, leaf.public_bytes(serialization.Encoding.PEM)

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pem_path))
        context.check_hostname = True
        return context


def der(chain_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(chain_pem).public_bytes(serialization.Encoding.DER)


def wait_until_served(container: Container, expected: bytes, context: ssl.SSLContext,
                      timeout: float = 30) -> None:
    eventually(lambda: all(served_certificate(container, port, context) == expected
                           for port in (25, 465, 587, 993)), timeout,
               lambda: f"the new certificate on every port:\n{container.log_tail(3000)}",
               interval=1, ignoring=(ssl.SSLError, OSError, smtplib.SMTPException))


def test_manual_mode_serves_the_mounted_certificate_and_follows_replacements(
    make_container: MakeContainer, tmp_path: Path
) -> None:
    ca = PrivateCa(tmp_path)
    certs = tmp_path / "certs"
    certs.mkdir()
    key_pem, chain_pem = ca.issue([HOST])
    (certs / "privkey.pem").write_bytes(key_pem)
    (certs / "fullchain.pem").write_bytes(chain_pem)
    mail = make_container(env={"MAIL_DOMAINS": "example.com", "TLS_MODE": "manual",
                               "TLS_CERT_FILE": "/certs/fullchain.pem",
                               "TLS_KEY_FILE": "/certs/privkey.pem"},
                          volumes={str(certs): "/certs"})
    mail.wait_ready()
    wait_until_served(mail, der(chain_pem), ca.context(), timeout=5)
    renewed_key, renewed_chain = ca.issue([HOST])
    (certs / "privkey.pem").write_bytes(renewed_key)
    (certs / "fullchain.pem").write_bytes(renewed_chain)
    wait_until_served(mail, der(renewed_chain), ca.context())
    assert "tls: now serving /certs/fullchain.pem" in mail.logs()
    assert mail.state()["Running"] and mail.restart_count() == 0


def update_like_kubernetes(directory: Path, files: dict[str, bytes]) -> None:
    """Update a mounted Secret as Kubernetes's atomic writer does: the files go into a new
    timestamped directory, a `..data_tmp` symlink to it is renamed over `..data` (one atomic
    swap for all files), the visible names are symlinks through `..data`, and the previous
    directory is removed. The visible files are never written in place."""
    stamp = directory / datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    stamp.mkdir()
    for name, content in files.items():
        (stamp / name).write_bytes(content)
    data = directory / "..data"
    previous = data.readlink() if data.is_symlink() else None
    (directory / "..data_tmp").symlink_to(stamp.name)
    (directory / "..data_tmp").rename(data)
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    if previous is not None:
        shutil.rmtree(directory / previous)


def test_manual_mode_follows_a_kubernetes_secret_update_and_keeps_a_good_pair(
    make_container: MakeContainer, tmp_path: Path
) -> None:
    ca = PrivateCa(tmp_path)
    secret = tmp_path / "secret"  # the Secret's volume, as a directory (never subPath)
    secret.mkdir()
    key_pem, chain_pem = ca.issue([HOST])
    update_like_kubernetes(secret, {"tls.crt": chain_pem, "tls.key": key_pem})
    mail = make_container(env={"MAIL_DOMAINS": "example.com", "TLS_MODE": "manual",
                               "TLS_CERT_FILE": "/tls/tls.crt",
                               "TLS_KEY_FILE": "/tls/tls.key"},
                          volumes={str(secret): "/tls"})
    mail.wait_ready()
    wait_until_served(mail, der(chain_pem), ca.context(), timeout=5)

    # cert-manager renewed the certificate: both files change in one swap of ..data.
    renewed_key, renewed_chain = ca.issue([HOST])
    update_like_kubernetes(secret, {"tls.crt": renewed_chain, "tls.key": renewed_key})
    wait_until_served(mail, der(renewed_chain), ca.context(), timeout=15)

    # A Secret whose key doesn't belong to its certificate: the served pair stays.
    other_key, _ = ca.issue([HOST])
    _, stray_chain = ca.issue([HOST])
    update_like_kubernetes(secret, {"tls.crt": stray_chain, "tls.key": other_key})
    mail.wait_for_log("private key does not belong to its certificate", timeout=15)
    for port in (25, 465, 587, 993):
        assert served_certificate(mail, port, ca.context()) == der(renewed_chain)

    # Fixed: the next swap is followed again, without a restart.
    fixed_key, fixed_chain = ca.issue([HOST])
    update_like_kubernetes(secret, {"tls.crt": fixed_chain, "tls.key": fixed_key})
    wait_until_served(mail, der(fixed_chain), ca.context(), timeout=15)
    assert mail.state()["Running"] and mail.restart_count() == 0


def test_manual_mode_with_a_key_that_does_not_match_stops_with_78(
    make_container: MakeContainer, tmp_path: Path
) -> None:
    ca = PrivateCa(tmp_path)
    certs = tmp_path / "certs"
    certs.mkdir()
    _, chain_pem = ca.issue([HOST])
    other_key, _ = ca.issue([HOST])
    (certs / "privkey.pem").write_bytes(other_key)
    (certs / "fullchain.pem").write_bytes(chain_pem)
    mail = make_container(env={"MAIL_DOMAINS": "example.com", "TLS_MODE": "manual",
                               "TLS_CERT_FILE": "/certs/fullchain.pem",
                               "TLS_KEY_FILE": "/certs/privkey.pem"},
                          volumes={str(certs): "/certs"})
    assert mail.wait_exit() == 78
    assert "private key does not belong to its certificate" in mail.logs()


@pytest.mark.parametrize(("env", "reason"), [
    ({"ACME_DIRECTORY": "https://127.0.0.1:9/directory"}, "the CA can't be reached"),
    ({"ACME_DIRECTORY": "https://127.0.0.1:9/directory", "ACME_EAB_KID": "kid-1",
      "ACME_EAB_HMAC_KEY": "c2VjcmV0"}, "the CA can't be reached"),
])
def test_bad_acme_settings_leave_mail_running_on_a_temporary_certificate(
    make_container: MakeContainer, env: dict[str, str], reason: str
) -> None:
    """Names that resolve nowhere, or a CA that can't be reached: up, logged, no crash loop."""
    mail = make_container(env={"MAIL_DOMAINS": "example.com", "ACME_RETRY_INTERVAL": "2s",
                               **env})
    mail.wait_ready()
    logs = mail.wait_for_log("next try at")
    assert "tls: temporary self-signed certificate for mail.example.com" in logs
    assert "tls: serving a temporary certificate:" in logs and "next try at" in logs
    assert mail.state()["Running"] and mail.restart_count() == 0
    with mail.smtp(25) as smtp:  # mail keeps flowing meanwhile
        smtp.ehlo("mx.example.net")
        smtp.starttls(context=insecure_context())
    assert reason in logs
    assert "c2VjcmV0" not in logs  # the EAB key is a secret
