"""The DNS doctor in the running container, against BIND on the test network."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.container.conftest import ROOT, Container, docker
from tests.container.pebble_harness import DockerNetwork

pytestmark = pytest.mark.container

MakeContainer = Callable[..., Container]
SOA = ("@ 3600 IN SOA ns1.example.net. hostmaster.example.com. 1 7200 3600 1209600 60\n"
       "@ 3600 IN NS ns1.example.net.\n")


def write_zones(directory: Path, reverse_zone: str, forward: str, reverse: str) -> None:
    (directory / "forward.zone").write_text("$ORIGIN example.com.\n" + SOA + forward)
    (directory / "reverse.zone").write_text(f"$ORIGIN {reverse_zone}.\n" + SOA + reverse)
    (directory / "named.conf").write_text(f"""
options {{ directory "/var/cache/bind"; listen-on {{ any; }}; listen-on-v6 {{ none; }};
  recursion no; dnssec-validation no; }};
controls {{ }};
zone "example.com" {{ type primary; file "/zones/forward.zone"; }};
zone "{reverse_zone}" {{ type primary; file "/zones/reverse.zone"; }};
""")
    for path in directory.iterdir():
        path.chmod(0o644)
    directory.chmod(0o755)


def test_log_shows_statuses_then_the_ready_line_once_dns_is_published(
    make_container: MakeContainer, test_network: DockerNetwork, tmp_path: Path
) -> None:
    docker("build", "-q", "-t", "mailboot-bind:test", str(ROOT / "tests/container/bind_image"),
           timeout=600)
    bind_ip, mail_ip = test_network.allocate(), test_network.allocate()
    octets = mail_ip.split(".")
    reverse_zone = f"{octets[2]}.{octets[1]}.{octets[0]}.in-addr.arpa"
    zones = tmp_path / "zones"
    zones.mkdir()
    write_zones(zones, reverse_zone, "", "")  # the user has published nothing yet
    bind = f"mailboot-bind-{octets[3]}-{bind_ip.rsplit('.', 1)[1]}"
    docker("run", "-d", "--name", bind, "--network", test_network.name, "--ip", bind_ip,
           "-v", f"{zones}:/zones:ro", "mailboot-bind:test")
    settings = {"MAIL_DOMAINS": "example.com", "PUBLIC_IPV4": mail_ip, "DNS_RESOLVERS": bind_ip,
                "DNS_CHECK_INTERVAL": "2s", "TLS_MODE": "self-signed"}
    try:
        # DNS_CHECK=strict: nothing is published, so no daemon starts; the records are printed.
        strict = make_container(env={**settings, "DNS_CHECK": "strict"},
                                network=test_network.name, ip=test_network.allocate())
        assert strict.wait_exit() == 78
        logs = strict.logs()
        assert "DNS_CHECK=strict and these required records are not in place: example.com MX " \
            "(missing)" in logs
        assert "; MX: mail for example.com is delivered to mail.example.com [MISSING]" in logs
        assert "handing over to the supervisor" not in logs and "postfix/master" not in logs
        mail = make_container(env=settings, network=test_network.name, ip=mail_ip)
        mail.wait_ready()
        # The records are announced beside the daemons' start, then the worker checks again.
        logs = mail.wait_for_log("dns: example.com MX is missing")
        assert "; MX: mail for example.com is delivered to mail.example.com [MISSING]" in logs
        assert "dns: 0 ok" not in logs and "missing (" in logs
        assert "dns: example.com MX is missing: Add @ MX 10 mail.example.com." in logs
        assert "READY" not in logs
        zone = mail.exec("mailboot", "dns", "--zone", "--domain", "example.com").stdout
        write_zones(zones, reverse_zone, zone, f"{octets[3]} 3600 IN PTR mail.example.com.\n")
        docker("restart", "-t", "1", bind)  # the user's provider publishes the records
        deadline = time.monotonic() + 60
        while "dns: READY - every required DNS record is in place" not in mail.logs():
            assert time.monotonic() < deadline, mail.logs()[-3000:]
            time.sleep(1)
        assert "dns: example.com MX is now in place" in mail.logs()
        assert mail.restart_count() == 0
        check = mail.exec("mailboot", "dns", "--check", check=False)
        assert check.returncode == 0, check.stdout[-2000:]
        # Published: DNS_CHECK=strict lets the same data start, after checking every record.
        docker("stop", "-t", "10", mail.name)
        strict = make_container(env={**settings, "DNS_CHECK": "strict"}, data=mail.data,
                                network=test_network.name, ip=mail_ip)
        strict.wait_ready()
        logs = strict.logs()
        checked = re.search(r"dns: \d+ ok", logs)  # the records' check, before the daemons
        assert checked and checked.start() < logs.index("handing over to the supervisor"), logs
    finally:
        docker("rm", "-f", bind, check=False)
