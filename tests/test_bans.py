"""Login bans (mailboot.logins.bans): counting in a window, bans that end by themselves, who is
never banned, the state on disk (across a restart, damaged), and Dovecot's auth policy protocol
and the submission services' connection check in the policy process."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailboot.logins import bans
from mailboot.logins.bans import Ban, BanRules, BanState, BanStore, LoginBans
from mailboot.policy import authpolicy
from mailboot.policy.service import connection_check

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
RULES = BanRules(failures=3, window=600, duration=3600,
                 allowlist=(ipaddress.ip_network("198.51.100.0/24"),
                            ipaddress.ip_network("2001:db8:aaaa::/48")))
ATTACKER = "192.0.2.7"
GATEWAY = "172.17.0.1"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def login_bans(tmp_path: Path, rules: BanRules = RULES, gateway: str | None = GATEWAY,
               proxy: bool = False) -> tuple[LoginBans, Clock]:
    clock = Clock()
    return LoginBans(BanStore(tmp_path), rules, gateway, lambda: proxy, clock), clock


def fail(found: LoginBans, address: str, times: int, protocol: str = "imap") -> None:
    for _ in range(times):
        found.report(address, protocol, success=False)


# --- the pure decisions -----------------------------------------------------------------------

def test_the_failure_that_reaches_the_count_within_the_window_bans() -> None:
    state = BanState()
    for protocol in ("imap", "smtp"):
        counted = bans.count_failure(state, RULES, ATTACKER, protocol, T0)
        assert counted.ban is None
        state = counted.state
    counted = bans.count_failure(state, RULES, ATTACKER, "sieve", T0 + timedelta(seconds=5))
    assert counted.ban == Ban(since=T0 + timedelta(seconds=5), until=T0 + timedelta(seconds=3605),
                              failures=3, protocols=("imap", "sieve", "smtp"))
    assert ATTACKER not in counted.state.failures  # the ban holds it now
    assert bans.ban_of(counted.state, ATTACKER, T0 + timedelta(seconds=3604)) == counted.ban
    assert bans.ban_of(counted.state, ATTACKER, T0 + timedelta(seconds=3605)) is None


def test_failures_older_than_the_window_no_longer_count() -> None:
    state = BanState()
    for minute in (0, 6, 11, 17):  # never three within 10 minutes
        counted = bans.count_failure(state, RULES, ATTACKER, "imap",
                                     T0 + timedelta(minutes=minute))
        assert counted.ban is None, minute
        state = counted.state
    assert len(state.failures[ATTACKER]) == 2


def test_addresses_are_counted_apart_and_ipv6_per_64() -> None:
    state = BanState()
    for address in ("2001:db8:1:2::1", "2001:db8:1:2::ffff", "192.0.2.8"):
        state = bans.count_failure(state, RULES, bans.client_key(address) or "", "imap",
                                   T0).state
    assert set(state.failures) == {"2001:db8:1:2::/64", "192.0.2.8"}
    assert bans.client_key("::ffff:192.0.2.7") == ATTACKER
    assert bans.client_key("[2001:db8::1]") == "2001:db8::/64"
    assert bans.client_key("unknown") is None


def test_loopback_and_the_allowlist_are_exempt() -> None:
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "198.51.100.20",
                    "2001:db8:aaaa:1::5", "unknown"):
        assert bans.exempt(address, RULES), address
    for address in (ATTACKER, "2001:db8:bbbb::1", GATEWAY):
        assert not bans.exempt(address, RULES), address


def test_the_gateway_is_spared_while_it_may_stand_for_every_client() -> None:
    state = BanState()
    for _ in range(3):
        counted = bans.count_failure(state, RULES, GATEWAY, "imap", T0, gateway=GATEWAY)
        state = counted.state
    assert counted.spared and counted.ban is None  # no login from another address yet
    state = bans.seen(state, ATTACKER, GATEWAY)
    assert state.others_seen
    for _ in range(3):
        counted = bans.count_failure(state, RULES, GATEWAY, "imap", T0, gateway=GATEWAY,
                                     proxy_noticed=True)  # port 25 saw the proxy
        state = counted.state
    assert counted.spared and counted.ban is None
    for _ in range(3):
        counted = bans.count_failure(state, RULES, GATEWAY, "imap", T0, gateway=GATEWAY)
        state = counted.state
    assert counted.ban is not None  # others come with their own addresses: it is one client


def test_the_tracked_addresses_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bans, "MAX_TRACKED", 10)
    state = BanState()
    for n in range(25):
        state = bans.count_failure(state, RULES, f"192.0.2.{n}", "imap",
                                   T0 + timedelta(seconds=n)).state
    assert set(state.failures) == {f"192.0.2.{n}" for n in range(15, 25)}  # the latest


def test_the_messages_say_what_and_how_to_lift_it() -> None:
    ban = Ban(T0, T0 + timedelta(hours=1), 10, ("imap", "smtp"))
    assert bans.ban_line(ATTACKER, ban, BanRules(10, 600, 3600)) == (
        "bans: 192.0.2.7 banned until 2026-12-05 13:00:00 UTC after 10 failed logins in 10 min "
        "(imap, submission); `mailboot ban remove 192.0.2.7` lifts it")
    assert bans.refusal(ATTACKER, ban) == ("Too many failed logins from 192.0.2.7: refused "
                                           "until 2026-12-05 13:00:00 UTC")
    assert [bans.span(s) for s in (45, 600, 3600, 5400, 172800)] == [
        "45 s", "10 min", "1 h", "90 min", "2 d"]


# --- the store and the policy process's questions ---------------------------------------------

def test_a_ban_is_said_once_refuses_even_the_right_password_and_ends_by_itself(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    found, clock = login_bans(tmp_path)
    found.report("203.0.113.9", "imap", success=True)  # another client: the gateway isn't all
    with caplog.at_level(logging.INFO, logger="mailboot.logins.bans"):
        fail(found, ATTACKER, 2)
        assert found.banned(ATTACKER) is None
        fail(found, ATTACKER, 1, "sieve")
        key, ban = found.banned(ATTACKER) or ("", None)
        assert key == ATTACKER and ban is not None and ban.protocols == ("imap", "sieve")
        fail(found, ATTACKER, 5)  # a login under way when the ban began: not counted again
        assert found.banned(ATTACKER) == (key, ban)
        clock.advance(3600)
        assert found.banned(ATTACKER) is None
        assert found.banned(ATTACKER) is None
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        "bans: 192.0.2.7 banned until 2026-12-05 13:00:00 UTC after 3 failed logins in "
        "10 min (imap, managesieve); `mailboot ban remove 192.0.2.7` lifts it",
        "bans: the ban of 192.0.2.7 ended at 2026-12-05 13:00:00 UTC"]
    assert json.loads((tmp_path / "bans.json").read_text())["bans"] == {}


def test_bans_and_counts_are_kept_across_a_restart(tmp_path: Path) -> None:
    first, _ = login_bans(tmp_path)
    fail(first, ATTACKER, 3)
    fail(first, "192.0.2.8", 2)
    again, _ = login_bans(tmp_path)  # a new policy process, the same directory
    assert again.banned(ATTACKER) is not None
    fail(again, "192.0.2.8", 1)
    assert again.banned("192.0.2.8") is not None
    assert (tmp_path / "bans.json").stat().st_mode & 0o777 == 0o600


def test_the_exempt_are_never_counted_and_the_gateway_is_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    found, _ = login_bans(tmp_path)
    with caplog.at_level(logging.INFO, logger="mailboot.logins.bans"):
        for address in ("127.0.0.1", "198.51.100.20", GATEWAY):
            fail(found, address, 7)
            assert found.banned(address) is None
    assert not (tmp_path / "bans.json").exists() or json.loads(
        (tmp_path / "bans.json").read_text())["failures"].keys() <= {GATEWAY}
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2  # once per 3 failures of the gateway
    assert said[0].startswith("bans: 172.17.0.1 made 3 failed logins in 10 min but can't be "
                              "banned: it is this container's gateway, and no login has come "
                              "from any other address yet")
    assert "\"userland-proxy\": false" in said[0]


def test_a_damaged_state_file_is_said_kept_aside_and_counting_starts_afresh(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bans.json").write_text("{not json")
    found, _ = login_bans(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mailboot.logins.bans"):
        assert found.banned(ATTACKER) is None
        fail(found, ATTACKER, 3)
    assert found.banned(ATTACKER) is not None
    assert (tmp_path / "bans.json.damaged").read_text() == "{not json"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "can't be read" in warnings[0]
    assert "counting starts afresh" in warnings[0]


@pytest.mark.parametrize("text", ['{"version": 2}', '{"version": 1, "bans": {"x": {}}}',
                                  '{"version": 1, "bans": {}, "failures": {"x": [["then", '
                                  '"imap"]]}, "others_seen": false}', "[]"])
def test_what_isn_t_a_state_file_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        bans.parse_state(text)


def test_a_state_survives_its_file(tmp_path: Path) -> None:
    state = BanState({ATTACKER: ((T0, "imap"),)},
                     {"2001:db8::/64": Ban(T0, T0 + timedelta(hours=1), 3, ("smtp",))}, True)
    assert bans.parse_state(bans.state_json(state).decode()) == state


def test_threads_counting_at_once_lose_no_failure(tmp_path: Path) -> None:
    """The policy process serves each connection in its own thread: every change is under the
    lock, so 4 threads x 5 failures make 20 counted (under a count of 50: no ban)."""
    found, _ = login_bans(tmp_path, BanRules(50, 600, 3600))
    threads = [threading.Thread(target=fail, args=(found, ATTACKER, 5)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(BanStore(tmp_path).read().failures[ATTACKER]) == 20


def test_lifting_a_ban_forgets_its_failures(tmp_path: Path) -> None:
    found, _ = login_bans(tmp_path)
    fail(found, ATTACKER, 3)
    store = BanStore(tmp_path)
    state, ban = bans.lifted(store.read(), ATTACKER)
    assert ban is not None and ATTACKER not in state.bans
    store.change(lambda s: bans.lifted(s, ATTACKER)[0])
    assert found.banned(ATTACKER) is None
    fail(found, ATTACKER, 2)
    assert found.banned(ATTACKER) is None  # counting starts at zero


# --- Dovecot's auth policy protocol and the policy process ------------------------------------

def post(command: str, body: dict[str, object], close: bool = False) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST /?command={command} HTTP/1.1\r\nHost: 127.0.0.1:8895\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode() + data


def test_auth_policy_requests_on_one_connection_are_each_answered() -> None:
    asked: list[tuple[str, str]] = []

    def judge(command: str, attributes: Mapping[str, object]) -> tuple[int, str]:
        asked.append((command, str(attributes["remote"])))
        return (-1, "banned") if command == "allow" else (0, "")

    stream = (post("allow", {"remote": ATTACKER, "protocol": "imap"})
              + post("report", {"remote": ATTACKER, "success": False}, close=True)
              + post("allow", {"remote": "never read"}))
    out = io.BytesIO()
    assert authpolicy.serve(io.BytesIO(stream), out, judge) == 2  # ends after Connection: close
    assert asked == [("allow", ATTACKER), ("report", ATTACKER)]
    assert out.getvalue().count(b"HTTP/1.1 200 OK") == 2
    assert b'{"status": -1, "msg": "banned"}' in out.getvalue()


@pytest.mark.parametrize("broken", [b"GET / HTTP/1.1\r\n\r\n",
                                    b"POST /?command=allow HTTP/1.1\r\n\r\n",
                                    b"POST /?command=allow HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
                                    b"nope!",
                                    b"POST /?command=allow HTTP/1.1\r\nContent-Length: 999999"
                                    b"\r\n\r\n"])
def test_a_request_not_of_the_protocol_ends_the_connection(broken: bytes) -> None:
    out = io.BytesIO()
    assert authpolicy.serve(io.BytesIO(broken), out, lambda c, a: (0, "")) == 0
    assert out.getvalue().startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_a_failing_judge_lets_the_login_go_on() -> None:
    def judge(command: str, attributes: Mapping[str, object]) -> tuple[int, str]:
        raise RuntimeError("bug")

    out = io.BytesIO()
    assert authpolicy.serve(io.BytesIO(post("allow", {"remote": ATTACKER})), out, judge) == 1
    assert out.getvalue().endswith(b'{"status": 0, "msg": ""}')


def test_the_submission_services_get_421_for_a_banned_client(tmp_path: Path) -> None:
    found, _ = login_bans(tmp_path)
    fail(found, ATTACKER, 3, "smtp")
    decide = connection_check(found)
    assert decide({"client_address": "192.0.2.9", "protocol_state": "CONNECT"}) == "DUNNO"
    assert decide({"client_address": ATTACKER, "protocol_state": "CONNECT"}) == (
        "421 4.7.0 Too many failed logins from 192.0.2.7: refused until "
        "2026-12-05 13:00:00 UTC")


def test_the_policy_process_counts_reports_and_refuses_before_the_login(tmp_path: Path) -> None:
    """The real process on a TCP socket, as Dovecot asks it: three failures reported, then the
    next login is refused (-1, with the reason); a refused login's report isn't counted."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "mailboot.policy.service", f"--auth-fd={listener.fileno()}",
         "--idle=1", f"--notes={tmp_path}", f"--state={tmp_path}", "--login-bans=3,600,60",
         "--login-ban-allow=198.51.100.0/24"], pass_fds=[listener.fileno()],
        stderr=subprocess.PIPE, text=True)
    failed = {"remote": ATTACKER, "protocol": "imap", "success": False, "policy_reject": False,
              "fail_type": "credentials"}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(b"".join(post("report", failed) for _ in range(3)))
        client.sendall(post("allow", {"remote": ATTACKER, "protocol": "sieve"}, close=True))
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    listener.close()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert received.count(b"HTTP/1.1 200 OK") == 4
    assert received.endswith(b'{"status": -1, "msg": "Too many failed logins from 192.0.2.7: '
                             b'refused until ' + received.rsplit(b"until ", 1)[1])
    assert "bans: 192.0.2.7 banned until" in stderr
    assert ATTACKER in json.loads((tmp_path / "bans.json").read_text())["bans"]


def test_ban_list_and_remove_on_the_command_line(tmp_path: Path) -> None:
    from mailboot.cli.main import main

    environ = {"MAIL_DOMAINS": "example.com", "DATA_DIR": str(tmp_path)}
    (tmp_path / "policy").mkdir()
    found = LoginBans(BanStore(tmp_path / "policy"), RULES, GATEWAY)  # the real clock
    fail(found, "2001:db8:1:2::7", 3, "smtp")
    listed = io.StringIO()
    assert main(["ban", "list"], environ, listed) == 0
    assert listed.getvalue().startswith("2001:db8:1:2::/64 until ")
    assert listed.getvalue().endswith(" (3 failed logins: submission)\n")
    as_json = io.StringIO()
    assert main(["ban", "list", "--json"], environ, as_json) == 0
    (ban,) = json.loads(as_json.getvalue())
    assert (ban["address"], ban["failures"], ban["protocols"]) == (
        "2001:db8:1:2::/64", 3, ["submission"])
    assert main(["ban", "remove", "not-an-address"], environ, io.StringIO()) == 64
    lifted = io.StringIO()
    assert main(["ban", "remove", "2001:db8:1:2::99"], environ, lifted) == 0  # in the /64
    assert lifted.getvalue() == ("bans: the ban of 2001:db8:1:2::/64 was lifted; it may log "
                                 "in again\n")
    assert found.banned("2001:db8:1:2::7") is None
    assert main(["ban", "remove", "2001:db8:1:2::7"], environ, io.StringIO()) == 64
    empty = io.StringIO()
    assert main(["ban", "list"], environ, empty) == 0
    assert empty.getvalue() == "no address is banned\n"


def test_dovecot_asks_the_policy_process_with_a_nonce_made_once(tmp_path: Path) -> None:
    from mailboot.base.paths import Paths
    from mailboot.daemons import dovecot
    from mailboot.settings.table import load_settings

    environ = {"MAIL_DOMAINS": "example.com", "LOGIN_BAN_ALLOWLIST": "198.51.100.0/24"}
    settings, paths = load_settings(environ), Paths(tmp_path)
    first = dovecot.auth_policy(settings, paths)
    assert first is not None and first.url == "http://127.0.0.1:8895/"
    directory = paths.policy_state.stat().st_mtime_ns
    assert dovecot.auth_policy(settings, paths) == first  # read, not made again
    assert paths.policy_state.stat().st_mtime_ns == directory
    assert dovecot.login_ban_arguments(settings, paths) == [
        "--login-bans=10,600,3600", "--login-ban-allow=198.51.100.0/24"]
    off = load_settings({**environ, "LOGIN_BAN_FAILURES": "off"})
    assert dovecot.auth_policy(off, paths) is None
    assert dovecot.login_ban_arguments(off, paths) == []
    assert dovecot.auth_policy_address(off) is None
