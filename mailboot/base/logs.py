"""The form of our log lines: `mailboot: ` first, then, from warning up, the level.

`mailboot: tls: the certificate ... is current` informs; `mailboot: warning: tls: keeping the
current certificate: ...` and `mailboot: error: ...` ask for a look, and say so where the line is
read (`docker logs mail 2>&1 | grep -E '^mailboot: (warning|error|critical):'`), as Postfix's
`warning:` and Dovecot's `Warning:` do for theirs. Every process of ours logs through this: the
boot and the command line, the worker's runs, the web child, the port-25 policy process.
"""

from __future__ import annotations

import logging
import sys


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
