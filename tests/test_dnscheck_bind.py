"""Integration: `mailboot dns --check` against BIND serving the zone `mailboot dns` printed."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.conftest import require_tool
from tests.polling import eventually

pytestmark = pytest.mark.integration

ENV = {"MAIL_DOMAINS": "example.com", "PUBLIC_IPV4": "203.0.113.25", "PATH": "/usr/bin:/bin"}
SOA = ("@ 3600 IN SOA ns1.example.net. hostmaster.example.com. 1 7200 3600 1209600 3600\n"
       "@ 3600 IN NS ns1.example.net.\n")
PTR = "25 3600 IN PTR mail.example.com.\n"
HELD = ("_mta-sts.example.com.", "TXT")


def mailboot(*args: str, data: Path, port: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**ENV, "DATA_DIR": str(data)}
    if port:
        env["DNS_RESOLVERS"] = f"127.0.0.1:{port}"
    return subprocess.run([sys.executable, "-m", "mailboot", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# BIND's last line of a good start: "05-Dec-2026 08:26:09.520 running" (not "running on Linux").
STARTED = re.compile(rb"^\S+ \S+ running$", re.MULTILINE)


def start_named(named: str, directory: Path, log: BinaryIO) -> subprocess.Popen[bytes] | None:
    """BIND in the foreground on `directory`/named.conf, once it has started; None if it could
    not listen (another process took the port first)."""
    process = subprocess.Popen([named, "-g", "-c", str(directory / "named.conf")],
                               stdout=log, stderr=log)
    logged = directory / "named.log"
    eventually(lambda: STARTED.search(logged.read_bytes()) or process.poll() is not None, 20,
               lambda: f"BIND to start: {logged.read_text()}", interval=0.1)
    if process.poll() is None:
        return process
    assert b"unable to listen on any configured interfaces" in logged.read_bytes(), \
        logged.read_text()
    return None


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str, str], int]]:
    """Start BIND with a forward zone and a reverse zone; returns its port."""
    named = require_tool("named")
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[BinaryIO] = []

    def start(forward: str, reverse: str) -> int:
        # The port was free when asked for; another test process may take it before BIND binds
        # it (BIND then stops, unable to listen): try another.
        for _ in range(5):
            port = free_port()
            directory = tmp_path / f"bind-{port}"
            directory.mkdir()
            (directory / "forward.zone").write_text("$ORIGIN example.com.\n" + SOA + forward)
            (directory / "reverse.zone").write_text("$ORIGIN 113.0.203.in-addr.arpa.\n" + SOA
                                                    + reverse)
            (directory / "named.conf").write_text(f"""
options {{ directory "{directory}"; listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }}; recursion no; dnssec-validation no;
  pid-file "{directory}/named.pid"; }};
controls {{ }};
zone "example.com" {{ type primary; file "{directory}/forward.zone"; }};
zone "113.0.203.in-addr.arpa" {{ type primary; file "{directory}/reverse.zone"; }};
""")
            log = (directory / "named.log").open("wb")
            logs.append(log)
            started = start_named(named, directory, log)
            if started is not None:
                processes.append(started)
                return port
        raise AssertionError("BIND found every port taken; see named.log in " + str(tmp_path))

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)
    for log in logs:
        log.close()


@pytest.fixture
def printed_zone(tmp_path: Path) -> str:
    result = mailboot("dns", "--zone", "--domain", "example.com", data=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    return result.stdout


def check(tmp_path: Path, port: int) -> tuple[int, dict[tuple[str, str], dict[str, object]]]:
    result = mailboot("dns", "--check", "--json", data=tmp_path / "data", port=port)
    records = json.loads(result.stdout)
    return result.returncode, {(r["name"], r["type"]): r for r in records}


def test_everything_published_is_ok_and_exits_0(
    tmp_path: Path, printed_zone: str, serve: Callable[[str, str], int]
) -> None:
    code, found = check(tmp_path, serve(printed_zone, PTR))
    held = found.pop(HELD)
    assert {r["status"] for r in found.values()} == {"ok"}
    # No certificate from a CA yet: the _mta-sts record is printed as held back, not published.
    assert held["status"] == "unknown" and "hold this record back" in str(held["hint"])
    assert code == 0


def replace_line(zone: str, pattern: str,
                 replacement: str | Callable[[re.Match[str]], str]) -> str:
    changed, count = re.subn(pattern, replacement, zone, flags=re.MULTILINE)
    assert count == 1, pattern
    return changed


@pytest.mark.parametrize(("change", "key", "status", "words"), [
    ("remove DMARC", ("_dmarc.example.com.", "TXT"), "missing", "Add _dmarc TXT"),
    ("change DKIM key", ("mb*._domainkey.example.com.", "TXT"), "wrong",
     "not the key this server signs with"),
    ("SPF without -all", ("example.com.", "TXT"), "wrong", "does not end in -all"),
    ("wrong MX", ("example.com.", "MX"), "wrong", "not to mail.example.com"),
    ("no PTR", ("25.113.0.203.in-addr.arpa.", "PTR"), "missing", "at your hosting provider"),
])
def test_each_problem_is_found_and_exits_1(
    tmp_path: Path, printed_zone: str, serve: Callable[[str, str], int],
    change: str, key: tuple[str, str], status: str, words: str,
) -> None:
    zone, reverse = printed_zone, PTR
    if change == "remove DMARC":
        zone = replace_line(zone, r"^_dmarc\.example\.com\..*$", "")
    elif change == "change DKIM key":
        zone = replace_line(zone, r'(^mb\d+\._domainkey\.example\.com\..*p=MIIB)(\w)',
                            lambda m: m.group(1) + ("A" if m.group(2) != "A" else "B"))
    elif change == "SPF without -all":
        zone = replace_line(zone, r'"v=spf1 a mx -all"', '"v=spf1 a mx ~all"')
    elif change == "wrong MX":
        zone = replace_line(zone, r"(^example\.com\..*MX\s+)10 mail\.example\.com\.",
                            r"\g<1>10 mx.oldhost.example.")
    else:
        reverse = ""
    code, found = check(tmp_path, serve(zone, reverse))
    name = next(n for n, t in found if t == key[1] and re.fullmatch(
        key[0].replace(".", r"\.").replace("*", r"\d+"), n))
    assert found[(name, key[1])]["status"] == status
    assert words in str(found[(name, key[1])]["hint"])
    # With the MX elsewhere, the PTR's host and SPF's `mx` term follow it: SPF, evaluated, no
    # longer passes (here: unknown, the old host is outside this test's DNS, which refuses it).
    follow_the_mx = (("example.com.", "TXT"), ("25.113.0.203.in-addr.arpa.", "PTR"))
    others = [r["status"] for k, r in found.items() if k not in ((name, key[1]), HELD)
              and not (change == "wrong MX" and k in follow_the_mx)]
    assert set(others) == {"ok"}
    if change == "wrong MX":
        assert found[("example.com.", "TXT")]["status"] == "unknown"
    assert code == 1


def test_by_default_the_zones_own_name_servers_are_asked(
    tmp_path: Path, printed_zone: str, serve: Callable[[str, str], int]
) -> None:
    """Found through a resolver (NS, then their addresses), then asked without recursion."""
    import dns.nameserver
    import dns.resolver

    from mailboot.dns.lookup import DnsLookup
    from mailboot.records.build import mx_record, ptr_record
    from mailboot.records.doctor import check_records

    glue = "@ 3600 IN NS ns1.example.com.\nns1 3600 IN A 127.0.0.1\n"
    port = serve(printed_zone + glue, PTR)
    system = dns.resolver.Resolver(configure=False)
    system.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", port)]
    lookup = DnsLookup(system=system, authority_port=port)
    assert lookup("_dmarc.example.com", "TXT").values == (
        "v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc-reports@example.com",)
    assert lookup("nothing.example.com", "TXT").nxdomain
    mx = mx_record("example.com", "mail.example.com")
    ptr = ptr_record("mail.example.com", ipaddress.ip_address("203.0.113.25"))
    findings = check_records([mx], lookup)
    assert [f.status.value for f in findings] == ["ok"]
    # The reverse zone's name server (ns1.example.net) has no address anywhere here: the
    # doctor can't ask it, and says so instead of calling the record missing.
    (reverse,) = check_records([ptr], lookup)
    assert reverse.status.value == "unknown" and "no server to ask" in reverse.hint
    assert "(ns1.example.net) have no address" in reverse.hint
