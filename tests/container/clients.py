"""Clients the container tests share: a mailbox read over IMAPS, the certificate a port serves,
the first steps of SMTP and ManageSieve before TLS, a ManageSieve client."""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import hashlib
import imaplib
import json
import re
import secrets
import socket
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import dkim
import managesieve

from tests.container.containers import Container, insecure_context
from tests.polling import eventually

HOST = "mail.example.com"


def smtp_starttls(raw: socket.socket) -> bool:
    """Read the banner, say EHLO and ask for STARTTLS on a plain SMTP connection; True when
    the server agrees (220), so the caller can start the TLS handshake on `raw`."""
    with raw.makefile("rb") as reader:
        reader.readline()
        raw.sendall(b"EHLO client.example.net\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        raw.sendall(b"STARTTLS\r\n")
        return reader.readline().startswith(b"220")


def sieve_starttls(raw: socket.socket) -> bool:
    """Read the ManageSieve greeting (capabilities, then OK) and ask for STARTTLS on a plain
    connection (RFC 5804 §2.2); True when the server agrees."""
    with raw.makefile("rb") as reader:
        while not reader.readline().startswith(b"OK"):
            pass
        raw.sendall(b"STARTTLS\r\n")
        return reader.readline().startswith(b"OK")


def served_certificate(container: Container, port: int, context: ssl.SSLContext) -> bytes:
    """The DER certificate a port presents (STARTTLS on 25 and 587), verified by `context`
    for mail.example.com."""
    with socket.create_connection(("127.0.0.1", container.ports[port]), timeout=20) as raw:
        if port in (25, 587) and not smtp_starttls(raw):
            raise OSError("STARTTLS refused")
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            return tls.getpeercert(binary_form=True) or b""


def fetch_text(container: Container, user: str, token: str, password: str,
               timeout: float = 30) -> bytes:
    """The raw message with `token` anywhere in it (a bounce quoting the original, say)."""
    return search_inbox(container, user, ("TEXT", f'"{token}"'), token, timeout, password)


def search_inbox(container: Container, user: str, criteria: tuple[str, str], token: str,
                 timeout: float, password: str) -> bytes:
    """The first message of the user's INBOX matching `criteria` (IMAP SEARCH), waiting for it."""
    def look() -> bytes | None:
        with imaplib.IMAP4_SSL("127.0.0.1", container.ports[993],
                               ssl_context=insecure_context()) as imap:
            imap.login(user, password)
            imap.select("INBOX")
            _, found = imap.search(None, *criteria)
            numbers = found[0].split()
            if not numbers:
                return None
            _, data = imap.fetch(numbers[0], "(RFC822)")
        item = data[0]
        assert isinstance(item, tuple)
        return item[1]

    return eventually(look, timeout,
                      lambda: f"message {token} for {user}:\n{container.log_tail(3000)}")


def our_verdicts(message: EmailMessage) -> dict[str, str]:
    """method -> result from the Authentication-Results headers with our authserv-id."""
    found: dict[str, str] = {}
    for header in message.get_all("Authentication-Results", []):
        text = " ".join(str(header).split())
        if re.match(r"^mail\.example\.com\s*;", text):
            for method, result in re.findall(r"\b(spf|dkim|dmarc)=(\w+)", text):
                found.setdefault(method, result)
    return found


@contextlib.contextmanager
def sieve_client(port: int, *, starttls: bool) -> Iterator[managesieve.MANAGESIEVE]:
    """The `managesieve` package's client (RFC 5804), a third-party implementation, logged out
    at the end. It speaks to 127.0.0.1, so the certificate for mail.example.com can't be
    verified by name here; test_hardening checks the certificate on every port."""
    client = managesieve.MANAGESIEVE("127.0.0.1", port, use_tls=starttls, tls_verify=False,
                                     timeout=20)
    try:
        yield client
    finally:
        client.logout()
        # Its LOGOUT closes the socket under TLS, not the TLS socket wrapping it (0.8.1).
        tls = getattr(client.sock, "sslobj", None)
        if tls is not None:
            tls.close()


def queued(mail: Container) -> list[dict[str, Any]]:
    """Postfix's queue, one entry per message (`postqueue -j`)."""
    output = mail.exec("postqueue", "-j").stdout
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def wait_deferred(mail: Container, count: int, timeout: float = 30) -> None:
    """Until `count` messages wait in Postfix's deferred queue (the queue manager put them
    there after a delivery attempt was deferred)."""
    eventually(lambda: sum(m["queue_name"] == "deferred" for m in queued(mail)) >= count, timeout,
               lambda: f"{count} deferred message(s): {queued(mail)}")


# Runs inside a sender container: one SMTP transaction to our server, every reply as JSON.
SMTP_TRANSACTION = r"""
import base64, json, smtplib, sys
job = json.load(sys.stdin)
steps = {}
try:
    with smtplib.SMTP(job["host"], 25, local_hostname=job["helo"], timeout=60) as smtp:
        smtp.ehlo()
        steps["mail"] = smtp.mail(job["sender"])
        if steps["mail"][0] == 250:
            steps["rcpt"] = smtp.rcpt(job["recipient"])
        if steps.get("rcpt", (0,))[0] == 250:
            try:
                steps["data"] = smtp.data(base64.b64decode(job["message"]))
            except smtplib.SMTPDataError as error:
                steps["data"] = (error.smtp_code, error.smtp_error)
except (OSError, smtplib.SMTPException) as error:
    steps["error"] = (0, repr(error).encode())
print(json.dumps({k: [code, text.decode(errors="replace")] for k, (code, text) in steps.items()}))
"""


def signed_as_sent(mail: EmailMessage, selector: str, key: bytes | None) -> bytes:
    """The message with CRLF line ends, as SMTP carries it, DKIM-signed for its From's domain
    with `key` (PEM) when one is given (dkimpy: the headers a sender signs)."""
    raw = mail.as_bytes().replace(b"\n", b"\r\n")
    if key is None:
        return raw
    domain = str(mail["From"]).rpartition("@")[2].strip("> ").encode()
    signature: bytes = dkim.sign(raw, selector.encode(), domain, key, include_headers=[
        b"from", b"to", b"subject", b"date", b"message-id"])
    return signature + raw


# Where Postfix hands local mail to Dovecot (virtual_transport = lmtp:unix:private/dovecot-lmtp).
LMTP_SOCKET = "/data/spool/postfix/private/dovecot-lmtp"


def hold_local_delivery(mail: Container, hold: bool = True) -> None:
    """Hold local delivery back (`hold`), as if Dovecot's LMTP were down, so that what arrives
    waits in Postfix's deferred queue; or let it go again (`postqueue -f` then sends what waits).

    Postfix's LMTP client is refused at Dovecot's socket (mode 000: "Permission denied", a
    temporary failure) from the next connection on; a hold returns once no connection Postfix
    may keep cached (2 s at most) is left to deliver past it. Postfix's own defer_transports
    would not do: it needs a new queue manager after `postfix reload`, and the old one leaves
    "at its earliest convenience", which took more than 20 s in clean-clone CI runs.
    """
    mail.exec("chmod", "000" if hold else "600", LMTP_SOCKET)

    def connections() -> int:  # /proc/net/unix: accepted sockets carry the listener's path
        table = mail.exec("cat", "/proc/net/unix").stdout.splitlines()
        return sum(line.split()[5] == "03" for line in table if line.endswith(" " + LMTP_SOCKET))

    if hold:
        eventually(lambda: connections() == 0, 30, "Postfix's cached LMTP connections to end",
                   interval=0.2)


def ssha512(password: str) -> str:
    """Dovecot's {SSHA512}: base64(SHA-512(password + salt) + salt); cheap to make 10,000 of."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def fetched_message(item: object) -> EmailMessage:
    """The message in one item of an IMAP FETCH of BODY[] or BODY[HEADER] (imaplib's
    `(envelope, bytes)` pair), parsed with the modern email policy."""
    assert isinstance(item, tuple)
    parsed = email.message_from_bytes(item[1], policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed
