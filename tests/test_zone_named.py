"""Integration: BIND's zone checker (named-checkzone) loads what `mailboot dns --zone` prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

pytestmark = pytest.mark.integration

# A zone needs its SOA and NS, which belong to the user's DNS provider, not to us.
ZONE_HEAD = """$ORIGIN {zone}.
@ 3600 IN SOA ns1.example.net. hostmaster.{zone}. 1 7200 3600 1209600 3600
@ 3600 IN NS ns1.example.net.
"""
# Fail on everything named-checkzone can check: names, MX/SRV targets, integrity (-i full).
STRICT = ["-k", "fail", "-m", "fail", "-M", "fail", "-n", "fail", "-S", "fail", "-r", "fail",
          "-i", "full"]


def printed_zone(tmp_path: Path, variables: dict[str, str], zone: str) -> Path:
    env = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data"), **variables}
    result = subprocess.run([sys.executable, "-m", "mailboot", "dns", "--zone", "--domain", zone],
                            env=env, capture_output=True, text=True, check=True, timeout=60)
    path = tmp_path / f"{zone}.zone"
    path.write_text(ZONE_HEAD.format(zone=zone) + result.stdout)
    return path


def checkzone(zone: str, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("named-checkzone")
    return subprocess.run([tool, *flags, zone, str(path)], capture_output=True, text=True,
                          check=False, timeout=60)


@pytest.mark.parametrize("addresses", [
    {"PUBLIC_IPV4": "203.0.113.25", "PUBLIC_IPV6": "2001:db8::25"},
    {"PUBLIC_IPV4": "203.0.113.25"},
    {"PUBLIC_IPV6": "2001:db8::25"},
])
def test_every_zone_of_several_domains_loads_strictly(
    tmp_path: Path, addresses: dict[str, str]
) -> None:
    variables = {"MAIL_DOMAINS": "example.com,example.org,bücher.de",
                 "DMARC_RUA": "dmarc@example.com", **addresses}
    for zone in ("example.com", "example.org", "xn--bcher-kva.de"):
        result = checkzone(zone, printed_zone(tmp_path, variables, zone), *STRICT)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1] == "OK"
        assert "ignoring" not in result.stdout + result.stderr


def test_zone_without_address_loads_and_names_what_is_missing(tmp_path: Path) -> None:
    path = printed_zone(tmp_path, {"MAIL_DOMAINS": "example.com"}, "example.com")
    loose = checkzone("example.com", path)
    assert loose.returncode == 0, loose.stdout
    strict = checkzone("example.com", path, *STRICT)
    # The A record is a placeholder until PUBLIC_IPV4 is set; BIND sees the MX target has none.
    assert strict.returncode == 1
    assert "example.com/MX 'mail.example.com' has no address records" in strict.stdout
