"""Footprint: the image's growth over its base, and the idle memory of a running container.

Idle memory is the sum of the resident set (RSS) of every process in the container, read with
`docker top` a minute after the start (shared pages count once per process, so this errs high);
beside it the sum of PSS (each shared page split among its processes) and the container's cgroup
figure from `docker stats` (shared pages once, page cache included). The image's HEALTHCHECK
runs `mailboot health` every 20 s, and its connections keep smtpd, tlsmgr and imap-login
processes alive: the 1-domain figures are taken with it (as the image runs by default) and
without it (`docker create --no-healthcheck`). Our resident Python is the processes whose
command starts with python3 (the supervisor and the worker), by RSS.

The inbound defence (Unbound, OpenDMARC, postscreen and its helpers, OpenDKIM verifying,
Sieve) is measured against the image of the last commit without it, started the same way.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.boots import domains
from benchmarks.common import (
    BASE_IMAGE,
    IMAGE,
    Figure,
    Mail,
    Report,
    build_image_at,
    create_mail,
    docker,
    median,
)

# The last commit before the inbound defence (issue 14): its image is "without the checks".
WITHOUT_INBOUND_REF = "8c61941"
WITHOUT_INBOUND_IMAGE = "mailboot:bench-without-inbound"
# The processes the inbound defence adds (their command's first word).
INBOUND_PROCESSES = ("unbound", "opendmarc", "postscreen", "dnsblog", "tlsproxy")


def image_growth_mb() -> tuple[float, float]:
    sizes = [int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
             for image in (IMAGE, BASE_IMAGE)]
    return (sizes[0] - sizes[1]) / 1e6, sizes[0] / 1e6


@dataclass(frozen=True)
class Process:
    """One process of a container, as the host sees it."""

    pid: str
    rss_kib: int
    pss_kib: int
    command: str

    @property
    def program(self) -> str:
        """The first word's base name: `dovecot/imap-login` -> `imap-login`."""
        return Path(self.command.split()[0]).name


def processes(mail: Mail) -> list[Process]:
    """Every process of the container with its RSS (`docker top`) and PSS.

    PSS (proportional set size, from the host's /proc/PID/smaps_rollup) splits each shared
    page among the processes that map it, so the PSS total is what the container really costs.
    """
    output = docker("top", mail.name, "-eo", "pid,rss,args").stdout.splitlines()[1:]
    found = []
    for line in output:
        pid, rss, command = line.split(None, 2)
        found.append(Process(pid, int(rss), _pss_kib(pid), command))
    return found


def process_memory_kib(mail: Mail) -> tuple[dict[str, int], int, dict[str, int]]:
    """(command -> RSS in KiB summed over processes with the same command, total PSS in KiB,
    program name -> PSS in KiB)."""
    totals: dict[str, int] = {}
    by_program: dict[str, int] = {}
    pss = 0
    for process in processes(mail):
        key = " ".join(process.command.split()[:3])[:60]
        totals[key] = totals.get(key, 0) + process.rss_kib
        pss += process.pss_kib
        by_program[process.program] = by_program.get(process.program, 0) + process.pss_kib
    return totals, pss, by_program


def _pss_kib(pid: str) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # the process ended meanwhile (a health check)
        return 0
    return next((int(line.split()[1]) for line in rollup.splitlines()
                 if line.startswith("Pss:")), 0)


@dataclass(frozen=True)
class Idle:
    """One idle container's memory, in MiB."""

    rss: float  # sum of RSS
    pss: float  # sum of PSS
    cgroup: float  # docker stats
    largest: str  # the largest processes by RSS: "command MiB; ..."
    python_rss: float  # our resident Python: processes whose command starts with python3
    python_largest: float


def is_ours(process: Process) -> bool:
    return Path(process.command.split()[0]).name.startswith("python3")


def idle_figures(mail: Mail) -> Idle:
    found = processes(mail)
    by_command: dict[str, int] = {}
    for process in found:
        key = " ".join(process.command.split()[:3])[:60]
        by_command[key] = by_command.get(key, 0) + process.rss_kib
    top = sorted(by_command.items(), key=lambda item: -item[1])[:6]
    python = [process.rss_kib / 1024 for process in found if is_ours(process)]
    usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}",
                   mail.name).stdout.split("/")[0].strip()
    return Idle(sum(p.rss_kib for p in found) / 1024, sum(p.pss_kib for p in found) / 1024,
                _mib(usage), "; ".join(f"{name} {kib / 1024:.0f}" for name, kib in top),
                sum(python), max(python, default=0.0))


# (label, domains, HEALTHCHECK on): the image's HEALTHCHECK runs `mailboot health` every 20 s,
# whose connections keep smtpd, tlsmgr and imap-login processes alive; both are reported.
IDLE_CASES = (("1 domain", 1, True), ("1 domain, no HEALTHCHECK", 1, False),
              ("100 domains", 100, True))


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("Footprint", __doc__ or "")
    growth, total = image_growth_mb()
    figures.append(Figure("image growth over debian:trixie-slim", f"{growth:.0f} MB",
                          "≤ 150 MB", f"image {total:.0f} MB"))
    for label, count, healthcheck in IDLE_CASES:
        measured: list[Idle] = []
        for _ in range(max(1, arguments.runs // 2)):
            mail = create_mail({"MAIL_DOMAINS": ",".join(domains(count)),
                                "TLS_MODE": "self-signed"}, healthcheck=healthcheck)
            try:
                mail.start_and_wait()
                time.sleep(arguments.idle)
                measured.append(idle_figures(mail))
            finally:
                mail.remove()
        figures += _idle_rows(label, measured, count == 1)
    figures += inbound_figures(arguments)


def _idle_rows(label: str, measured: list[Idle], targets: bool) -> list[Figure]:
    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.0f}" for v in values) + " MiB"

    rss = [m.rss for m in measured]
    pss = [m.pss for m in measured]
    cgroup = [m.cgroup for m in measured]
    python = [m.python_rss for m in measured]
    return [
        Figure(f"idle memory, {label}: sum of PSS (shared pages split)",
               f"{median(pss):.0f} MiB", "≤ 100 MiB" if targets else "", listed(pss)),
        Figure(f"idle memory, {label}: sum of RSS", f"{median(rss):.0f} MiB", "",
               listed(rss) + "; largest: " + measured[-1].largest),
        Figure(f"idle memory, {label}: cgroup (docker stats)", f"{median(cgroup):.0f} MiB",
               "", listed(cgroup)),
        Figure(f"idle memory, {label}: our resident Python (python3 processes), sum of RSS",
               f"{median(python):.0f} MiB", "≤ 20 MiB" if targets else "",
               listed(python) + "; largest " +
               ", ".join(f"{m.python_largest:.0f}" for m in measured) + " MiB"),
    ]


def idle_memory(image: str, idle: int) -> tuple[float, float, dict[str, int]]:
    """(sum of PSS in MiB, docker stats in MiB, program -> PSS in KiB) of one idle container."""
    mail = create_mail({"MAIL_DOMAINS": "example.com", "TLS_MODE": "self-signed"}, image=image)
    try:
        mail.start_and_wait()
        time.sleep(idle)
        _, pss, by_program = process_memory_kib(mail)
        usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}",
                       mail.name).stdout.split("/")[0].strip()
        return pss / 1024, _mib(usage), by_program
    finally:
        mail.remove()


def inbound_figures(arguments: argparse.Namespace) -> list[Figure]:
    """Idle memory with and without the inbound defence, alternating the two images."""
    build_image_at(WITHOUT_INBOUND_REF, WITHOUT_INBOUND_IMAGE)
    runs = max(1, arguments.runs)
    with_pss, with_stats, without_pss, without_stats = [], [], [], []
    programs: dict[str, int] = {}
    for _ in range(runs):
        pss, stats, programs = idle_memory(IMAGE, arguments.idle)
        with_pss.append(pss)
        with_stats.append(stats)
        pss, stats, _ = idle_memory(WITHOUT_INBOUND_IMAGE, arguments.idle)
        without_pss.append(pss)
        without_stats.append(stats)
    added = median(with_pss) - median(without_pss)
    inbound = "; ".join(f"{name} {programs.get(name, 0) / 1024:.1f}"
                        for name in INBOUND_PROCESSES)

    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.0f}" for v in values) + " MiB"

    return [
        Figure("idle, 1 domain, with the inbound checks: sum of PSS",
               f"{median(with_pss):.0f} MiB", "", listed(with_pss)),
        Figure(f"idle, 1 domain, without them ({WITHOUT_INBOUND_REF}): sum of PSS",
               f"{median(without_pss):.0f} MiB", "", listed(without_pss)),
        Figure("the inbound checks add (PSS)", f"{added:.0f} MiB", "≤ 40 MiB",
               f"PSS of their processes, MiB: {inbound}"),
        Figure("idle, 1 domain, with the inbound checks: cgroup (docker stats)",
               f"{median(with_stats):.0f} MiB", "", listed(with_stats)),
        Figure("idle, 1 domain, without them: cgroup (docker stats)",
               f"{median(without_stats):.0f} MiB", "", listed(without_stats)),
    ]


def _mib(text: str) -> float:
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 1048576}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float("nan")
