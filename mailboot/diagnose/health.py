"""The container's health check: do SMTP and IMAP answer on this machine?

Docker runs it every 20 s as `python3 -P -m mailboot.health` (the image's HEALTHCHECK): this
module alone, not the whole command line, so each check costs a few MiB for a moment rather
than loading the settings and every subcommand (about 36 MiB and 0.5 s of CPU).
`mailboot health` does the same for people.
"""

from __future__ import annotations

import socket
import ssl
import sys

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


def main() -> int:
    """Exit 0 when both answer; else say why on stderr and exit 1 (unhealthy)."""
    problems = check_local_services()
    for problem in problems:
        print(f"mailboot: health: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
