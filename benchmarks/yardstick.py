"""Bare daemons: the same image's daemons started directly on rendered configuration, beside us.

The physical limit for a warm start. A mailboot container (1 domain, self-signed) is started
once, so the boot renders /etc and prepares /data, and stopped; `docker commit` makes a
temporary image of it whose entrypoint is a shell script that does only what the supervisor
does (start Unbound, OpenDKIM, OpenDMARC, Dovecot and Postfix with the same argv, in the same
order, with the soft open-files limit raised and the resolver pointed at Unbound) and waits:
no settings, no rendering, no checks, no worker. It runs on a copy of the same /data. Both
containers are then stopped and started in turns, and timed the same way (`docker start` →
SMTP banner on 25, → IMAP greeting on 993, polled every 20 ms).

Nothing changes between mailboot's starts, so each takes the warm start (mailboot/warmstart.py:
the last full boot's plan checked, the daemons prepared, the supervisor started; the boot's
stages run beside the daemons); the figures say how many runs did.

Where mailboot's extra time goes, from its log (`docker logs -t`, stamped by the Docker
engine on arrival, the same clock as the `docker start` moment): docker start → our
entrypoint started (the boot's own figure, counted back from the hand-over line), the boot's
own stages ("boot: <stage> done (N ms)"; beside the daemons on a warm start), the hand-over to
the supervisor, Postfix's master started ("daemon started"), and the first SMTP banner; the
same marks for the bare daemons, whose script prints its own start time (Docker may read the
first lines of a start late).
"""

from __future__ import annotations

import argparse
import datetime
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    HANDOVER,
    Figure,
    Mail,
    Report,
    create_mail,
    docker,
    median,
    runs_text,
    seconds,
    wait_for_greetings,
)

BARE_IMAGE = f"mailboot-bench-bare:{secrets.token_hex(4)}"
# What the supervisor does, and nothing else: mailboot/daemons/*.py give the argv,
# registry.DAEMONS the order, the supervisor starts them all at once and waits; dovecot.prepare
# raises the soft open-files limit and removes a stale pid file, unbound.prepare points the
# resolver at Unbound; Postfix's master starts after postsuper alone, as postfix.MASTER starts it.
# OpenDKIM's Ed25519 twin is left out, as the default settings leave it.
BARE_SCRIPT = """#!/bin/sh
ulimit -n "$(ulimit -Hn)"
printf 'nameserver 127.0.0.1\\noptions edns0 trust-ad\\n' > /etc/resolv.conf
rm -f /run/dovecot/master.pid
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
echo "bare: starting the daemons at $(date +%s.%N)" >&2
/usr/sbin/unbound -d -p -c /etc/unbound/unbound.conf &
/usr/sbin/opendkim -f -x /etc/opendkim.conf &
/usr/sbin/opendmarc -f -c /etc/opendmarc/opendmarc.conf &
/usr/sbin/dovecot -F -c /etc/dovecot/dovecot.conf &
/bin/sh -c '/usr/sbin/postsuper -s -p && exec /usr/lib/postfix/sbin/master -s' &
trap 'kill $(jobs -p) 2>/dev/null' TERM INT
wait
"""
# The script says when it started by its own clock (the kernel's, as the host's): Docker stamps
# a line when it reads it, and it may read the first lines of a start late.
BARE_STARTED = re.compile(r"bare: starting the daemons at (\d+\.\d+)")
STAGE = re.compile(r"boot: (?:boot: )?(.+?) done \((\d+) ms\)")
POSTFIX_STARTED = "postfix/master"  # "postfix/master[N]: daemon started -- version ..."
WARM_START = "nothing changed since this container last started"


@dataclass
class Marks:
    """Seconds from `docker start` to each moment of one warm start."""

    smtp: float
    imap: float
    script_started: float | None = None
    entrypoint: float | None = None  # our entrypoint started (the boot's own figure)
    handover: float | None = None
    postfix: float | None = None
    stages: dict[str, float] = field(default_factory=dict)  # boot stage -> seconds it took
    warm: bool = False  # the warm start: the stages ran beside the daemons


def timed_start(mail: Mail, last_line: str | None = None) -> Marks:
    """One start, timed; `last_line`: the log line to wait for after the greetings (mailboot's
    boot beside the daemons logs its stages after them)."""
    wall = time.time()
    started = time.monotonic()
    docker("start", mail.name)
    smtp, imap = wait_for_greetings(mail, started)
    marks = Marks(smtp, imap)
    since = datetime.datetime.fromtimestamp(wall - 1, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    deadline = time.monotonic() + 15
    while True:
        result = docker("logs", "-t", "--since", since, mail.name, check=False)
        if last_line is None or last_line in result.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for line in (result.stdout + result.stderr).splitlines():
        stamp, _, text = line.partition(" ")
        at = _seconds(stamp) - wall
        if at < 0:
            continue
        if match := BARE_STARTED.search(text):
            marks.script_started = float(match[1]) - wall
        if match := HANDOVER.search(text):
            marks.handover = at
            marks.entrypoint = at - float(match[1])
        if POSTFIX_STARTED in text and "daemon started" in text and marks.postfix is None:
            marks.postfix = at
        if match := STAGE.search(text):
            marks.stages[match[1]] = int(match[2]) / 1000
        marks.warm = marks.warm or WARM_START in text
    return marks


def _seconds(stamp: str) -> float:
    """Docker's RFC 3339 stamp with nanoseconds -> seconds since the epoch."""
    try:
        whole, _, fraction = stamp.rstrip("Z").partition(".")
        moment = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.UTC)
        return moment.timestamp() + float(f"0.{fraction or 0}")
    except ValueError:
        return -1.0


def make_bare(mail: Mail) -> Mail:
    """The stopped container `mail` committed with the bare entrypoint, on a copy of /data."""
    with tempfile.TemporaryDirectory(prefix="mailboot-bench-bare-") as directory:
        script = Path(directory) / "bare-daemons"
        script.write_text(BARE_SCRIPT)
        script.chmod(0o755)
        docker("cp", str(script), f"{mail.name}:/usr/local/bin/bare-daemons")
    docker("commit", "--change", 'ENTRYPOINT ["/usr/bin/tini", "--", '
           '"/usr/local/bin/bare-daemons"]', "--change", "CMD []", "--change",
           "HEALTHCHECK NONE", mail.name, BARE_IMAGE)
    bare = create_mail({}, image=BARE_IMAGE)
    shutil.rmtree(bare.data)
    subprocess.run(["cp", "-a", str(mail.data), str(bare.data)], check=True, timeout=300)
    return bare


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("Bare daemons", __doc__ or "")
    mail = create_mail({"MAIL_DOMAINS": "example.com", "TLS_MODE": "self-signed",
                        "DNS_CHECK": "off"})
    bare: Mail | None = None
    ours: list[Marks] = []
    theirs: list[Marks] = []
    try:
        mail.start_and_wait()
        mail.stop()
        bare = make_bare(mail)
        bare.start_and_wait()  # its first start, as ours was
        bare.stop()
        for _ in range(arguments.runs):
            ours.append(timed_start(mail, last_line="boot: dns records done"))
            mail.stop()
            theirs.append(timed_start(bare))
            bare.stop()
    finally:
        mail.remove()
        if bare is not None:
            bare.remove()
        docker("rmi", BARE_IMAGE, check=False)
    figures += comparison(ours, theirs) + profile(ours, theirs)


def comparison(ours: list[Marks], theirs: list[Marks]) -> list[Figure]:
    rows = []
    for kind, label in (("smtp", "SMTP banner (25)"), ("imap", "IMAP greeting (993)")):
        mine = [getattr(m, kind) for m in ours]
        bare = [getattr(m, kind) for m in theirs]
        rows += [
            Figure(f"warm, 1 domain, bare daemons: docker start → {label}",
                   seconds(median(bare)), "", runs_text(bare)),
            Figure(f"warm, 1 domain, mailboot: docker start → {label}",
                   seconds(median(mine)), "", runs_text(mine)),
            Figure(f"ratio mailboot / bare daemons, {label}",
                   f"{median(mine) / median(bare):.2f}", "≤ 1.2", ""),
        ]
    return rows


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def _marks(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def profile(ours: list[Marks], theirs: list[Marks]) -> list[Figure]:
    """Where a warm start's time goes, each a median over the runs."""
    rows: list[Figure] = []

    def row(name: str, values: Sequence[float | None]) -> None:
        found = _marks(values)
        if found:
            rows.append(Figure(name, seconds(median(found)), "", runs_text(found)))

    warm = sum(m.warm for m in ours)
    rows.append(Figure("mailboot: runs that started warm (the boot's stages beside the daemons)",
                       f"{warm} of {len(ours)}", "", ""))
    row("mailboot: docker start → our entrypoint started", [m.entrypoint for m in ours])
    row("mailboot: entrypoint started → hand-over to the supervisor (interpreter, imports; "
        "warm: the plan checked, the daemons prepared; else the stages below)",
        [_between(m.entrypoint, m.handover) for m in ours])
    where = "beside the daemons" if warm == len(ours) else "before the hand-over when not warm"
    for stage in ours[-1].stages:
        row(f"mailboot: boot stage '{stage}' ({where})", [m.stages.get(stage) for m in ours])
    row("mailboot: docker start → hand-over to the supervisor", [m.handover for m in ours])
    row("mailboot: hand-over → Postfix's master started (the supervisor's start, then the "
        "master's)", [_between(m.handover, m.postfix) for m in ours])
    row("mailboot: docker start → Postfix's master started", [m.postfix for m in ours])
    row("mailboot: Postfix's master started → SMTP banner",
        [m.smtp - m.postfix if m.postfix is not None else None for m in ours])
    row("bare: docker start → the script started (its own clock)",
        [m.script_started for m in theirs])
    row("bare: the script started → Postfix's master started (postsuper -s, then `master -s`)",
        [_between(m.script_started, m.postfix) for m in theirs])
    row("bare: docker start → Postfix's master started", [m.postfix for m in theirs])
    row("bare: Postfix's master started → SMTP banner",
        [m.smtp - m.postfix if m.postfix is not None else None for m in theirs])
    return rows
