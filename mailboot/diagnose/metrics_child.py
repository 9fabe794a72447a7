"""METRICS_PORT on demand: the short-lived process the supervisor starts when a scraper connects
(`python3 -P -m mailboot.diagnose.metrics_child --metrics-fd N`).

The supervisor binds the port at start (all interfaces inside the container: publishing it is
the user's choice) and watches it while no child runs; this process inherits the socket,
answers `GET /metrics` on the bounded server of `web.server` with the page of `metrics`, and
ends after `--idle` seconds without a connection. A scrape reads each source afresh (files the
worker and the supervisor keep, `postqueue -j`, Dovecot's page on loopback); nothing is cached,
and nothing of this runs while metrics are off or nobody scrapes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path

from mailboot.base import maillog, programs
from mailboot.base.errors import MailbootError
from mailboot.base.logs import configure_logging
from mailboot.base.paths import Paths
from mailboot.daemons.dovecot import STATS_HOST, STATS_PORT
from mailboot.diagnose import metrics
from mailboot.diagnose.metrics import Family
from mailboot.settings.table import load_settings
from mailboot.web import server as http_core
from mailboot.web.server import DEFAULT_LIMITS, Request, Response

log = logging.getLogger("mailboot.metrics")

IDLE_EXIT = 120.0  # seconds without a scrape before this process ends (scrapes: 15 s to 1 min)
SOURCE_TIMEOUT = 5.0  # seconds for Dovecot's page and for postqueue; a scrape waits for both
POSTQUEUE = "/usr/sbin/postqueue"
Fetch = Callable[[], str]


def fetch_dovecot(host: str = STATS_HOST, port: int = STATS_PORT) -> str:
    """Dovecot's OpenMetrics page; raises OSError or http.client's errors when it can't be
    had (Dovecot down) and ValueError for an answer other than 200."""
    connection = http.client.HTTPConnection(host, port, timeout=SOURCE_TIMEOUT)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read(4 * 1024 * 1024)
        if response.status != HTTPStatus.OK:
            raise ValueError(f"Dovecot's stats answered {response.status}")
        return body.decode("utf-8")
    finally:
        connection.close()


def run_postqueue() -> str:
    return programs.run([POSTQUEUE, "-j"], timeout=SOURCE_TIMEOUT)


def page(paths: Paths, now: datetime, dovecot: Fetch = fetch_dovecot,
         postqueue: Fetch = run_postqueue) -> str:
    """The whole page, every source read now; a source that fails is left out (its
    `mailboot_source_up` is 0) and logged."""
    up: dict[str, bool] = {}
    families: list[Family] = []

    def add(source: str, read: Callable[[], list[Family]]) -> None:
        try:
            families.extend(read())
            up[source] = True
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException,
                MailbootError) as error:
            log.warning("metrics: can't read %s: %s", source, error)
            up[source] = False

    add("postfix_queue", lambda: metrics.queue_families(metrics.count_queues(postqueue())))
    add("postfix_log", lambda: postfix_log(paths))
    add("certificates", lambda: certificates(paths, now))
    add("worker", lambda: metrics.worker_families(read_json(paths.worker_state)))
    add("blocklists", lambda: blocklists(paths))
    add("dovecot", lambda: metrics.from_openmetrics(dovecot()))
    ours = [*families, metrics.source_family(up)]
    return metrics.render(metrics.without_clashes(ours))


def read_json(path: Path) -> dict[str, object]:
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON object")
    return value


def postfix_log(paths: Paths) -> list[Family]:
    counted = maillog.read_counts(paths.postfix_log_counts)
    if counted is None:
        raise ValueError(f"{paths.postfix_log_counts} is missing or unreadable")
    return metrics.log_families(*counted)


CHAIN_FILE = "fullchain.pem"  # in each certificate's directory (tls.certificates.CHAIN_FILE)
# As `tls.certificates.SOURCES` (not imported: it loads cryptography; a test keeps them equal).
CERTIFICATE_SOURCES = ("self-signed", "acme", "manual")


def certificates(paths: Paths, now: datetime) -> list[Family]:
    """Each slot's certificate in use (`live`, `live-2`, ...): how it was made (its directory's
    name says, as `tls.certificates.Certificate.source`) and when it expires."""
    found = []
    slot = 0
    while (link := paths.tls_slot(slot)).is_symlink():
        directory = link.resolve()
        source = next((s for s in CERTIFICATE_SOURCES if directory.name.startswith(s + "-")),
                      "unknown")
        found.append((link.name, source,
                      metrics.not_after((directory / CHAIN_FILE).read_bytes())))
        slot += 1
    return metrics.certificate_families(found, now)


def blocklists(paths: Paths) -> list[Family]:
    if not paths.reputation_state.exists():
        return []  # REPUTATION_CHECK=off, or not asked yet: nothing to say, nothing broken
    return metrics.blocklist_families(read_json(paths.reputation_state))


def answer(request: Request, make_page: Callable[[], str]) -> Response:
    if request.path != "/metrics":
        return Response(HTTPStatus.NOT_FOUND, b"not found; the metrics are at /metrics\n")
    return Response(HTTPStatus.OK, make_page().encode("utf-8"),
                    headers=(("Content-Type", metrics.CONTENT_TYPE),))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mailboot.diagnose.metrics_child")
    parser.add_argument("--metrics-fd", type=int, required=True,
                        help="the listening socket of METRICS_PORT")
    parser.add_argument("--idle", type=float, default=IDLE_EXIT,
                        help="seconds without a connection before ending")
    arguments = parser.parse_args(argv)
    configure_logging()
    stop = http_core.stop_on_sigterm()
    paths = Paths(load_settings(dict(os.environ)).data_dir)
    server = http_core.serve(lambda request: answer(request, lambda: page(paths,
                                                                          datetime.now(UTC))),
                             "", 0, "metrics", DEFAULT_LIMITS,
                             sock=socket.socket(fileno=arguments.metrics_fd))
    http_core.serve_until_idle([server], arguments.idle, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
