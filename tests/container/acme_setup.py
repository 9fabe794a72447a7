"""A mail container that takes its certificate from the test Pebble, and how to read it back."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from tests.container.clients import served_certificate
from tests.container.containers import Container
from tests.container.pebble_harness import Pebble
from tests.polling import eventually

MakeContainer = Callable[..., Container]
HOST = "mail.example.com"
NAMES = ["mail.example.com", "mta-sts.example.com"]
PORTS = (25, 465, 587, 993)


def acme_env(pebble: Pebble, ip: str, **extra: str) -> dict[str, str]:
    """The settings of a mail server at `ip` that takes its certificate from `pebble` (whose
    folder is mounted on /acme) and checks DNS at Pebble's challenge DNS, unless `extra` says."""
    return {"MAIL_DOMAINS": "example.com", "PUBLIC_IPV4": ip,
            "ACME_DIRECTORY": pebble.directory_url, "ACME_CA_BUNDLE": "/acme/ca.pem",
            "DNS_RESOLVERS": pebble.dns, "ACME_RETRY_INTERVAL": "2s",
            # Names not ready are looked at every DNS_CHECK_INTERVAL (1 min by default; the
            # default is test_ready's subject): these tests publish DNS after the start.
            "DNS_CHECK_INTERVAL": "5s", **extra}


def mail_with_acme(make_container: MakeContainer, pebble: Pebble, ip: str,
                   **extra: str) -> Container:
    return make_container(env=acme_env(pebble, ip, **extra),
                          volumes={str(pebble.directory): "/acme"},
                          network=pebble.network.name, ip=ip)


def pebble_context(pebble: Pebble, tmp_path: Path) -> ssl.SSLContext:
    roots = tmp_path / f"pebble-roots-{time.monotonic_ns()}.pem"
    roots.write_text(pebble.issuing_roots_pem())
    return ssl.create_default_context(cafile=str(roots))


def wait_for_pebble_certificate(mail: Container, context: ssl.SSLContext,
                                timeout: float = 60) -> x509.Certificate:
    """Until every mail port serves one certificate that verifies with Pebble's root."""
    def served() -> x509.Certificate | None:
        certificates = {served_certificate(mail, port, context) for port in PORTS}
        return x509.load_der_x509_certificate(certificates.pop()) if len(certificates) == 1 \
            else None

    return eventually(served, timeout, lambda: f"Pebble's certificate on every port:\n"
                      f"{mail.log_tail()}", interval=1, ignoring=(ssl.SSLError, OSError))


def san(certificate: x509.Certificate) -> set[str]:
    extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(extension.value.get_values_for_type(x509.DNSName))
