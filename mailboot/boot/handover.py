"""The hand-over: the work the boot leaves to run beside the daemons, and the exec of the
supervisor. Light on purpose: the warm start (`run.start_warm`) ends the same way."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mailboot.base.programs import CHILD_ENV
from mailboot.base.sockets import syslog_socket

log = logging.getLogger(__name__)


def beside_the_daemons(job: Callable[[], None], what: str,
                       after: Callable[[], object] = lambda: None) -> None:
    """Run `job` in a grandchild of this process, once `after` returns; return at once.

    This process is about to exec the supervisor, which must not find an unknown child: the
    grandchild is orphaned at birth, so PID 1 (tini) reaps it. It runs on CPU time nothing else
    wants (SCHED_IDLE, sched(7)), so the daemons it runs beside start as fast as they would
    alone. `what` names the job in the log if it fails.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    if os.fork():
        os._exit(0)  # the child's only task: leave the grandchild an orphan
    code = 1
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # lowering: no privilege
        after()
        job()
        code = 0
    except Exception:
        log.exception("boot: %s failed", what)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never back into the caller: the rest is the parent's


# The daemons started before the hand-over, kept until the exec: a Popen that is dropped while its
# process runs is reaped by the next Popen (subprocess._cleanup), and the supervisor must be the
# one to reap them.
_STARTED: list[subprocess.Popen[bytes]] = []


def start_the_daemons(supervisor: Sequence[str]) -> list[str]:
    """Start the daemons of the supervisor's command line (`--daemons`, in its order, with its
    environment and syslog socket), and return the options that hand them over to it
    (`--adopt=NAME=PID`, `--syslog-fd=FD`).

    The warm start does this just before it becomes the supervisor, so that the supervisor's own
    start (an interpreter, its imports, its sockets: some 25 ms) runs beside the daemons instead
    of before them; they remain this process's children through the exec. A daemon whose output
    the supervisor reads (Postfix's, with --postfix-log-counts) is left for it to start.
    """
    options = dict(word.partition("=")[::2] for word in supervisor if word.startswith("--"))
    handed: list[str] = []
    syslog = options.get("--syslog", "/dev/log")
    sock = syslog_socket(Path(syslog)) if syslog else None
    counted = "postfix" if "--postfix-log-counts" in options else None
    try:
        for name, argv, _stop in json.loads(options["--daemons"]):
            if name != counted:
                _STARTED.append(subprocess.Popen(argv, env=dict(CHILD_ENV)))
                handed.append(f"--adopt={name}={_STARTED[-1].pid}")
    except OSError:  # the full boot follows: it must find none of them running
        for process in _STARTED:
            process.kill()
            process.wait()
        _STARTED.clear()
        if sock is not None:
            sock.close()
        raise
    if sock is not None:  # inheritable only now: the daemons must not hold it
        os.set_inheritable(sock.fileno(), True)
        handed.append(f"--syslog-fd={sock.detach()}")
    return handed


def hand_over(argv: Sequence[str]) -> None:
    """Replace this process with the supervisor (`argv`, run by this Python)."""
    log.info("boot: handing over to the supervisor, %.3f s after the entrypoint started",
             seconds_since_process_start())
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv])  # noqa: S606


def seconds_since_process_start() -> float:
    """Wall time since this process began, interpreter start-up and imports included.

    proc(5): field 22 of /proc/self/stat is the start time in clock ticks after boot, which
    CLOCK_BOOTTIME measures too.
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22; the split starts at 3
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started
