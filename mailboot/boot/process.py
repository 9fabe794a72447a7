"""The boot as a process: its log, the work it leaves to run beside the daemons, and the hand-over
to the supervisor. Light on purpose: the warm start (`warmstart`) begins and ends the same way."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mailboot.base import logs

log = logging.getLogger(__name__)


def configure_logging() -> None:
    """`mailboot: ` lines on stderr (`logs`), for everything below the `mailboot` logger."""
    root = logging.getLogger("mailboot")
    root.handlers[:] = [logs.stderr_handler()]
    root.setLevel(logging.INFO)
    root.propagate = False


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
