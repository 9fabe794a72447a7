"""Ready after DNS: from the records being answered to the real certificate and the READY line.

A first start at default settings (DNS_CHECK_INTERVAL 1 min, ACME_RETRY_INTERVAL 5 min) against
Pebble, which validates through a BIND serving the user's zone, as Let's Encrypt validates
through the internet's DNS. The zone holds none of our records while the server waits (the
`--ready-wait` seconds: a user who publishes the records some time after the first start);
then the records `mailboot dns --zone` printed are published, and two moments are measured
from there: the certificate from Pebble served on port 993, and the READY line in the log.
Both look again every minute, so a wait of whole minutes publishes just after a look: the
worst case. Before issue 15, the wait doubled up to an hour while the records were missing.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import tempfile
import time
from pathlib import Path

from benchmarks.common import Figure, Mail, Report, create_mail, median, network, runs_text
from tests.container.pebble_harness import DockerNetwork, Pebble, start_pebble
from tests.container.zoneserver import ZoneServer, start_zone_server

READY = "dns: READY - every required DNS record is in place"
PROMISE = "≤ 120 s"


def serves_pebble_certificate(mail: Mail, roots: ssl.SSLContext) -> bool:
    port = mail.ports().get(993)
    if port is None:
        return False
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as raw, \
            roots.wrap_socket(raw, server_hostname="mail.example.com"):
        return True
    return False


def reverse_zone(prefix: str) -> str:
    first, second, third = prefix.rstrip(".").split(".")
    return f"{third}.{second}.{first}.in-addr.arpa"


def one_run(pebble: Pebble, bind: ZoneServer, wait: int) -> tuple[float, float]:
    """(seconds to the certificate served, seconds to the READY line), from publication."""
    reverse = reverse_zone(pebble.network.prefix)
    bind.serve({"example.com": "", reverse: ""})
    ip = pebble.network.allocate()
    mail = create_mail({"MAIL_DOMAINS": "example.com", "PUBLIC_IPV4": ip,
                        "ACME_DIRECTORY": pebble.directory_url, "ACME_CA_BUNDLE": "/acme/ca.pem",
                        "DNS_RESOLVERS": bind.ip},
                       network=pebble.network.name, ip=ip, dns=bind.ip,
                       volumes={str(pebble.directory): "/acme"})
    roots_file = Path(tempfile.mkstemp(prefix="pebble-roots-", suffix=".pem")[1])
    roots_file.write_text(pebble.issuing_roots_pem())
    roots = ssl.create_default_context(cafile=str(roots_file))
    try:
        mail.start_and_wait()
        time.sleep(wait)
        # Everything printed, and the PTR at the "hosting provider" (the reverse zone).
        bind.serve({"example.com": mail.exec("mailboot", "dns", "--zone", "--domain",
                                             "example.com").stdout,
                    reverse: f"{ip.rsplit('.', 1)[1]} IN PTR mail.example.com.\n"})
        published = time.monotonic()
        certificate = ready = None
        while certificate is None or ready is None:
            if time.monotonic() - published > 900:
                said = [line for line in mail.logs().splitlines() if line.startswith("mailboot:")]
                raise RuntimeError("not ready 15 min after publication:\n"
                                   + "\n".join(said[-40:]))
            if certificate is None and serves_pebble_certificate(mail, roots):
                certificate = time.monotonic() - published
            if ready is None and READY in mail.logs():
                ready = time.monotonic() - published
            time.sleep(0.5)
        return certificate, ready
    finally:
        mail.remove()
        roots_file.unlink(missing_ok=True)


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("Ready after DNS", __doc__ or "")
    with network() as (network_name, prefix):
        test_network = DockerNetwork(network_name, prefix)
        bind = start_zone_server(test_network, Path(tempfile.mkdtemp(prefix="mailboot-zones-")),
                                 {"example.com": "", reverse_zone(prefix): ""})
        pebble = start_pebble(test_network, Path(tempfile.mkdtemp(prefix="mailboot-pebble-")),
                              validity=90 * 86400, dns=f"{bind.ip}:53")
        try:
            runs = [one_run(pebble, bind, arguments.ready_wait) for _ in range(arguments.runs)]
        finally:
            pebble.remove()
            bind.remove()
    certificates = [c for c, _ in runs]
    readies = [r for _, r in runs]
    label = f"after {arguments.ready_wait} s without records"
    figures += [
        Figure(f"records published → Pebble certificate served on 993 ({label})",
               f"{median(certificates):.1f} s", PROMISE, runs_text(certificates)),
        Figure(f"records published → READY line logged ({label})",
               f"{median(readies):.1f} s", PROMISE, runs_text(readies)),
    ]
