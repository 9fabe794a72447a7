"""Listening sockets, made where they are needed without importing more than `socket`.

The supervisor binds ports 80 and 443 itself, at start and as root, and hands them to the short
HTTP child it starts when a client connects (socket activation): it must not import `ssl`, the
event loop or the answers to do so.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

SMTP_PORT = 25  # SMTP between servers (RFC 5321 §4.5.4.2): what senders and DANE name
BACKLOG = 511  # pending connections the kernel holds for us (as nginx); a burst waits there


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; for host "" on IPv6 and IPv4 both where the system can.

    Raises OSError when the port can't be had."""
    if host == "" and socket.has_dualstack_ipv6():
        return socket.create_server(("", port), family=socket.AF_INET6, backlog=BACKLOG,
                                    dualstack_ipv6=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def syslog_socket(path: Path) -> socket.socket:
    """The socket the daemons' syslog(3) writes to (`/dev/log`, datagrams), made afresh: a stale
    one from the last run is replaced. Every daemon user may write to it."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    path.chmod(0o666)
    return sock


def unix_listening_socket(path: Path, owner: tuple[int, int] | None,
                          mode: int) -> socket.socket:
    """A listening Unix stream socket at `path` (a stale one from the last run is replaced),
    with `owner` and `mode`, so that only its clients (Postfix's smtpd) may connect.

    Raises OSError when it can't be made."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        if owner is not None:
            os.chown(path, *owner)
        path.chmod(mode)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock
