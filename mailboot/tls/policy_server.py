"""The MTA-STS policy over HTTPS on port 443 (RFC 8461 §3.3), one certificate per name by SNI.

Only `https://mta-sts.<our domain>/.well-known/mta-sts.txt` exists; everything else is 404.
The TLS handshake happens in the connection's own thread, with a timeout, so a client that
connects and says nothing holds up nobody.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mailboot.paths import Paths
from mailboot.tls import mtasts
from mailboot.tls.certificates import CHAIN_FILE, KEY_FILE
from mailboot.tls.http_server import CLIENT_TIMEOUT

log = logging.getLogger(__name__)

RESCAN = 5.0  # seconds between looks at the certificate links (a renewal swaps them)


class CertificateChooser:
    """SSL contexts per certificate slot, picked by the name the client asks for (SNI)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._loaded: dict[Path, tuple[ssl.SSLContext, frozenset[str]]] = {}
        self._scanned = 0.0

    def default_context(self) -> ssl.SSLContext:
        context = _server_context()
        context.sni_callback = self._choose
        live = self.paths.tls_live.resolve()
        context.load_cert_chain(live / CHAIN_FILE, live / KEY_FILE)
        return context

    def _choose(self, connection: ssl.SSLObject, name: str | None,
                _context: ssl.SSLContext) -> None:
        contexts = self._contexts()
        for context, names in contexts:
            if name is not None and name.lower() in names:
                connection.context = context
                return
        if contexts:  # no or unknown name: MAIL_HOSTNAME's certificate, as renewed
            connection.context = contexts[0][0]

    def _contexts(self) -> list[tuple[ssl.SSLContext, frozenset[str]]]:
        with self._lock:
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


def make_handler(policies: Mapping[str, bytes]) -> type[BaseHTTPRequestHandler]:
    """`policies`: host name (mta-sts.<domain>) -> the policy's bytes."""

    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT
        server_version = "mailboot"
        sys_version = ""

        def setup(self) -> None:
            super().setup()
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()  # here, in this thread, under the timeout

        def do_GET(self) -> None:
            host = (self.headers.get("Host") or "").split(":")[0].lower().rstrip(".")
            policy = policies.get(host)
            if policy is None or self.path != mtasts.POLICY_PATH:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n")
            else:
                self._send(HTTPStatus.OK, policy)

        def do_HEAD(self) -> None:
            self.do_GET()

        def _send(self, status: HTTPStatus, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")  # RFC 8461 §3.2
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.info("https: %s %s", self.address_string(), format % args)

    return Handler


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        raw, address = self.socket.accept()
        # The handshake waits for the handler's thread (setup), never for this accept loop.
        return self.context.wrap_socket(raw, server_side=True,
                                        do_handshake_on_connect=False), address

    def handle_error(self, request: object, client_address: object) -> None:
        log.info("https: %s: connection dropped (%s)", client_address,
                 "timeout or bad TLS")


def start(port: int, paths: Paths, policies: Mapping[str, bytes],
          host: str = "") -> ThreadingHTTPServer:
    """Serve the policies on `port` in a background thread."""
    chooser = CertificateChooser(paths)
    server = _TlsServer((host, port), make_handler(policies), chooser.default_context())
    threading.Thread(target=server.serve_forever, name=f"https-{port}", daemon=True).start()
    return server

