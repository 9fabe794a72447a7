"""Footprint: the image's growth over its base, and the idle memory of a running container.

Idle memory is the sum of the resident set (RSS) of every process in the container, read with
`docker top` a minute after the start (shared pages count once per process, so this errs high),
beside the container's cgroup figure from `docker stats`, which counts shared pages once but adds
the page cache.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.boots import domains
from benchmarks.common import BASE_IMAGE, IMAGE, Figure, Mail, Report, create_mail, docker, median


def image_growth_mb() -> tuple[float, float]:
    sizes = [int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
             for image in (IMAGE, BASE_IMAGE)]
    return (sizes[0] - sizes[1]) / 1e6, sizes[0] / 1e6


def process_rss_kib(mail: Mail) -> dict[str, int]:
    """command -> RSS in KiB, summed over processes with the same command."""
    output = docker("top", mail.name, "-eo", "pid,rss,args").stdout.splitlines()[1:]
    totals: dict[str, int] = {}
    for line in output:
        _pid, rss, command = line.split(None, 2)
        key = " ".join(command.split()[:3])[:60]
        totals[key] = totals.get(key, 0) + int(rss)
    return totals


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("Footprint", __doc__ or "")
    growth, total = image_growth_mb()
    figures.append(Figure("image growth over debian:trixie-slim", f"{growth:.0f} MB",
                          "", f"image {total:.0f} MB"))
    for count, target in ((1, "≤ 100 MB"), (100, "")):
        sums, cgroups, breakdown = [], [], {}
        for _ in range(max(1, arguments.runs // 2)):
            mail = create_mail({"MAIL_DOMAINS": ",".join(domains(count)),
                                "TLS_MODE": "self-signed"})
            try:
                mail.start_and_wait()
                time.sleep(arguments.idle)
                breakdown = process_rss_kib(mail)
                sums.append(sum(breakdown.values()) / 1024)
                usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}",
                               mail.name).stdout.split("/")[0].strip()
                cgroups.append(_mib(usage))
            finally:
                mail.remove()
        label = "1 domain" if count == 1 else f"{count} domains"
        top = sorted(breakdown.items(), key=lambda item: -item[1])[:6]
        figures += [
            Figure(f"idle memory, {label}: sum of RSS", f"{median(sums):.0f} MiB", target,
                   ", ".join(f"{v:.0f}" for v in sums) + " MiB; largest: " +
                   "; ".join(f"{name} {kib / 1024:.0f}" for name, kib in top)),
            Figure(f"idle memory, {label}: cgroup (docker stats)", f"{median(cgroups):.0f} MiB",
                   "", ", ".join(f"{v:.0f}" for v in cgroups) + " MiB"),
        ]


def _mib(text: str) -> float:
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 1048576}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float("nan")
