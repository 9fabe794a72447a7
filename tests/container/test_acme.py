"""Certificates from Pebble (Let's Encrypt's test CA) by HTTP-01, with its challenge DNS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509

from tests.container.acme_setup import (
    NAMES,
    MakeContainer,
    mail_with_acme,
    pebble_context,
    san,
    wait_for_pebble_certificate,
)
from tests.container.containers import insecure_context
from tests.container.dockercli import docker
from tests.container.pebble_harness import (
    EAB_HMAC_KEY,
    EAB_KID,
    DockerNetwork,
    Pebble,
    start_pebble,
)
from tests.polling import eventually

pytestmark = pytest.mark.container

def test_first_boot_with_dns_ready_serves_a_pebble_certificate_everywhere(
    make_container: MakeContainer, pebble: Pebble, test_network: DockerNetwork, tmp_path: Path
) -> None:
    ip = test_network.allocate()
    for name in NAMES:
        pebble.set_a(name, ip)
    mail = mail_with_acme(make_container, pebble, ip)
    mail.wait_ready()
    certificate = wait_for_pebble_certificate(mail, pebble_context(pebble, tmp_path))
    assert san(certificate) == set(NAMES)
    logs = mail.logs()
    assert "tls: certificate valid until" in logs and "for mail.example.com, mta-sts.example.com" \
        in logs and "Pebble" in logs
    assert pebble.new_order_count() == 1
    assert mail.restart_count() == 0
    # The image's acme 4.0 can't ask for renewal information itself: we ask Pebble's
    # renewalInfo resource (RFC 9773) through its network client, and follow the answer.
    logs = mail.wait_for_log("renewal at")
    assert "as the CA suggests (ARI, RFC 9773)" in logs or "capped: the CA's suggestion" in logs
    memo = json.loads((mail.data / "tls" / "renewal-info-0.json").read_text())
    assert memo["suggested"] is not None


def test_restart_with_a_valid_certificate_places_no_order(
    make_container: MakeContainer, pebble: Pebble, test_network: DockerNetwork, tmp_path: Path
) -> None:
    ip = test_network.allocate()
    for name in NAMES:
        pebble.set_a(name, ip)
    mail = mail_with_acme(make_container, pebble, ip)
    mail.wait_ready()
    context = pebble_context(pebble, tmp_path)
    first = wait_for_pebble_certificate(mail, context)
    orders = pebble.new_order_count()
    decision = "tls: the certificate for mail.example.com, mta-sts.example.com is current"
    decisions_before = mail.wait_for_log(decision).count(decision)
    docker("restart", mail.name, timeout=60)
    mail.wait_ready()
    # The restarted worker logs its decision about the certificate again: then it has decided,
    # and any order it placed would be counted below.
    mail.wait_for_count(decision, decisions_before)
    assert wait_for_pebble_certificate(mail, context, timeout=10) == first
    assert pebble.new_order_count() == orders


def test_first_boot_before_dns_serves_a_temporary_certificate_then_the_real_one(
    make_container: MakeContainer, pebble: Pebble, test_network: DockerNetwork, tmp_path: Path
) -> None:
    ip = test_network.allocate()
    mail = mail_with_acme(make_container, pebble, ip)
    mail.wait_ready()
    mail.wait_for_log("mail.example.com does not resolve yet")
    assert pebble.new_order_count() == 0  # no rate limits spent while DNS is missing
    mail.add_account("alice@example.com", "correct horse battery")
    with mail.smtp(25) as smtp:  # mail flows meanwhile, over STARTTLS on the temporary cert
        smtp.ehlo("mx.example.net")
        smtp.starttls(context=insecure_context())
        assert smtp.sendmail("someone@example.net", ["alice@example.com"],
                             b"Subject: before DNS\r\n\r\nhello\r\n") == {}
    for name in NAMES:
        pebble.set_a(name, ip)
    certificate = wait_for_pebble_certificate(mail, pebble_context(pebble, tmp_path))
    assert san(certificate) == set(NAMES)
    assert mail.restart_count() == 0


def test_pebble_down_at_first_boot_then_up(
    make_container: MakeContainer, pebble: Pebble, test_network: DockerNetwork, tmp_path: Path
) -> None:
    ip = test_network.allocate()
    for name in NAMES:
        pebble.set_a(name, ip)
    pebble.stop()
    mail = mail_with_acme(make_container, pebble, ip)
    mail.wait_ready()
    mail.wait_for_log("the CA can't be reached")
    pebble.start()
    for name in NAMES:  # a restarted challtestsrv forgets its records
        pebble.set_a(name, ip)
    wait_for_pebble_certificate(mail, pebble_context(pebble, tmp_path))
    assert mail.restart_count() == 0


def test_a_certificate_near_its_end_is_renewed_and_reloaded_in_place(
    make_container: MakeContainer, test_network: DockerNetwork, tmp_path: Path
) -> None:
    short = start_pebble(test_network, tmp_path / "short-pebble", validity=45)
    try:
        ip = test_network.allocate()
        for name in NAMES:
            short.set_a(name, ip)
        mail = mail_with_acme(make_container, short, ip)
        mail.wait_ready()
        context = pebble_context(short, tmp_path)
        first = wait_for_pebble_certificate(mail, context)

        def renewed() -> x509.Certificate | None:
            served = wait_for_pebble_certificate(mail, context)
            return served if served != first else None

        # Renewal is due 30 s after issuance (a third left).
        current = eventually(renewed, 60, lambda: f"a renewed certificate:\n{mail.log_tail()}",
                             interval=2)
        assert current.serial_number != first.serial_number
        assert short.new_order_count() >= 2
        assert mail.restart_count() == 0 and mail.state()["Running"]
    finally:
        short.remove()


@pytest.mark.parametrize(("extra", "expected"), [
    ({"ACME_EAB_KID": EAB_KID, "ACME_EAB_HMAC_KEY": "d3Jvbmcta2V5LXdyb25nLWtleQ"},
     "creating the ACME account: the CA said"),
    ({"ACME_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}, "is not trusted"),
])
def test_bad_acme_settings_are_logged_and_mail_keeps_running(
    make_container: MakeContainer, pebble: Pebble, test_network: DockerNetwork,
    extra: dict[str, str], expected: str,
) -> None:
    ip = test_network.allocate()
    for name in NAMES:
        pebble.set_a(name, ip)
    mail = mail_with_acme(make_container, pebble, ip, **extra)
    mail.wait_ready()
    mail.wait_for_log(expected, timeout=20)
    assert "serving a temporary certificate" in mail.logs()
    assert pebble.new_order_count() == 0
    assert mail.state()["Running"] and mail.restart_count() == 0
    assert "d3Jvbmcta2V5" not in mail.logs()


def test_external_account_binding(
    make_container: MakeContainer, pebble: Pebble, test_network: DockerNetwork, tmp_path: Path
) -> None:
    ip = test_network.allocate()
    for name in NAMES:
        pebble.set_a(name, ip)
    mail = mail_with_acme(make_container, pebble, ip, ACME_EAB_KID=EAB_KID,
                          ACME_EAB_HMAC_KEY=EAB_HMAC_KEY)
    mail.wait_ready()
    wait_for_pebble_certificate(mail, pebble_context(pebble, tmp_path))
    assert EAB_HMAC_KEY not in mail.logs()
