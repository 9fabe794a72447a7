"""MTA-STS: the policy served over HTTPS by SNI with Pebble's certificates, and the hold-back;
mail clients' settings from the same server, under the same certificates."""

from __future__ import annotations

import http.client
import json
import plistlib
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.container.acme_setup import mail_with_acme, pebble_context, wait_for_pebble_certificate
from tests.container.containers import Container
from tests.container.pebble_harness import DockerNetwork, Pebble

pytestmark = pytest.mark.container

MakeContainer = Callable[..., Container]
DOMAINS = ("example.com", "example.org")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def getheader(self, name: str) -> str | None:
        return self.headers.get(name)


def get(mail: Container, context: ssl.SSLContext, host: str, path: str,
        timeout: float = 10, method: str = "GET", body: bytes | None = None) -> Reply:
    """GET (or `method`) https://host/path from the container's 443, with SNI and the Host
    header; the whole reply, the connection closed."""
    connection = http.client.HTTPSConnection("127.0.0.1", mail.ports[443], context=context,
                                             timeout=timeout)
    try:
        connection.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", mail.ports[443]), timeout=timeout),
            server_hostname=host)
        connection.request(method, path, body=body, headers={"Host": host})
        with connection.getresponse() as response:
            return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def records(mail: Container) -> dict[str, dict[str, object]]:
    printed = json.loads(mail.exec("mailboot", "dns", "--json").stdout)
    return {r["name"]: r for r in printed if r["type"] == "TXT"}


def test_policy_is_served_per_domain_and_the_record_is_held_until_the_certificate_is_real(
    make_container: MakeContainer, pebble: Pebble, test_network: DockerNetwork, tmp_path: Path
) -> None:
    ip = test_network.allocate()
    mail = mail_with_acme(make_container, pebble, ip, MAIL_DOMAINS=",".join(DOMAINS))
    mail.wait_ready()
    held = records(mail)["_mta-sts.example.com."]
    assert "hold this record back until mta-sts.example.com has a certificate" in str(
        held["hold"])
    # The records are printed beside the daemons' start: not always before the banner.
    mail.wait_for_log("HOLD BACK: hold this record back", timeout=30)
    for name in ["mail.example.com", *(f"{prefix}.{d}" for d in DOMAINS
                                       for prefix in ("mta-sts", "autoconfig", "autodiscover"))]:
        pebble.set_a(name, ip)
    context = pebble_context(pebble, tmp_path)
    wait_for_pebble_certificate(mail, context)
    mail.wait_for_log("mta-sts: mta-sts.example.org has a certificate from the CA now: publish",
                      timeout=30)
    assert records(mail)["_mta-sts.example.com."]["hold"] is None
    for domain in DOMAINS:
        response = get(mail, context, f"mta-sts.{domain}", "/.well-known/mta-sts.txt")
        body = response.body
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/plain"
        assert body == (b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                        b"max_age: 86400\r\n")
    assert get(mail, context, "mta-sts.example.com", "/other").status == 404
    assert get(mail, context, "mta-sts.example.com", "/.well-known/mta-sts.txt/x").status == 404
    assert get(mail, insecure(), "mta-sts.example.net", "/.well-known/mta-sts.txt").status == 404
    mail_clients_configure_themselves(mail, context)


def mail_clients_configure_themselves(mail: Container, context: ssl.SSLContext) -> None:
    """Thunderbird's, Outlook's and Apple's documents, each over HTTPS verified with Pebble's
    root for the name the client asks (the certificate covers autoconfig. and autodiscover.)."""
    mail.wait_for_log("autoconfig: autodiscover.example.org has a certificate from the CA now",
                      timeout=30)
    for domain in DOMAINS:
        address = f"alice@{domain}"
        thunderbird = get(mail, context, f"autoconfig.{domain}",
                          f"/mail/config-v1.1.xml?emailaddress=alice%40{domain}")
        assert thunderbird.status == 200
        config = ET.fromstring(thunderbird.body)  # noqa: S314 - our own container's answer
        assert config.find("emailProvider").get("id") == domain  # type: ignore[union-attr]
        assert [(s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
                for s in config.iter("incomingServer")] == [("mail.example.com", "993", "SSL")]
        request = ("<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/"
                   f"outlook/requestschema/2006\"><Request><EMailAddress>{address}"
                   "</EMailAddress></Request></Autodiscover>").encode()
        outlook = get(mail, context, f"autodiscover.{domain}", "/Autodiscover/Autodiscover.xml",
                      method="POST", body=request)
        assert outlook.status == 200
        answer = ET.fromstring(outlook.body)  # noqa: S314 - our own container's answer
        logins = [e.text for e in answer.iter() if e.tag.endswith("}LoginName")]
        assert logins == [address, address]
        apple = get(mail, context, f"autoconfig.{domain}",
                    f"/apple/mail.mobileconfig?emailaddress={address}")
        assert apple.status == 200
        assert apple.getheader("Content-Type") == "application/x-apple-aspen-config"
        (payload,) = plistlib.loads(apple.body)["PayloadContent"]
        assert (payload["EmailAddress"], payload["IncomingMailServerHostName"]) == (
            address, "mail.example.com")
        assert "IncomingPassword" not in payload
    assert get(mail, insecure(), "autoconfig.example.net", "/mail/config-v1.1.xml").status == 404


def insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_silent_clients_do_not_block_the_policy_or_the_challenges(
    make_container: MakeContainer, pebble: Pebble, test_network: DockerNetwork, tmp_path: Path
) -> None:
    ip = test_network.allocate()
    for name in ("mail.example.com", "mta-sts.example.com"):
        pebble.set_a(name, ip)
    mail = mail_with_acme(make_container, pebble, ip)
    mail.wait_ready()
    context = pebble_context(pebble, tmp_path)
    wait_for_pebble_certificate(mail, context)
    silent = [socket.create_connection(("127.0.0.1", mail.ports[port]), timeout=30)
              for port in (443, 80) for _ in range(25)]
    try:
        time.sleep(1)
        response = get(mail, context, "mta-sts.example.com", "/.well-known/mta-sts.txt",
                       timeout=5)
        assert response.status == 200 and response.body.startswith(b"version: STSv1")
        challenge = http.client.HTTPConnection("127.0.0.1", mail.ports[80], timeout=5)
        challenge.request("GET", "/.well-known/acme-challenge/probe",
                          headers={"Host": "mail.example.com"})
        with challenge.getresponse() as answered:
            assert answered.status == 404  # answered: no such token
            answered.read()
        challenge.request("GET", "/webmail?x=1", headers={"Host": "mail.example.com"})
        with challenge.getresponse() as redirect:
            redirect.read()
        assert redirect.status == 301
        assert redirect.getheader("Location") == "https://mail.example.com/webmail?x=1"
        challenge.close()
    finally:
        for connection in silent:
            connection.close()
