"""The warm start: a restart with nothing changed starts on the last full boot's plan; anything
changed (settings, keys, accounts, certificate, a mounted file, the rendered configuration, the
clock) means a full boot, and the log says what changed."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailboot.base.paths import WARM_START_PLAN, Paths
from mailboot.boot import run, warmstart
from tests.conftest import offline_run_settings, run_until_the_hand_over

RELAY_PASSWORD = "relay-secret-Zq9"


@pytest.fixture
def booted(tmp_path: Path) -> dict[str, str]:
    """A full `mailboot run` to the hand-over (with a relay password in a mounted file); its
    environment."""
    password_file = tmp_path / "relay_password"
    password_file.write_text(RELAY_PASSWORD + "\n")
    environment = {**offline_run_settings(tmp_path), "RELAY_HOST": "smtp.example.net:587",
                   "RELAY_USER": "mailer", "RELAY_PASSWORD_FILE": str(password_file)}
    result = run_until_the_hand_over(tmp_path, environment)
    assert result.returncode == 0, result.stderr
    return environment


def later(seconds: float = 0) -> datetime:
    return datetime.fromtimestamp(time.time() + seconds, UTC)


def test_a_restart_with_nothing_changed_starts_on_the_full_boots_plan(
    tmp_path: Path, booted: dict[str, str]
) -> None:
    plan = warmstart.plan_to_start_on(tmp_path / "root", booted, later())
    assert plan is not None
    assert plan.supervisor[:4] == ("-P", "-S", "-m", "mailboot.daemons.supervisor")
    assert plan.data_dir == booted["DATA_DIR"]
    # The self-signed certificate is kept until a month before it ends.
    assert later(86400 * 300).timestamp() < plan.usable_until < later(86400 * 400).timestamp()
    saved = tmp_path / "root" / WARM_START_PLAN
    assert saved.stat().st_mode & 0o777 == 0o600
    assert RELAY_PASSWORD not in saved.read_text()  # the environment only as a salted digest
    rendered = plan.watched["the rendered configuration"]
    assert str(tmp_path / "root/etc/postfix/main.cf") in rendered


def touch(path: Path) -> None:
    os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns + 1_000_000))


def only_dkim_key(data: Path) -> Path:
    [key] = (data / "dkim" / "example.com").glob("*.key")
    return key


def replace(secret: Path) -> None:
    secret.write_text("another\n")


def add_alias(data: Path) -> None:
    (data / "accounts").mkdir(exist_ok=True)
    (data / "accounts" / "aliases").write_text("a@example.com b@example.com\n")


# (case, what the test changes, the part the log names)
CHANGES: list[tuple[str, Callable[[Path, dict[str, str]], None], str]] = [
    ("a setting", lambda root, env: env.update(DMARC_POLICY="quarantine"),
     "the environment (settings)"),
    ("a DKIM key", lambda root, env: touch(only_dkim_key(Path(env["DATA_DIR"]))),
     "DATA_DIR's DKIM keys, accounts and certificate"),
    ("a new account file", lambda root, env: add_alias(Path(env["DATA_DIR"])),
     "DATA_DIR's DKIM keys, accounts and certificate"),
    ("the certificate", lambda root, env: (Path(env["DATA_DIR"]) / "tls" / "live").unlink(),
     "DATA_DIR's DKIM keys, accounts and certificate"),
    ("the mounted password", lambda root, env: replace(Path(env["RELAY_PASSWORD_FILE"])),
     "the files the settings name"),
    ("main.cf edited", lambda root, env: touch(root / "etc/postfix/main.cf"),
     "the rendered configuration"),
]


@pytest.mark.parametrize(("change", "part"), [(c[1], c[2]) for c in CHANGES],
                         ids=[c[0] for c in CHANGES])
def test_anything_changed_means_a_full_boot_and_the_log_says_what(
    tmp_path: Path, booted: dict[str, str], change: Callable[[Path, dict[str, str]], None],
    part: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    environment = dict(booted)
    change(tmp_path / "root", environment)
    assert warmstart.plan_to_start_on(tmp_path / "root", environment, later()) is None
    assert f"boot: changed since the last start: {part}; a full boot" in caplog.text


def test_a_certificate_due_for_replacement_means_a_full_boot(
    tmp_path: Path, booted: dict[str, str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    plan = warmstart.read_plan(tmp_path / "root")
    assert plan is not None
    due = datetime.fromtimestamp(plan.usable_until, UTC)
    assert warmstart.plan_to_start_on(tmp_path / "root", booted, due) is None
    assert "the certificate's time (it is due for replacement)" in caplog.text


def test_no_plan_or_an_unreadable_one_means_a_full_boot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    assert warmstart.plan_to_start_on(tmp_path, {}, later()) is None
    assert caplog.text == ""  # a first start: nothing to say
    (tmp_path / WARM_START_PLAN).parent.mkdir(parents=True)
    (tmp_path / WARM_START_PLAN).write_text('{"data_dir": "/data"')
    assert warmstart.plan_to_start_on(tmp_path, {}, later()) is None
    assert "can't be read" in caplog.text and "a full boot" in caplog.text


def test_a_full_boot_begins_by_forgetting_the_plan(tmp_path: Path,
                                                   booted: dict[str, str]) -> None:
    """Until the full boot ends, a restart must not start on the last one's plan."""
    paths = Paths(Path(booted["DATA_DIR"]), config_root=tmp_path / "root")
    assert paths.warm_start_plan.exists()
    warmstart.forget_plan(paths)
    assert warmstart.read_plan(tmp_path / "root") is None


def test_a_warm_start_prepares_the_daemons_then_hands_over_with_the_boot_beside(
    tmp_path: Path, booted: dict[str, str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    plan = warmstart.plan_to_start_on(tmp_path / "root", booted, later())
    assert plan is not None
    worker_state = tmp_path / "run" / "worker-state.json"
    worker_state.parent.mkdir(exist_ok=True)
    worker_state.write_text("{}")  # the last run's: a start forgets it
    steps: list[str] = []

    def prepare(paths: Paths) -> None:
        assert paths.data_dir == Path(booted["DATA_DIR"])
        assert paths.config_root == tmp_path / "root" and paths.run_dir == tmp_path / "run"
        steps.append("prepare")

    def start_daemons(supervisor: Sequence[str]) -> list[str]:
        assert list(supervisor) == list(plan.supervisor)
        steps.append("start the daemons")
        return ["--adopt=postfix=4242"]

    def hand_over(argv: Sequence[str]) -> None:
        assert argv[-1] == "--adopt=postfix=4242"  # the supervisor takes them over
        steps.append(f"hand over to {argv[argv.index('-m') + 1]}")

    platform = run.WarmStart(prepare=prepare, beside=lambda: steps.append("beside"),
                             start_daemons=start_daemons, hand_over=hand_over)
    run.start_on_plan(plan, tmp_path / "root", platform)
    assert steps == ["prepare", "start the daemons", "beside",
                     "hand over to mailboot.daemons.supervisor"]
    assert not worker_state.exists()
    assert "nothing changed since this container last started" in caplog.text
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        *plan.warnings]  # said again, at the level that shows in the log
    assert any(w.startswith("PUBLIC_IPV4: 203.0.113.25 is not a public address")
               for w in plan.warnings)


def test_strict_dns_checks_before_the_daemons_and_writes_no_plan(tmp_path: Path) -> None:
    """DNS_CHECK=strict may refuse the start: the records are checked first, and a restart
    never skips that check."""
    closed = "127.0.0.1:9"  # discard: no DNS server there, every lookup fails at once
    result = run_until_the_hand_over(tmp_path, {**offline_run_settings(tmp_path),
                                                "DNS_CHECK": "strict", "DNS_RESOLVERS": closed})
    assert result.returncode == 78, result.stderr
    assert "DNS_CHECK=strict and these required records are not in place" in result.stderr
    assert "handed over" not in result.stderr
    assert not (tmp_path / "root" / WARM_START_PLAN).exists()


def test_a_plan_that_cant_be_kept_costs_only_the_warm_start(
    tmp_path: Path, booted: dict[str, str], caplog: pytest.LogCaptureFixture,
) -> None:
    plan = warmstart.read_plan(tmp_path / "root")
    assert plan is not None
    blocked = tmp_path / "blocked"
    (blocked / "var" / "lib").mkdir(parents=True)
    (blocked / "var" / "lib" / "mailboot").write_text("a file where the directory belongs")
    warmstart.write_plan(Paths(Path(plan.data_dir), config_root=blocked), plan)
    assert "can't keep the warm-start plan" in caplog.text
    assert "every restart boots in full" in caplog.text
