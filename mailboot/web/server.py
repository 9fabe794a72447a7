"""The small HTTP/1.1 server under the port-80 and port-443 listeners: bounded, because both face
the internet.

Anyone can open connections to these ports and say nothing, or say a request one byte at a
time (slowloris). The certificate depends on them staying open for one client: the CA fetching
our HTTP-01 challenge (RFC 8555 §8.3), and senders fetching the MTA-STS policy (RFC 8461 §3.3).
So, instead of a thread per connection (memory and threads grow with every idle client):

- one asyncio event loop in one background thread per listener; a connection is a coroutine;
- a total deadline for the TLS handshake plus the whole request head, not per read, so a client
  dribbling bytes is dropped as surely as a silent one;
- a size limit on the head (431), GET and HEAD only (405) unless a listener takes more, a body
  only with POST, only with Content-Length and only up to `max_body` (411, 413), read within the
  same deadline as the head; `Connection: close` after one answer, with a deadline for writing it;
- at most `max_connections` open, counted from accept(): when a new one arrives and the table
  is full, the oldest idle connection (still without a complete request) of the source holding
  the most is closed to make room. A flood from one source (an IPv4 address or an IPv6 /64)
  only ever closes its own connections, and a flood from many still can't keep a new
  connection out: the CA's request gets in and is answered.

Connections are plain sockets driven by the event loop's socket calls, and TLS runs through
memory buffers (ssl.MemoryBIO), not asyncio's SSL transport: that one keeps a 256 KiB buffer
per connection in reference cycles only the garbage collector frees (measured: 580 MB resident
after 2,000 clients that never finished their handshake). Here a connection holds its socket,
a head of at most `max_head` bytes and, over TLS once the client has spoken, OpenSSL's session
and one record (about 60 KB), all freed when its socket closes. So memory is bounded by
`max_connections` (measured: 2,000 idle clients add under 2 MB on port 80 and on port 443,
2,000 that stall after their ClientHello 15 to 20 MB), and the thread count never changes.
The answer itself comes from a plain function `Request -> Response` per listener.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import re
import signal
import socket
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from http import HTTPStatus
from typing import TypeVar

from mailboot.base.sockets import listening_socket

log = logging.getLogger(__name__)

DROP_REPORT_INTERVAL = 60.0  # seconds: dropped connections are logged as one summary line
ACCEPT_RETRY = 1.0  # seconds to wait when accept() fails for want of file descriptors
LINGER_BYTES = 65536  # after answering, read and discard at most this much (see _linger)
ALLOWED_METHODS = ("GET", "HEAD")  # unless a listener takes more (`serve(methods=...)`)
# RFC 9110 §10.1.1: the interim answer to `Expect: 100-continue`, so the client sends its body.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_T = TypeVar("_T")


@dataclass(frozen=True)
class Limits:
    """What one client may take. The defaults hold for a server on the internet."""

    head_deadline: float = 10.0  # seconds for the TLS handshake and the whole request head
    max_head: int = 8192  # bytes of request line and header fields
    # Open connections per listener: two listeners stay far inside the usual 1024 descriptors.
    max_connections: int = 256
    answer_deadline: float = 10.0  # seconds to write the answer and close
    max_body: int = 0  # bytes of a POST body (read within head_deadline too); 0: no body

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_head < 1 or self.max_body < 0:
            raise ValueError(f"limits must allow one connection and one byte: {self}")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Request:
    method: str  # GET or HEAD, or another the listener takes
    target: str  # as sent: an origin-form path ("/x?y") or another form
    host: str | None  # from parse_host; None when the request named no host (HTTP/1.0)
    body: bytes = b""  # a POST's, complete (`content_length` bytes)
    content_length: int = 0  # what the head announced for a POST (RFC 9112 §6.3)
    expects_continue: bool = False  # `Expect: 100-continue` (RFC 9110 §10.1.1)
    client: str = ""  # the client's address (`client_address`), for per-client limits

    @property
    def path(self) -> str:
        """The target without its query (RFC 3986 §3.4)."""
        return self.target.partition("?")[0]

    def query(self, name: str) -> str | None:
        """The first value of the query parameter `name`, percent-decoded; None when absent.

        A `+` stays a `+` (RFC 3986 has no plus-for-space, and addresses contain `+`)."""
        for pair in self.target.partition("?")[2].split("&"):
            key, _, value = pair.partition("=")
            if urllib.parse.unquote(key) == name:
                return urllib.parse.unquote(value)
        return None


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "text/plain"),)


Answer = Callable[[Request], Response]


class BadRequest(Exception):
    """A request head we won't answer normally; `status` says how we answer instead."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


# RFC 9110 §5.6.2 token (method and field names); RFC 9112 §3.2 request-target: visible ASCII.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(r"[!-~]+")
_VERSION = re.compile(r"HTTP/1\.[0-9]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")  # RFC 9112 §2.2: a bare LF may end a line
_LINE_END = re.compile(r"\r?\n")
_PORT = re.compile(r":[0-9]{0,5}")  # RFC 3986 §3.2.3: port = *DIGIT, may be empty
# A DNS label as host names use it (RFC 1123 §2.1), plus "_", which some names carry.
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def parse_host(value: str) -> str | None:
    """The host a Host field value names: lower case, without port or trailing dot; an IPv6
    literal without brackets, in its canonical form. None for an empty value.

    Raises ValueError when the value can't be a host (RFC 9110 §7.2, RFC 3986 §3.2.2): a
    character no host name has, an unbracketed IPv6 address, a bad port.
    """
    if value == "":
        return None
    if value.startswith("["):
        literal, bracket, port = value[1:].partition("]")
        if not bracket or "%" in literal:  # no IPvFuture, no zone ids
            raise ValueError(f"bad IP literal in {value!r}")
        host = str(ipaddress.IPv6Address(literal))  # raises ValueError
    else:
        host, colon, digits = value.partition(":")
        port = colon + digits
        host = host.lower()
        host = host.removesuffix(".")
        labels = host.split(".")
        if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise ValueError(f"{value!r} is not a host name")
    if port and (not _PORT.fullmatch(port) or int(port[1:] or 0) > 65535):
        raise ValueError(f"bad port in {value!r}")
    return host


def parse_head(head: bytes, methods: Sequence[str] = ALLOWED_METHODS,
               max_body: int = 0) -> Request:
    """The request line, Host and body length of a request head (without its final empty line).

    Raises BadRequest: 400 for a malformed head, a missing (HTTP/1.1) or repeated Host, or a
    Host that can't be one (RFC 9112 §3.2); 405 for a method not in `methods`; for a POST, 411
    for a body sent without Content-Length and 413 for one over `max_body` bytes.
    """
    lines = _LINE_END.split(head.decode("latin-1"))  # RFC 9112 §2.2: octets, not UTF-8
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if not (_TOKEN.fullmatch(method) and _TARGET.fullmatch(target)
            and _VERSION.fullmatch(version)):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        # No whitespace before the colon, no line folding (RFC 9112 §5.1, §5.2).
        if not colon or not _TOKEN.fullmatch(name):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header field")
        fields.setdefault(name.lower(), []).append(value.strip(" \t"))
    hosts = fields.get("host", [])
    if len(hosts) > 1 or (not hosts and version != "HTTP/1.0"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "one Host header field is required")
    try:
        host = parse_host(hosts[0]) if hosts else None
    except ValueError:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad Host header field") from None
    if method not in methods:
        raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"only {', '.join(methods)}")
    if method != "POST":  # a body sent anyway stays unread: the connection closes after answering
        return Request(method, target, host)
    # RFC 9110 §10.1.1: an HTTP/1.0 client's expectation is ignored.
    expects = version != "HTTP/1.0" and any(
        value.lower() == "100-continue" for value in fields.get("expect", []))
    return Request(method, target, host, content_length=_body_length(fields, max_body),
                   expects_continue=expects)


def _body_length(fields: dict[str, list[str]], limit: int) -> int:
    """A POST body's length (RFC 9112 §6.3): Content-Length, or none at all."""
    if "transfer-encoding" in fields:  # chunked bodies of unknown size: not for our small ones
        raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send the body with Content-Length")
    # RFC 9110 §8.6: repeated values must all be the same number.
    values = {value.strip(" \t") for field in fields.get("content-length", [])
              for value in field.split(",")}
    if not values:
        return 0
    if len(values) > 1 or not all(value.isascii() and value.isdigit() for value in values):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length header field")
    value = values.pop()
    if len(value) > 12 or int(value) > limit:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,  # RFC 9110 §15.5.14
                         f"request body over {limit} bytes")
    return int(value)


def render(response: Response, with_body: bool, extra: Sequence[tuple[str, str]] = (),
           methods: Sequence[str] = ALLOWED_METHODS) -> bytes:
    """The response's bytes; every answer closes the connection (RFC 9112 §9.6). A 405 says
    which methods are allowed: the response's own Allow, or else `methods`."""
    headers = [
        ("Server", "mailboot"),
        ("Date", formatdate(usegmt=True)),  # RFC 9110 §6.6.1
        *response.headers,
        *extra,
        ("Content-Length", str(len(response.body))),  # a HEAD gets GET's length (RFC 9110 §9.3.2)
        ("Connection", "close"),
    ]
    if response.status is HTTPStatus.METHOD_NOT_ALLOWED and not any(
            name.lower() == "allow" for name, _ in response.headers):
        headers.append(("Allow", ", ".join(methods)))  # RFC 9110 §15.5.6
    lines = [f"HTTP/1.1 {response.status.value} {response.status.phrase}",
             *(f"{name}: {value}" for name, value in headers)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + response.body if with_body else head


def printable(text: str, limit: int = 200) -> str:
    """`text` shortened and with control characters escaped: safe for one log line."""
    return "".join(c if c.isprintable() and c.isascii() else f"\\x{ord(c):02x}"
                   for c in text[:limit])


def client_address(peer: object) -> str:
    """The client's address from a peername; IPv4 clients of a dual-stack socket as IPv4."""
    if not isinstance(peer, tuple) or not peer:
        return "unknown"
    try:
        address = ipaddress.ip_address(str(peer[0]).partition("%")[0])
    except ValueError:
        return str(peer[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def source_of(address: str) -> str:
    """Who holds a connection, for fairness: an IPv4 address, or the /64 of an IPv6 one (one
    subscriber usually has a whole /64, RFC 6177)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def victim(sources: Sequence[str]) -> int:
    """Which connection to close for a new one, given each open connection's source, oldest
    first: the oldest of the source holding the most."""
    counts = Counter(sources)
    most = max(counts.values())
    return next(index for index, source in enumerate(sources) if counts[source] == most)


Receive = Callable[[int], Awaitable[bytes]]


async def read_head(receive: Receive, limit: int) -> tuple[bytes, bytes] | None:
    """The request head without its final empty line, and what came after it (the start of a
    body); None when the client closed first.

    Raises BadRequest (431) when the head is longer than `limit` bytes.
    """
    buffer = bytearray()
    while True:
        chunk = await receive(limit + 4 - len(buffer))
        if not chunk:
            return None
        searched = max(0, len(buffer) - 3)  # the end may straddle two reads
        buffer += chunk
        end = _HEAD_END.search(buffer, searched)
        if end is not None and end.start() <= limit:
            return bytes(buffer[:end.start()]), bytes(buffer[end.end():])
        if len(buffer) >= limit + 4:
            raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                             f"request head over {limit} bytes")  # RFC 6585 §5


async def read_body(receive: Receive, start: bytes, length: int) -> bytes:
    """`length` bytes of body, `start` being those read with the head.

    Raises ConnectionAbortedError when the client closes before sending them all.
    """
    body = bytearray(start[:length])
    while len(body) < length:
        chunk = await receive(length - len(body))
        if not chunk:
            raise ConnectionAbortedError("closed before the whole request body")
        body += chunk
    return bytes(body)


class _Plain:
    """A connection's bytes as they come, on the event loop's socket calls: no transport, no
    buffer but the one being read into, and nothing left behind once the socket is closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def open(self) -> None:
        pass

    async def receive(self, size: int) -> bytes:
        return await asyncio.get_running_loop().sock_recv(self.sock, size)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def finish(self) -> None:
        pass


class _Tls(_Plain):
    """TLS through memory buffers (ssl.MemoryBIO): they hold at most one record from the
    client and our few bytes to send, and go with the connection's last reference. OpenSSL's
    session (about 60 KB) is made when the client's first bytes arrive: a client that never
    sends any costs its socket only."""

    _tls: ssl.SSLObject  # from open() on

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        super().__init__(sock)
        self._context = context
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()

    async def open(self) -> None:
        first = await super().receive(16384)
        if not first:
            raise ConnectionAbortedError("closed before the TLS handshake")
        self._incoming.write(first)
        self._tls = self._context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        await self._complete(self._tls.do_handshake)

    async def receive(self, size: int) -> bytes:
        try:
            return await self._complete(lambda: self._tls.read(size))
        except ssl.SSLZeroReturnError:  # the client's close_notify
            return b""

    async def send(self, data: bytes) -> None:
        self._tls.write(data)
        await self._flush()

    async def finish(self) -> None:
        with contextlib.suppress(ssl.SSLError):  # it waits for the client's: we won't
            self._tls.unwrap()  # our close_notify (RFC 8446 §6.1)
        await self._flush()

    async def _complete(self, step: Callable[[], _T]) -> _T:
        while True:
            try:
                result = step()
            except ssl.SSLWantReadError:
                await self._flush()
                data = await super().receive(16384)  # one TLS record at most
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    await self._flush()  # the alert, so the client learns why
                raise
            await self._flush()
            return result

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            await super().send(data)


@dataclass(eq=False)
class _Connection:
    """An accepted socket, counted from the moment it is accepted until it is closed."""

    sock: socket.socket
    address: str
    source: str
    task: asyncio.Task[None] | None = None
    started: bool = False  # its task runs: the task closes the socket
    answering: bool = False  # its request is complete: no longer idle

    def close(self) -> None:
        """Close it now, whatever it is doing (from the loop's thread)."""
        if not self.started:
            self.sock.close()  # its task never ran and never will
        if self.task is not None:
            # The task closes the socket when the cancellation reaches it, after the loop has
            # stopped watching the socket (closing first could let a new connection's socket
            # get the same number while the old watch is still undone).
            self.task.cancel()


@dataclass
class _Drops:
    """Connections closed without an answer, reported as one line a minute at most: a flood
    must not flood the log too."""

    label: str
    crowded: int = 0
    failed: int = 0
    reported: float = field(default=-DROP_REPORT_INTERVAL)

    def count(self, crowded: bool, limit: int) -> None:
        if crowded:
            self.crowded += 1
        else:
            self.failed += 1
        now = time.monotonic()
        if now - self.reported >= DROP_REPORT_INTERVAL:
            log.info("%s: closed %d connections without an answer: %d as the oldest when %d "
                     "were open, %d sent no complete request in time (or broke off)",
                     self.label, self.crowded + self.failed, self.crowded, limit, self.failed)
            self.crowded = self.failed = 0
            self.reported = now


class Server:
    """One listening socket served by its own event loop in one background thread.

    `label` starts every log line ("http", "https"); `tls` makes it an HTTPS server;
    `headers` go into every response; `methods` are those it answers (others get 405).
    """

    def __init__(self, sock: socket.socket, answer: Answer, label: str, limits: Limits,
                 tls: ssl.SSLContext | None = None,
                 headers: Sequence[tuple[str, str]] = (),
                 methods: Sequence[str] = ALLOWED_METHODS) -> None:
        self._sock = sock
        self._answer = answer
        self.label = label
        self.limits = limits
        self._tls = tls
        self._headers = tuple(headers)
        self._methods = tuple(methods)
        self.port: int = sock.getsockname()[1]
        self._open: dict[int, _Connection] = {}  # in order of arrival
        self._last_active = time.monotonic()  # the last accept or close
        self._drops = _Drops(label)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def open_connections(self) -> int:
        """How many accepted sockets are open now (at most `limits.max_connections`)."""
        return len(self._open)

    def idle_seconds(self) -> float:
        """How long no connection has been open (0 while one is): the HTTP child ends after a
        while without clients, and the supervisor starts a new one on the next."""
        if self._open:
            return 0.0
        return time.monotonic() - self._last_active

    def start(self) -> None:
        """Start serving; raises what the event loop raised while starting."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,),
                                        name=f"{self.label}-{self.port}", daemon=True)
        self._thread.start()
        started.result()

    def shutdown(self) -> None:
        """Stop listening, close every connection and end the thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join()

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(started))
        except BaseException as error:
            if started.done():
                log.error("%s: the server stopped: %s", self.label, error, exc_info=True)
            else:
                started.set_exception(error)
        finally:
            loop.close()
            self._sock.close()

    async def _serve(self, started: concurrent.futures.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._sock.setblocking(False)
        accepting = self._loop.create_task(self._accept())
        started.set_result(None)
        await self._stopping.wait()
        accepting.cancel()
        connections = list(self._open.values())
        for connection in connections:
            self._drop(connection)
        tasks = [c.task for c in connections if c.task is not None]
        await asyncio.gather(accepting, *tasks, return_exceptions=True)

    async def _accept(self) -> None:
        """Accept connections one by one, each counted (and room made) as it is accepted."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(self._sock)
            except (ConnectionAbortedError, InterruptedError):
                continue  # gone before we took it
            except OSError as error:  # out of file descriptors or memory: let some close
                log.warning("%s: can't accept connections: %s; trying again in %s s",
                            self.label, error, ACCEPT_RETRY)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            sock.setblocking(False)
            self._admit(sock, client_address(peer))
            await asyncio.sleep(0)  # the open connections go on between two accepts

    def _admit(self, sock: socket.socket, address: str) -> None:
        while len(self._open) >= self.limits.max_connections:
            connections = list(self._open.values())
            idle = [c for c in connections if not c.answering] or connections
            self._drop(idle[victim([c.source for c in idle])])
            self._drops.count(crowded=True, limit=self.limits.max_connections)
        self._last_active = time.monotonic()
        connection = _Connection(sock, address, source_of(address))
        self._open[id(connection)] = connection
        connection.task = asyncio.get_running_loop().create_task(
            self._serve_connection(connection))

    def _drop(self, connection: _Connection) -> None:
        self._open.pop(id(connection), None)
        connection.close()

    async def _serve_connection(self, connection: _Connection) -> None:
        connection.started = True
        channel = _Plain(connection.sock) if self._tls is None else _Tls(connection.sock,
                                                                             self._tls)
        try:
            if not await self._exchange(channel, connection):
                self._drops.count(crowded=False, limit=self.limits.max_connections)
        except Exception:  # a bug here must not end the loop; the next client is served
            log.warning("%s: %s: unexpected error", self.label, connection.address,
                        exc_info=True)
        finally:
            self._open.pop(id(connection), None)
            self._last_active = time.monotonic()
            connection.sock.close()
            connection.task = None  # no cycle through a cancellation's traceback

    async def _exchange(self, channel: _Plain, connection: _Connection) -> bool:
        """Read one request and answer it; False when the client gave us nothing to answer."""
        head = b""
        try:
            # One deadline for the handshake, the head and the body together.
            async with asyncio.timeout(self.limits.head_deadline):
                await channel.open()
                received = await read_head(channel.receive, self.limits.max_head)
                if received is None:
                    return False
                head, start = received
                request = await self._read_request(channel, head, start, connection.address)
        except OSError:  # timeout (TimeoutError is one), reset, a failed TLS handshake
            return False
        except BadRequest as error:  # answered without reading on (too long: without the head)
            response, with_body = _refusal(error), True
        else:
            response, with_body = self._answer(request), request.method != "HEAD"
        connection.answering = True
        line = printable(_LINE_END.split(head.decode("latin-1"), 1)[0]) or "-"
        log.info("%s: %s \"%s\" %d", self.label, connection.address, line,
                 response.status.value)
        try:
            async with asyncio.timeout(self.limits.answer_deadline):
                await channel.send(render(response, with_body, self._headers, self._methods))
                await channel.finish()
                await _linger(channel.sock)
        except OSError:  # the client went away or read too slowly
            pass
        return True

    async def _read_request(self, channel: _Plain, head: bytes, start: bytes,
                            client: str) -> Request:
        """The request of a complete head, with its body. Raises BadRequest, OSError."""
        request = replace(parse_head(head, self._methods, self.limits.max_body),
                          client=client)
        if request.content_length == 0:
            return request
        if request.expects_continue and len(start) < request.content_length:
            await channel.send(CONTINUE)
        body = await read_body(channel.receive, start, request.content_length)
        return replace(request, body=body)


async def _linger(sock: socket.socket) -> None:
    """Before closing: closing a TCP socket with unread bytes sends a reset, which can destroy
    the answer before the client read it (RFC 9112 §9.6). So shut our side, then read what the
    client still sends until it closes (bounded in bytes here, in time by the caller)."""
    sock.shutdown(socket.SHUT_WR)
    loop = asyncio.get_running_loop()
    received = 0
    while received < LINGER_BYTES and (chunk := await loop.sock_recv(sock, 4096)):
        received += len(chunk)


def _refusal(error: BadRequest) -> Response:
    return Response(error.status, f"{error}\n".encode("ascii"))


def serve(answer: Answer, host: str, port: int, label: str, limits: Limits,
          tls: ssl.SSLContext | None = None, headers: Sequence[tuple[str, str]] = (),
          methods: Sequence[str] = ALLOWED_METHODS,
          sock: socket.socket | None = None) -> Server:
    """Listen on host:port (port 0: any free port, see `.port`) and answer in the background.

    With `sock`, serve that listening socket instead (one the supervisor bound and handed
    over); host and port are then ignored. Raises OSError when the port can't be had.
    """
    if sock is None:
        sock = listening_socket(host, port)
    server = Server(sock, answer, label, limits, tls, headers, methods)
    try:
        server.start()
    except BaseException:
        sock.close()
        raise
    return server


# Seconds between two looks at whether a child's servers have been idle long enough.
IDLE_CHECK_EVERY = 1.0


def stop_on_sigterm() -> threading.Event:
    """An event SIGTERM sets (the supervisor's stop), for `serve_until_idle`; call it from the
    main thread, before the servers start."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def serve_until_idle(servers: Sequence[Server], idle: float, stop: threading.Event) -> None:
    """Serve until no server had a connection for `idle` seconds, or a stop is asked; then shut
    them down (the on-demand children's end)."""
    try:
        while not stop.wait(IDLE_CHECK_EVERY):
            if all(server.idle_seconds() >= idle for server in servers):
                return
    finally:
        for server in servers:
            server.shutdown()
