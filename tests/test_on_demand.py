"""The supervisor's short children: when the worker runs (pure decisions with numbers, then a
real run of a stand-in), and ports 80 and 443 handed to a real HTTP child on a connection."""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailboot.base.paths import Paths
from mailboot.base.sockets import listening_socket
from mailboot.daemons import on_demand
from mailboot.daemons.on_demand import HttpActivation, WorkerRuns
from mailboot.dns import names
from mailboot.settings.table import Settings
from mailboot.standards import mtasts
from mailboot.tls import certificates
from tests.conftest import NOW

HOUR = 3600.0


# --- the decisions ------------------------------------------------------------------------------

def test_the_next_run_is_when_the_worker_asked_within_bounds() -> None:
    assert on_demand.next_run_after(1000.0, 1000.0 + HOUR) == 1000.0 + HOUR
    assert on_demand.next_run_after(1000.0, 10.0) == 1000.0 + on_demand.MIN_GAP  # no spinning
    assert on_demand.next_run_after(1000.0, 1000.0 + 90 * 86400) == 1000.0 + on_demand.MAX_SLEEP
    assert on_demand.next_run_after(1000.0, None) == 1000.0 + on_demand.MAX_SLEEP


def test_failed_runs_are_retried_after_a_minute_doubling_to_an_hour() -> None:
    assert [on_demand.retry_delay(n) for n in range(1, 9)] == [
        60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert on_demand.retry_delay(10_000) == 3600


def test_the_plan_comes_from_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "worker-state.json"
    assert on_demand.read_plan(state) is None
    state.write_text(json.dumps({"next_run": 12.5, "watch": {"/a": "missing"}, "tasks": {}}))
    assert on_demand.read_plan(state) == (12.5, {"/a": "missing"})
    state.write_text(json.dumps({"next_run": "soon", "watch": {}}))
    assert on_demand.read_plan(state) is None


def test_a_watched_file_that_changes_is_noticed(tmp_path: Path) -> None:
    request = tmp_path / "rollover"
    watch = {str(request): on_demand.fingerprint(request)}
    assert watch[str(request)] == "missing" and not on_demand.changed(watch)
    request.write_text("3 1 1 ab\n")
    assert on_demand.changed(watch)


# --- runs of a stand-in worker ------------------------------------------------------------------

STAND_IN = """
import json, sys
from pathlib import Path
state, outcome, watched = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = state.with_suffix(".runs")
runs.write_text(runs.read_text() + " ".join(sys.argv[4:]) + ";" if runs.exists() else
                " ".join(sys.argv[4:]) + ";")
if outcome == "fail":
    raise SystemExit(3)
state.write_text(json.dumps({"next_run": float(outcome), "watch": {watched: "missing"}}))
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def stand_in(tmp_path: Path, outcome: str, clock: Clock, said: list[str],
             first_run_delay: float = 0.0) -> tuple[WorkerRuns, Path]:
    state = tmp_path / "worker-state.json"
    argv = (sys.executable, "-c", STAND_IN, str(state), outcome, str(tmp_path / "request"))
    return (WorkerRuns(argv, state, {}, said.append, clock, first_run_delay),
            state.with_suffix(".runs"))


def finish(runs: WorkerRuns) -> None:
    assert runs.process is not None
    runs.process.wait(timeout=30)
    runs.tick()


def test_the_worker_runs_soon_after_the_start_then_when_it_asked(tmp_path: Path) -> None:
    clock, said = Clock(), list[str]()
    runs, log = stand_in(tmp_path, str(1_000_000.0 + HOUR), clock, said,
                         on_demand.FIRST_RUN_DELAY)
    runs.tick()
    assert runs.process is None  # the daemons start first
    clock.now += on_demand.FIRST_RUN_DELAY
    runs.tick()
    finish(runs)
    assert log.read_text() == ";" and runs.process is None
    assert runs.due == 1_000_000.0 + HOUR
    assert runs.seconds_to_next() == HOUR - on_demand.FIRST_RUN_DELAY
    clock.now = 1_000_000.0 + HOUR - 1
    runs.tick()
    assert runs.process is None  # not yet
    clock.now += 1
    runs.tick()
    finish(runs)
    assert log.read_text() == ";;" and said == []


def test_a_watched_file_or_sigusr1_runs_it_early_and_sigusr1_steps_every_task(
        tmp_path: Path) -> None:
    clock, said = Clock(), list[str]()
    runs, log = stand_in(tmp_path, str(1_000_000.0 + HOUR), clock, said)
    runs.tick()
    finish(runs)
    clock.now += on_demand.WATCH_EVERY
    (tmp_path / "request").write_text("rollover\n")  # `mailboot tls rollover`
    runs.tick()
    finish(runs)
    assert log.read_text() == ";;"
    runs.request()  # SIGUSR1
    runs.tick()
    finish(runs)
    assert log.read_text() == ";;--all;"


def test_a_failing_run_is_said_and_retried_later(tmp_path: Path) -> None:
    clock, said = Clock(), list[str]()
    runs, _ = stand_in(tmp_path, "fail", clock, said)
    runs.tick()
    finish(runs)
    assert said == ["worker run ended with exit 3; trying again in 1 min (mail is not affected; "
                    "see the log above)"]
    assert runs.due == clock.now + 60
    clock.now += 60
    runs.tick()
    finish(runs)
    assert runs.due == clock.now + 120 and runs.failures == 2


def test_a_hanging_run_is_killed(tmp_path: Path) -> None:
    clock, said = Clock(), list[str]()
    runs = WorkerRuns((sys.executable, "-c", "import time; time.sleep(60)"),
                      tmp_path / "state.json", {}, said.append, clock, first_run_delay=0)
    runs.tick()
    clock.now += on_demand.RUN_TIMEOUT + 1
    runs.tick()
    assert runs.process is None and runs.failures == 1
    assert said[0].endswith(f"still busy after {on_demand.RUN_TIMEOUT:.0f} s; killing it")


# --- socket activation --------------------------------------------------------------------------

@pytest.fixture
def served(make_settings: Callable[..., Settings], data_dir: Path) -> Iterator[
        tuple[HttpActivation, dict[str, int], list[str]]]:
    """Both ports bound here, as the supervisor does, and the real child's environment."""
    environment = {"DATA_DIR": str(data_dir), "MAIL_DOMAINS": "example.com",
                   "PUBLIC_IPV4": "203.0.113.25"}
    settings = make_settings(**environment)
    certificates.ensure_certificate(Paths(data_dir), names.tls_names(settings), NOW)
    sockets = {"http": listening_socket("127.0.0.1", 0),
               "https": listening_socket("127.0.0.1", 0)}
    ports = {name: sock.getsockname()[1] for name, sock in sockets.items()}
    said: list[str] = []
    activation = HttpActivation(sockets, environment, said.append, idle=1.0)
    yield activation, ports, said
    activation.stop()
    for sock in sockets.values():
        sock.close()


def wait_for_a_client(activation: HttpActivation, timeout: float = 10.0) -> None:
    """The supervisor's loop, reduced to the sockets."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watched = activation.watched()
        if not watched:
            time.sleep(0.05)
            continue
        ready, _, _ = select.select(watched, [], [], 0.1)
        if ready:
            activation.start()
            return
    raise AssertionError("no connection seen")


def test_a_connection_starts_the_child_which_serves_both_ports_and_ends_when_idle(
        served: tuple[HttpActivation, dict[str, int], list[str]]) -> None:
    activation, ports, said = served
    assert len(activation.watched()) == 2  # nothing runs: the supervisor watches both
    client = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=30)
    client.request("GET", "/", headers={"Host": "mail.example.com"})
    wait_for_a_client(activation)
    assert activation.watched() == []  # the child has them now
    answer = client.getresponse()
    assert (answer.status, answer.getheader("Location")) == (301, "https://mail.example.com/")
    answer.read()  # and so close the socket: the server waits for the client's close
    client.close()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    secure = http.client.HTTPSConnection("127.0.0.1", ports["https"], timeout=30,
                                         context=context)
    secure.request("GET", mtasts.POLICY_PATH, headers={"Host": "mta-sts.example.com"})
    policy = secure.getresponse()
    assert policy.status == 200 and b"mode: enforce" in policy.read()
    secure.close()
    assert activation.process is not None
    activation.process.wait(timeout=15)  # idle for a second: it ends
    assert activation.watched() != [] and said == []


def test_a_crashed_child_is_said_and_the_next_connection_starts_another(
        served: tuple[HttpActivation, dict[str, int], list[str]]) -> None:
    activation, ports, said = served
    serving = activation.command
    activation.command = (sys.executable, "-P", "-m", "mailboot.no_such_module")
    with socket.create_connection(("127.0.0.1", ports["http"]), timeout=10):
        wait_for_a_client(activation)
        assert activation.process is not None
        activation.process.wait(timeout=30)
        assert activation.watched() == []  # a moment's pause after a crash
    assert said and "ended with exit 1; a new one starts with the next connection" in said[0]
    activation.command = serving
    client = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=30)
    client.request("GET", "/.well-known/acme-challenge/unknown", headers={"Host": "x.example"})
    wait_for_a_client(activation, timeout=15)
    missing = client.getresponse()
    assert missing.status == 404
    missing.read()
    client.close()
