"""Dovecot's authentication policy protocol (Dovecot 2.4, `auth_policy_server_url`) on one
stream: HTTP/1.1 POSTs of a JSON object, over a connection Dovecot keeps open between them.

Before each login Dovecot posts `?command=allow` with the login's attributes (its default
`auth_policy_request_attributes`: login, pwhash, remote, device_id, protocol, session_id,
fail_type, local_port, plus tls) and waits for `{"status": N, "msg": "..."}`: 0 lets the login
go on, a negative N refuses it with `msg` as the reason the client is told, a positive one delays
it N seconds. After the password check it posts `?command=report` with `success` and
`policy_reject` added, and doesn't read the answer. Verified against Dovecot 2.4.1 in the image:
IMAP answers `NO [ALERT] <msg>`, ManageSieve `NO "<msg>"`, Postfix's SMTP AUTH (which asks
Dovecot) `535 5.7.8 Error: authentication failed: <msg>`.

A request we can't understand ends the connection; Dovecot then lets the login go on
(`auth_policy_reject_on_fail = no`), as it does when no answer comes within its timeout: a
broken policy never locks the users out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

# The command ("allow" or "report") and the request's attributes -> (status, message).
Judge = Callable[[str, Mapping[str, Any]], tuple[int, str]]
MAX_HEADERS = 16 * 1024  # bytes; Dovecot's are about 200
MAX_BODY = 64 * 1024  # bytes; Dovecot's are about 250


class BadRequest(Exception):
    """Not a request of this protocol; the connection ends."""


def read_request(stream: BinaryIO) -> tuple[str, dict[str, Any], bool] | None:
    """One request: its command, its JSON object, and whether the client asked to close after
    it; None at the end of the stream. Raises BadRequest for anything else."""
    line = stream.readline(MAX_HEADERS)
    if not line:
        return None
    method, _, rest = line.decode("latin-1").strip().partition(" ")
    target = rest.rpartition(" ")[0]
    if method != "POST" or not target:
        raise BadRequest(f"not a POST: {line[:80]!r}")
    headers: dict[str, str] = {}
    size = len(line)
    while True:
        header = stream.readline(MAX_HEADERS)
        size += len(header)
        if not header or size > MAX_HEADERS:
            raise BadRequest("the headers end early or are too long")
        text = header.decode("latin-1").strip()
        if not text:
            break
        name, _, value = text.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", ""))
    except ValueError:
        raise BadRequest("no Content-Length (Dovecot always sends one)") from None
    if not 0 <= length <= MAX_BODY:
        raise BadRequest(f"a body of {length} bytes")
    body = stream.read(length)
    try:
        document = json.loads(body)
    except ValueError as error:  # UnicodeDecodeError too
        raise BadRequest(f"the body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("the body is not a JSON object")
    command = parse_qs(urlsplit(target).query).get("command", [""])[0]
    return command, document, headers.get("connection", "").lower() == "close"


def answer(status: int, message: str, *, close: bool = False) -> bytes:
    body = json.dumps({"status": status, "msg": message}).encode()
    head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "")
            + "\r\n")
    return head.encode() + body


def serve(incoming: BinaryIO, outgoing: BinaryIO, judge: Judge) -> int:
    """Answer every request until the stream ends, or one can't be understood; return how many
    were answered."""
    answered = 0
    while True:
        try:
            request = read_request(incoming)
        except BadRequest as error:
            log.warning("bans: a request on the auth policy socket can't be understood (%s); "
                        "its login goes on without our answer", error)
            outgoing.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                           b"Connection: close\r\n\r\n")
            outgoing.flush()
            return answered
        if request is None:
            return answered
        command, attributes, close = request
        try:
            status, message = judge(command, attributes)
        except Exception:  # a bug here must not lock anyone out: let the login go on, and say so
            log.exception("bans: the login check failed; the login goes on")
            status, message = 0, ""
        outgoing.write(answer(status, message, close=close))
        outgoing.flush()
        answered += 1
        if close:
            return answered
