"""The port-80 listener: answers ACME HTTP-01 challenges, redirects everything else to HTTPS.

Each connection gets its own thread and a short socket timeout, so a slow or silent client
can't hold up the challenges the CA fetches (RFC 8555 §8.3) or anyone else.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mailboot.tls.acme_issuer import ChallengeStore

log = logging.getLogger(__name__)

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
CLIENT_TIMEOUT = 10.0  # seconds a client may take per read before it is dropped


def make_handler(store: ChallengeStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT
        server_version = "mailboot"
        sys_version = ""

        def do_GET(self) -> None:
            if self.path.startswith(CHALLENGE_PREFIX):
                answer = store.get(self.path[len(CHALLENGE_PREFIX):])
                if answer is None:
                    self._send(HTTPStatus.NOT_FOUND, b"no such challenge\n")
                else:
                    self._send(HTTPStatus.OK, answer.encode("ascii"))
                return
            host = (self.headers.get("Host") or "").split(":")[0]
            if not host:
                self._send(HTTPStatus.BAD_REQUEST, b"no Host header\n")
                return
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", f"https://{host}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            self.do_GET()

        def _send(self, status: HTTPStatus, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.info("http: %s %s", self.address_string(), format % args)

    return Handler


def start(port: int, store: ChallengeStore, names: list[str],
          host: str = "") -> ThreadingHTTPServer:
    """Listen on `port` in a background thread; returns the server (call .shutdown() to stop)."""
    server = ThreadingHTTPServer((host, port), make_handler(store))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True).start()
    return server
