"""The container's health check: do SMTP and IMAP answer on this machine?"""

from __future__ import annotations

import socket
import ssl

TIMEOUT = 5.0


def check_local_services(host: str = "127.0.0.1") -> list[str]:
    """Problems found; empty when the SMTP banner and the IMAPS greeting both arrive."""
    problems = []
    try:
        with socket.create_connection((host, 25), timeout=TIMEOUT) as connection:
            banner = connection.recv(512)
        if not banner.startswith(b"220"):
            problems.append(f"SMTP on port 25 answered {banner[:60]!r} instead of a 220 banner")
    except OSError as error:
        problems.append(f"SMTP on port 25 does not answer: {error}")
    # Only liveness is checked here: the certificate may be a temporary self-signed one.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, 993), timeout=TIMEOUT) as raw, \
                context.wrap_socket(raw) as connection:
            greeting = connection.recv(512)
        if not greeting.startswith(b"* OK"):
            problems.append(f"IMAPS on port 993 answered {greeting[:60]!r} instead of * OK")
    except OSError as error:
        problems.append(f"IMAPS on port 993 does not answer: {error}")
    return problems
