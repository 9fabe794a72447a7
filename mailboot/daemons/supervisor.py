"""A small supervisor for the mail daemons: run them in the foreground, stop them all together.

Why our own instead of supervisord: we want the opposite of a restart loop. When a daemon exits
for good, the supervisor stops the others and exits non-zero, so the container stops and Docker's
restart policy (and `docker ps`) make the crash visible, instead of a daemon restarting forever
behind a healthy-looking container. It also receives syslog messages on /dev/log (OpenDKIM can
only log there) and writes them to stderr, so every daemon's log reaches `docker logs`.

This module is run as `python3 -m mailboot.daemons.supervisor` after the boot execs it: a fresh
process that imports little (the standard library's light modules and `on_demand`: never
`ssl`, the ACME client, dnspython, nor even `dataclasses`, `typing` or `logging`), so the
supervisor, the one Python process that stays, is small for the container's whole life. The
boot hands it the daemons to run (`registry.DAEMONS` that the settings call for) as JSON on its
command line; it runs them, and the short children of `on_demand`: the worker's runs when they
are due, and the server of ports 80 and 443 when a client connects (it binds those ports).
With METRICS_PORT it binds that port too (the metrics child, on demand), and passes Postfix's
log (its standard output) through a thread that counts deliveries (`base.maillog`); without,
Postfix writes to the container's output directly and no thread runs.

What it imports is what it resides with: each module stays in memory for the container's life.
So its options are read by hand (`parse_arguments`, not argparse), the log counting
(`base.maillog`, which brings `base.files` and `shutil`) is imported only with METRICS_PORT,
and the boot runs it with `-S` (no `site`: it needs only the standard library and our package,
on PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

from mailboot.base.sockets import listening_socket, syslog_socket, unix_listening_socket
from mailboot.daemons.on_demand import (
    Activation,
    HttpActivation,
    MetricsActivation,
    WorkerRuns,
    how_it_ended,
)

TYPE_CHECKING = False  # as typing's, without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import NoReturn

    from mailboot.base.maillog import Tally  # imported where it runs: only with METRICS_PORT

STOP_TIMEOUT = 8.0  # seconds; Docker sends SIGKILL 10 s after SIGTERM by default
EXIT_DAEMON_DIED = 1
# RFC 3164 §4.1: "<PRI>TIMESTAMP HOSTNAME TAG: MSG" (glibc omits the HOSTNAME on /dev/log).
_SYSLOG = re.compile(rb"^<\d{1,3}>(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )?(.*)$", re.DOTALL)
# The daemons' environment: never the settings (passwords, keys). As `commands.CHILD_ENV`, which
# the supervisor doesn't import (it is for the boot's commands).
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class Program:
    """What the supervisor runs: a daemon's name, argv, and the command that stops it when
    SIGTERM is not enough (empty: SIGTERM). The boot makes them from `registry.DAEMONS`."""

    __slots__ = ("argv", "name", "stop_argv")

    def __init__(self, name: str, argv: Sequence[str], stop_argv: Sequence[str] = ()) -> None:
        self.name, self.argv, self.stop_argv = name, tuple(argv), tuple(stop_argv)


def programs_json(programs: Sequence[Program]) -> str:
    return json.dumps([[p.name, list(p.argv), list(p.stop_argv)] for p in programs])


def read_programs(text: str) -> list[Program]:
    """The programs of `programs_json`. Raises ValueError for anything else."""
    programs = []
    for entry in json.loads(text):
        name, argv, stop_argv = entry
        if not (isinstance(name, str) and _texts(argv) and _texts(stop_argv) and argv):
            raise ValueError(f"not a program: {entry!r}")
        programs.append(Program(name, argv, stop_argv))
    return programs


def _texts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)




class Supervisor:
    """Runs daemons until one exits or a stop signal arrives; real state, hence a class."""

    def __init__(self, daemons: Sequence[Program], syslog_path: Path | None,
                 stop_timeout: float = STOP_TIMEOUT, worker: WorkerRuns | None = None,
                 activations: Sequence[Activation] = (),
                 counted: tuple[str, Tally] | None = None,
                 adopted: Mapping[str, int] | None = None, syslog_fd: int | None = None) -> None:
        self.daemons = tuple(daemons)
        self.counted = counted  # a daemon whose standard output (its log) is counted, and how
        self.worker, self.activations = worker, tuple(activations)
        self.syslog_path = syslog_path
        # Started before this process became the supervisor (the warm start): daemon -> pid, and
        # the syslog socket it made for them.
        self.adopted, self.syslog_fd = dict(adopted or {}), syslog_fd
        self.stop_timeout = stop_timeout
        self.processes: dict[str, subprocess.Popen[bytes] | Adopted] = {}
        self.stop_requested: int | None = None
        self.wakeup_read, self.wakeup_write = socket.socketpair()

    def run(self) -> int:
        """Start every daemon, wait, stop them all; return the exit code for the container."""
        self._install_signal_handlers()
        syslog = self._open_syslog()
        try:
            for daemon in self.daemons:
                if daemon.name in self.adopted:
                    self.processes[daemon.name] = Adopted(self.adopted[daemon.name])
                    say(f"started {daemon.name} (pid {self.adopted[daemon.name]}, before the "
                        "hand-over)")
                else:
                    self.processes[daemon.name] = self._start(daemon)
                    say(f"started {daemon.name} (pid {self.processes[daemon.name].pid})")
            code = self._wait(syslog)
        finally:
            self._stop_children()
            self._stop_all()
            if syslog is not None:
                _drain_syslog(syslog)
                syslog.close()
        return code

    def _start(self, daemon: Program) -> subprocess.Popen[bytes]:
        if self.counted is None or self.counted[0] != daemon.name:
            return subprocess.Popen(daemon.argv, env=dict(CHILD_ENV))
        process = subprocess.Popen(daemon.argv, env=dict(CHILD_ENV), stdout=subprocess.PIPE)
        if process.stdout is not None:  # always, with stdout=PIPE
            threading.Thread(target=pass_through, args=(process.stdout.fileno(), self.counted[1]),
                             name=f"{daemon.name}-log", daemon=True).start()
        return process

    def _install_signal_handlers(self) -> None:
        self.wakeup_write.setblocking(False)
        signal.set_wakeup_fd(self.wakeup_write.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._request_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake select() via the fd
        signal.signal(signal.SIGUSR1, self._request_worker_run)

    def _request_worker_run(self, _signum: int, _frame: FrameType | None) -> None:
        if self.worker is not None:
            self.worker.request()

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_requested = signum

    def _open_syslog(self) -> socket.socket | None:
        if self.syslog_fd is not None:
            return socket.socket(fileno=self.syslog_fd)
        if self.syslog_path is None:
            return None
        return syslog_socket(self.syslog_path)

    def _wait(self, syslog: socket.socket | None) -> int:
        while True:
            listening = {sock: activation for activation in self.activations
                         for sock in activation.watched()}
            readable = [self.wakeup_read, *([syslog] if syslog else []), *listening]
            ready, _, _ = select.select(readable, [], [], 1.0)
            if self.wakeup_read in ready:
                self.wakeup_read.recv(4096)
            if syslog is not None and syslog in ready:
                _drain_syslog(syslog)
            for sock in ready:
                if sock in listening:
                    listening[sock].start()  # a client waits: start what serves it
            if self.stop_requested is not None:
                say(f"received {signal.Signals(self.stop_requested).name}; stopping the daemons")
                return 0
            for name, process in self.processes.items():
                if process.poll() is not None:
                    say(f"{name} exited with code {process.returncode}; stopping the container "
                        "so that Docker's restart policy acts (see the log above for why)")
                    return EXIT_DAEMON_DIED
            if self.worker is not None:
                self.worker.tick()

    def _stop_children(self) -> None:
        for child in (*self.activations, self.worker):
            if child is not None:
                child.stop()

    def _stop_all(self) -> None:
        running = {n: p for n, p in self.processes.items() if p.poll() is None}
        stop_commands = {d.name: d.stop_argv for d in self.daemons if d.stop_argv}
        for name, process in running.items():
            if name in stop_commands:
                _run_stop_command(name, stop_commands[name])
            else:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name, process in running.items():
            try:
                code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop within {self.stop_timeout:.0f} s; killing it")
                process.kill()
                process.wait()
            else:
                say(f"{name} stopped ({how_it_ended(code)})")
        if running:
            say("all daemons stopped")


class Adopted:
    """A daemon started by this process before it became the supervisor (the warm start,
    `boot.handover.start_the_daemons`): still its child, so waited for as Popen waits, with the
    part of Popen's interface the supervisor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not ours, or reaped already: gone, its code unknown
                self.returncode = EXIT_DAEMON_DIED
            else:
                if done:  # -N: ended by signal N, as Popen says it
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.02)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def pass_through(fd: int, tally: Tally, out: int = 1) -> None:
    """Copy a daemon's output to ours unchanged, counting its log lines (a thread, so the log
    flows while the main loop waits or stops the daemons); ends when the daemon closes it."""
    from mailboot.base.maillog import WRITE_EVERY

    while True:
        ready, _, _ = select.select([fd], [], [], WRITE_EVERY)
        if not ready:  # quiet: what the last burst counted is saved now
            tally.save(time.monotonic(), force=True)
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(out, view):]
            except OSError:
                break  # nobody reads our output: keep counting
        tally.feed(data)
        tally.save(time.monotonic())
    tally.save(time.monotonic(), force=True)


def _run_stop_command(name: str, argv: tuple[str, ...]) -> None:
    try:
        subprocess.run(argv, env=dict(CHILD_ENV), timeout=STOP_TIMEOUT / 2, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        say(f"stopping {name} with {' '.join(argv)} failed: {error}")


def _drain_syslog(sock: socket.socket) -> None:
    while True:
        try:
            datagram = sock.recv(8192, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        sys.stderr.write(format_syslog(datagram) + "\n")
        sys.stderr.flush()


def format_syslog(datagram: bytes) -> str:
    """`<22>Nov 25 10:00:00 opendkim[7]: msg` -> `opendkim[7]: msg`."""
    match = _SYSLOG.match(datagram.rstrip(b"\n\x00"))
    message = match.group(1) if match else datagram
    return message.decode("utf-8", errors="replace")


def say(message: str) -> None:
    sys.stderr.write(f"mailboot: supervisor: {message}\n")
    sys.stderr.flush()


def bind_ports(ports: Mapping[str, int]) -> dict[str, socket.socket]:
    """Listening sockets for the on-demand children, bound now (as root, before any daemon); a port
    that can't be had is said and left out: mail never depends on it."""
    bound = {}
    for name, port in ports.items():
        try:
            bound[name] = listening_socket("", port)
        except OSError as error:
            say(f"can't listen on port {port} ({name}): {error}; it stays closed")
    return bound


class Arguments:
    """The supervisor's options, as `parse_arguments` reads them; the defaults are these."""

    def __init__(self) -> None:
        self.syslog: Path | None = Path("/dev/log")
        self.daemons: list[Program] = []
        self.worker_state: Path | None = None
        self.http_port: int | None = None
        self.https_port: int | None = None
        self.metrics_port: int | None = None
        self.postfix_log_counts: Path | None = None
        self.policy_socket: list[tuple[str, str]] = []
        self.policy_tcp: list[tuple[str, str]] = []
        self.policy_owner: str | None = None
        self.policy_user: str | None = None
        self.policy_command: list[str] = []
        self.adopt: list[tuple[str, int]] = []
        self.syslog_fd: int | None = None


# Each option: how its value is read (a ValueError refuses it), whether it repeats, its help.
# Read by hand, not with argparse: argparse and what it loads (gettext, and shutil with bz2 and
# lzma for the terminal's width) would stay in the supervisor's memory for the container's life,
# for one parse at its start.
OPTIONS: dict[str, tuple[Callable[[str], object], bool, str]] = {
    "--syslog": (lambda text: Path(text) if text else None, False,
                 "where to receive syslog messages (empty: don't)"),
    "--daemons": (read_programs, False,
                  "the daemons to run, in start order, as JSON: [[name, argv, stop_argv], ...]"),
    "--worker-state": (Path, False, "run the worker, planning its runs by this state file"),
    "--http-port": (int, False, "serve HTTP here, on demand (80)"),
    "--https-port": (int, False, "serve HTTPS here, on demand (443)"),
    "--metrics-port": (int, False, "serve the metrics here, on demand (METRICS_PORT)"),
    "--postfix-log-counts": (Path, False, "pass Postfix's log (its standard output) through, "
                             "counting deliveries into this file for the metrics"),
    "--policy-socket": (lambda text: named(text), True,
                        "name=path: a Unix socket the policy process serves on demand, its fd "
                        "handed over as --name-fd (repeatable)"),
    "--policy-tcp": (lambda text: named(text), True,
                     "name=127.0.0.1:port: the same for a loopback TCP socket (repeatable)"),
    "--policy-owner": (str, False, "user:group owning the Unix sockets (postfix)"),
    "--policy-user": (str, False, "user:group the policy process runs as"),
    "--policy-command": (json.loads, False,
                         "the policy process's argv as JSON (the sockets' fds are added)"),
    "--adopt": (lambda text: named_pid(text), True,
                "name=pid: a daemon of --daemons this process started before it became the "
                "supervisor (the warm start), supervised as if started here (repeatable)"),
    "--syslog-fd": (int, False, "the syslog socket, already made and bound (with --adopt)"),
}
USAGE = "usage: python3 -m mailboot.daemons.supervisor [--option=value ...]"


def parse_arguments(argv: Sequence[str]) -> Arguments:
    """The options of `argv`, each as `--name=value` or `--name value`, the repeatable ones as
    often as given. -h/--help prints them and exits 0; anything else (an unknown option, a
    missing or unreadable value) is said with the usage and exits 2, as argparse did."""
    arguments, words = Arguments(), list(argv)
    while words:
        word = words.pop(0)
        if word in ("-h", "--help"):
            sys.stdout.write(f"{USAGE}\n\noptions:\n" + "".join(
                f"  {name}\n      {help_text}\n" for name, (_, _, help_text) in OPTIONS.items()))
            raise SystemExit(0)
        name, equals, value = word.partition("=")
        if name not in OPTIONS:
            _usage_error(f"unrecognized argument: {word}")
        if not equals:
            if not words:
                _usage_error(f"argument {name}: expected one argument")
            value = words.pop(0)
        read, repeatable, _ = OPTIONS[name]
        try:
            parsed = read(value)
        except (TypeError, ValueError) as error:  # as argparse: `[1]` is no program list
            _usage_error(f"argument {name}: invalid value {value!r}: {error}")
        attribute = name[2:].replace("-", "_")
        if repeatable:
            getattr(arguments, attribute).append(parsed)
        else:
            setattr(arguments, attribute, parsed)
    return arguments


def _usage_error(message: str) -> NoReturn:
    sys.stderr.write(f"{USAGE}\npython3 -m mailboot.daemons.supervisor: error: {message}\n")
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    syslog = arguments.syslog
    ports = {name: port for name, port in (("http", arguments.http_port),
                                           ("https", arguments.https_port)) if port is not None}
    sockets = bind_ports(ports)
    # Our own children need the settings: they get the environment the boot was given.
    activations: list[Activation] = []
    if sockets:
        activations.append(HttpActivation(sockets, dict(os.environ), say))
    if arguments.policy_socket or arguments.policy_tcp:
        activations += policy_activation(arguments)
    if arguments.metrics_port is not None:
        activations += [MetricsActivation(sock, dict(os.environ), say)
                        for sock in bind_ports({"metrics": arguments.metrics_port}).values()]
    counted = None
    if arguments.postfix_log_counts is not None:
        from mailboot.base.maillog import Tally

        counted = ("postfix", Tally(arguments.postfix_log_counts))
    worker = None
    if arguments.worker_state is not None:
        worker = WorkerRuns((sys.executable, "-P", "-m", "mailboot.worker.tasks", "--once"),
                            arguments.worker_state, dict(os.environ), say)
    return Supervisor(arguments.daemons, syslog, worker=worker, activations=activations,
                      counted=counted, adopted=dict(arguments.adopt),
                      syslog_fd=arguments.syslog_fd).run()


def policy_activation(arguments: Arguments) -> list[Activation]:
    """The policy process's sockets, bound here before the daemons start; the policy process
    (one, however many daemons ask) starts on the first question, as its own user, and ends when
    idle. Without the sockets smtpd would wait for the policy timeout at every recipient. A
    socket that can't be bound is said and left out: its daemon goes without our answers (each
    has a default that lets mail through or tries again later, main.cf)."""
    sockets: dict[str, socket.socket] = {}
    for name, path in arguments.policy_socket:
        try:
            sockets[name] = unix_listening_socket(Path(path), _ids(arguments.policy_owner),
                                                  mode=0o660)
        except OSError as error:
            say(f"can't listen on {path}: {error}; its daemon goes without the {name} answers")
    for name, address in arguments.policy_tcp:
        host, _, port = address.rpartition(":")
        try:
            sockets[name] = listening_socket(host, int(port))
        except OSError as error:
            say(f"can't listen on {address}: {error}; its daemon goes without the {name} "
                "answers")
    if not sockets:
        return []
    return [Activation("the policy process", sockets, arguments.policy_command,
                       dict(os.environ), say, user=_ids(arguments.policy_user))]


def named(text: str) -> tuple[str, str]:
    """`name=value` -> (name, value)."""
    name, equals, value = text.partition("=")
    if not (name and equals and value):
        raise ValueError(f"not name=value: {text!r}")
    return name, value


def named_pid(text: str) -> tuple[str, int]:
    """`name=pid` -> (name, pid)."""
    name, pid = named(text)
    return name, int(pid)


def _ids(text: str | None) -> tuple[int, int] | None:
    """`uid:gid` -> (uid, gid); None for nothing."""
    if not text:
        return None
    uid, _, gid = text.partition(":")
    return int(uid), int(gid)


if __name__ == "__main__":
    os.umask(0o022)
    raise SystemExit(main())
