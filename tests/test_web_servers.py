"""The port-80 and port-443 servers, real on loopback: answers, refusals, and staying open for
the CA and for senders while thousands of clients hold connections and say nothing."""

from __future__ import annotations

import asyncio
import gc
import http.client
import logging
import resource
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from mailboot.base.paths import Paths
from mailboot.tls import certificates
from mailboot.web import port80 as http_server
from mailboot.web import port443 as policy_server
from mailboot.web.challenges import ChallengeStore
from mailboot.web.clientconfig import MailService
from mailboot.web.server import (
    BadRequest,
    Limits,
    Request,
    Server,
    client_address,
    parse_head,
    parse_host,
    source_of,
    victim,
)
from tests.conftest import NOW

LOOPBACK = "127.0.0.1"
NAMES = ["mail.example.com", "mta-sts.example.com", "mta-sts.example.org"]
TOKEN = "tOk3n_-"
KEY_AUTHORIZATION = "tOk3n_-.thumbprint"
CHALLENGE = f"/.well-known/acme-challenge/{TOKEN}"
POLICY_PATH = "/.well-known/mta-sts.txt"
POLICIES = {"mta-sts.example.com": b"version: STSv1\r\nmode: enforce\r\n",
            "mta-sts.example.org": b"version: STSv1\r\nmode: testing\r\n"}
FLOOD = 2000
TIMEOUT = 30.0  # seconds a test client waits at most: a safety net, never an assertion


# --- pure parts -------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "host"), [
    ("mail.example.com", "mail.example.com"),
    ("MAIL.Example.COM", "mail.example.com"),
    ("mail.example.com.", "mail.example.com"),
    ("mail.example.com:80", "mail.example.com"),
    ("Mail.Example.com.:8080", "mail.example.com"),
    ("mail.example.com:", "mail.example.com"),  # RFC 3986: the port may be empty
    ("_acme.example.com", "_acme.example.com"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("192.0.2.1", "192.0.2.1"),
    ("192.0.2.1:443", "192.0.2.1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("[2001:db8::1]:80", "2001:db8::1"),
    ("[2001:DB8:0:0::1]:8080", "2001:db8::1"),
    ("", None),
])
def test_host_is_parsed(value: str, host: str | None) -> None:
    assert parse_host(value) == host


@pytest.mark.parametrize("value", [
    "evil.com/x", "evil.com?x", "evil.com#x", "user@evil.com", "a b", "evil.com\\x",
    "2001:db8::1", "[2001:db8::1", "[2001:db8::1]x", "[2001:db8::1]:x", "[v1.fe]",
    "[fe80::1%25eth0]", "[not-v6]", "mail.example.com:http", "mail.example.com:99999",
    "mail.example.com:123456", ":80", ".", "mail.example.com..", "a..b", "-a.example",
    "a-.example", "b\u00fccher.example", "ex%41mple.com", "a" * 64 + ".example",
    ".".join(["a" * 63] * 4 + ["b"]),
])
def test_a_host_that_cant_be_one_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_host(value)


def test_a_head_names_method_target_and_host() -> None:
    request = parse_head(b"HEAD /x?y HTTP/1.1\r\nUser-Agent: t\r\nhost: Mail.Example.com:80")
    assert (request.method, request.target, request.host) == ("HEAD", "/x?y", "mail.example.com")
    assert parse_head(b"GET / HTTP/1.0").host is None  # HTTP/1.0 may leave Host out
    assert parse_head(b"GET / HTTP/1.1\nHost: a.example").host == "a.example"  # bare LF


@pytest.mark.parametrize(("head", "status"), [
    (b"GET / HTTP/1.1", 400),  # HTTP/1.1 without Host (RFC 9112 3.2)
    (b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example", 400),
    (b"GET / HTTP/1.1\r\nHost: evil.com/x", 400),
    (b"GET / HTTP/1.1\r\nHost : a.example", 400),  # space before the colon (RFC 9112 5.1)
    (b"GET / HTTP/1.1\r\nHost: a.example\r\n folded", 400),  # obs-fold (RFC 9112 5.2)
    (b"GET /\r\nHost: a.example", 400),
    (b"GET  / HTTP/1.1\r\nHost: a.example", 400),
    (b"GET /\x7f HTTP/1.1\r\nHost: a.example", 400),
    (b"GET / HTTP/2.0\r\nHost: a.example", 400),
    (b"\x16\x03\x01\x02\x00\x01", 400),  # a ClientHello on port 80
    (b"POST / HTTP/1.1\r\nHost: a.example", 405),
    (b"get / HTTP/1.1\r\nHost: a.example", 405),  # methods are case-sensitive
])
def test_a_bad_head_is_refused(head: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_head(head)
    assert refused.value.status == status


POSTING = ("GET", "HEAD", "POST")


def test_a_post_head_says_how_long_its_body_is() -> None:
    request = parse_head(b"POST /a HTTP/1.1\r\nHost: a.example\r\nContent-Length: 12\r\n"
                         b"Expect: 100-Continue", POSTING, max_body=12)
    assert (request.content_length, request.expects_continue) == (12, True)
    repeated = b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3, 3\r\nContent-Length: 3"
    assert parse_head(repeated, POSTING, 10).content_length == 3  # RFC 9110 8.6
    assert parse_head(b"POST / HTTP/1.1\r\nHost: a.example", POSTING, 10).content_length == 0
    old = parse_head(b"POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue", POSTING, 1)
    assert not old.expects_continue  # RFC 9110 10.1.1: ignored from HTTP/1.0
    # A GET's body is never read: the connection closes after the answer.
    get_with_body = b"GET / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 99999"
    assert parse_head(get_with_body, POSTING, 10).content_length == 0


@pytest.mark.parametrize(("fields", "status"), [
    (b"Content-Length: 11", 413),
    (b"Content-Length: 99999999999999999999", 413),
    (b"Transfer-Encoding: chunked", 411),
    (b"Content-Length: 3\r\nTransfer-Encoding: chunked", 411),
    (b"Content-Length: 3\r\nContent-Length: 4", 400),
    (b"Content-Length: -1", 400),
    (b"Content-Length: 0x1", 400),
    (b"Content-Length: \xd9\xa3", 400),  # an Arabic-Indic digit: isdigit(), but not DIGIT
])
def test_a_post_body_we_wont_read_is_refused(fields: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_head(b"POST / HTTP/1.1\r\nHost: a.example\r\n" + fields, POSTING, max_body=10)
    assert refused.value.status == status


def test_query_parameters_are_percent_decoded_and_a_plus_stays() -> None:
    request = Request("GET", "/x?a=1&emailaddress=a+b%40example.com&emailaddress=2", "h")
    assert request.path == "/x"
    assert request.query("emailaddress") == "a+b@example.com"
    assert request.query("a") == "1"
    assert request.query("b") is None
    assert Request("GET", "/x", "h").query("a") is None


def test_the_connection_to_close_is_the_oldest_of_the_source_holding_the_most() -> None:
    assert victim(["a"]) == 0
    assert victim(["a", "b", "c"]) == 0
    assert victim(["ca", "x", "x", "y", "x"]) == 1
    assert victim(["ca", "y", "x", "y", "x"]) == 1  # a tie: the oldest of them


def test_sources_are_ipv4_addresses_and_ipv6_64s() -> None:
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("2001:db8:1:2:a::1") == source_of("2001:db8:1:2:b::2") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert client_address(("::ffff:192.0.2.7", 1234, 0, 0)) == "192.0.2.7"
    assert client_address(("fe80::1%eth0", 1234, 0, 2)) == "fe80::1"
    assert client_address(None) == "unknown"


# --- helpers ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    certificate: bytes = b""  # the server's certificate (DER), over TLS


def parse_reply(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return Reply(int(lines[0].split(" ")[1]), fields, body)


def read_to_end(connection: socket.socket | ssl.SSLSocket) -> bytes:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    return data


def exchange(port: int, data: bytes) -> Reply:
    """Send raw bytes to port 80's server, read everything until it closes."""
    with socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as connection:
        connection.sendall(data)
        return parse_reply(read_to_end(connection))


def get(port: int, target: str, host: str, method: str = "GET") -> Reply:
    return exchange(port, f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


def fetch(port: int, sni: str | None, host: str, target: str = POLICY_PATH,
          method: str = "GET") -> Reply:
    """A request over TLS with SNI `sni`; the certificate isn't verified, only recorded."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as connection:
        connection.sendall(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        reply = parse_reply(read_to_end(connection))
        served = connection.getpeercert(binary_form=True) or b""
    return Reply(reply.status, reply.headers, reply.body, served)


def until_closed(connection: socket.socket) -> bytes | None:
    """What the server sends until it closes `connection`; None if it is still open after
    TIMEOUT."""
    data = b""
    try:
        while chunk := connection.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return data


def live(kind: type) -> int:
    """How many objects of `kind` exist, garbage not yet collected included."""
    return sum(1 for thing in gc.get_objects() if isinstance(thing, kind))


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


@pytest.fixture
def store(tmp_path: Path) -> ChallengeStore:
    challenges = ChallengeStore(tmp_path / "challenges")
    challenges.put(TOKEN, KEY_AUTHORIZATION)
    return challenges


@pytest.fixture
def port80(store: ChallengeStore) -> Iterator[Server]:
    server = http_server.start(0, store, NAMES[:2], host=LOOPBACK)
    yield server
    server.shutdown()


@pytest.fixture
def slots(data_dir: Path) -> tuple[Paths, bytes, bytes]:
    """Two live certificate slots: MAIL_HOSTNAME and mta-sts.example.com in `live`,
    mta-sts.example.org in `live-2`; returns their certificates (DER)."""
    paths = Paths(data_dir)
    first = certificates.write_self_signed(paths.tls_dir, NAMES[:2], NOW)
    certificates.switch_live(paths, first)
    second = certificates.write_self_signed(paths.tls_dir, NAMES[2:], NOW + timedelta(seconds=1))
    certificates.switch_live(paths, second, slot=1)
    return paths, der(first), der(second)


def der(directory: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert((directory / certificates.CHAIN_FILE).read_text())


@pytest.fixture
def port443(slots: tuple[Paths, bytes, bytes]) -> Iterator[Server]:
    server = policy_server.start(0, slots[0], POLICIES, host=LOOPBACK)
    yield server
    server.shutdown()


@pytest.fixture
def many_files() -> Iterator[None]:
    """Room for a flood's client sockets plus the server's in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = FLOOD + 1000
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- port 80 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["mail.example.com", "other.example", "[2001:db8::1]:80"])
def test_a_challenge_is_answered_whatever_the_host(port80: Server, host: str) -> None:
    reply = get(port80.port, CHALLENGE, host)
    assert (reply.status, reply.body) == (200, KEY_AUTHORIZATION.encode())
    assert reply.headers["Content-Type"] == "text/plain"
    assert reply.headers["Connection"] == "close"
    assert get(port80.port, CHALLENGE + "x", host).status == 404


def test_a_challenge_is_answered_over_http_1_0_without_host(port80: Server) -> None:
    reply = exchange(port80.port, f"GET {CHALLENGE} HTTP/1.0\r\n\r\n".encode())
    assert (reply.status, reply.body) == (200, KEY_AUTHORIZATION.encode())


@pytest.mark.parametrize(("host", "target", "location"), [
    ("mail.example.com", "/webmail?x=1", "https://mail.example.com/webmail?x=1"),
    ("MAIL.example.com.:80", "/", "https://mail.example.com/"),
    ("mta-sts.example.com", "/.well-known/mta-sts.txt",
     "https://mta-sts.example.com/.well-known/mta-sts.txt"),
    ("mail.example.com", "http://evil.com/x", "https://mail.example.com/"),  # not origin-form
    ("mail.example.com", "*", "https://mail.example.com/"),
])
def test_our_own_names_are_redirected_to_https(
        port80: Server, host: str, target: str, location: str) -> None:
    reply = get(port80.port, target, host)
    assert reply.status == 301
    assert reply.headers["Location"] == location


@pytest.mark.parametrize(("host", "target", "status"), [
    ("evil.com", "/x", 404),
    ("mail.example.com.evil.com", "/", 404),
    ("mta-sts.example.org", "/", 404),  # a name, but not one given to this server
    ("[2001:db8::1]:80", "/", 404),
    ("evil.com/x", "/", 400),
    ("mail.example.com/x", "/", 400),
    ("mail.example.com@evil.com", "/", 400),
])
def test_other_hosts_get_no_redirect(port80: Server, host: str, target: str,
                                     status: int) -> None:
    reply = get(port80.port, target, host)
    assert reply.status == status
    assert "Location" not in reply.headers


def test_head_gets_the_headers_of_get_without_the_body(port80: Server) -> None:
    reply = get(port80.port, CHALLENGE, "mail.example.com", method="HEAD")
    assert reply.status == 200
    assert reply.headers["Content-Length"] == str(len(KEY_AUTHORIZATION))
    assert reply.body == b""


def test_other_methods_get_405_with_allow(port80: Server) -> None:
    connection = http.client.HTTPConnection(LOOPBACK, port80.port, timeout=TIMEOUT)
    connection.request("POST", CHALLENGE, body=b"x" * 20000,
                       headers={"Host": "mail.example.com"})
    response = connection.getresponse()
    assert response.status == 405
    assert response.getheader("Allow") == "GET, HEAD"
    response.read()
    connection.close()


def test_an_oversized_head_gets_431(port80: Server) -> None:
    head = f"GET / HTTP/1.1\r\nHost: mail.example.com\r\nX-Big: {'a' * 9000}\r\n\r\n"
    assert exchange(port80.port, head.encode()).status == 431
    just_fits = f"GET {CHALLENGE} HTTP/1.1\r\nHost: a.example\r\nX: "
    just_fits += "a" * (port80.limits.max_head - len(just_fits))
    assert exchange(port80.port, just_fits.encode() + b"\r\n\r\n").status == 200


def test_every_request_is_logged_on_one_line(port80: Server,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    get(port80.port, "/a\x1b", "mail.example.com")
    get(port80.port, CHALLENGE, "mail.example.com")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("http: ")]
    assert lines == ['http: 127.0.0.1 "GET /a\\x1b HTTP/1.1" 400',
                     f'http: 127.0.0.1 "GET {CHALLENGE} HTTP/1.1" 200']


def test_a_head_that_never_ends_is_dropped_however_steadily_it_comes(
        store: ChallengeStore) -> None:
    """A deadline for the whole head, not per read: one byte at a time never resets it."""
    server = http_server.start(0, store, NAMES, host=LOOPBACK,
                               limits=Limits(head_deadline=0.2))
    dribble = b"GET / HTTP/1.1\r\nHost: mail.example.com\r\nX: " + b"a" * 4000
    try:
        with socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT) as connection:
            sent = 0
            while sent < len(dribble) and not select.select([connection], [], [], 0.02)[0]:
                connection.send(dribble[sent:sent + 1])
                sent += 1
            assert sent < len(dribble), "the server kept a never-ending head open"
            assert until_closed(connection) == b""  # dropped, with nothing said
        with socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT) as silent:
            assert until_closed(silent) == b""
        assert get(server.port, CHALLENGE, "a.example").status == 200
    finally:
        server.shutdown()


def test_a_flood_of_idle_connections_leaves_the_challenge_answered(
        port80: Server, many_files: None) -> None:
    gc.collect()  # other tests' garbage out of the counts
    threads, fds, tasks = threading.active_count(), open_fds(), live(asyncio.Task)
    flood = [socket.create_connection((LOOPBACK, port80.port), timeout=TIMEOUT)
             for _ in range(FLOOD)]
    try:
        reply = get(port80.port, CHALLENGE, "mail.example.com")
        assert (reply.status, reply.body) == (200, KEY_AUTHORIZATION.encode())
        cap = port80.limits.max_connections
        assert port80.open_connections <= cap
        assert open_fds() - fds - len(flood) <= cap  # the server's side of them
        assert threading.active_count() <= threads  # other tests' threads may end meanwhile
        assert live(asyncio.Task) - tasks <= cap  # the connections' (garbage included)
        assert until_closed(flood[0]) is not None  # the oldest made room
    finally:
        for connection in flood:
            connection.close()


def test_a_flood_from_one_source_does_not_close_anothers_connection(
        store: ChallengeStore) -> None:
    server = http_server.start(0, store, NAMES, host=LOOPBACK, limits=Limits(max_connections=4))
    try:
        with socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT,
                                      source_address=("127.0.0.2", 0)) as ca:
            flood = [socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT)
                     for _ in range(20)]
            try:
                assert until_closed(flood[-5]) == b""  # room is made among the flood's
                ca.sendall(f"GET {CHALLENGE} HTTP/1.1\r\nHost: a.example\r\n\r\n".encode())
                assert parse_reply(read_to_end(ca)).status == 200
                assert server.open_connections <= 4
            finally:
                for connection in flood:
                    connection.close()
    finally:
        server.shutdown()


def test_room_is_made_among_idle_connections_before_answered_ones(
        store: ChallengeStore) -> None:
    """An answered connection lingers until the client closes (so the answer isn't lost to a
    reset): it is closed for room only when no idle one is left."""
    server = http_server.start(0, store, NAMES, host=LOOPBACK,
                               limits=Limits(max_connections=3, head_deadline=600))
    try:
        with socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT) as answered:
            answered.sendall(f"GET {CHALLENGE} HTTP/1.1\r\nHost: a.example\r\n\r\n".encode())
            assert parse_reply(read_to_end(answered)).status == 200  # the server lingers now
            idle = [socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT)
                    for _ in range(3)]
            try:
                assert until_closed(idle[0]) == b""
                assert server.open_connections == 3
            finally:
                for connection in idle:
                    connection.close()
    finally:
        server.shutdown()


# --- port 443 ---------------------------------------------------------------------------------

def test_the_policy_is_served_with_the_certificate_for_its_name(
        port443: Server, slots: tuple[Paths, bytes, bytes]) -> None:
    _, first, second = slots
    for host, certificate in (("mta-sts.example.com", first), ("mta-sts.example.org", second)):
        reply = fetch(port443.port, host, host)
        assert (reply.status, reply.body) == (200, POLICIES[host])
        assert reply.headers["Content-Type"] == "text/plain"
        assert reply.headers["Cache-Control"] == "no-store"
        assert reply.certificate == certificate
    assert fetch(port443.port, "MTA-STS.example.org", "MTA-STS.Example.org.:443").status == 200
    assert fetch(port443.port, None, "mta-sts.example.com").certificate == first


@pytest.mark.parametrize(("host", "target", "status"), [
    ("mta-sts.example.net", POLICY_PATH, 404),
    ("mail.example.com", POLICY_PATH, 404),
    ("mta-sts.example.com", "/", 404),
    ("mta-sts.example.com", POLICY_PATH + "/x", 404),
    ("mta-sts.example.com", POLICY_PATH + "?x", 404),
    ("mta-sts.example.com/x", POLICY_PATH, 400),
])
def test_other_hosts_and_paths_are_not_found(port443: Server, host: str, target: str,
                                             status: int) -> None:
    reply = fetch(port443.port, "mta-sts.example.com", host, target)
    assert reply.status == status
    assert reply.headers["Cache-Control"] == "no-store"


def test_policy_head_and_post(port443: Server) -> None:
    head = fetch(port443.port, "mta-sts.example.com", "mta-sts.example.com", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(len(POLICIES["mta-sts.example.com"]))
    post = fetch(port443.port, "mta-sts.example.com", "mta-sts.example.com", method="POST")
    assert post.status == 405


OUTLOOK_REQUEST = (b"<Autodiscover><Request><EMailAddress>alice@example.com</EMailAddress>"
                   b"</Request></Autodiscover>")


@pytest.fixture
def clients443(slots: tuple[Paths, bytes, bytes]) -> Iterator[Server]:
    service = MailService("mail.example.com", ("example.com", "example.org"))
    server = policy_server.start(0, slots[0], POLICIES, host=LOOPBACK, service=service)
    yield server
    server.shutdown()


def tls_connection(port: int, sni: str) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(socket.create_connection((LOOPBACK, port), timeout=TIMEOUT),
                               server_hostname=sni)


def test_outlooks_post_is_read_in_pieces_after_100_continue(clients443: Server) -> None:
    host = "autodiscover.example.com"
    with tls_connection(clients443.port, host) as connection:
        connection.sendall(f"POST /Autodiscover/Autodiscover.xml HTTP/1.1\r\nHost: {host}\r\n"
                           f"Content-Length: {len(OUTLOOK_REQUEST)}\r\n"
                           "Expect: 100-continue\r\n\r\n".encode() + OUTLOOK_REQUEST[:10])
        assert connection.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(OUTLOOK_REQUEST[10:50])
        connection.sendall(OUTLOOK_REQUEST[50:])
        reply = parse_reply(read_to_end(connection))
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/xml; charset=utf-8"
    assert b"<LoginName>alice@example.com</LoginName>" in reply.body


def test_a_body_too_big_is_refused_unread_and_one_never_finished_is_dropped(
        slots: tuple[Paths, bytes, bytes]) -> None:
    service = MailService("mail.example.com", ("example.com",))
    server = policy_server.start(0, slots[0], POLICIES, host=LOOPBACK, service=service,
                                 limits=Limits(head_deadline=0.5, max_body=100))
    host = "autodiscover.example.com"
    head = f"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: {host}\r\n"
    try:
        with tls_connection(server.port, host) as connection:
            connection.sendall(f"{head}Content-Length: 101\r\n\r\n".encode())
            assert parse_reply(read_to_end(connection)).status == 413
        with tls_connection(server.port, host) as connection:
            connection.sendall(f"{head}Content-Length: 100\r\n\r\n".encode() + b"<" * 99)
            assert read_to_end(connection) == b""  # the deadline covers the body too
    finally:
        server.shutdown()


def test_a_client_that_never_says_hello_is_dropped(slots: tuple[Paths, bytes, bytes]) -> None:
    server = policy_server.start(0, slots[0], POLICIES, host=LOOPBACK,
                                 limits=Limits(head_deadline=0.2))
    try:
        with socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT) as silent:
            assert until_closed(silent) == b""
        assert fetch(server.port, "mta-sts.example.com", "mta-sts.example.com").status == 200
    finally:
        server.shutdown()


def client_hello(sni: str) -> bytes:
    """The first bytes a TLS client sends."""
    context = ssl.create_default_context()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("first_bytes", [b"", client_hello("mta-sts.example.com")],
                         ids=["silent", "hello-then-silent"])
def test_a_flood_of_idle_connections_leaves_the_policy_served(
        port443: Server, many_files: None, first_bytes: bytes) -> None:
    gc.collect()  # other tests' garbage out of the counts
    threads, fds, tasks = threading.active_count(), open_fds(), live(asyncio.Task)
    sessions = live(ssl.SSLObject)
    flood = []
    for _ in range(FLOOD):
        flood.append(socket.create_connection((LOOPBACK, port443.port), timeout=TIMEOUT))
        flood[-1].sendall(first_bytes)
    try:
        reply = fetch(port443.port, "mta-sts.example.org", "mta-sts.example.org")
        assert (reply.status, reply.body) == (200, POLICIES["mta-sts.example.org"])
        cap = port443.limits.max_connections
        assert port443.open_connections <= cap
        assert open_fds() - fds - len(flood) <= cap
        assert threading.active_count() <= threads  # other tests' threads may end meanwhile
        assert live(ssl.SSLObject) - sessions <= cap  # closed ones left no TLS state behind
        assert live(asyncio.Task) - tasks <= cap  # the connections' (garbage included)
        assert until_closed(flood[0]) is not None
    finally:
        for connection in flood:
            connection.close()


def test_shutdown_closes_everything(store: ChallengeStore) -> None:
    gc.collect()  # other tests' garbage sockets closed now, not during the test
    threads, fds = threading.active_count(), open_fds()
    server = http_server.start(0, store, NAMES, host=LOOPBACK)
    idle = [socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT)
            for _ in range(5)]
    get(server.port, CHALLENGE, "a.example")  # all five are accepted by now
    server.shutdown()
    assert all(until_closed(connection) == b"" for connection in idle)
    for connection in idle:
        connection.close()
    assert threading.active_count() <= threads  # <=: other tests' threads may end meanwhile
    assert open_fds() <= fds
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT)


def test_challenges_are_files_one_process_writes_and_another_reads(tmp_path: Path) -> None:
    """The worker's run puts the answer; the port-80 child, another process, reads it."""
    writer, reader = ChallengeStore(tmp_path / "c"), ChallengeStore(tmp_path / "c")
    writer.put(TOKEN, KEY_AUTHORIZATION)
    assert reader.get(TOKEN) == KEY_AUTHORIZATION
    writer.remove(TOKEN)
    assert reader.get(TOKEN) is None
    # A request's path never leaves the directory: only base64url tokens name files.
    (tmp_path / "secret").write_text("not for you")
    assert reader.get("../secret") is None and reader.get("") is None
    with pytest.raises(ValueError, match="not an ACME token"):
        writer.put("../secret", "x")
