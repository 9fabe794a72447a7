"""The network half of outbound MTA-STS against real HTTPS and SMTP servers on loopback: a policy
fetched only from a CA-verified host with status 200 and text/plain; an MX checked as `enforce`
would. The test resolves every name to 127.0.0.1 (socket.create_connection), so certificates
are checked for the real names: mta-sts.example.net, mx.example.net."""

from __future__ import annotations

import http.server
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailboot.outbound.mtasts import FetchError
from mailboot.outbound.mtasts_fetch import fetch_policy, probe_mx, trust
from mailboot.standards.mtasts import MAX_POLICY_BYTES, POLICY_PATH
from tests.privateca import Issued, PrivateCa

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.net\r\nmax_age: 86400\r\n"


@dataclass
class Pki:
    ca: PrivateCa
    ca_file: Path
    directory: Path

    def server_context(self, issued: Issued) -> ssl.SSLContext:
        cert, key = self.directory / "cert.pem", self.directory / "key.pem"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = PrivateCa()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.pem())
    trust.cache_clear()
    return Pki(ca, ca_file, tmp_path)


@pytest.fixture
def loopback(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Send every connection to 127.0.0.1:port, whatever name it asked for."""
    real = socket.create_connection

    def to(port: int) -> None:
        def connect(_address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
            return real(("127.0.0.1", port), *args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(socket, "create_connection", connect)
    return to


@dataclass
class Answer:
    status: int = 200
    content_type: str = "text/plain; charset=utf-8"
    body: bytes = POLICY.encode()
    location: str = ""


def https_server(context: ssl.SSLContext, answer: Answer) -> Iterator[int]:
    asked: list[str] = []

    class Policy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(f"{self.headers['Host']}{self.path}")
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            if answer.location:
                self.send_header("Location", answer.location)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Policy)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
    assert all(request == f"mta-sts.example.net{POLICY_PATH}" for request in asked), asked


def fetched(pki: Pki, loopback: Callable[[int], None], answer: Answer,
            names: tuple[str, ...] = ("mta-sts.example.net",), trusted: bool = True) -> str:
    for port in https_server(pki.server_context(pki.ca.issue(*names)), answer):
        loopback(port)
        return fetch_policy("example.net", pki.ca_file if trusted else None, timeout=5)
    raise AssertionError("the server did not start")


def test_a_policy_is_fetched_from_a_host_the_trusted_ca_signed(
    pki: Pki, loopback: Callable[[int], None],
) -> None:
    assert fetched(pki, loopback, Answer()) == POLICY


@pytest.mark.parametrize(("answer", "names", "trusted", "why"), [
    (Answer(status=301, location="https://elsewhere.example/"), ("mta-sts.example.net",), True,
     r"answered 301 Moved Permanently; only 200 counts \(RFC 8461 §3.3: redirects are not "
     r"followed\)"),
    (Answer(status=404), ("mta-sts.example.net",), True, "answered 404 Not Found"),
    (Answer(content_type="text/html"), ("mta-sts.example.net",), True,
     r"is of type 'text/html', not text/plain \(RFC 8461 §3.3\)"),
    (Answer(body=b"x" * (MAX_POLICY_BYTES + 1)), ("mta-sts.example.net",), True,
     "is larger than 65536 bytes: not a policy"),
    (Answer(body=b"\xff\xfe"), ("mta-sts.example.net",), True, "is not UTF-8 text"),
    (Answer(), ("mta-sts.example.net",), False, "the certificate is not trusted"),
    (Answer(), ("www.example.net",), True,
     r"the certificate is not trusted \(Hostname mismatch"),
])
def test_what_rfc_8461_does_not_accept_is_a_fetch_error(
    pki: Pki, loopback: Callable[[int], None], answer: Answer, names: tuple[str, ...],
    trusted: bool, why: str,
) -> None:
    with pytest.raises(FetchError, match=why):
        fetched(pki, loopback, answer, names, trusted)


def test_a_host_that_does_not_answer_is_a_fetch_error(pki: Pki,
                                                      loopback: Callable[[int], None]) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    loopback(port)
    url = r"https://mta-sts\.example\.net/\.well-known/mta-sts\.txt"
    with pytest.raises(FetchError, match=f"{url}: connection refused"):
        fetch_policy("example.net", pki.ca_file, timeout=5)


def test_an_unreadable_extra_ca_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    trust.cache_clear()
    with pytest.raises(FetchError, match=r"TLS_TRUST_CA_FILE .* can't be loaded"):
        trust(tmp_path / "ca.pem")


# --- an MX checked as `enforce` would -------------------------------------------------------------
def smtp_server(context: ssl.SSLContext | None) -> Iterator[int]:
    """An SMTP server offering STARTTLS with `context` (None: no STARTTLS)."""

    class Smtp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.tls: socket.socket | None = None
            connection: socket.socket = self.request
            connection.sendall(b"220 mx.example.net ESMTP\r\n")
            reader = connection.makefile("rb")
            while line := reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    extension = b"250-mx.example.net\r\n250 STARTTLS\r\n" if context else \
                        b"250 mx.example.net\r\n"
                    connection.sendall(extension)
                elif verb == b"STAR" and context is not None:
                    connection.sendall(b"220 2.0.0 go ahead\r\n")
                    try:
                        connection = self.tls = context.wrap_socket(connection,
                                                                    server_side=True)
                    except (ssl.SSLError, OSError):
                        return
                    reader = connection.makefile("rb")
                elif verb == b"QUIT":
                    connection.sendall(b"221 2.0.0 bye\r\n")
                    return
                else:
                    connection.sendall(b"502 5.5.2 no\r\n")

        def finish(self) -> None:
            if self.tls is not None:
                self.tls.close()

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Smtp)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def probed(loopback: Callable[[int], None], context: ssl.SSLContext | None,
           ca_file: Path | None) -> str | None:
    for port in smtp_server(context):
        loopback(port)
        return probe_mx("mx.example.net", "mail.example.com", ca_file, timeout=5)
    raise AssertionError("the server did not start")


def test_an_mx_with_a_certificate_of_the_trusted_ca_passes(
    pki: Pki, loopback: Callable[[int], None],
) -> None:
    context = pki.server_context(pki.ca.issue("mx.example.net"))
    assert probed(loopback, context, pki.ca_file) is None


def test_an_mx_that_enforce_would_refuse_says_why(pki: Pki,
                                                  loopback: Callable[[int], None]) -> None:
    signed = pki.server_context(pki.ca.issue("mx.example.net"))
    assert probed(loopback, signed, None) == (
        "its certificate is not verified (unable to get local issuer certificate)")
    other_name = pki.server_context(pki.ca.issue("mx.example.org"))
    assert "its certificate is not verified (Hostname mismatch" in str(
        probed(loopback, other_name, pki.ca_file))
    assert probed(loopback, None, pki.ca_file) == "it offers no STARTTLS"


def test_an_mx_that_does_not_answer_cannot_tell(loopback: Callable[[int], None]) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    loopback(port)
    with pytest.raises(FetchError, match="connection refused"):
        probe_mx("mx.example.net", "mail.example.com", None, timeout=5)
