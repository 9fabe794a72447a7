"""The supervisor's short-lived children: the worker's runs and the servers started on demand.

Both keep the resident supervisor small: it imports neither `ssl` nor the ACME client, and
starts a Python process only when there is something to do.

- `WorkerRuns`: the worker (`python3 -P -m mailboot.worker.tasks --once`) runs a few seconds after
  the start (once the daemons are up), when its state file's `next_run` comes, when a file it
  asked to be watched changes (`mailboot tls rollover`, `mailboot dkim rotate`, a mounted
  certificate: one stat each, every few seconds), and at once on SIGUSR1. A run that fails or
  hangs (killed after `RUN_TIMEOUT`) is tried again after a delay doubling from a minute to an
  hour; the mail never waits for it.
- `Activation`: sockets bound by the supervisor at start; when a client connects and no child
  runs, the child is started with the listening sockets and serves until it has been idle a
  while. While it runs, the supervisor does not watch the sockets. Two use it: ports 80 and 443
  (`HttpActivation`: `python3 -P -m mailboot.web.child`), and Postfix's port-25 policy
  sockets (`python3 -P -m mailboot.policy.service`, as its own user): one process, however many
  smtpd ask at once, and none while no mail arrives. And METRICS_PORT, when set
  (`MetricsActivation`: `python3 -P -m mailboot.diagnose.metrics_child`).

The decisions are pure functions of the time (`next_run_after`, `retry_delay`, ...) so tests
drive them with numbers.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

RUN_TIMEOUT = 600.0  # seconds; a run that takes longer hangs (an ACME order gives up at 120 s)
MAX_SLEEP = 12 * 3600.0  # the worker runs at least this often, whatever it said
MIN_GAP = 5.0  # seconds between two runs at least, so a confused state can't spin
FIRST_RETRY, MAX_RETRY = 60.0, 3600.0
WATCH_EVERY = 5.0  # seconds between two looks at the watched files
# The first run waits this long after the start: it takes about 0.4 s of CPU, which on a small
# machine would delay the daemons starting beside it (Postfix's banner most). The certificate
# and the DNS check can wait a few seconds; the mail should not.
FIRST_RUN_DELAY = 3.0
HTTP_RESTART_FIRST, HTTP_RESTART_MAX = 1.0, 60.0  # after a crashed HTTP child
# Seconds a child gets to end on SIGTERM at a stop: the daemons still need theirs within the
# 10 s Docker waits before SIGKILL.
CHILD_STOP_TIMEOUT = 2.0
Say = Callable[[str], None]


def fingerprint(path: Path) -> str:
    """What changes when a file is replaced or written, or a directory gains or loses an
    entry (inode, modification time, size); "missing" when it isn't there."""
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"


def changed(watch: Mapping[str, str]) -> bool:
    """Whether any watched file differs from the fingerprint the last run saw."""
    return any(fingerprint(Path(path)) != mark for path, mark in watch.items())


def next_run_after(now: float, asked: float | None) -> float:
    """When to run next after a run that asked for `asked` (seconds since the epoch)."""
    if asked is None:
        return now + MAX_SLEEP
    return min(max(asked, now + MIN_GAP), now + MAX_SLEEP)


def retry_delay(failures: int) -> float:
    """The wait after `failures` failed runs in a row (1 or more): 1 min, 2, 4, ... 1 h."""
    return min(FIRST_RETRY * 2.0 ** min(failures - 1, 16), MAX_RETRY)


def read_plan(path: Path) -> tuple[float | None, dict[str, str]] | None:
    """The state file's `next_run` and `watch`; None when it can't be read."""
    try:
        saved = json.loads(path.read_text())
        asked, watch = saved["next_run"], saved["watch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(watch, dict) or not (asked is None or isinstance(asked, int | float)):
        return None
    when = None if asked is None else float(asked)
    return when, {str(k): str(v) for k, v in watch.items()}


class WorkerRuns:
    """When to run the worker, and the run in progress (real state, hence a class)."""

    def __init__(self, argv: Sequence[str], state_file: Path, environment: Mapping[str, str],
                 say: Say, clock: Callable[[], float] = time.time,
                 first_run_delay: float = FIRST_RUN_DELAY) -> None:
        self.argv, self.state_file, self.environment = tuple(argv), state_file, environment
        self.say, self.clock = say, clock
        self.due = clock() + first_run_delay  # the first run, soon: certificates, the DNS check
        self.failures = 0
        self.watch: dict[str, str] = {}
        self.watched_at = clock()
        self.forced = False
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def request(self) -> None:
        """SIGUSR1: run now (every task), or right after the run in progress."""
        self.forced = True

    def tick(self) -> None:
        """Called at least every second: end a hung run, reap a finished one, start a due one."""
        now = self.clock()
        if self.process is not None:
            if self.process.poll() is None:
                if now - self.started > RUN_TIMEOUT:
                    self.say(f"worker run (pid {self.process.pid}) still busy after "
                             f"{RUN_TIMEOUT:.0f} s; killing it")
                    self.process.kill()
                    self.process.wait()
                    self._failed(now, "was killed")
                return
            self._finished(now, self.process.returncode)
        if self.forced or now >= self.due or self._watched_changed(now):
            self._start(now)

    def seconds_to_next(self) -> float:
        return max(0.0, self.due - self.clock())

    def _watched_changed(self, now: float) -> bool:
        if now - self.watched_at < WATCH_EVERY:
            return False
        self.watched_at = now
        return changed(self.watch)

    def _start(self, now: float) -> None:
        argv = (*self.argv, "--all") if self.forced else self.argv
        self.forced = False
        self.started = now
        try:
            self.process = subprocess.Popen(argv, env=dict(self.environment))
        except OSError as error:
            self._failed(now, f"could not start: {error}")

    def _finished(self, now: float, code: int) -> None:
        self.process = None
        plan = read_plan(self.state_file) if code == 0 else None
        if plan is None:
            why = f"ended with {how_it_ended(code)}" if code else "left no readable state"
            self._failed(now, why)
            return
        self.failures = 0
        asked, self.watch = plan
        self.due = next_run_after(now, asked)

    def _failed(self, now: float, why: str) -> None:
        self.process = None
        self.failures += 1
        delay = retry_delay(self.failures)
        self.due = now + delay
        self.say(f"worker run {why}; trying again in {delay / 60:.0f} min (mail is not "
                 "affected; see the log above)")

    def stop(self) -> None:
        stop_child(self.process)


class Activation:
    """Listening sockets served by a child started on the first connection (socket activation,
    real state): the child inherits them, serves until it has been idle a while, and ends."""

    def __init__(self, label: str, sockets: Mapping[str, socket.socket], command: Sequence[str],
                 environment: Mapping[str, str], say: Say, idle: float | None = None,
                 user: tuple[int, int] | None = None) -> None:
        self.label, self.sockets, self.command = label, dict(sockets), tuple(command)
        self.environment, self.say, self.idle, self.user = environment, say, idle, user
        self.process: subprocess.Popen[bytes] | None = None
        self.failures = 0
        self.not_before = 0.0  # monotonic; after a crash, wait a little before the next

    def watched(self) -> list[socket.socket]:
        """The sockets to watch now: none while a child serves them or after a crash."""
        self.reap()
        if self.process is not None or time.monotonic() < self.not_before:
            return []
        return list(self.sockets.values())

    def argv(self) -> list[str]:
        argv = [*self.command]
        argv += [f"--{name}-fd={sock.fileno()}" for name, sock in self.sockets.items()]
        return argv + ([f"--idle={self.idle}"] if self.idle is not None else [])

    def start(self) -> None:
        """A client is waiting: start the child that serves it (as `user`, when given)."""
        if self.process is not None:
            return
        uid, gid = self.user if self.user is not None else (None, None)
        try:
            self.process = subprocess.Popen(
                self.argv(), env=dict(self.environment),
                pass_fds=[sock.fileno() for sock in self.sockets.values()],
                user=uid, group=gid, extra_groups=[] if self.user is not None else None)
        except OSError as error:
            self.say(f"could not start {self.label}: {error}")
            self._crashed()

    def reap(self) -> None:
        if self.process is None or self.process.poll() is None:
            return
        code, self.process = self.process.returncode, None
        if code == 0:
            self.failures = 0
            return
        self.say(f"{self.label} ended with {how_it_ended(code)}; a new one starts with the next "
                 "connection (see the log above for why)")
        self._crashed()

    def _crashed(self) -> None:
        self.failures += 1
        delay = min(HTTP_RESTART_FIRST * 2.0 ** min(self.failures - 1, 16), HTTP_RESTART_MAX)
        self.not_before = time.monotonic() + delay

    def stop(self) -> None:
        stop_child(self.process)


class HttpActivation(Activation):
    """Ports 80 and 443: the HTTP child (`mailboot.web.child`) serves both."""

    def __init__(self, sockets: Mapping[str, socket.socket], environment: Mapping[str, str],
                 say: Say, idle: float | None = None,
                 module: str = "mailboot.web.child") -> None:
        super().__init__("the HTTP child for ports 80 and 443", sockets,
                         (sys.executable, "-P", "-m", module), environment, say, idle)


class MetricsActivation(Activation):
    """METRICS_PORT: the metrics child (`mailboot.diagnose.metrics_child`) answers scrapes and
    ends when none came for a while (a scrape every 15 s to 1 min keeps one running)."""

    def __init__(self, sock: socket.socket, environment: Mapping[str, str], say: Say,
                 idle: float | None = None,
                 module: str = "mailboot.diagnose.metrics_child") -> None:
        super().__init__("the metrics child", {"metrics": sock},
                         (sys.executable, "-P", "-m", module), environment, say, idle)


def stop_child(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after CHILD_STOP_TIMEOUT."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=CHILD_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def how_it_ended(returncode: int) -> str:
    """`exit 0`, `exit 3`, or the signal's name (Popen reports a signal as its negative)."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        return f"on {signal.Signals(-returncode).name}"
    except ValueError:
        return f"on signal {-returncode}"
