"""The `mailboot` command as users run it: a real process, real environment, real files."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

import mailboot as mailboot_package
from mailboot.cli import accounts as cli_accounts
from mailboot.cli.main import main
from mailboot.mailboxes import accounts
from mailboot.records.doctor import SHARED_FAILURE_HINT
from tests.conftest import FakeDns, offline_run_settings, run_until_the_hand_over, snapshot

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


# Bad settings as the container meets them (its settings, one broken at a time): the command stops
# with 78, names the variable and the fix, prints no traceback and creates nothing. A parser's
# answer is the same in the image, so these run here, in-process, instead of one container each;
# tests/container/test_hardening.py keeps the cases that need the image (mounts, files, /data).
CONTAINER = {"MAIL_DOMAINS": "example.com,example.org", "TLS_MODE": "self-signed",
             "DNS_CHECK": "off"}
# (case id, variables to set, or to remove with None; what the message must say)
BAD_SETTINGS: list[tuple[str, dict[str, str | None], str]] = [
    ("domains-missing", {"MAIL_DOMAINS": None}, "MAIL_DOMAINS: is required but not set"),
    ("domain-with-space", {"MAIL_DOMAINS": "exa mple.com"},
     "MAIL_DOMAINS: 'exa mple.com' contains white space"),
    ("ip-as-domain", {"MAIL_DOMAINS": "192.0.2.1"}, "MAIL_DOMAINS: '192.0.2.1' is an IP address"),
    ("address-as-domain", {"MAIL_DOMAINS": "user@example.com"},
     "MAIL_DOMAINS: 'user@example.com' looks like an email address"),
    ("duplicate-domains", {"MAIL_DOMAINS": "example.com,EXAMPLE.com"},
     "MAIL_DOMAINS: lists 'example.com' twice"),
    ("single-label", {"MAIL_DOMAINS": "localhost"},
     "MAIL_DOMAINS: 'localhost' is not a fully-qualified domain name"),
    ("trailing-comma", {"MAIL_DOMAINS": "example.com,"}, "MAIL_DOMAINS: has an empty entry"),
    ("ip-as-hostname", {"MAIL_HOSTNAME": "192.0.2.25"},
     "MAIL_HOSTNAME: '192.0.2.25' is an IP address"),
    ("url-as-hostname", {"MAIL_HOSTNAME": "https://mail.example.com"},
     "MAIL_HOSTNAME: 'https://mail.example.com' looks like a URL"),
    ("bad-ipv4", {"PUBLIC_IPV4": "300.1.1.1"}, "PUBLIC_IPV4: '300.1.1.1' is not an IP address"),
    ("ipv6-as-ipv4", {"PUBLIC_IPV4": "2001:db8::1"}, "PUBLIC_IPV4: '2001:db8::1' is an IPv6"),
    ("ipv4-as-ipv6", {"PUBLIC_IPV6": "192.0.2.1"}, "PUBLIC_IPV6: '192.0.2.1' is an IPv4"),
    ("dmarc-policy", {"DMARC_POLICY": "strict"},
     "DMARC_POLICY: 'strict' is not one of none, quarantine, reject"),
    ("dmarc-rua", {"DMARC_RUA": "reports"}, "DMARC_RUA: 'reports' is not an email address"),
    ("tlsrpt-rua", {"TLSRPT_RUA": "https://"}, "TLSRPT_RUA: 'https://' is not a usable https URI"),
    ("mta-sts-mode", {"MTA_STS_MODE": "on"}, "MTA_STS_MODE: 'on' is not one of enforce"),
    ("mta-sts-max-age", {"MTA_STS_MAX_AGE": "2y"}, "MTA_STS_MAX_AGE: '2y' is not a duration"),
    ("tls-mode", {"TLS_MODE": "letsencrypt"}, "TLS_MODE: 'letsencrypt' is not one of acme"),
    ("manual-without-files", {"TLS_MODE": "manual"},
     "TLS_CERT_FILE: is required with TLS_MODE=manual"),
    ("relative-cert-path", {"TLS_MODE": "manual", "TLS_CERT_FILE": "certs/fullchain.pem",
                            "TLS_KEY_FILE": "/certs/key.pem"},
     "TLS_CERT_FILE: 'certs/fullchain.pem' is a relative path"),
    ("http-acme-directory", {"ACME_DIRECTORY": "http://acme.example.com/dir"},
     "ACME_DIRECTORY: 'http://acme.example.com/dir' is not an https:// URL"),
    ("acme-email", {"ACME_EMAIL": "hostmaster"}, "ACME_EMAIL: 'hostmaster' is not an email"),
    ("eab-half", {"ACME_EAB_KID": "kid-1"},
     "ACME_EAB_HMAC_KEY: is required when ACME_EAB_KID is set"),
    ("retry-zero", {"ACME_RETRY_INTERVAL": "0"},
     "ACME_RETRY_INTERVAL: '0' is outside 1 second to 1 hour"),
    ("dns-check", {"DNS_CHECK": "yes"}, "DNS_CHECK: 'yes' is not one of warn, strict, off"),
    ("resolver-name", {"DNS_RESOLVERS": "dns.example.com"},
     "DNS_RESOLVERS: 'dns.example.com' is not an IP address"),
    ("resolver-port", {"DNS_RESOLVERS": "[::1]:abc"},
     "DNS_RESOLVERS: '[::1]:abc' has a port that is not a number"),
    ("relay-port", {"RELAY_HOST": "smtp.example.net:submission"},
     "RELAY_HOST: 'smtp.example.net:submission' has a port that is not a number"),
    ("relay-user-alone", {"RELAY_HOST": "smtp.example.net", "RELAY_USER": "apikey"},
     "RELAY_PASSWORD_FILE or RELAY_PASSWORD: is required with RELAY_USER"),
    ("relay-password-file-missing", {"RELAY_HOST": "smtp.example.net", "RELAY_USER": "apikey",
                                     "RELAY_PASSWORD_FILE": "/nonexistent/relay_password"},
     "RELAY_PASSWORD_FILE: /nonexistent/relay_password can't be read (No such file or "
     "directory); mount the file"),
    ("spf-include", {"RELAY_SPF_INCLUDE": "ip4:192.0.2.1"},
     "RELAY_SPF_INCLUDE: 'ip4:192.0.2.1' is not a valid domain name for include:"),
]


@pytest.mark.parametrize(("case", "changes", "says"), BAD_SETTINGS,
                         ids=[case for case, _, _ in BAD_SETTINGS])
def test_a_bad_setting_exits_78_names_the_fix_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
    changes: dict[str, str | None], says: str,
) -> None:
    data = tmp_path / "data"
    environ = {name: value for name, value in {**CONTAINER, **changes}.items() if value is not None}
    out = io.StringIO()
    # `dns`, not `run`: the settings are loaded the same way before any subcommand, and a case
    # that stopped failing would then write DNS keys (caught below) instead of exec'ing daemons.
    assert main(["dns"], environ={**environ, "DATA_DIR": str(data)}, stdout=out) == 78
    printed = capsys.readouterr()
    problems = [line.strip() for line in printed.err.splitlines() if line.startswith("  ")]
    assert any(problem.startswith(says) for problem in problems), printed.err
    # every problem shows the fix: a right value, or what to do with the file
    assert all("(example: " in problem or "mount the file" in problem for problem in problems)
    assert "Traceback" not in printed.err
    assert out.getvalue() == printed.out == ""
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
    assert f"mailboot: warning: dns: can't check the DNS records: {reason}" in result.stderr
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


@pytest.mark.parametrize("entry", ["module", "entrypoint", "script"])
def test_version_is_printed_without_settings_or_a_data_dir(entry: str, tmp_path: Path) -> None:
    """`python3 -m mailboot`, the image's entrypoint and the installed `mailboot` script alike;
    no MAIL_DOMAINS and no /data: `docker run <image> --version` must answer anywhere."""
    if entry == "script":
        script = Path(sys.executable).parent / "mailboot"
        result = subprocess.run([str(script), "--version"], env={"PATH": "/usr/bin:/bin"},
                                capture_output=True, text=True, timeout=60, check=False)
    else:
        result = mailboot("--version", env={"DATA_DIR": str(tmp_path / "data")}, entry=entry)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"mailboot {mailboot_package.__version__}\n", "")
    assert not (tmp_path / "data").exists()


def test_the_version_is_written_once_and_the_package_metadata_reads_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "mailboot.__version__"}


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"mailboot {mailboot_package.__version__}\n"


def test_warnings_go_to_stderr(env: dict[str, str]) -> None:
    result = mailboot("dns", "--zone", env={**env, "DMARC_POLCY": "none"})
    assert result.returncode == 0
    assert ("mailboot: warning: DMARC_POLCY is not a mailboot setting and is ignored; did you "
            "mean DMARC_POLICY?\n") in result.stderr


def test_quota_options_and_sizes_read_as_people_write_them() -> None:
    assert cli_accounts.parse_quota_option("5G") == 5 << 30
    assert cli_accounts.parse_quota_option("500m") == 500 << 20
    assert cli_accounts.parse_quota_option("1MiB") == 1 << 20
    assert cli_accounts.parse_quota_option("default") is None
    assert cli_accounts.parse_quota_option("unlimited") == accounts.UNLIMITED
    for bad in ("5X", "-1G", "0", "lots"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a size"):
            cli_accounts.parse_quota_option(bad)


def test_account_import_refuses_the_whole_list_for_one_bad_line(
        env: dict[str, str], tmp_path: Path) -> None:
    """Before any hashing or writing: nothing outside the image is needed to see it refused."""
    lines = "ok@example.com\t{BLF-CRYPT}$2y$05$abc\nbad@example.net\tlong enough password\n"
    result = subprocess.run([sys.executable, "-m", "mailboot", "account", "import"],
                            input=lines, env={"PATH": "/usr/bin:/bin", **env},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 65, result.stderr
    assert "line 2: 'bad@example.net' is not at one of the mail domains" in result.stderr
    assert "nothing was imported" in result.stderr
    assert not (tmp_path / "data" / "accounts" / "passwd").exists()


def test_a_quota_is_described_as_set(tmp_path: Path) -> None:
    from mailboot.settings.table import load_settings

    plain = load_settings({"MAIL_DOMAINS": "example.com", "DATA_DIR": str(tmp_path)})
    capped = load_settings({"MAIL_DOMAINS": "example.com", "DATA_DIR": str(tmp_path),
                            "MAILBOX_QUOTA": "5G"})
    assert cli_accounts.describe_quota(None, capped) == "MAILBOX_QUOTA: 5.0 GiB"
    assert cli_accounts.describe_quota(None, plain) == "MAILBOX_QUOTA: unlimited"
    assert cli_accounts.describe_quota(accounts.UNLIMITED, capped) == "unlimited"
    assert cli_accounts.describe_quota(1 << 20, capped) == "1.0 MiB"


def test_run_hands_over_without_dnspython_and_prints_the_records_beside_the_daemons(
    tmp_path: Path,
) -> None:
    """The records wait on the network (address discovery, TLSA, the check): the daemons don't
    wait for them, and the path to the daemons doesn't pay for dnspython's import."""
    result = run_until_the_hand_over(tmp_path, offline_run_settings(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "handed over; DNS modules loaded: []" in result.stderr
    # The grandchild announced beside them, after the hand-over; its pipe kept run() waiting.
    assert "IN MX    10 mail.example.com." in result.stdout
    assert "For web forms:" in result.stdout
    handed_over = result.stderr.index("handing over to the supervisor")
    assert result.stderr.index("outbound: direct delivery by MX lookup from 203.0.113.25") \
        > handed_over
    assert (tmp_path / "root/etc/postfix/main.cf").exists()
