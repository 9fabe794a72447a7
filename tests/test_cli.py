"""The `mailboot` command as users run it: a real process, real environment, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mailboot.dnscheck import SHARED_FAILURE_HINT
from tests.conftest import FakeDns, snapshot

ROOT = Path(__file__).resolve().parent.parent


def mailboot(
    *args: str, env: dict[str, str], entry: str = "module"
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mailboot"] if entry == "module" else [
        sys.executable, str(ROOT / "entrypoint.py")]
    return subprocess.run([*command, *args], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MAIL_DOMAINS": "example.com,example.org", "PUBLIC_IPV4": "203.0.113.25",
            "DATA_DIR": str(tmp_path / "data")}


def test_bad_settings_print_every_problem_exit_78_and_create_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = mailboot("dns", env={"MAIL_DOMAINS": "example.com,localhost", "DATA_DIR": str(data),
                                  "PUBLIC_IPV4": "203.0.113.999", "DMARC_POLICY": "strict"})
    assert result.returncode == 78
    assert result.stdout == ""
    problems = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert [p.split(":")[0] for p in problems] == ["MAIL_DOMAINS", "PUBLIC_IPV4", "DMARC_POLICY"]
    assert all("(example: " in p for p in problems)
    assert not data.exists()


def test_bad_settings_leave_existing_state_untouched(env: dict[str, str]) -> None:
    assert mailboot("dns", env=env).returncode == 0
    before = snapshot(Path(env["DATA_DIR"]))
    result = mailboot("dns", env={**env, "MAIL_DOMAINS": "example.com,example.net,", })
    assert result.returncode == 78
    assert snapshot(Path(env["DATA_DIR"])) == before


def test_missing_required_setting(tmp_path: Path) -> None:
    result = mailboot("dns", env={"DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 78
    assert "MAIL_DOMAINS: is required but not set (example: MAIL_DOMAINS=" in result.stderr


def test_dns_check_with_dns_failing_says_why_once(
    env: dict[str, str], fake_dns: Callable[..., FakeDns]
) -> None:
    refusing = fake_dns()
    refusing.mode = "REFUSED"
    result = mailboot("dns", "--check", "--zone",
                      env={**env, "DNS_RESOLVERS": f"127.0.0.1:{refusing.port}"})
    assert result.returncode == 1
    reason = ("the DNS servers in DNS_RESOLVERS failed the question (127.0.0.1: REFUSED): they "
              "must answer for these names")
    assert result.stderr.count(reason) == 1, result.stderr
    assert f"mailboot: dns: can't check the DNS records: {reason}" in result.stderr
    assert reason not in result.stdout
    assert result.stdout.count(f";   -> {SHARED_FAILURE_HINT}") > 10


def test_dns_prints_zone_then_table_and_logs_to_stderr(env: dict[str, str]) -> None:
    result = mailboot("dns", env=env)
    assert result.returncode == 0, result.stderr
    zone_part, table_part = result.stdout.split("\nFor web forms:")
    assert "example.com.                              3600 IN MX    10 mail.example.com." in (
        zone_part)
    assert "== example.org: in the DNS zone of example.org ==" in table_part
    assert "created a new 2048-bit key for example.com" in result.stderr
    assert "created a new" not in result.stdout


def test_second_run_prints_the_same_and_changes_no_byte(env: dict[str, str]) -> None:
    first = mailboot("dns", env=env)
    before = snapshot(Path(env["DATA_DIR"]))
    second = mailboot("dns", env=env)
    assert second.returncode == 0
    assert second.stdout == first.stdout
    assert snapshot(Path(env["DATA_DIR"])) == before
    assert "created" not in second.stderr


def test_zone_and_json_forms(env: dict[str, str]) -> None:
    zone = mailboot("dns", "--zone", env=env)
    assert zone.returncode == 0
    assert "For web forms" not in zone.stdout
    records = json.loads(mailboot("dns", "--json", env=env).stdout)
    names = {(r["name"], r["type"]) for r in records}
    assert ("_dmarc.example.org.", "TXT") in names
    assert ("25.113.0.203.in-addr.arpa.", "PTR") in names


def test_domain_selects_one_zone(env: dict[str, str]) -> None:
    result = mailboot("dns", "--zone", "--domain", "Example.ORG", env=env)
    assert result.returncode == 0
    names = {line.split()[0] for line in result.stdout.splitlines() if line and line[0] != ";"}
    assert names and all(name.endswith("example.org.") for name in names)
    unknown = mailboot("dns", "--domain", "example.net", env=env)
    assert unknown.returncode == 64
    assert "the zones are example.com, example.org" in unknown.stderr


def test_corrupt_key_is_reported_and_kept(env: dict[str, str]) -> None:
    key_dir = Path(env["DATA_DIR"]) / "dkim" / "example.com"
    key_dir.mkdir(parents=True)
    (key_dir / "mb20260101.key").write_text("garbage")
    result = mailboot("dns", env=env)
    assert result.returncode == 78
    assert "mb20260101.key is not a readable, unencrypted PEM private key" in result.stderr
    assert (key_dir / "mb20260101.key").read_text() == "garbage"


def test_entrypoint_and_settings_command(env: dict[str, str]) -> None:
    result = mailboot("settings", env={}, entry="entrypoint")
    assert result.returncode == 0
    assert result.stdout.startswith("| variable | default | meaning |")
    assert "`MAIL_DOMAINS` | required |" in result.stdout
    assert mailboot("dns", "--zone", env=env, entry="entrypoint").returncode == 0


def test_warnings_go_to_stderr(env: dict[str, str]) -> None:
    result = mailboot("dns", "--zone", env={**env, "DMARC_POLCY": "none"})
    assert result.returncode == 0
    assert "DMARC_POLCY is not a mailboot setting and is ignored; did you mean DMARC_POLICY?" in (
        result.stderr)
