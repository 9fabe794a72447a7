"""Boot times, cold and warm, with 1 to 1,000 domains.

Each container resolves through BIND on a network of its own, as a deployed server resolves through
the internet: on a cold boot the zones exist but hold none of our records yet (the first start,
before the user has added them); on a warm boot they serve exactly what `mailboot dns --zone`
printed. Cold: an empty /data, a temporary certificate, every DKIM key generated. Warm: `docker
stop` then `docker start` of the same container, keys and certificate in place.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from benchmarks.common import (
    ROOT,
    Figure,
    Mail,
    Report,
    create_mail,
    docker,
    median,
    network,
    runs_text,
    seconds,
)

DOMAIN_COUNTS = (1, 10, 100, 1000)
BIND_IMAGE = "mailboot-bind:test"
ZONE_HEADER = re.compile(r"^; ===== (\S+): in the DNS zone of (\S+) =====$", re.MULTILINE)
SOA = ("@ 3600 IN SOA ns1.bench.invalid. hostmaster.bench.invalid. 1 7200 3600 1209600 60\n"
       "@ 3600 IN NS ns1.bench.invalid.\n")
OPTIONS = ('options { directory "/var/cache/bind"; listen-on { any; }; listen-on-v6 { none; }; '
           "recursion no; dnssec-validation no; };\ncontrols { };\n")


def domains(count: int) -> list[str]:
    return ["example.com", *(f"d{i}.example.net" for i in range(2, count + 1))]


class Bind:
    """BIND serving the benchmark's zones from a host folder; `serve` replaces them all."""

    def __init__(self, network_name: str, ip: str) -> None:
        docker("build", "-q", "-t", BIND_IMAGE, str(ROOT / "tests/container/bind_image"),
               timeout=600)
        self.directory = Path(tempfile.mkdtemp(prefix="mailboot-bench-zones-"))
        self.directory.chmod(0o755)
        self.ip = ip
        self.name = f"mailboot-bench-bind-{ip.rsplit('.', 1)[1]}"
        (self.directory / "named.conf").write_text(OPTIONS)
        docker("run", "-d", "--name", self.name, "--network", network_name, "--ip", ip,
               "-v", f"{self.directory}:/zones:ro", BIND_IMAGE)

    def serve(self, zones: dict[str, str]) -> None:
        config = [OPTIONS]
        for old in self.directory.glob("*.zone"):
            old.unlink()
        for zone, records in zones.items():
            path = self.directory / f"{zone}.zone"
            path.write_text(f"$ORIGIN {zone}.\n{SOA}{records}")
            path.chmod(0o644)
            config.append(f'zone "{zone}" {{ type primary; file "/zones/{zone}.zone"; }};\n')
        (self.directory / "named.conf").write_text("".join(config))
        (self.directory / "named.conf").chmod(0o644)
        docker("restart", "-t", "1", self.name)

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


def printed_zones(mail: Mail) -> dict[str, str]:
    """The zone file `mailboot dns --zone` prints, cut into one text per zone."""
    text = mail.exec("mailboot", "dns", "--zone").stdout
    zones: dict[str, str] = {}
    matches = list(ZONE_HEADER.finditer(text))
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else text.find("; =====", match.end())
        zones[match.group(2)] = text[match.end(): end if end >= 0 else len(text)]
    return zones


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("Boot", __doc__ or "")
    with network() as (network_name, prefix):
        bind = Bind(network_name, f"{prefix}2")
        try:
            for count in (c for c in DOMAIN_COUNTS if c <= arguments.max_domains):
                _measure(figures, bind, network_name, f"{prefix}10", count, arguments.runs)
        finally:
            bind.remove()


def _measure(figures: list[Figure], bind: Bind, network_name: str, ip: str, count: int,
             runs: int) -> None:
    names = domains(count)
    cold: dict[str, list[float]] = {"handover": [], "smtp": [], "imap": []}
    warm: dict[str, list[float]] = {"handover": [], "smtp": [], "imap": []}
    for _ in range(runs):
        bind.serve(dict.fromkeys(names, ""))  # the zones exist, our records don't yet
        mail = create_mail({"MAIL_DOMAINS": ",".join(names), "PUBLIC_IPV4": ip,
                            "TLS_MODE": "self-signed", "DNS_RESOLVERS": bind.ip},
                           network=network_name, ip=ip, dns=bind.ip)
        try:
            smtp, imap = mail.start_and_wait()
            _record(cold, mail.handover_seconds()[-1], smtp, imap)
            if warm["handover"]:
                continue  # one container's restarts give the warm figures
            bind.serve(printed_zones(mail))  # the user has published everything
            for _ in range(runs):
                mail.stop()
                smtp, imap = mail.start_and_wait()
                _record(warm, mail.handover_seconds()[-1], smtp, imap)
        finally:
            mail.remove()
    label = "1 domain" if count == 1 else f"{count:,} domains"
    for kind, values, handover_target in (("cold", cold, ""), ("warm", warm, _warm_target(count))):
        figures += [
            Figure(f"{kind}, {label}: entrypoint start → supervisor exec"
                   + (" (the daemons started before it)" if kind == "warm" else ""),
                   seconds(median(values["handover"])), handover_target,
                   runs_text(values["handover"])),
            Figure(f"{kind}, {label}: docker start → SMTP banner (25)",
                   seconds(median(values["smtp"])), "", runs_text(values["smtp"])),
            Figure(f"{kind}, {label}: docker start → IMAP greeting (993)",
                   seconds(median(values["imap"])), "", runs_text(values["imap"])),
        ]


def _record(values: dict[str, list[float]], handover: float, smtp: float, imap: float) -> None:
    values["handover"].append(handover)
    values["smtp"].append(smtp)
    values["imap"].append(imap)


def _warm_target(count: int) -> str:
    return {1: "≤ 0.3 s", 1000: "≤ 2 s"}.get(count, "")
