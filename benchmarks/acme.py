"""ACME: from the order to an installed certificate, against Pebble, beside certbot.

Both clients start with no account, ask the same Pebble (Let's Encrypt's test CA, validation
without its random sleep) for a certificate naming two hosts, and answer HTTP-01 on port 80 of
their own address. Ours: the worker's own figure, from the start of the attempt (account, order,
challenges, finalize, download) to the certificate installed and the daemons reloaded. certbot
(from PyPI, on the host, `certonly --standalone`): from its log's first line to its last, so
neither figure includes the Python interpreter's start.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.common import (
    ROOT,
    Figure,
    Report,
    create_mail,
    median,
    network,
    runs_text,
)
from tests.container.pebble_harness import DockerNetwork, Pebble, start_pebble

CERTBOT = ROOT / ".venv-certbot/bin/certbot"
OURS = re.compile(r"ordered, validated and installed in ([\d.]+) s")
CERTBOT_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}):", re.MULTILINE)


def ours_once(pebble: Pebble) -> float:
    ip = pebble.network.allocate()
    for name in ("mail.example.com", "mta-sts.example.com"):
        pebble.clear_a(name)  # challtestsrv adds addresses: the last run's would stay
        pebble.set_a(name, ip)
    mail = create_mail({"MAIL_DOMAINS": "example.com", "PUBLIC_IPV4": ip,
                        "ACME_DIRECTORY": pebble.directory_url, "ACME_CA_BUNDLE": "/acme/ca.pem",
                        "DNS_RESOLVERS": pebble.dns, "DNS_CHECK": "off"},
                       network=pebble.network.name, ip=ip,
                       volumes={str(pebble.directory): "/acme"})
    try:
        mail.start_and_wait()
        deadline = time.monotonic() + 120
        while not (found := OURS.findall(mail.logs())):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no certificate:\n{mail.logs()[-3000:]}")
            time.sleep(0.2)
        return float(found[0])
    finally:
        mail.remove()


def certbot_once(pebble: Pebble, workdir: Path) -> tuple[float, float]:
    """(seconds by certbot's log, wall seconds of the whole command).

    certbot runs on the host, in its own virtual environment (scripts/benchmark makes it), and
    answers HTTP-01 on port 80 of the host, which Pebble reaches at the network's gateway.
    """
    gateway = pebble.network.prefix + "1"
    for name in ("mail.example.org", "mta-sts.example.org"):
        pebble.clear_a(name)
        pebble.set_a(name, gateway)
    logs = workdir / "logs"
    started = time.monotonic()
    result = subprocess.run(
        [str(CERTBOT), "certonly", "--standalone", "--non-interactive", "--agree-tos",
         "--register-unsafely-without-email", "--server", pebble.directory_url,
         "-d", "mail.example.org", "-d", "mta-sts.example.org",
         "--config-dir", str(workdir / "config"), "--work-dir", str(workdir / "work"),
         "--logs-dir", str(logs)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)})
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"certbot failed: {result.stderr[-3000:]}")
    log = (logs / "letsencrypt.log").read_text()
    stamps = [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in CERTBOT_TIME.findall(log)]
    return (stamps[-1] - stamps[0]).total_seconds(), wall


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("ACME", __doc__ or "")
    if not CERTBOT.exists():
        raise RuntimeError(f"{CERTBOT} is missing: run the benchmarks with scripts/benchmark")
    with network() as (network_name, prefix):
        pebble_network = DockerNetwork(network_name, prefix)
        pebble = start_pebble(pebble_network, Path(tempfile.mkdtemp(prefix="mailboot-pebble-")),
                              validity=90 * 86400)
        try:
            ours, certbot, walls = [], [], []
            for _ in range(arguments.runs):
                ours.append(ours_once(pebble))
                by_log, wall = certbot_once(pebble, Path(tempfile.mkdtemp(prefix="certbot-")))
                certbot.append(by_log)
                walls.append(wall)
        finally:
            pebble.remove()
    ratio = median(ours) / median(certbot)
    figures += [
        Figure("mailboot: attempt start → certificate installed", f"{median(ours):.2f} s", "",
               runs_text(ours)),
        Figure("certbot standalone: first → last log line", f"{median(certbot):.2f} s", "",
               runs_text(certbot)),
        Figure("certbot standalone: whole command (interpreter start included)",
               f"{median(walls):.2f} s", "", runs_text(walls)),
        Figure("ratio mailboot / certbot", f"{ratio:.2f}", "≤ 1.0", ""),
    ]
