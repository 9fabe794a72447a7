"""Port 443: the MTA-STS policy (RFC 8461 §3.3) and mail clients' settings, one certificate per
name by SNI.

What exists (the Host decides; everything else is 404):
- `https://mta-sts.<domain>/.well-known/mta-sts.txt`: the policy;
- `https://autoconfig.<domain>/mail/config-v1.1.xml` and `/.well-known/autoconfig/mail/
  config-v1.1.xml` (also on MAIL_HOSTNAME, for the domain of `?emailaddress=`): Thunderbird's;
- `https://autodiscover.<domain>/autodiscover/autodiscover.xml` (also on MAIL_HOSTNAME, where
  Outlook's `_autodiscover._tcp` SRV lookup leads it; any case): Outlook's, for the address it
  POSTs;
- `https://autoconfig.<domain>/apple/mail.mobileconfig?emailaddress=<address>` (also on
  MAIL_HOSTNAME): a profile for iPhones, iPads and Macs.
The documents come from `clientconfig`, only for addresses at our domains.

Senders fetch the policy from anywhere on the internet, and so can anyone else: the port runs
on the bounded server of `server` (one thread, a cap on open connections, one deadline for
the TLS handshake and the request head together), so clients that connect and never send a
ClientHello, or never finish their request, can't keep a sender's fetch out.

The certificate is picked by the name the client asks for (SNI) among the live certificate
slots, and the slots are looked at again every RESCAN seconds: a renewal swaps their links.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Final

from mailboot.base.paths import Paths
from mailboot.standards import mtasts
from mailboot.tls.certificates import CHAIN_FILE, KEY_FILE
from mailboot.web import clientconfig
from mailboot.web import server as http_core
from mailboot.web.clientconfig import MailService
from mailboot.web.server import Answer, Limits, Request, Response

RESCAN = 5.0  # seconds between looks at the certificate links (a renewal swaps them)
# Outlook POSTs its autodiscover request: a small XML body.
LIMITS = Limits(max_body=clientconfig.MAX_REQUEST)
METHODS = ("GET", "HEAD", "POST")
READ_ONLY = ("GET", "HEAD")  # every document but Outlook's

THUNDERBIRD_PATHS: Final = frozenset({"/mail/config-v1.1.xml",
                                      "/.well-known/autoconfig/mail/config-v1.1.xml"})
WELL_KNOWN_THUNDERBIRD: Final = "/.well-known/autoconfig/mail/config-v1.1.xml"
AUTODISCOVER_PATH: Final = "/autodiscover/autodiscover.xml"
APPLE_PATH: Final = "/apple/mail.mobileconfig"
ADDRESS_PARAMETER: Final = "emailaddress"  # as Thunderbird sends it
NOT_FOUND = Response(HTTPStatus.NOT_FOUND, b"not found\n")


class CertificateChooser:
    """SSL contexts per certificate slot, picked by the name the client asks for (SNI).

    Its callback runs in the server's one event-loop thread, so it needs no lock.
    """

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._loaded: dict[Path, tuple[ssl.SSLContext, frozenset[str]]] = {}
        self._scanned = float("-inf")  # the first handshake scans

    def default_context(self) -> ssl.SSLContext:
        context = _server_context()
        context.sni_callback = self._choose
        live = self.paths.tls_live.resolve()
        context.load_cert_chain(live / CHAIN_FILE, live / KEY_FILE)
        return context

    def _choose(self, connection: ssl.SSLObject | ssl.SSLSocket, name: str | None,
                _context: ssl.SSLContext) -> None:
        contexts = self._contexts()
        for context, names in contexts:
            if name is not None and name.lower() in names:
                connection.context = context
                return
        if contexts:  # no or unknown name: MAIL_HOSTNAME's certificate, as renewed
            connection.context = contexts[0][0]

    def _contexts(self) -> list[tuple[ssl.SSLContext, frozenset[str]]]:
        if time.monotonic() - self._scanned > RESCAN:
            self._rescan()
        return list(self._loaded.values())

    def _rescan(self) -> None:
        from mailboot.tls.certificates import (
            live_certificates,  # local: keeps startup imports small
        )

        current: dict[Path, tuple[ssl.SSLContext, frozenset[str]]] = {}
        for certificate in live_certificates(self.paths):
            directory = certificate.directory
            if directory in self._loaded:
                current[directory] = self._loaded[directory]
            else:
                context = _server_context()
                context.load_cert_chain(certificate.chain_path, certificate.key_path)
                current[directory] = (context, frozenset(certificate.names))
        self._loaded = current
        self._scanned = time.monotonic()


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # as everywhere else
    return context


def answer(request: Request, policies: Mapping[str, bytes],
           service: MailService | None = None, page: Answer | None = None) -> Response:
    """The policy for `mta-sts.<domain>` at its one path, a mail client's settings (with
    `service`), the records page (`page`, for any other path on MAIL_HOSTNAME: it answers 404
    itself but for its secret path), or 404 for any other host or path."""
    policy = policies.get(request.host or "")
    if policy is not None and request.target == mtasts.POLICY_PATH:
        return _read_only(request) or Response(HTTPStatus.OK, policy)  # text/plain, RFC 8461 §3.2
    if service is None:
        return NOT_FOUND
    found = client_answer(request, service)
    if found is NOT_FOUND and page is not None and request.host == service.hostname:
        return page(request)
    return found


def _read_only(request: Request) -> Response | None:
    """405 for a POST where only GET and HEAD make sense (RFC 9110 §15.5.6)."""
    if request.method in READ_ONLY:
        return None
    return Response(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET and HEAD\n",
                    (("Content-Type", "text/plain"), ("Allow", ", ".join(READ_ONLY))))


Route = Callable[[Request, MailService, str | None], Response]


def client_answer(request: Request, service: MailService) -> Response:
    """A mail client's settings: the path says which client's, the Host for which domain
    (`autoconfig.<domain>`, `autodiscover.<domain>`; on MAIL_HOSTNAME, the address's)."""
    host = request.host or ""
    prefix, _, parent = host.partition(".")
    domain = parent if parent in service.domains else None
    path = request.path.lower()  # Outlook varies the case (/Autodiscover/Autodiscover.xml)
    routes: dict[str, Route] = {}
    if prefix == "autoconfig" and domain is not None:
        routes = dict.fromkeys(THUNDERBIRD_PATHS, _thunderbird) | {APPLE_PATH: _apple}
    elif prefix == "autodiscover" and domain is not None:
        routes = {AUTODISCOVER_PATH: _autodiscover}
    elif host == service.hostname:
        domain = None  # the address says
        routes = {WELL_KNOWN_THUNDERBIRD: _thunderbird, APPLE_PATH: _apple,
                  AUTODISCOVER_PATH: _autodiscover}
    route = routes.get(path)
    return NOT_FOUND if route is None else route(request, service, domain)


def _thunderbird(request: Request, service: MailService, domain: str | None) -> Response:
    if domain is None:
        address = clientconfig.our_address(request.query(ADDRESS_PARAMETER), service)
        domain = None if address is None else clientconfig.domain_of(address)
    if domain is None:
        return NOT_FOUND
    return _read_only(request) or Response(
        HTTPStatus.OK, clientconfig.thunderbird_config(service, domain),
        (("Content-Type", clientconfig.THUNDERBIRD_TYPE),))


def _apple(request: Request, service: MailService, _domain: str | None) -> Response:
    address = clientconfig.our_address(request.query(ADDRESS_PARAMETER), service)
    if address is None:  # the profile is for one address: it names it
        return NOT_FOUND
    return _read_only(request) or Response(
        HTTPStatus.OK, clientconfig.apple_profile(service, address),
        (("Content-Type", clientconfig.APPLE_TYPE),
         ("Content-Disposition", 'attachment; filename="mail.mobileconfig"')))


def _autodiscover(request: Request, service: MailService, _domain: str | None) -> Response:
    """Outlook POSTs its request (GET with `?emailaddress=` is taken too, for people trying
    it). A request that names no address gets the POX error Exchange gives (ErrorCode 600),
    so Outlook stops there; an address at a domain that isn't ours gets 404, as a foreign
    Host does, so Outlook goes on to its next way of finding settings."""
    if request.method == "POST":
        text = clientconfig.requested_address(request.body)
    else:
        text = request.query(ADDRESS_PARAMETER)
    kind = (("Content-Type", clientconfig.AUTODISCOVER_TYPE),)
    address = clientconfig.plain_address(text)
    if address is None:
        return Response(HTTPStatus.OK, clientconfig.autodiscover_error(), kind)
    if clientconfig.domain_of(address) not in service.domains:
        return NOT_FOUND
    return Response(HTTPStatus.OK, clientconfig.autodiscover_settings(service, address), kind)


def start(port: int, paths: Paths, policies: Mapping[str, bytes], host: str = "",
          limits: Limits = LIMITS, service: MailService | None = None,
          sock: socket.socket | None = None, page: Answer | None = None) -> http_core.Server:
    """Serve the policies (and, with `service`, mail clients' settings, and with `page` the
    records page on MAIL_HOSTNAME) on `port` (0: any, see `.port`), or on the listening `sock`
    handed over, in a background thread; `.shutdown()` stops it.

    `policies`: host name (mta-sts.<domain>) -> the policy's bytes. Raises OSError when the
    port can't be had or no certificate is live.
    """
    ours = {name.lower().removesuffix("."): policy for name, policy in policies.items()}
    context = CertificateChooser(paths).default_context()
    return http_core.serve(lambda request: answer(request, ours, service, page), host, port,
                           "https", limits, tls=context, headers=(("Cache-Control", "no-store"),),
                           methods=METHODS, sock=sock)
