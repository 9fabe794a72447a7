"""The documents mail clients configure themselves from, given an address and a password.

- Thunderbird's autoconfig file (clientConfig 1.1, as Thunderbird's "Autoconfiguration" page
  documents it), fetched from `https://autoconfig.<domain>/mail/config-v1.1.xml`;
- Outlook's "POX" autodiscover answer (Microsoft's "Autodiscover for Exchange" reference, the
  responseschema/2006 and outlook/responseschema/2006a schemas; the request in MS-OXDSCLI),
  fetched by a POST to `https://autodiscover.<domain>/autodiscover/autodiscover.xml`;
- an Apple configuration profile with one `com.apple.mail.managed` payload (Apple's Device
  Management "Mail" reference), opened on an iPhone, iPad or Mac.

Every one names MAIL_HOSTNAME for IMAP (993) and submission (465; Thunderbird also gets 587),
implicit TLS first (RFC 8314 §5.1), as the SRV records of `records.build.srv_records` do. None
holds a password: the client asks its user for it. The documents are the same for every address
at our domains (account or not), so they tell nobody which accounts exist.

Pure functions; the policy server (`web/port443.py`) decides which one a request gets.
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Final
from xml.parsers import expat

from mailboot.settings.table import Settings
from mailboot.settings.values import SettingValueError, parse_email_address

IMAPS_PORT: Final = 993  # RFC 8314 §3.3: IMAP with implicit TLS
SUBMISSIONS_PORT: Final = 465  # RFC 8314 §3.3: submission with implicit TLS
SUBMISSION_PORT: Final = 587  # RFC 6409 §3, with STARTTLS: the fallback
MAX_REQUEST: Final = 16 * 1024  # bytes of an Outlook request: a few hundred in practice

# Microsoft's POX namespaces (Autodiscover for Exchange reference, MS-OXDSCLI §2.2).
RESPONSE_NS: Final = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS: Final = ("http://schemas.microsoft.com/exchange/autodiscover/outlook/"
                     "responseschema/2006a")
INVALID_REQUEST: Final = "600"  # MS-OXDSCLI §3.1.5.1 ErrorCode: "Invalid Request"

THUNDERBIRD_TYPE: Final = "application/xml; charset=utf-8"
AUTODISCOVER_TYPE: Final = "application/xml; charset=utf-8"
APPLE_TYPE: Final = "application/x-apple-aspen-config"  # what makes iOS offer to install it


@dataclass(frozen=True)
class MailService:
    """What a mail client needs: the one host for IMAP and submission, and our domains."""

    hostname: str
    domains: tuple[str, ...]


def service_for(settings: Settings) -> MailService:
    return MailService(settings.hostname, tuple(settings.domains))


def plain_address(text: str | None) -> str | None:
    """`text` as `local@ascii-domain` when it is a plain address (a dot-atom local part, RFC
    5322 §3.4.1, as accounts have); else None."""
    if text is None or len(text) > 254:  # RFC 5321 §4.5.3.1.3 (with RFC 3696 errata)
        return None
    try:
        return parse_email_address(text)
    except SettingValueError:
        return None


def our_address(text: str | None, service: MailService) -> str | None:
    """`text` as `local@ascii-domain` when it is a plain address at one of our domains."""
    address = plain_address(text)
    return address if address is not None and domain_of(address) in service.domains else None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)  # for people reading it with curl
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _add(parent: ET.Element, tag: str, text: str | int, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = str(text)
    return element


# --- Thunderbird ----------------------------------------------------------------------------------


def thunderbird_config(service: MailService, domain: str) -> bytes:
    """Thunderbird's clientConfig for `domain`: IMAP 993 SSL; SMTP 465 SSL, then 587 STARTTLS
    (the order is Thunderbird's preference). `%EMAILADDRESS%` is the user name: Thunderbird
    puts in the address its user typed."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    _add(provider, "domain", domain)
    _add(provider, "displayName", domain)
    _add(provider, "displayShortName", domain)
    _thunderbird_server(provider, "incomingServer", "imap", service.hostname, IMAPS_PORT, "SSL")
    for port, socket_type in ((SUBMISSIONS_PORT, "SSL"), (SUBMISSION_PORT, "STARTTLS")):
        _thunderbird_server(provider, "outgoingServer", "smtp", service.hostname, port,
                            socket_type)
    return _xml(root)


def _thunderbird_server(provider: ET.Element, tag: str, kind: str, host: str, port: int,
                        socket_type: str) -> None:
    server = ET.SubElement(provider, tag, type=kind)
    _add(server, "hostname", host)
    _add(server, "port", port)
    _add(server, "socketType", socket_type)
    _add(server, "username", "%EMAILADDRESS%")
    # The password as typed, inside TLS: Dovecot offers PLAIN and LOGIN only after TLS.
    _add(server, "authentication", "password-cleartext")


# --- Outlook (POX autodiscover) -------------------------------------------------------------------


def autodiscover_settings(service: MailService, address: str) -> bytes:
    """Outlook's account settings for `address` (which the caller has checked is ours): IMAP
    993 and SMTP 465, both with implicit TLS, the address as login name."""
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_NS)
    account = ET.SubElement(response, "Account")
    _add(account, "AccountType", "email")
    _add(account, "Action", "settings")
    _outlook_protocol(account, "IMAP", service.hostname, IMAPS_PORT, address)
    smtp = _outlook_protocol(account, "SMTP", service.hostname, SUBMISSIONS_PORT, address)
    _add(smtp, "UsePOPAuth", "off")  # its own login, not "POP before SMTP"
    _add(smtp, "SMTPLast", "off")
    return _xml(root)


def _outlook_protocol(account: ET.Element, kind: str, host: str, port: int,
                      address: str) -> ET.Element:
    protocol = ET.SubElement(account, "Protocol")
    _add(protocol, "Type", kind)
    _add(protocol, "Server", host)
    _add(protocol, "Port", port)
    _add(protocol, "DomainRequired", "off")
    _add(protocol, "LoginName", address)
    _add(protocol, "SPA", "off")  # no NTLM: the password, inside TLS
    _add(protocol, "SSL", "on")
    # Encryption overrides SSL where Outlook knows it: SSL is TLS from the first byte.
    _add(protocol, "Encryption", "SSL")
    _add(protocol, "AuthRequired", "on")
    return protocol


def autodiscover_error(message: str = "Invalid Request") -> bytes:
    """The POX error answer (as Exchange gives it, MS-OXDSCLI §2.2.4.1.1.1)."""
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    error = ET.SubElement(ET.SubElement(root, "Response"), "Error")
    _add(error, "ErrorCode", INVALID_REQUEST)
    _add(error, "Message", message)
    ET.SubElement(error, "DebugData")
    return _xml(root)


class _Refused(Exception):
    """The request declares a document type (and with it, perhaps, entities)."""


@dataclass
class _RequestReader:
    """Collects the text of Autodiscover/Request/EMailAddress, namespaces aside."""

    path: list[str]
    address: list[str]

    def start(self, name: str, _attributes: object) -> None:
        self.path.append(name.rpartition(" ")[2])  # "namespace localname" -> localname

    def end(self, _name: str) -> None:
        self.path.pop()

    def text(self, data: str) -> None:
        if self.path == ["Autodiscover", "Request", "EMailAddress"]:
            self.address.append(data)


def _refuse_doctype(_name: str, _system_id: str | None, _public_id: str | None,
                    _internal_subset: bool) -> int:
    raise _Refused  # every entity declaration stands inside a DOCTYPE: none is read


def requested_address(body: bytes) -> str | None:
    """The EMailAddress of Outlook's POX request (MS-OXDSCLI §2.2.3); None when `body` is not
    such a request, is longer than MAX_REQUEST, or declares a document type.

    Parsed by expat with every DTD refused before anything in it is read: no entity is ever
    defined, so none can expand (billion laughs) or fetch a file or URL (XXE); an entity
    reference without one is malformed XML. Whatever the body's encoding (UTF-16 too).
    """
    if len(body) > MAX_REQUEST:
        return None
    reader = _RequestReader([], [])
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.text
    try:
        parser.Parse(body, True)
    except (expat.ExpatError, _Refused, ValueError):
        return None
    return "".join(reader.address).strip() or None


# --- Apple ----------------------------------------------------------------------------------------


def apple_profile(service: MailService, address: str) -> bytes:
    """A configuration profile (plist XML) with one IMAP account for `address` (checked by the
    caller), unsigned. No password: iOS and macOS ask for it while installing."""
    domain = domain_of(address)
    profile_uuid, mail_uuid = payload_uuids(domain, address)
    identifier = f"{reverse_dns(service.hostname)}.{profile_uuid}"
    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.mail",
        "PayloadUUID": str(mail_uuid),
        "PayloadDisplayName": f"Mail ({address})",
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": service.hostname,
        "IncomingMailServerPortNumber": IMAPS_PORT,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": service.hostname,
        "OutgoingMailServerPortNumber": SUBMISSIONS_PORT,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": str(profile_uuid),
        "PayloadDisplayName": f"Mail at {domain}",
        "PayloadDescription": f"Sets up {address} (IMAP and SMTP at {service.hostname}).",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


def payload_uuids(domain: str, address: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The profile's and the mail payload's UUIDs: the same on every download for one address,
    so installing it again replaces the account instead of adding a second one."""
    namespace = uuid.uuid5(uuid.NAMESPACE_DNS, domain)
    return uuid.uuid5(namespace, f"profile:{address}"), uuid.uuid5(namespace, f"mail:{address}")


def reverse_dns(host: str) -> str:
    """`mail.example.com` -> `com.example.mail`: the identifier style Apple asks for."""
    return ".".join(reversed(host.split(".")))



