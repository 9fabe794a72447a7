"""Footprint: the image's growth over its base, and the idle memory of a running container.

Idle memory is the sum of the resident set (RSS) of every process in the container, read with
`docker top` a minute after the start (shared pages count once per process, so this errs high);
beside it the sum of PSS (each shared page split among its processes) and the container's cgroup
figure from `docker stats` (shared pages once, page cache included). The image's HEALTHCHECK
runs `mailboot health` every 20 s: its connection to port 25 starts postscreen and smtpd, which
leave 2 s after it (main.cf's connection_max_idle), and Postfix's tlsmgr, which stays (Postfix
never ends it); its IMAPS connection goes to the imap-login process, which runs anyway (one
waits for clients). So with it, memory is read every 2 s over one 20-s interval: the figures are
the median reading's, and the highest is given too. The 1-domain figures are taken with it (as
the image runs by default) and without it (`docker create --no-healthcheck`), and the first
case's median reading is broken down by process: what each program costs (PSS) and why it is
there. Our resident Python is the processes whose command starts with python3, by RSS: the
supervisor, and whatever it started that is still running (a worker run, every
DNS_CHECK_INTERVAL while records are missing, is waited out).

Without the inbound checks: the same containers' sum of PSS less the processes that exist
only for the inbound defence (Unbound, OpenDMARC, postscreen, dnsblog, tlsproxy, the port-25
policy process when it runs). Without them Postfix's smtpd would answer port 25 on demand, as it
answers 587 (nothing idle), and the rest of the defence lives in processes that run anyway
(OpenDKIM verifies where it signs, Sieve runs inside Dovecot's delivery), so what is taken out
is what the defence costs an idle server.

The defaults are measured, so the guards of the way out are on: SRS for forwards, receivers'
MTA-STS, sending limits, login bans (Dovecot's auth policy) and the reputation check. All of
them are answered by the policy process, started on demand and gone after a quiet minute, or
run inside the worker's runs: none of them is resident while the server idles. So are the
records page (the on-demand HTTP child), the DMARC and TLS report reader (a process per report
Postfix pipes to it) and the alerts (a worker task); metrics are off by default.
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
    create_mail,
    docker,
    median,
)

# The processes the inbound defence adds (their command's first word), and the port-25 policy
# process (python3 running the module; the supervisor's command names it too, in JSON).
INBOUND_PROCESSES = ("unbound", "opendmarc", "postscreen", "dnsblog", "tlsproxy")
INBOUND_POLICY = " -m mailboot.policy.service"
# Why each resident process is there (by `Process.program`), for the breakdown by process.
WHY = {
    "tini": "PID 1: reaps orphans, passes docker stop's SIGTERM on",
    "python3": "our supervisor: runs the daemons, holds ports 80/443 and the policy sockets, "
               "starts the worker and the on-demand children (or a health check's run)",
    "unbound": "the resolver: DNSSEC for DANE and MTA-STS, the blocklists' queries (Spamhaus "
               "refuses public resolvers)",
    "opendkim": "DKIM: signs what leaves, verifies what arrives",
    "opendmarc": "DMARC verdicts on arriving mail (a domain's p=reject is enforced)",
    "dovecot": "Dovecot's master: IMAP, LMTP delivery, Sieve, Postfix's SASL",
    "log": "Dovecot's log",
    "anvil": "Dovecot's connection and login-rate counting",
    "stats": "Dovecot's statistics (its processes report to it)",
    "auth": "Dovecot's authentication (IMAP, ManageSieve, Postfix's SMTP AUTH)",
    "config": "Dovecot's configuration, for doveconf and doveadm (leaves when idle)",
    "imap-login": "TLS and login for IMAP clients (one waits; more start when it is full)",
    "master": "Postfix's master",
    "qmgr": "Postfix's queue manager",
    "pickup": "Postfix's pickup: local submission (sendmail, Sieve's replies, alerts)",
    "postlogd": "Postfix's log, to the container's output",
    "tlsmgr": "Postfix's TLS session cache and random seed (smtpd needs it for TLS)",
    "postscreen": "port 25's screen (per connection: gone 2 s after the last one)",
    "smtpd": "an SMTP session (per connection: gone 2 s after the last one)",
    "proxymap": "Postfix's table lookups for smtpd (gone 2 s after the last one)",
    "dnsblog": "a blocklist query of postscreen's (gone 2 s after the last one)",
}
# A worker run (every DNS_CHECK_INTERVAL while records are missing) is not idle memory.
WORKER_RUN = " -m mailboot.worker.tasks"


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
    inbound_pss: float  # the inbound defence's own processes (`is_inbound`), sum of PSS
    inbound_largest: str  # their PSS by program: "unbound 7.8; ..."
    by_program: tuple[tuple[str, int, int], ...]  # (program, processes, PSS KiB), largest first


def is_ours(process: Process) -> bool:
    return Path(process.command.split()[0]).name.startswith("python3")


def is_inbound(process: Process) -> bool:
    return process.program in INBOUND_PROCESSES or INBOUND_POLICY in process.command


def between_worker_runs(mail: Mail, timeout: float = 30) -> None:
    """Wait until no worker run is in progress: its few seconds of memory are not idle."""
    deadline = time.monotonic() + timeout
    while any(WORKER_RUN in p.command for p in processes(mail)):
        if time.monotonic() > deadline:
            return
        time.sleep(0.5)


def idle_figures(mail: Mail) -> Idle:
    found = processes(mail)
    by_command: dict[str, int] = {}
    for process in found:
        key = " ".join(process.command.split()[:3])[:60]
        by_command[key] = by_command.get(key, 0) + process.rss_kib
    top = sorted(by_command.items(), key=lambda item: -item[1])[:6]
    python = [process.rss_kib / 1024 for process in found if is_ours(process)]
    inbound: dict[str, int] = {}
    for process in filter(is_inbound, found):
        inbound[process.program] = inbound.get(process.program, 0) + process.pss_kib
    programs: dict[str, list[int]] = {}
    for process in found:
        programs.setdefault(process.program, []).append(process.pss_kib)
    by_program = tuple(sorted(((name, len(pss), sum(pss)) for name, pss in programs.items()),
                              key=lambda entry: -entry[2]))
    usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}",
                   mail.name).stdout.split("/")[0].strip()
    return Idle(sum(p.rss_kib for p in found) / 1024, sum(p.pss_kib for p in found) / 1024,
                _mib(usage), "; ".join(f"{name} {kib / 1024:.0f}" for name, kib in top),
                sum(python), max(python, default=0.0), sum(inbound.values()) / 1024,
                "; ".join(f"{name} {kib / 1024:.1f}" for name, kib in sorted(inbound.items())),
                by_program)


# (label, domains, HEALTHCHECK on): the image's HEALTHCHECK runs `mailboot health` every 20 s,
# whose connections keep smtpd, tlsmgr and imap-login processes alive; both are reported.
IDLE_CASES = (("1 domain", 1, True), ("1 domain, no HEALTHCHECK", 1, False),
              ("100 domains", 100, True))


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("Footprint", __doc__ or "")
    growth, total = image_growth_mb()
    figures.append(Figure("image growth over debian:trixie-slim", f"{growth:.0f} MB",
                          "≤ 100 MB", f"image {total:.0f} MB"))
    for label, count, healthcheck in IDLE_CASES:
        measured: list[Idle] = []
        checked: list[float] = []
        for _ in range(max(1, arguments.runs // 2)):
            mail = create_mail({"MAIL_DOMAINS": ",".join(domains(count)),
                                "TLS_MODE": "self-signed"}, healthcheck=healthcheck)
            try:
                mail.start_and_wait()
                time.sleep(arguments.idle)
                between_worker_runs(mail)
                samples = sorted(sampled(mail, healthcheck), key=lambda idle: idle.pss)
                measured.append(samples[len(samples) // 2])
                checked.append(samples[-1].pss)
            finally:
                mail.remove()
        figures += _idle_rows(label, measured, count == 1)
        if healthcheck:
            figures.append(Figure(
                f"idle memory, {label}: sum of PSS while a health check's processes run "
                f"(the highest reading over {HEALTHCHECK_INTERVAL:.0f} s)",
                f"{median(checked):.0f} MiB", "", ", ".join(f"{v:.0f}" for v in checked) + " MiB"))
        if label == IDLE_CASES[0][0]:
            figures += _by_program_rows(label, measured[-1])


# The image's HEALTHCHECK interval: its run leaves postscreen, smtpd and proxymap for 2 s, so a
# single reading may fall on them; the idle figure is the median of readings over one interval.
HEALTHCHECK_INTERVAL, EVERY = 20.0, 2.0


def sampled(mail: Mail, healthcheck: bool) -> list[Idle]:
    """Readings about every 2 s over one health-check interval (a reading takes a second or so:
    `docker stats`); one reading without the check."""
    readings = [idle_figures(mail)]
    start = time.monotonic()
    while healthcheck and (elapsed := time.monotonic() - start) < HEALTHCHECK_INTERVAL:
        time.sleep(EVERY - elapsed % EVERY)
        readings.append(idle_figures(mail))
    return readings


def _idle_rows(label: str, measured: list[Idle], targets: bool) -> list[Figure]:
    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.0f}" for v in values) + " MiB"

    rss = [m.rss for m in measured]
    pss = [m.pss for m in measured]
    cgroup = [m.cgroup for m in measured]
    python = [m.python_rss for m in measured]
    without = [m.pss - m.inbound_pss for m in measured]
    return [
        Figure(f"idle memory, {label}: sum of PSS (shared pages split)",
               f"{median(pss):.0f} MiB", "≤ 55 MiB" if targets else "", listed(pss)),
        Figure(f"idle memory, {label}: sum of RSS", f"{median(rss):.0f} MiB", "",
               listed(rss) + "; largest: " + measured[-1].largest),
        Figure(f"idle memory, {label}: cgroup (docker stats)", f"{median(cgroup):.0f} MiB",
               "", listed(cgroup)),
        Figure(f"idle memory, {label}: our resident Python (python3 processes), sum of RSS",
               f"{median(python):.0f} MiB", "≤ 20 MiB" if targets else "",
               listed(python) + "; largest " +
               ", ".join(f"{m.python_largest:.0f}" for m in measured) + " MiB"),
        Figure(f"idle memory, {label}: sum of PSS without the inbound checks' processes",
               f"{median(without):.0f} MiB", "≤ 60 MiB" if targets else "",
               listed(without) + "; taken out (PSS, MiB): " + measured[-1].inbound_largest),
    ]


def _by_program_rows(label: str, idle: Idle) -> list[Figure]:
    """What each resident program costs (the last run's PSS), and why it is there."""
    return [Figure(f"idle memory, {label}, by process: {name}"
                   + (f" ({WHY[name]})" if name in WHY else ""),
                   f"{kib / 1024:.1f} MiB", "", f"{count} process{'es' if count > 1 else ''}")
            for name, count, kib in idle.by_program]


def _mib(text: str) -> float:
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 1048576}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float("nan")
