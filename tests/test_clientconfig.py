"""Mail clients' settings: the three documents, what they agree with, and who gets them."""

from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from xml.sax.saxutils import escape

import pytest

from mailboot.dns import names
from mailboot.records.build import srv_records
from mailboot.settings.table import Settings
from mailboot.web import clientconfig, port443
from mailboot.web.clientconfig import MailService
from mailboot.web.server import Request, Response

SERVICE = MailService("mail.example.com", ("example.com", "example.org"))
POLICIES = {"mta-sts.example.com": b"version: STSv1\r\n"}
ODD = "o'brien&co+x@example.org"  # `'` and `&` are atext (RFC 5322 §3.2.3), and XML-special
OUTLOOK_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE = "{" + clientconfig.RESPONSE_NS + "}"
OUTLOOK = "{" + clientconfig.OUTLOOK_NS + "}"


def xml(document: bytes) -> ET.Element:
    """Our own documents parsed back (the untrusted direction, Outlook's request, is read by
    `clientconfig.requested_address`)."""
    return ET.fromstring(document)  # noqa: S314 - made by the code under test


def outlook_request(address: str, encoding: str = "utf-8") -> bytes:
    text = (f'<?xml version="1.0" encoding="{encoding}"?>'
            f'<Autodiscover xmlns="{OUTLOOK_REQUEST_NS}"><Request>'
            f"<EMailAddress>{escape(address)}</EMailAddress>"
            f"<AcceptableResponseSchema>{clientconfig.OUTLOOK_NS}</AcceptableResponseSchema>"
            "</Request></Autodiscover>")
    return text.encode(encoding)


def srv_targets() -> dict[str, tuple[str, int]]:
    """Service -> (host, port) as the SRV records for example.org publish them."""
    targets = {}
    for record in srv_records(SERVICE.hostname, "example.org"):
        _priority, _weight, port, host = (record.value or "").split()
        targets[record.name.split(".")[0]] = (host.rstrip("."), int(port))
    return targets


# --- Thunderbird ----------------------------------------------------------------------------------

def servers(root: ET.Element, tag: str) -> list[dict[str, str]]:
    return [{"type": server.get("type", ""), **{child.tag: child.text or "" for child in server}}
            for server in root.iter(tag)]


def test_thunderbird_gets_imap_and_submission_implicit_tls_first() -> None:
    root = xml(clientconfig.thunderbird_config(SERVICE, "example.org"))
    assert (root.tag, root.get("version")) == ("clientConfig", "1.1")
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "example.org"
    assert provider.findtext("domain") == "example.org"
    assert provider.findtext("displayName") == "example.org"
    common = {"hostname": "mail.example.com", "username": "%EMAILADDRESS%",
              "authentication": "password-cleartext"}
    assert servers(root, "incomingServer") == [
        {"type": "imap", "port": "993", "socketType": "SSL", **common}]
    assert servers(root, "outgoingServer") == [
        {"type": "smtp", "port": "465", "socketType": "SSL", **common},
        {"type": "smtp", "port": "587", "socketType": "STARTTLS", **common}]


def test_every_document_agrees_with_the_srv_records() -> None:
    srv = srv_targets()
    imap, submissions, submission = srv["_imaps"], srv["_submissions"], srv["_submission"]
    thunderbird = xml(clientconfig.thunderbird_config(SERVICE, "example.org"))
    assert [(s["hostname"], int(s["port"])) for s in servers(thunderbird, "incomingServer")] == [
        imap]
    assert [(s["hostname"], int(s["port"])) for s in servers(thunderbird, "outgoingServer")] == [
        submissions, submission]
    outlook = outlook_protocols(clientconfig.autodiscover_settings(SERVICE, ODD))
    assert (outlook["IMAP"]["Server"], int(outlook["IMAP"]["Port"])) == imap
    assert (outlook["SMTP"]["Server"], int(outlook["SMTP"]["Port"])) == submissions
    mail = apple_mail(clientconfig.apple_profile(SERVICE, ODD))
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == imap
    assert (mail["OutgoingMailServerHostName"],
            mail["OutgoingMailServerPortNumber"]) == submissions
    assert srv["_autodiscover"] == (SERVICE.hostname, 443)  # Outlook's way to this server
    assert srv["_sieve"] == (SERVICE.hostname, 4190)


# --- Outlook --------------------------------------------------------------------------------------

def outlook_protocols(document: bytes) -> dict[str, dict[str, str]]:
    root = xml(document)
    assert root.tag == RESPONSE + "Autodiscover"
    account = root.find(f"{OUTLOOK}Response/{OUTLOOK}Account")
    assert account is not None
    assert account.findtext(OUTLOOK + "AccountType") == "email"
    assert account.findtext(OUTLOOK + "Action") == "settings"
    protocols = {}
    for protocol in account.iter(OUTLOOK + "Protocol"):
        fields = {child.tag.removeprefix(OUTLOOK): child.text or "" for child in protocol}
        protocols[fields["Type"]] = fields
    return protocols


def test_outlook_gets_imap_and_smtp_with_tls_and_the_address_as_login() -> None:
    protocols = outlook_protocols(clientconfig.autodiscover_settings(SERVICE, ODD))
    assert set(protocols) == {"IMAP", "SMTP"}
    for kind, port in (("IMAP", "993"), ("SMTP", "465")):
        fields = protocols[kind]
        assert (fields["Server"], fields["Port"], fields["SSL"], fields["Encryption"],
                fields["SPA"], fields["AuthRequired"]) == (
            "mail.example.com", port, "on", "SSL", "off", "on")
        assert fields["LoginName"] == ODD  # escaped in the XML, the same address parsed back
    assert b"o'brien&amp;co" in clientconfig.autodiscover_settings(SERVICE, ODD)


def test_the_autodiscover_error_is_exchanges_invalid_request() -> None:
    root = xml(clientconfig.autodiscover_error())
    assert root.findtext(f"{RESPONSE}Response/{RESPONSE}Error/{RESPONSE}ErrorCode") == "600"


@pytest.mark.parametrize("body", [
    outlook_request("alice@example.com"),
    outlook_request("alice@example.com", "utf-16"),
    outlook_request("  alice@example.com\n"),
    # No namespace, and the address in two pieces of text: still the request.
    b"<Autodiscover><Request><EMailAddress>alice@<![CDATA[example.com]]></EMailAddress>"
    b"</Request></Autodiscover>",
])
def test_the_address_is_read_from_outlooks_request(body: bytes) -> None:
    assert clientconfig.requested_address(body) == "alice@example.com"


BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
                  b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
                  b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
                  b"<Autodiscover><Request><EMailAddress>&c;</EMailAddress></Request>"
                  b"</Autodiscover>")


@pytest.mark.parametrize("body", [
    BILLION_LAUGHS,
    b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>",
    b'<!DOCTYPE r [<!ENTITY x "alice@example.com">]>'
    b"<Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>",
    b'<!DOCTYPE Autodiscover SYSTEM "http://198.51.100.1/x.dtd">' + outlook_request("a@b.c")[38:],
    # The same attack in UTF-16, where a byte search for "<!DOCTYPE" would find nothing.
    BILLION_LAUGHS.decode().replace('"1.0"?>', '"1.0" encoding="utf-16"?>').encode("utf-16"),
    b"<Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>",
    b"<Autodiscover><EMailAddress>alice@example.com</EMailAddress></Autodiscover>",
    b"<Autodiscover><Request><EMailAddress></EMailAddress></Request></Autodiscover>",
    b"<Autodiscover><Request><EMailAddress>alice@example.com",
    b"alice@example.com",
    b"",
    outlook_request("alice@example.com" + " " * clientconfig.MAX_REQUEST),
])
def test_anything_but_a_plain_request_names_no_address(body: bytes) -> None:
    assert clientconfig.requested_address(body) is None


# --- Apple ----------------------------------------------------------------------------------------

def apple_mail(document: bytes) -> dict[str, Any]:
    profile = plistlib.loads(document)
    assert profile["PayloadType"] == "Configuration"
    (mail,) = profile["PayloadContent"]
    assert isinstance(mail, dict)
    return mail


def test_the_apple_profile_sets_up_imap_and_smtp_over_tls_without_a_password() -> None:
    document = clientconfig.apple_profile(SERVICE, ODD)
    profile = plistlib.loads(document)
    mail = apple_mail(document)
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["EmailAddress"] == mail["IncomingMailServerUsername"] == ODD
    assert mail["OutgoingMailServerUsername"] == ODD
    assert mail["IncomingMailServerUseSSL"] is True and mail["OutgoingMailServerUseSSL"] is True
    assert mail["OutgoingPasswordSameAsIncomingPassword"] is True
    assert mail["IncomingMailServerAuthentication"] == "EmailAuthPassword"
    assert "IncomingPassword" not in mail and "OutgoingPassword" not in mail
    assert profile["PayloadIdentifier"].startswith("com.example.mail.")
    assert mail["PayloadIdentifier"].startswith(profile["PayloadIdentifier"])


def test_the_apple_profile_ids_are_stable_per_address_and_differ_between_addresses() -> None:
    def ids(address: str) -> tuple[str, str]:
        profile = plistlib.loads(clientconfig.apple_profile(SERVICE, address))
        return profile["PayloadUUID"], profile["PayloadContent"][0]["PayloadUUID"]

    first = ids("alice@example.com")
    assert ids("alice@example.com") == first and len(set(first)) == 2
    assert ids("bob@example.com") != first
    assert clientconfig.apple_profile(SERVICE, ODD) == clientconfig.apple_profile(SERVICE, ODD)


def test_no_document_holds_a_password() -> None:
    thunderbird = xml(clientconfig.thunderbird_config(SERVICE, "example.com"))
    assert not [e for e in thunderbird.iter() if e.tag.lower() == "password"]
    outlook = xml(clientconfig.autodiscover_settings(SERVICE, ODD))
    assert not [e for e in outlook.iter() if "password" in e.tag.lower()]
    mail = apple_mail(clientconfig.apple_profile(SERVICE, ODD))
    assert [key for key in mail if key.endswith("Password")] == [
        "OutgoingPasswordSameAsIncomingPassword"]


# --- addresses and names --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "address"), [
    ("alice@example.com", "alice@example.com"),
    ("alice@EXAMPLE.org", "alice@example.org"),
    (ODD, ODD),
    ("alice@example.net", None),  # not ours
    ("alice@mail.example.com", None),
    ("alice", None),
    ("<alice@example.com>", None),
    ('"a b"@example.com', None),
    ("a@b@example.com", None),
    ("alice@example.com\r\nX: y", None),
    ("a" * 65 + "@example.com", None),
    (None, None),
])
def test_only_plain_addresses_at_our_domains_are_ours(text: str | None,
                                                      address: str | None) -> None:
    assert clientconfig.our_address(text, SERVICE) == address


def test_the_certificate_covers_the_client_names_after_the_policy_hosts(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com,example.org",
                             MAIL_HOSTNAME="mail.example.com")
    assert names.tls_names(settings) == [
        "mail.example.com", "mta-sts.example.com", "mta-sts.example.org",
        "autoconfig.example.com", "autodiscover.example.com",
        "autoconfig.example.org", "autodiscover.example.org"]
    assert clientconfig.service_for(settings) == SERVICE


# --- who gets what (port443.answer) ---------------------------------------------------------

def ask(host: str, target: str, method: str = "GET", body: bytes = b"") -> Response:
    request = Request(method, target, host, body=body, content_length=len(body))
    return port443.answer(request, POLICIES, SERVICE)


def content_type(response: Response) -> str:
    return dict(response.headers)["Content-Type"]


@pytest.mark.parametrize(("host", "target", "domain"), [
    ("autoconfig.example.com", "/mail/config-v1.1.xml?emailaddress=alice%40example.com",
     "example.com"),
    ("autoconfig.example.org", "/mail/config-v1.1.xml", "example.org"),
    ("autoconfig.example.org", "/.well-known/autoconfig/mail/config-v1.1.xml", "example.org"),
    # The Host decides; on MAIL_HOSTNAME, the address.
    ("autoconfig.example.com", "/mail/config-v1.1.xml?emailaddress=bob@example.org",
     "example.com"),
    ("mail.example.com", "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=b%40"
     "example.org", "example.org"),
])
def test_thunderbird_is_answered_for_the_domain_the_host_or_address_names(
        host: str, target: str, domain: str) -> None:
    response = ask(host, target)
    assert response.status is HTTPStatus.OK
    assert content_type(response) == "application/xml; charset=utf-8"
    provider = xml(response.body).find("emailProvider")
    assert provider is not None and provider.get("id") == domain


@pytest.mark.parametrize(("host", "target"), [
    ("autodiscover.example.com", "/autodiscover/autodiscover.xml"),
    ("autodiscover.example.org", "/Autodiscover/Autodiscover.xml"),
    ("AUTODISCOVER.example.org", "/AUTODISCOVER/AUTODISCOVER.XML"),
    ("mail.example.com", "/autodiscover/autodiscover.xml"),  # where the SRV record leads
])
def test_outlooks_post_is_answered_on_its_hosts_in_any_case(host: str, target: str) -> None:
    response = ask(host.lower(), target, "POST", outlook_request(ODD))
    assert response.status is HTTPStatus.OK
    assert content_type(response) == "application/xml; charset=utf-8"
    assert outlook_protocols(response.body)["IMAP"]["LoginName"] == ODD


def test_outlooks_get_with_an_address_is_answered_too() -> None:
    response = ask("autodiscover.example.com",
                   "/autodiscover/autodiscover.xml?emailaddress=alice+x%40example.com")
    assert outlook_protocols(response.body)["SMTP"]["LoginName"] == "alice+x@example.com"


@pytest.mark.parametrize(("method", "target", "body"), [
    ("POST", "/autodiscover/autodiscover.xml", BILLION_LAUGHS),
    ("POST", "/autodiscover/autodiscover.xml", b"alice@example.com"),
    ("POST", "/autodiscover/autodiscover.xml", outlook_request("not an address")),
    ("GET", "/autodiscover/autodiscover.xml", b""),
])
def test_a_request_without_a_usable_address_gets_exchanges_error(
        method: str, target: str, body: bytes) -> None:
    response = ask("autodiscover.example.com", target, method, body)
    assert response.status is HTTPStatus.OK
    root = xml(response.body)
    assert root.findtext(f"{RESPONSE}Response/{RESPONSE}Error/{RESPONSE}ErrorCode") == "600"


def test_the_apple_profile_is_served_for_an_address_of_ours() -> None:
    for host in ("autoconfig.example.com", "mail.example.com"):
        response = ask(host, f"/apple/mail.mobileconfig?emailaddress={ODD.replace('&', '%26')}")
        assert response.status is HTTPStatus.OK
        assert content_type(response) == "application/x-apple-aspen-config"
        assert apple_mail(response.body)["EmailAddress"] == ODD


@pytest.mark.parametrize(("host", "target", "method", "body"), [
    # Hosts that aren't ours, or not for this.
    ("autoconfig.example.net", "/mail/config-v1.1.xml", "GET", b""),
    ("autodiscover.example.net", "/autodiscover/autodiscover.xml", "POST",
     outlook_request("alice@example.net")),
    ("autoconfig.mail.example.com", "/mail/config-v1.1.xml", "GET", b""),
    ("mta-sts.example.com", "/mail/config-v1.1.xml", "GET", b""),
    ("example.com", "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a%40example.com",
     "GET", b""),
    ("autodiscover.example.com", "/mail/config-v1.1.xml", "GET", b""),
    ("autoconfig.example.com", "/autodiscover/autodiscover.xml", "POST",
     outlook_request("alice@example.com")),
    # Paths that don't exist.
    ("autoconfig.example.com", "/", "GET", b""),
    ("autoconfig.example.com", "/mail/config-v1.1.xml/x", "GET", b""),
    ("mail.example.com", "/mail/config-v1.1.xml?emailaddress=a%40example.com", "GET", b""),
    # Addresses that aren't ours (or none, where the document is for one).
    ("mail.example.com", "/.well-known/autoconfig/mail/config-v1.1.xml", "GET", b""),
    ("mail.example.com", "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a%40x.net",
     "GET", b""),
    ("autoconfig.example.com", "/apple/mail.mobileconfig", "GET", b""),
    ("autoconfig.example.com", "/apple/mail.mobileconfig?emailaddress=a%40example.net", "GET",
     b""),
    ("autodiscover.example.com", "/autodiscover/autodiscover.xml", "POST",
     outlook_request("alice@example.net")),
])
def test_other_hosts_paths_and_addresses_are_not_found(host: str, target: str, method: str,
                                                       body: bytes) -> None:
    assert ask(host, target, method, body).status is HTTPStatus.NOT_FOUND


def test_without_the_service_only_the_policy_is_served() -> None:
    request = Request("GET", "/mail/config-v1.1.xml", "autoconfig.example.com")
    assert port443.answer(request, POLICIES).status is HTTPStatus.NOT_FOUND
    policy = Request("GET", "/.well-known/mta-sts.txt", "mta-sts.example.com")
    assert port443.answer(policy, POLICIES).body == POLICIES["mta-sts.example.com"]


@pytest.mark.parametrize(("host", "target"), [
    ("mta-sts.example.com", "/.well-known/mta-sts.txt"),
    ("autoconfig.example.com", "/mail/config-v1.1.xml"),
    ("autoconfig.example.com", "/apple/mail.mobileconfig?emailaddress=a%40example.com"),
])
def test_only_outlook_may_post(host: str, target: str) -> None:
    response = ask(host, target, "POST", b"x")
    assert response.status is HTTPStatus.METHOD_NOT_ALLOWED
    assert dict(response.headers)["Allow"] == "GET, HEAD"
