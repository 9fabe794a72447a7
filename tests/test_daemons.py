"""The supervisor, with real child processes: a crash stops everything, a stop signal is clean."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailboot.daemons import postfix, registry, unbound
from mailboot.daemons.supervisor import format_syslog
from mailboot.settings.table import Settings
from tests.polling import eventually

ROOT = Path(__file__).resolve().parent.parent

SUPERVISE = """
import sys
from pathlib import Path
from mailboot.daemons.supervisor import Program, Supervisor
daemons = [Program(name, ("sh", "-c", command)) for name, command in
           zip(sys.argv[2::2], sys.argv[3::2])]
raise SystemExit(Supervisor(daemons, Path(sys.argv[1]), stop_timeout=1.0).run())
"""


def start(tmp_path: Path, *daemons: str, script: str = SUPERVISE) -> subprocess.Popen[str]:
    """Run `script` (the supervisor, or the hand-over to it) on `daemons` (name, command, ...),
    until its syslog socket is there."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "log.sock"), *daemons],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 10
    while not (tmp_path / "log.sock").exists():
        assert time.monotonic() < deadline, "the supervisor did not start"
        time.sleep(0.05)
    return process


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_daemon_that_exits_stops_the_others_and_the_container(tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"
    process = start(tmp_path, "sleeper", f"echo $$ > {pid_file}; exec sleep 60",
                    "crasher", "sleep 1; exit 3")
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 1
    assert "crasher exited with code 3; stopping the container" in stderr
    assert not pid_alive(int(pid_file.read_text()))


def test_sigterm_stops_every_daemon_cleanly(tmp_path: Path) -> None:
    process = start(tmp_path, "one", "exec sleep 60", "two", "exec sleep 60")
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "received SIGTERM; stopping the daemons" in stderr
    # Clean: each daemon ended on the SIGTERM it was sent, none had to be killed after the
    # stop timeout (the supervisor says so when it must).
    assert "one stopped (on SIGTERM)" in stderr and "two stopped (on SIGTERM)" in stderr
    assert "did not stop" not in stderr and "killing" not in stderr
    assert "all daemons stopped" in stderr


def test_a_daemon_ignoring_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    process = start(tmp_path, "stubborn", "trap '' TERM; while true; do sleep 0.1; done")
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "stubborn did not stop within 1 s; killing it" in stderr


def test_syslog_messages_reach_stderr(tmp_path: Path) -> None:
    process = start(tmp_path, "quiet", "exec sleep 60")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.sendto(b"<22>Nov 25 10:00:00 opendkim[7]: 4F2A: DKIM-Signature field added",
                      str(tmp_path / "log.sock"))
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert "opendkim[7]: 4F2A: DKIM-Signature field added\n" in stderr


# The warm start's hand-over: this process starts the daemons, then becomes the supervisor.
HAND_OVER = """
import json, os, sys
from mailboot.boot.handover import start_the_daemons
daemons = [[name, ["sh", "-c", command], []] for name, command in
           zip(sys.argv[2::2], sys.argv[3::2])]
supervisor = ["-m", "mailboot.daemons.supervisor", f"--syslog={sys.argv[1]}",
              f"--daemons={json.dumps(daemons)}"]
handed = start_the_daemons(supervisor)
os.execv(sys.executable, [sys.executable, *supervisor, *handed])
"""


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum` (proc(5): SigCgt, a hexadecimal mask)."""
    status = Path(f"/proc/{pid}/status").read_text()
    (mask,) = (line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signum - 1) & 1)


def test_daemons_started_before_the_hand_over_are_supervised_as_its_own(tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"
    process = start(tmp_path, "sleeper", f"echo $$ > {pid_file}; exec sleep 60",
                        "crasher", "sleep 1; exit 3", script=HAND_OVER)
    _, stderr = process.communicate(timeout=20)
    pid = int(pid_file.read_text())
    assert f"started sleeper (pid {pid}, before the hand-over)" in stderr
    assert process.returncode == 1
    assert "crasher exited with code 3; stopping the container" in stderr
    assert "sleeper stopped (on SIGTERM)" in stderr and not pid_alive(pid)


def test_after_the_hand_over_sigterm_stops_them_and_syslog_reaches_stderr(
        tmp_path: Path) -> None:
    process = start(tmp_path, "one", "exec sleep 60", "two", "exec sleep 60", script=HAND_OVER)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.sendto(b"<22>Nov 25 10:00:00 opendmarc[9]: early, before the supervisor ran",
                      str(tmp_path / "log.sock"))
    eventually(lambda: catches(process.pid, signal.SIGTERM), 10,
               "the supervisor, after the exec, to catch SIGTERM", interval=0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "one stopped (on SIGTERM)" in stderr and "two stopped (on SIGTERM)" in stderr
    assert "opendmarc[9]: early, before the supervisor ran\n" in stderr  # the socket came along
    assert "did not stop" not in stderr


def test_format_syslog() -> None:
    assert format_syslog(b"<30>Jan  5 01:02:03 prog[1]: hello\n") == "prog[1]: hello"
    assert format_syslog(b"<30>prog: no timestamp") == "prog: no timestamp"
    assert format_syslog(b"not syslog at all") == "not syslog at all"


STOPPED_BY_COMMAND = """
import sys
from pathlib import Path
from mailboot.daemons.supervisor import Program, Supervisor
marker = sys.argv[2]
loop = f"trap '' TERM; while [ ! -e {marker} ]; do sleep 0.1; done"
daemons = [Program("detached", ("sh", "-c", loop), stop_argv=("touch", marker))]
raise SystemExit(Supervisor(daemons, Path(sys.argv[1]), stop_timeout=5.0).run())
"""


def test_a_daemon_with_a_stop_command_is_stopped_by_it(tmp_path: Path) -> None:
    """Like `postfix stop`: the daemon ignores SIGTERM and leaves when its command says so."""
    marker = tmp_path / "stop-requested"
    process = subprocess.Popen(
        [sys.executable, "-c", STOPPED_BY_COMMAND, str(tmp_path / "log.sock"), str(marker)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert marker.exists()
    assert "did not stop" not in stderr
    assert "detached stopped (exit 0)" in stderr


def test_the_container_resolves_through_unbound_and_the_boot_through_dockers_resolver(
        tmp_path: Path) -> None:
    resolv_conf, saved = tmp_path / "resolv.conf", tmp_path / "run" / "resolv.conf.docker"
    resolv_conf.write_text("nameserver 127.0.0.11\noptions ndots:0\n")
    inode = resolv_conf.stat().st_ino
    assert unbound.boot_resolv_conf(resolv_conf, saved) == resolv_conf  # first start
    unbound.use_local_resolver(resolv_conf, saved)
    assert resolv_conf.read_text() == "nameserver 127.0.0.1\noptions edns0 trust-ad\n"
    assert resolv_conf.stat().st_ino == inode  # rewritten in place: Docker bind-mounts it
    assert saved.read_text() == "nameserver 127.0.0.11\noptions ndots:0\n"
    assert unbound.boot_resolv_conf(resolv_conf, saved) == saved  # the next start
    unbound.use_local_resolver(resolv_conf, saved)  # a restart changes nothing
    assert saved.read_text() == "nameserver 127.0.0.11\noptions ndots:0\n"


def test_the_ed25519_signer_runs_only_when_the_settings_ask_for_it(
    make_settings: Callable[..., Settings],
) -> None:
    rsa = make_settings(MAIL_DOMAINS="example.com")
    both = make_settings(MAIL_DOMAINS="example.com", DKIM_ALGORITHMS="rsa,ed25519")
    assert registry.unwanted(rsa) == ("opendkim-ed25519",)
    assert registry.unwanted(both) == ()


SUPERVISE_WITH_WORKER = """
import sys
from pathlib import Path
from mailboot.daemons.on_demand import WorkerRuns
from mailboot.daemons.supervisor import Program, Supervisor, say
state, runs = Path(sys.argv[2]), Path(sys.argv[3])
stand_in = ("import json, sys, time; from pathlib import Path; "
            "Path(sys.argv[2]).open('a').write(' '.join(sys.argv[3:]) + ';'); "
            "Path(sys.argv[1]).write_text(json.dumps({'next_run': time.time() + 3600, "
            "'watch': {}}))")
worker = WorkerRuns((sys.executable, "-c", stand_in, str(state), str(runs)), state, {}, say)
daemons = [Program("sleeper", ("sleep", "60"))]
raise SystemExit(Supervisor(daemons, Path(sys.argv[1]), stop_timeout=1.0, worker=worker).run())
"""


def test_the_supervisor_runs_the_worker_at_start_and_again_on_sigusr1(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        [sys.executable, "-c", SUPERVISE_WITH_WORKER, str(tmp_path / "log.sock"),
         str(tmp_path / "state.json"), str(runs)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: runs.exists() and runs.read_text() == ";")
        process.send_signal(signal.SIGUSR1)  # `kill -USR1`: run every task now
        wait_until(lambda: runs.read_text() == ";--all;")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "worker run" not in stderr  # no run failed


def wait_until(done: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_the_boot_hands_the_daemons_over_as_json_and_only_those_the_settings_want(
        make_settings: Callable[..., Settings]) -> None:
    from mailboot.daemons import supervisor

    settings = make_settings(MAIL_DOMAINS="example.com")
    wanted = [supervisor.Program(d.name, d.argv, d.stop_argv) for d in registry.DAEMONS
              if d.wanted(settings)]
    back = supervisor.read_programs(supervisor.programs_json(wanted))
    assert [(p.name, p.argv, p.stop_argv) for p in back] == [
        (p.name, p.argv, p.stop_argv) for p in wanted]
    assert "opendkim-ed25519" not in [p.name for p in back]
    assert back[-1].name == "postfix" and back[-1].argv == postfix.MASTER
    for broken in ('[["x", [], []]]', '[["x", "sh", []]]', '{"x": 1}'):
        with pytest.raises(ValueError):
            supervisor.read_programs(broken)



def test_the_supervisor_reads_its_options_as_argparse_did(tmp_path: Path) -> None:
    """`--name=value` and `--name value` alike; the repeatable ones collect; the rest keep their
    defaults (the boot's command line: boot.run.supervisor_argv)."""
    from mailboot.daemons import supervisor

    arguments = supervisor.parse_arguments([
        '--daemons=[["unbound", ["/usr/sbin/unbound", "-d"], []]]', "--http-port", "80",
        "--https-port=443", f"--worker-state={tmp_path / 'state.json'}",
        "--policy-socket=policy=/spool/private/policy", "--policy-socket", "srs=/spool/srs",
        "--policy-tcp=auth=127.0.0.1:8895", "--policy-owner=200:200", "--policy-user=205:205",
        '--policy-command=["/usr/bin/python3", "-m", "mailboot.policy.service"]'])
    assert [(p.name, p.argv, p.stop_argv) for p in arguments.daemons] == [
        ("unbound", ("/usr/sbin/unbound", "-d"), ())]
    assert (arguments.http_port, arguments.https_port) == (80, 443)
    assert arguments.worker_state == tmp_path / "state.json"
    assert arguments.policy_socket == [("policy", "/spool/private/policy"), ("srs", "/spool/srs")]
    assert arguments.policy_tcp == [("auth", "127.0.0.1:8895")]
    assert (arguments.policy_owner, arguments.policy_user) == ("200:200", "205:205")
    assert arguments.policy_command == ["/usr/bin/python3", "-m", "mailboot.policy.service"]
    assert arguments.syslog == Path("/dev/log")
    assert arguments.metrics_port is None and arguments.postfix_log_counts is None
    assert supervisor.parse_arguments([]).daemons == []
    # Empty: no syslog socket (Path("") would be the working directory).
    assert supervisor.parse_arguments(["--syslog="]).syslog is None


@pytest.mark.parametrize(("argv", "said"), [
    (["--bogus=1"], "unrecognized argument: --bogus=1"),
    (["--http-port"], "argument --http-port: expected one argument"),
    (["--http-port=eighty"], "argument --http-port: invalid value 'eighty'"),
    (["--daemons=[1]"], "argument --daemons: invalid value '[1]'"),
    (["--policy-socket=nameonly"], "argument --policy-socket: invalid value 'nameonly'"),
])
def test_a_wrong_supervisor_option_is_said_with_the_usage_and_exits_2(
        argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    from mailboot.daemons import supervisor

    with pytest.raises(SystemExit) as stopped:
        supervisor.parse_arguments(argv)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: python3 -m mailboot.daemons.supervisor")
    assert said in error


def test_the_supervisors_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    from mailboot.daemons import supervisor

    with pytest.raises(SystemExit) as stopped:
        supervisor.parse_arguments(["--help"])
    assert stopped.value.code == 0
    shown = capsys.readouterr().out
    for name in ("--syslog", "--daemons", "--worker-state", "--http-port", "--https-port",
                 "--metrics-port", "--postfix-log-counts", "--policy-socket", "--policy-tcp",
                 "--policy-owner", "--policy-user", "--policy-command"):
        assert f"  {name}\n" in shown

TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
              "timeout inode\n")


def test_what_runs_beside_the_daemons_waits_until_port_25_listens(tmp_path: Path) -> None:
    """Read from the kernel's tables (proc(5)): a connection on 25, or a listener on 2525, is
    not Postfix listening; a listener on 25, over IPv4 or IPv6, is."""
    tcp, tcp6 = tmp_path / "tcp", tmp_path / "tcp6"
    tcp.write_text(TCP_HEADER
                   + "   0: 0100007F:0019 0100007F:D2F0 01 00000000:00000000 00:0 0 0 1 1 0\n"
                   + "   1: 00000000:09DD 00000000:0000 0A 00000000:00000000 00:0 0 0 1 1 0\n")
    tcp6.write_text(TCP_HEADER)
    assert not postfix.wait_until_listening(timeout=0.1, tables=(tcp, tcp6))
    tcp6.write_text(TCP_HEADER + "   0: 00000000000000000000000000000000:0019 "
                    "00000000000000000000000000000000:0000 0A 00000000:00000000 00:0 0 0 1 1 0\n")
    assert postfix.wait_until_listening(timeout=0.1, tables=(tmp_path / "missing", tcp6))
