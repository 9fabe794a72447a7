"""The MTA-STS policy over HTTPS on port 443 (RFC 8461 §3.3), one certificate per name by SNI.

Only `https://mta-sts.<our domain>/.well-known/mta-sts.txt` exists; everything else is 404.
Senders fetch the policy from anywhere on the internet, and so can anyone else: the port runs
on the bounded server of `http_core` (one thread, a cap on open connections, one deadline for
the TLS handshake and the request head together), so clients that connect and never send a
ClientHello, or never finish their request, can't keep a sender's fetch out.

The certificate is picked by the name the client asks for (SNI) among the live certificate
slots, and the slots are looked at again every RESCAN seconds: a renewal swaps their links.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path

from mailboot.paths import Paths
from mailboot.tls import http_core, mtasts
from mailboot.tls.certificates import CHAIN_FILE, KEY_FILE
from mailboot.tls.http_core import DEFAULT_LIMITS, Limits, Request, Response

RESCAN = 5.0  # seconds between looks at the certificate links (a renewal swaps them)


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


def answer(request: Request, policies: Mapping[str, bytes]) -> Response:
    """The policy for `mta-sts.<domain>` at its one path; 404 for any other host or path."""
    policy = policies.get(request.host or "")
    if policy is None or request.target != mtasts.POLICY_PATH:
        return Response(HTTPStatus.NOT_FOUND, b"not found\n")
    return Response(HTTPStatus.OK, policy)  # text/plain, RFC 8461 §3.2


def start(port: int, paths: Paths, policies: Mapping[str, bytes], host: str = "",
          limits: Limits = DEFAULT_LIMITS) -> http_core.Server:
    """Serve the policies on `port` (0: any, see `.port`) in a background thread;
    `.shutdown()` stops it.

    `policies`: host name (mta-sts.<domain>) -> the policy's bytes. Raises OSError when the
    port can't be had or no certificate is live.
    """
    ours = {name.lower().removesuffix("."): policy for name, policy in policies.items()}
    context = CertificateChooser(paths).default_context()
    return http_core.serve(lambda request: answer(request, ours), host, port, "https", limits,
                           tls=context, headers=(("Cache-Control", "no-store"),))
