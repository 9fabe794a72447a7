"""Address discovery: the setting, answers from a fake echo server (TXT or A/AAAA, either
family, failures, a budget), what the boot keeps and logs, what the worker and `mailboot dns`
see, and the worker's warnings when the internet sees another address."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.exception
import pytest

from mailboot.base.paths import Paths
from mailboot.boot.records_and_address import Network, announce
from mailboot.boot.stages import BootPlatform, prepare
from mailboot.cli.main import main
from mailboot.network.address import (
    AddressCheck,
    Discover,
    Found,
    NoAnswerError,
    discover,
    settle,
)
from mailboot.network.found import address_in, effective_settings
from mailboot.network.outbound import OutboundPortCheck
from mailboot.settings.table import Settings, load_settings
from mailboot.settings.values import EchoServer, SettingValueError, parse_address_discovery
from mailboot.worker.tasks import network_checks

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GOOGLE = EchoServer("o-o.myaddr.l.google.com", "ns1.google.com")
# Global addresses (documentation ones are not, and would add a warning).
V4, V6 = ipaddress.IPv4Address("93.184.216.34"), ipaddress.IPv6Address("2a00:1450:4001::25")
SERVER_ADDRESSES = {("ns1.google.com", "A"): ["216.239.32.10"],
                    ("ns1.google.com", "AAAA"): ["2001:4860:4802:32::a"]}


def server_addresses(name: str, rtype: str, _timeout: float) -> list[str]:
    return SERVER_ADDRESSES.get((name, rtype), [])


class EchoFake:
    """Answers like Google's server: TXT with the asker's address per family (or as told)."""

    def __init__(self, answers: dict[tuple[str, str], Sequence[str] | Exception]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str, str, int]] = []

    def __call__(self, name: str, rtype: str, server: str, port: int,
                 _timeout: float) -> Sequence[str]:
        self.asked.append((name, rtype, server, port))
        answer = self.answers.get((rtype, server), [])
        if isinstance(answer, Exception):
            raise answer
        return answer


GOOGLE_ANSWERS: dict[tuple[str, str], Sequence[str] | Exception] = {
    ("TXT", "216.239.32.10"): ["edns0-client-subnet 198.51.100.0/24", str(V4)],
    ("TXT", "2001:4860:4802:32::a"): [str(V6)],
}


def settings(**environ: str) -> Settings:
    return load_settings({"MAIL_DOMAINS": "example.com", **environ})


# --- the setting --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("o-o.myaddr.l.google.com@ns1.google.com", GOOGLE),
    ("myip.opendns.com@resolver1.opendns.com",
     EchoServer("myip.opendns.com", "resolver1.opendns.com")),
    ("whoami.test@172.30.5.2:5353", EchoServer("whoami.test", "172.30.5.2", 5353)),
    ("whoami.test@[2001:db8::53]:53", EchoServer("whoami.test", "2001:db8::53")),
    (" Off ", "off"),
])
def test_the_setting_is_name_at_server_or_off(text: str, expected: EchoServer | str) -> None:
    assert parse_address_discovery(text) == expected


def test_the_default_asks_google_and_prints_back_as_written() -> None:
    assert settings().address_discovery == GOOGLE
    assert str(GOOGLE) == "o-o.myaddr.l.google.com@ns1.google.com"
    assert str(EchoServer("w.test", "2001:db8::53", 5353)) == "w.test@[2001:db8::53]:5353"


def test_a_bare_server_is_refused_with_the_form() -> None:
    with pytest.raises(SettingValueError, match=r"is not NAME@SERVER\[:PORT\]"):
        parse_address_discovery("ns1.google.com")


# --- discovery ----------------------------------------------------------------------------------

def test_each_family_is_asked_over_itself_and_says_how() -> None:
    echo = EchoFake(GOOGLE_ANSWERS)
    found = discover(GOOGLE, (4, 6), echo, server_addresses)
    assert found == (
        Found(4, V4, "asked ns1.google.com (216.239.32.10) over IPv4 for o-o.myaddr.l.google.com "
                     "TXT, which answers with the asker's address"),
        Found(6, V6, "asked ns1.google.com (2001:4860:4802:32::a) over IPv6 for "
                     "o-o.myaddr.l.google.com TXT, which answers with the asker's address"),
    )


def test_an_address_answer_counts_when_txt_has_none() -> None:
    source = EchoServer("myip.opendns.com", "198.51.100.53")
    echo = EchoFake({("A", "198.51.100.53"): ["192.0.2.77"]})
    (found,) = discover(source, (4,), echo, server_addresses)
    assert found.address == ipaddress.IPv4Address("192.0.2.77")
    assert "myip.opendns.com A" in found.how
    assert [rtype for _, rtype, _, _ in echo.asked] == ["TXT", "A"]


def test_a_server_given_by_address_is_asked_only_over_its_family() -> None:
    source = EchoServer("whoami.test", "172.30.5.2", 5353)
    echo = EchoFake({("TXT", "172.30.5.2"): ["172.30.5.11"]})
    four, six = discover(source, (4, 6), echo, server_addresses)
    assert four.address == ipaddress.IPv4Address("172.30.5.11")  # private: tests are welcome
    assert six == Found(6, None, "the server 172.30.5.2 has no IPv6 address")
    assert echo.asked == [("whoami.test", "TXT", "172.30.5.2", 5353)]


@pytest.mark.parametrize(("answer", "words"), [
    (OSError(101, "Network is unreachable"), "over IPv6 failed: Network is unreachable"),
    (dns.exception.Timeout(),  # type: ignore[no-untyped-call]
     "over IPv6 failed: The DNS operation timed out"),
    (NoAnswerError("the server answered REFUSED"), "failed: the server answered REFUSED"),
    (["93.184.216.34"], "answered o-o.myaddr.l.google.com with no IPv6 address"),  # wrong family
    (["::ffff:93.184.216.34", "::1", "ff02::1", "not an address"], "with no IPv6 address"),
])
def test_what_is_not_an_answer_says_why(answer: Sequence[str] | Exception, words: str) -> None:
    echo = EchoFake({("TXT", "2001:4860:4802:32::a"): answer})
    (found,) = discover(GOOGLE, (6,), echo, server_addresses)
    assert found.address is None and words in found.how, found.how


def test_a_server_name_that_does_not_resolve_says_so() -> None:
    def failing(_name: str, _rtype: str, _timeout: float) -> list[str]:
        raise dns.exception.Timeout

    (found,) = discover(GOOGLE, (4,), EchoFake({}), failing)
    assert found.how.startswith("can't look up ns1.google.com A: ")
    (none,) = discover(EchoServer("x.example", "v4only.example"), (6,), EchoFake({}),
                       server_addresses)
    assert none.how == "v4only.example has no IPv6 address"


def test_discovery_never_outlasts_its_budget() -> None:
    release = threading.Event()

    def hanging(*_arguments: object) -> Sequence[str]:
        release.wait(5)
        return []

    try:
        (found,) = discover(GOOGLE, (4,), hanging, server_addresses, budget=0.05)
    finally:
        release.set()
    assert found == Found(4, None, "no answer within 0.05 s")


def test_answers_are_read_as_addresses_of_one_family() -> None:
    assert address_in('"192.0.2.1"', 4) == ipaddress.IPv4Address("192.0.2.1")
    assert address_in("192.0.2.1", 6) is None
    assert address_in("0.0.0.0", 4) is None


# --- the boot: find, keep, use ------------------------------------------------------------------

def finder(*found: Found) -> Discover:
    def find(families: Sequence[int]) -> tuple[Found, ...]:
        return tuple(f for f in found if f.family in families)
    return find


HOW = "asked ns1.google.com (216.239.32.10) over IPv4 for o-o.myaddr.l.google.com TXT, ..."


def test_a_found_address_fills_the_records_and_is_kept_for_the_others(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = Paths(tmp_path)
    with caplog.at_level(logging.INFO, logger="mailboot.address"):
        used = settle(settings(), paths, finder(Found(4, V4, HOW),
                                                Found(6, None, "Network is unreachable")), NOW)
    assert (used.public_ipv4, used.public_ipv6) == (V4, None)
    assert [r.getMessage() for r in caplog.records] == [
        f"address: found the public IPv4 address 93.184.216.34 ({HOW}); PUBLIC_IPV4 overrides it",
        "address: no public IPv6 address found by asking o-o.myaddr.l.google.com@ns1.google.com "
        "(Network is unreachable); no AAAA record is printed for it: set PUBLIC_IPV6 if the "
        "server has one",
    ]
    assert caplog.records[1].levelno == logging.INFO  # many servers have no IPv6
    kept = json.loads(paths.found_addresses.read_text())
    assert kept == {"ipv4": {"address": "93.184.216.34", "how": HOW,
                             "found": "2026-12-01T12:00:00Z"}}
    # The worker and `mailboot dns` load the same addresses.
    assert effective_settings(settings(), paths) == used


def test_a_private_found_address_is_used_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    private = ipaddress.IPv4Address("172.30.5.11")
    with caplog.at_level(logging.INFO, logger="mailboot.address"):
        used = settle(settings(), Paths(tmp_path), finder(Found(4, private, HOW)), NOW)
    assert used.public_ipv4 == private
    assert any(r.levelno == logging.WARNING and "172.30.5.11 is not a public address"
               in r.getMessage() for r in caplog.records)


def test_a_failed_discovery_reuses_the_last_found_address_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = Paths(tmp_path)
    settle(settings(), paths, finder(Found(4, V4, HOW)), NOW)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mailboot.address"):
        later = settle(settings(), paths, finder(Found(4, None, "timed out")),
                       NOW + timedelta(days=3))
    assert later.public_ipv4 == V4
    kept = paths.found_addresses.read_text()
    settle(settings(), paths, finder(Found(4, V4, HOW)), NOW + timedelta(days=4))
    assert paths.found_addresses.read_text() == kept  # the same address: nothing rewritten
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.levelno == logging.WARNING and record.getMessage() == (
        "address: can't find the public IPv4 address now (timed out); using 93.184.216.34, found "
        "on 2026-12-01 12:00:00 UTC; set PUBLIC_IPV4 to be sure")


def test_an_address_kept_by_an_earlier_version_is_reused_with_its_time_for_people(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = Paths(tmp_path)
    paths.found_addresses.parent.mkdir(parents=True, exist_ok=True)
    paths.found_addresses.write_text(json.dumps({"ipv4": {
        "address": str(V4), "how": HOW, "found": "2026-12-01T12:00:00+00:00"}}))
    with caplog.at_level(logging.INFO, logger="mailboot.address"):
        later = settle(settings(), paths, finder(Found(4, None, "timed out")), NOW)
    assert later.public_ipv4 == V4
    assert "found on 2026-12-01 12:00:00 UTC;" in caplog.text


def test_nothing_found_leaves_placeholders_and_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mailboot.address"):
        used = settle(settings(), Paths(tmp_path),
                      finder(Found(4, None, "timed out"), Found(6, None, "unreachable")), NOW)
    assert used.public_addresses == () and not Paths(tmp_path).found_addresses.exists()
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.getMessage() == (
        "address: no public address found by asking o-o.myaddr.l.google.com@ns1.google.com "
        "(IPv4: timed out; IPv6: unreachable); the address and PTR records are placeholders: "
        "set PUBLIC_IPV4 (and PUBLIC_IPV6)")


def test_a_bug_in_discovery_is_raised_not_taken_for_no_address() -> None:
    """Network and DNS failures are answers ("not found, because"); a bug is not one."""
    def buggy(*_arguments: object) -> Sequence[str]:
        raise TypeError("unsupported operand")

    with pytest.raises(TypeError, match="unsupported operand"):
        discover(GOOGLE, (4, 6), buggy, server_addresses)


def test_a_bug_in_discovery_never_stops_the_boot_and_is_logged_with_its_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(_families: Sequence[int]) -> tuple[Found, ...]:
        raise RuntimeError("surprise")

    with caplog.at_level(logging.INFO, logger="mailboot.address"):
        assert settle(settings(), Paths(tmp_path), broken, NOW).public_addresses == ()
    (bug,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "RuntimeError: surprise; this is a bug" in bug.getMessage()
    assert bug.exc_info is not None and bug.exc_info[0] is RuntimeError
    assert "Traceback" in caplog.text


def test_a_configured_address_wins_and_is_not_looked_for_at_boot(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    settle(settings(), paths, finder(Found(4, V4, HOW), Found(6, V6, HOW)), NOW)
    asked: list[Sequence[int]] = []

    def find(families: Sequence[int]) -> tuple[Found, ...]:
        asked.append(families)
        return ()

    given = settings(PUBLIC_IPV4="198.51.100.9")
    used = settle(given, paths, find, NOW)
    assert asked == [[6]]
    assert used.public_ipv4 == ipaddress.IPv4Address("198.51.100.9")
    assert used.public_ipv6 == V6  # kept from the first boot: discovery failed this time
    both = settings(PUBLIC_IPV4="198.51.100.9", PUBLIC_IPV6="2001:db8::9")
    assert settle(both, paths, find, NOW) == both and asked == [[6]]


def test_with_discovery_off_placeholders_stay_and_nothing_kept_is_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = Paths(tmp_path)
    settle(settings(), paths, finder(Found(4, V4, HOW)), NOW)
    off = settings(PUBLIC_ADDRESS_DISCOVERY="off")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mailboot.address"):
        assert settle(off, paths, finder(Found(4, V4, HOW)), NOW) == off
    assert "PUBLIC_ADDRESS_DISCOVERY=off" in caplog.records[0].getMessage()
    assert effective_settings(off, paths) == off


def test_without_a_network_the_boot_uses_what_was_kept(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert settle(settings(), paths, None, NOW) == settings()
    paths.found_addresses.write_text('{"ipv4": {"address": "not an address"}}')
    assert effective_settings(settings(), paths) == settings()


# --- the worker ---------------------------------------------------------------------------------

def test_a_configured_address_the_internet_does_not_see_is_a_warning_once(
        caplog: pytest.LogCaptureFixture) -> None:
    given = settings(PUBLIC_IPV4="198.51.100.9")
    results = [Found(4, V4, HOW), Found(6, None, "no IPv6")]
    check = AddressCheck(given, given, lambda _families: tuple(results))
    with caplog.at_level(logging.INFO, logger="mailboot.address"):
        due = check.step(NOW)
        assert check.step(NOW + timedelta(minutes=5)) == due  # early: nothing asked
        check.step(due)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.getMessage() == (
        f"address: PUBLIC_IPV4 is 198.51.100.9, but the internet sees this server as "
        f"93.184.216.34 ({HOW}); the records and checks use 198.51.100.9: check PUBLIC_IPV4")
    assert due == NOW + timedelta(days=1)


def test_the_same_address_gives_no_word_and_a_change_of_the_found_one_is_said(
        caplog: pytest.LogCaptureFixture) -> None:
    configured = settings()
    in_use = settings(PUBLIC_IPV4=str(V4))
    sees = [Found(4, V4, HOW)]
    check = AddressCheck(configured, in_use, lambda _families: tuple(sees))
    with caplog.at_level(logging.INFO, logger="mailboot.address"):
        check.step(NOW)
        assert caplog.records == []
        sees[0] = Found(4, ipaddress.IPv4Address("93.184.216.99"), HOW)
        check.step(NOW + timedelta(days=1))
    assert "changed from 93.184.216.34 to 93.184.216.99" in caplog.records[0].getMessage()
    assert "restart to print the records for it" in caplog.records[0].getMessage()


# --- the hooks: the boot prints it, `mailboot dns` and the worker see it ------------------------

def test_the_boot_prints_the_found_address_and_mailboot_dns_shows_it_too(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", config_root=tmp_path / "root", run_dir=tmp_path / "run")
    environ = {"MAIL_DOMAINS": "example.com", "DATA_DIR": str(paths.data_dir),
               "TLS_MODE": "self-signed"}
    platform = BootPlatform(prepare=lambda _paths: None, validate=lambda _paths: None)
    network = Network(discover=finder(Found(4, V4, HOW), Found(6, None, "unreachable")))
    out = io.StringIO()
    settings = load_settings(environ)
    prepared = prepare(settings, paths, NOW, platform)
    announce(settings, paths, NOW, prepared.keys, network, out)
    assert f"IN A     {V4}" in out.getvalue()
    assert V4.reverse_pointer in out.getvalue()
    printed = io.StringIO()
    assert main(["dns", "--zone"], environ=environ, stdout=printed) == 0
    assert f"IN A     {V4}" in printed.getvalue()
    assert "<PUBLIC_IPV4>" not in printed.getvalue()
    off = io.StringIO()
    assert main(["dns", "--zone"], environ={**environ, "PUBLIC_ADDRESS_DISCOVERY": "off"},
                stdout=off) == 0
    assert str(V4) not in off.getvalue()


def test_the_worker_runs_both_checks_with_the_addresses_in_use(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    configured = settings()
    in_use = settings(PUBLIC_IPV4=str(V4))
    tasks = network_checks(configured, in_use, paths)
    assert {name: type(task) for name, task in tasks.items()} == {
        "outbound": OutboundPortCheck, "address": AddressCheck}
    assert isinstance(tasks["address"], AddressCheck) and tasks["address"].in_use is in_use
    off = settings(OUTBOUND_CHECK="off", PUBLIC_ADDRESS_DISCOVERY="off")
    assert network_checks(off, off, paths) == {}
