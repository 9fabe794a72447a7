"""Ports 80 and 443 on demand: the short-lived process the supervisor starts when a client
connects (`python3 -P -m mailboot.web.child --http-fd N --https-fd M`).

The supervisor binds both ports at start and watches them while no child runs; on the first
connection it starts this process, which inherits the listening sockets, serves port 80 (ACME
challenges, redirects: `port80`) and port 443 (MTA-STS, mail clients' settings: `port443`; the
owner's records page: `recordspage`) on the bounded server of `server`, and ends after `--idle`
seconds without a connection. So the TLS stack and the answers cost memory only while someone
asks, and the resident supervisor never imports `ssl`. The challenges come from the worker's run
through files (`challenges.ChallengeStore`).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime

from mailboot.base.logs import configure_logging
from mailboot.base.paths import Paths
from mailboot.dns import names
from mailboot.settings.table import load_settings
from mailboot.standards import mtasts
from mailboot.web import clientconfig, port443, recordspage
from mailboot.web import port80 as http_server
from mailboot.web import server as http_core
from mailboot.web.challenges import ChallengeStore

log = logging.getLogger("mailboot.http")

IDLE_EXIT = 60.0  # seconds without a connection on either port before this process ends


def serve(http_sock: socket.socket | None, https_sock: socket.socket | None,
          environment: dict[str, str]) -> list[http_core.Server]:
    """Start serving the handed-over sockets (either may be missing) in background threads.

    A port that can't be served (no certificate live for 443) is logged and left to the next
    child; the other is served. Raises ConfigError for settings the boot would have refused."""
    settings = load_settings(environment)
    paths = Paths(settings.data_dir)
    servers = []
    if http_sock is not None:
        store = ChallengeStore(paths.acme_challenges)
        servers.append(http_server.start(0, store, names.tls_names(settings),
                                         sock=http_sock))
    if https_sock is not None:
        try:
            page = recordspage.make_answer(recordspage.PageSource(
                settings.hostname, paths, lambda: recordspage.report_summaries(
                    settings, paths, datetime.now(UTC).date())))
            servers.append(port443.start(0, paths, mtasts.policy_hosts(settings),
                                         service=clientconfig.service_for(settings),
                                         sock=https_sock, page=page))
        except OSError as error:
            log.error("https: can't serve port 443: %s", error)
    return servers


def inherited(fd: int | None) -> socket.socket | None:
    return None if fd is None else socket.socket(fileno=fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mailboot.web.child")
    parser.add_argument("--http-fd", type=int, help="the listening socket of port 80")
    parser.add_argument("--https-fd", type=int, help="the listening socket of port 443")
    parser.add_argument("--idle", type=float, default=IDLE_EXIT,
                        help="seconds without a connection before ending")
    arguments = parser.parse_args(argv)
    configure_logging()
    stop = http_core.stop_on_sigterm()
    servers = serve(inherited(arguments.http_fd), inherited(arguments.https_fd),
                    dict(os.environ))
    if not servers:
        return 1
    http_core.serve_until_idle(servers, arguments.idle, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
