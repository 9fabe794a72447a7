"""The port-25 policy service as Postfix runs it: `spawn(8)` starts `python3 -P -m
mailboot.inbound_policy` for an smtpd that asks, with the connection as standard input and
output, as an unprivileged user (master.cf). It answers until smtpd lets go of it (after
`max_idle`, main.cf) and ends, so nothing of it stays in memory while no mail arrives.

Its standard error is that connection too: it logs through syslog (/dev/log, which the
supervisor relays to `docker logs`), never to stderr. What it must say only once across its
sibling processes is noted in files below the run directory (`inbound.FileNotes`).
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import sys
from collections.abc import Sequence
from pathlib import Path

from mailboot import publicsuffix, smtp_policy
from mailboot.dnslookup import DnsLookup
from mailboot.inbound import Blocklist, FileNotes, InboundPolicy, default_gateway

# The container's own resolver (Unbound): recursive, validating, and what blocklists accept.
LOCAL_RESOLVER = ("127.0.0.1", 53)
SYSLOG = "/dev/log"


def blocklist(text: str) -> Blocklist:
    """`query-zone=shown-as` (the query zone may hold a DQS key; the log shows the other)."""
    query, _, shown = text.partition("=")
    return Blocklist(query, shown or query)


def policy(blocklists: Sequence[Blocklist], notes: Path) -> InboundPolicy:
    try:
        routes = Path("/proc/net/route").read_text()
    except OSError:
        routes = ""
    return InboundPolicy(DnsLookup([LOCAL_RESOLVER]), publicsuffix.load_rules(), blocklists,
                         default_gateway(routes), notes=FileNotes(notes))


def log_to_syslog(address: str = SYSLOG) -> None:
    """Our lines to the supervisor's /dev/log; none at all when it isn't there (stderr would
    go to smtpd as a broken answer)."""
    logger = logging.getLogger("mailboot")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address, facility=logging.handlers.SysLogHandler.LOG_MAIL)
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("mailboot: %(message)s"))
    logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mailboot.inbound_policy")
    parser.add_argument("--blocklist", type=blocklist, action="append", default=[],
                        help="query-zone=shown-as of an address blocklist postscreen asks")
    parser.add_argument("--notes", type=Path, default=Path("/run/mailboot/inbound"),
                        help="where the policy processes note what they said")
    arguments = parser.parse_args(argv)
    log_to_syslog()
    decide = policy(arguments.blocklist, arguments.notes).decide
    smtp_policy.serve(sys.stdin.buffer, sys.stdout.buffer, decide)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
