"""The one logging set-up of every mailboot process: the boot and the command line, the worker's
runs, the port 80/443 server, the port-25 policy service.

Our lines go to stderr as `mailboot: <message>`, which `docker logs` shows beside the daemons'
own. Only the `mailboot` loggers are configured; other libraries' warnings reach stderr through
Python's last-resort handler, as they do in a process that configures nothing. Standard library
`logging` and `sys` only: the policy service and the supervisor's children have import budgets
(tests/test_architecture.py).
"""

from __future__ import annotations

import logging
import sys

LOGGER = "mailboot"
FORMAT = "mailboot: %(message)s"


def configure_logging() -> None:
    """`mailboot: ` lines on stderr, INFO and above, for everything below the `mailboot` logger.

    Calling it again replaces the handler rather than adding one (a line is never said twice);
    handlers added after it (the worker's problem log) stay until the next call.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger(LOGGER)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
