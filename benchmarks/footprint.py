"""Footprint: the image's growth over its base, and the idle memory of a running container.

Idle memory is the sum of the resident set (RSS) of every process in the container, read with
`docker top` a minute after the start (shared pages count once per process, so this errs high);
beside it the sum of PSS (each shared page split among its processes) and the container's cgroup
figure from `docker stats` (shared pages once, page cache included).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.boots import domains
from benchmarks.common import BASE_IMAGE, IMAGE, Figure, Mail, Report, create_mail, docker, median


def image_growth_mb() -> tuple[float, float]:
    sizes = [int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
             for image in (IMAGE, BASE_IMAGE)]
    return (sizes[0] - sizes[1]) / 1e6, sizes[0] / 1e6


def process_memory_kib(mail: Mail) -> tuple[dict[str, int], int]:
    """(command -> RSS in KiB summed over processes with the same command, total PSS in KiB).

    PSS (proportional set size, from the host's /proc/PID/smaps_rollup) splits each shared
    page among the processes that map it, so the PSS total is what the container really costs.
    """
    output = docker("top", mail.name, "-eo", "pid,rss,args").stdout.splitlines()[1:]
    totals: dict[str, int] = {}
    pss = 0
    for line in output:
        pid, rss, command = line.split(None, 2)
        key = " ".join(command.split()[:3])[:60]
        totals[key] = totals.get(key, 0) + int(rss)
        pss += _pss_kib(pid)
    return totals, pss


def _pss_kib(pid: str) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # the process ended meanwhile (a health check)
        return 0
    return next((int(line.split()[1]) for line in rollup.splitlines()
                 if line.startswith("Pss:")), 0)


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("Footprint", __doc__ or "")
    growth, total = image_growth_mb()
    figures.append(Figure("image growth over debian:trixie-slim", f"{growth:.0f} MB",
                          "", f"image {total:.0f} MB"))
    for count, target in ((1, "≤ 100 MB"), (100, "")):
        sums: list[float] = []
        psses: list[float] = []
        cgroups: list[float] = []
        breakdown: dict[str, int] = {}
        for _ in range(max(1, arguments.runs // 2)):
            mail = create_mail({"MAIL_DOMAINS": ",".join(domains(count)),
                                "TLS_MODE": "self-signed"})
            try:
                mail.start_and_wait()
                time.sleep(arguments.idle)
                breakdown, pss = process_memory_kib(mail)
                sums.append(sum(breakdown.values()) / 1024)
                psses.append(pss / 1024)
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
            Figure(f"idle memory, {label}: sum of PSS (shared pages split)",
                   f"{median(psses):.0f} MiB", "", ", ".join(f"{v:.0f}" for v in psses) + " MiB"),
            Figure(f"idle memory, {label}: cgroup (docker stats)", f"{median(cgroups):.0f} MiB",
                   "", ", ".join(f"{v:.0f}" for v in cgroups) + " MiB"),
        ]


def _mib(text: str) -> float:
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 1048576}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float("nan")
