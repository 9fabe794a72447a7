"""The one logging set-up of every mailboot process, and the form of our log lines.

Every process of ours logs through `configure_logging`: the boot and the command line, the
worker's runs, the port 80/443 server, the port-25 policy service. Lines go to stderr, which
`docker logs` shows beside the daemons' own: `mailboot: ` first, then, from warning up, the level.
`mailboot: tls: the certificate ... is current` informs; `mailboot: warning: tls: keeping the
current certificate: ...` and `mailboot: error: ...` ask for a look, and say so where the line is
read (`docker logs mail 2>&1 | grep -E '^mailboot: (warning|error|critical):'`), as Postfix's
`warning:` and Dovecot's `Warning:` do for theirs.

Only the `mailboot` loggers are configured; other libraries' warnings reach stderr through
Python's last-resort handler, as they do in a process that configures nothing. Standard library
`logging` and `sys` only: the policy service and the supervisor's children have import budgets
(tests/test_architecture.py).
"""

from __future__ import annotations

import logging
import sys

LOGGER = "mailboot"


class LineFormat(logging.Formatter):
    """One line per record (a traceback follows it unchanged)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"mailboot: {level}{record.message}"


def stderr_handler() -> logging.Handler:
    """Standard error, which the supervisor passes on and `docker logs` shows."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormat())
    return handler


def configure_logging() -> None:
    """Our lines on stderr, INFO and above, for everything below the `mailboot` logger.

    Calling it again replaces the handler rather than adding one (a line is never said twice);
    handlers added after it (the worker's problem log) stay until the next call.
    """
    root = logging.getLogger(LOGGER)
    root.handlers[:] = [stderr_handler()]
    root.setLevel(logging.INFO)
    root.propagate = False
