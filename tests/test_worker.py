"""The worker's certificate decisions, driven with a fixed clock, fake DNS and a fake CA."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mailboot.acme.keeper import AcmeKeeper, Keeper, keeper_for
from mailboot.base.errors import IssueError
from mailboot.base.formats import machine_time
from mailboot.base.paths import Paths
from mailboot.base.taskstate import JsonObject, Saved, StateUnreadable
from mailboot.settings.table import Settings
from mailboot.tls import certificates
from mailboot.web.challenges import ChallengeStore
from mailboot.worker import tasks as worker
from tests.conftest import NOW, FakeCa
from tests.keeper_world import HOST, NAMES, World, all_ready


@pytest.fixture
def ca() -> FakeCa:
    return FakeCa()


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def make_keeper(
    make_settings: Callable[..., Settings], world: World, ca: FakeCa
) -> Callable[..., Keeper]:
    def make(**variables: str) -> Keeper:
        settings = make_settings(**{"MAIL_DOMAINS": "example.com", "ACME_RETRY_INTERVAL": "5m",
                                    **variables})
        paths = Paths(settings.data_dir)
        certificates.ensure_certificate(paths, ["mail.example.com"], NOW)  # what the boot does
        store = ChallengeStore(paths.acme_challenges)

        def make_issuer() -> FakeCa:
            world.issuers_made += 1
            return ca

        def reload() -> None:
            world.reloads += 1

        return keeper_for(settings, paths, make_issuer, world.resolve, world.fetch_through(store),
                         store, reload)
    return make


def live(keeper: Keeper) -> certificates.Certificate:
    certificate = certificates.read_live(keeper.paths)
    assert certificate is not None
    return certificate


def test_first_start_with_dns_ready_issues_for_every_name(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa
) -> None:
    world.dns = all_ready()
    keeper = make_keeper()
    wake = keeper.step(NOW)
    assert ca.orders == [NAMES]
    assert live(keeper).source == "acme" and live(keeper).issuer == "CN=Fake CA"
    assert world.reloads == 1
    assert wake == NOW + timedelta(hours=12)  # re-evaluated twice a day; renewal is far off


def test_each_new_name_is_announced_once_with_what_it_makes_possible(
    make_keeper: Callable[..., Keeper], world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.dns = {"mail.example.com": {HOST}, "autoconfig.example.com": {HOST}}
    keeper = make_keeper()
    caplog.set_level(logging.INFO)
    retry = keeper.step(NOW)
    assert caplog.text.count("autoconfig: autoconfig.example.com has a certificate from the CA "
                             "now: mail clients can configure themselves") == 1
    assert "mta-sts.example.com has a certificate" not in caplog.text
    world.dns = all_ready()
    keeper.step(retry)
    assert caplog.text.count("autoconfig.example.com has a certificate") == 1  # said once
    assert "autoconfig: autodiscover.example.com has a certificate from the CA now" in (
        caplog.text)
    assert "mta-sts: mta-sts.example.com has a certificate from the CA now: publish " in (
        caplog.text)


def test_names_not_resolving_yet_are_polled_every_minute_however_long_it_takes(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keeper = make_keeper()
    caplog.set_level(logging.INFO)
    first = keeper.step(NOW)
    assert first == NOW + timedelta(minutes=1)  # DNS_CHECK_INTERVAL, not ACME_RETRY_INTERVAL
    assert ca.orders == []
    assert "serving a temporary certificate: mail.example.com does not resolve yet" in caplog.text
    assert "looking again every 1 min, and as soon as the DNS records change" in caplog.text
    assert keeper.step(NOW + timedelta(seconds=30)) == first  # too early: nothing happens
    caplog.clear()
    moment = first
    for _ in range(180):  # three hours of polls: the wait never grows
        wake = keeper.step(moment)
        assert wake == moment + timedelta(minutes=1)
        moment = wake
    assert ca.orders == []
    # Said again hourly while it lasts, not at every poll.
    assert caplog.text.count("mail.example.com does not resolve yet") == 3
    world.dns = all_ready()
    keeper.step(moment)
    assert ca.orders == [NAMES]


def test_a_dns_change_brings_the_next_look_forward(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa
) -> None:
    keeper = make_keeper()
    assert isinstance(keeper, AcmeKeeper)
    keeper.step(NOW)
    world.dns = {"mail.example.com": {HOST}}
    assert keeper.step(NOW + timedelta(seconds=5)) == NOW + timedelta(minutes=1)
    assert ca.orders == []
    keeper.nudge()
    keeper.step(NOW + timedelta(seconds=5))
    assert ca.orders == [["mail.example.com"]]


def test_failures_that_reached_the_ca_back_off_and_polls_keep_that_backoff(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa
) -> None:
    world.dns = {"mail.example.com": {HOST}}
    ca.fail = IssueError("waiting for validation: the CA could not connect")
    keeper = make_keeper()
    assert isinstance(keeper, AcmeKeeper)
    assert keeper.step(NOW) == NOW + timedelta(minutes=5)  # ACME_RETRY_INTERVAL
    keeper.nudge()  # a DNS change does not cut a CA backoff short
    assert keeper.step(NOW + timedelta(minutes=1)) == NOW + timedelta(minutes=5)
    second = NOW + timedelta(minutes=5)
    assert keeper.step(second) == second + timedelta(minutes=10)  # doubling
    ca.fail = None
    world.dns = {}  # the record went away: polled again, but not before the backoff ends
    assert keeper.step(second + timedelta(minutes=10)) == second + timedelta(minutes=11)
    assert len(ca.orders) == 2  # the two failed attempts; none while the record is missing


def test_name_pointing_elsewhere_is_not_ordered(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world.dns = {"mail.example.com": {"198.51.100.9"}}
    keeper = make_keeper(PUBLIC_IPV4=HOST)
    keeper.step(NOW)
    assert ca.orders == []
    assert "points to 198.51.100.9, not to this server (203.0.113.25)" in caplog.text


def test_the_certificate_arrives_once_dns_is_ready_without_a_restart(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa
) -> None:
    keeper = make_keeper()
    retry = keeper.step(NOW)
    assert live(keeper).self_signed
    world.dns = {"mail.example.com": {HOST}}
    keeper.step(retry)
    assert ca.orders == [["mail.example.com"]]
    assert live(keeper).source == "acme"


def test_missing_mta_sts_name_is_added_when_it_resolves(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa
) -> None:
    world.dns = {"mail.example.com": {HOST}}
    keeper = make_keeper()
    retry = keeper.step(NOW)
    assert ca.orders == [["mail.example.com"]]
    assert retry == NOW + timedelta(minutes=1)
    world.dns["mta-sts.example.com"] = {HOST}
    keeper.step(retry)
    assert ca.orders[-1] == ["mail.example.com", "mta-sts.example.com"]


def test_restart_with_a_valid_certificate_asks_the_ca_nothing(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa
) -> None:
    world.dns = all_ready()
    make_keeper().step(NOW)
    made = world.issuers_made
    restarted = make_keeper()
    wake = restarted.step(NOW + timedelta(minutes=1))
    assert world.issuers_made == made and len(ca.orders) == 1
    assert wake > NOW + timedelta(hours=1)


def test_renewal_when_a_third_of_the_lifetime_remains(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa
) -> None:
    world.dns = all_ready()
    keeper = make_keeper()
    keeper.step(NOW)
    first = live(keeper)
    keeper.step(NOW + timedelta(days=59))
    assert len(ca.orders) == 1
    due = NOW + timedelta(days=60, minutes=1)
    ca.now = due
    keeper.step(due)
    assert len(ca.orders) == 2
    assert live(keeper).directory != first.directory and world.reloads == 2


def test_ca_errors_keep_the_temporary_certificate_and_honour_retry_after(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world.dns = all_ready()
    ca.fail = IssueError("placing the order: the CA said rateLimited: too many certificates",
                         retry_at=NOW + timedelta(hours=3))
    keeper = make_keeper()
    assert keeper.step(NOW) == NOW + timedelta(hours=3)
    assert live(keeper).self_signed and world.reloads == 0
    assert "too many certificates; next try at 2026-11-25 15:00:00 UTC" in caplog.text


def test_manual_mode_serves_the_mounted_files_and_follows_changes(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa, tmp_path: Path
) -> None:
    cert_file, key_file = tmp_path / "chain.pem", tmp_path / "key.pem"
    issued = ca.issue(["mail.example.com"])
    cert_file.write_bytes(issued.chain_pem)
    key_file.write_bytes(issued.key_pem)
    keeper = make_keeper(TLS_MODE="manual", TLS_CERT_FILE=str(cert_file),
                         TLS_KEY_FILE=str(key_file))
    keeper.step(NOW)
    assert live(keeper).source == "manual" and world.reloads == 1
    keeper.step(NOW + timedelta(seconds=5))
    assert world.reloads == 1  # unchanged files: nothing to do
    renewed = ca.issue(["mail.example.com"])
    key_file.write_bytes(renewed.key_pem)  # half-replaced: key and chain don't match yet
    keeper.step(NOW + timedelta(seconds=10))
    assert world.reloads == 1 and live(keeper).chain_path.read_bytes() == issued.chain_pem
    cert_file.write_bytes(renewed.chain_pem)
    keeper.step(NOW + timedelta(seconds=15))
    assert world.reloads == 2 and live(keeper).chain_path.read_bytes() == renewed.chain_pem


def test_an_unreachable_ca_is_reported_before_dns_is_ready(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ca.unreachable = True
    keeper = make_keeper()
    assert keeper.step(NOW) == NOW + timedelta(minutes=5)
    assert "serving a temporary certificate: reading the CA's directory: the CA can't be" in (
        caplog.text)
    assert ca.orders == []


def test_network_failures_from_the_acme_library_become_issue_errors() -> None:
    """acme's ClientNetwork raises a bare ValueError("Requesting ...") when it can't connect."""
    from mailboot.acme.issuer import _explained

    with pytest.raises(IssueError, match="reading the CA's directory: the CA can't be reached"), \
            _explained("reading the CA's directory"):
        raise ValueError("Requesting 127.0.0.1/directory: Connection refused")
    with pytest.raises(ValueError, match="unrelated"), _explained("anything"):
        raise ValueError("unrelated")


def test_more_names_than_one_certificate_takes_are_spread_over_several(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa
) -> None:
    domains = [f"d{n}.example" for n in range(150)]
    world.dns = {name: {HOST} for name in ["mail.example.com"] + [f"mta-sts.{d}" for d in domains]}
    keeper = make_keeper(MAIL_DOMAINS=",".join(domains), MAIL_HOSTNAME="mail.example.com")
    keeper.step(NOW)
    assert [len(order) for order in ca.orders] == [100, 51]
    assert ca.orders[0][0] == "mail.example.com"
    first = certificates.read_live(keeper.paths, 0)
    second = certificates.read_live(keeper.paths, 1)
    assert first is not None and second is not None
    assert "mail.example.com" in first.names and "mta-sts.d149.example" in second.names
    assert world.reloads == 1  # the daemons serve only the first
    keeper.step(NOW + timedelta(minutes=1))
    assert len(ca.orders) == 2  # both current: nothing more to do


def test_certificate_groups() -> None:
    from mailboot.acme.keeper import certificate_groups

    assert certificate_groups(["a", "b", "c"], limit=2) == [["a", "b"], ["c"]]
    assert certificate_groups(["a"], limit=100) == [["a"]]


def test_the_cas_renewal_suggestion_is_followed_and_remembered_across_restarts(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa
) -> None:
    world.dns = all_ready()
    ca.suggestion = NOW + timedelta(days=20)  # sooner than a third of the lifetime before expiry
    keeper = make_keeper()
    assert keeper.step(NOW) == NOW + timedelta(hours=12)
    keeper.step(NOW + timedelta(hours=1))
    assert ca.renewal_questions == 1  # asked once, then remembered for its refresh period
    memo = keeper.paths.tls_dir / "renewal-info-0.json"
    assert json.loads(memo.read_text())["suggested"] == machine_time(ca.suggestion)
    assert not [p for p in keeper.paths.tls_dir.iterdir() if ".tmp-" in p.name]
    restarted = make_keeper()
    restarted.step(NOW + timedelta(hours=2))
    assert ca.renewal_questions == 1  # a restart reads the memo: no request to the CA
    restarted.step(NOW + timedelta(hours=7))
    assert ca.renewal_questions == 2  # six hours on, the CA is asked again
    ca.now = NOW + timedelta(days=20, minutes=1)
    restarted.step(ca.now)
    assert len(ca.orders) == 2  # renewed at the CA's suggestion, 40 days early


def test_a_renewal_suggestion_past_the_lifetime_is_capped(
    make_keeper: Callable[..., Keeper], world: World, ca: FakeCa
) -> None:
    world.dns = all_ready()
    ca.suggestion = NOW + timedelta(days=400)
    keeper = make_keeper()
    keeper.step(NOW)
    ca.now = NOW + timedelta(days=81, minutes=1)  # nine tenths of 90 days
    keeper.step(ca.now)
    assert len(ca.orders) == 2


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    def step(self, now: datetime) -> datetime:
        self.calls += 1
        raise RuntimeError("a bug in one task")

    def state(self) -> JsonObject:
        return {}

    def restore(self, saved: Saved) -> None:
        pass


class Hourly:
    """Steps hourly and remembers how often it was stepped (its state)."""

    def __init__(self, nudges: worker.Nudges | None = None, nudge: str | None = None) -> None:
        self.steps: list[datetime] = []
        self.total = 0
        self.nudges, self.nudge = nudges, nudge

    def step(self, now: datetime) -> datetime:
        self.steps.append(now)
        self.total += 1
        if self.nudges is not None and self.nudge is not None and self.total == 1:
            self.nudges.names.add(self.nudge)
        return now + timedelta(hours=1)

    def state(self) -> JsonObject:
        return {"total": self.total}

    def restore(self, saved: Saved) -> None:
        total = saved.get("total")
        if not isinstance(total, int):
            raise StateUnreadable(f"total: {total!r}")
        self.total = total


def test_a_failing_task_is_logged_and_retried_while_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exploding, hourly = Exploding(), Hourly()
    with caplog.at_level(logging.ERROR):
        run = worker.run_once({"boom": exploding, "hourly": hourly}, None, {}, worker.Nudges(),
                              NOW)
    assert exploding.calls == 1 and hourly.steps == [NOW]
    assert run.due == {"boom": NOW + worker.RETRY_AFTER_CRASH,
                       "hourly": NOW + timedelta(hours=1)}
    assert run.next_due == NOW + worker.RETRY_AFTER_CRASH
    assert "Exploding failed: RuntimeError: a bug in one task; trying again at" in caplog.text
    assert "Mail is not affected" in caplog.text


def test_only_due_tasks_are_stepped_and_each_gets_its_memory_back() -> None:
    first = worker.run_once({"a": Hourly(), "b": Hourly()}, None, {}, worker.Nudges(), NOW)
    saved = worker.read_run(worker.state_json(first, NOW))
    assert saved is not None and saved.due == first.due
    a, b = Hourly(), Hourly()
    later = NOW + timedelta(minutes=30)
    second = worker.run_once({"a": a, "b": b}, replace(saved, due={**saved.due, "b": later}),
                             {}, worker.Nudges(), later)
    assert a.steps == [] and b.steps == [later]  # a is due at NOW + 1 h
    assert (a.total, b.total) == (1, 2)  # restored from the first run, then stepped
    assert second.due["a"] == NOW + timedelta(hours=1)


def test_forced_runs_step_every_task_now() -> None:
    first = worker.run_once({"a": Hourly()}, None, {}, worker.Nudges(), NOW)
    a = Hourly()
    worker.run_once({"a": a}, first, {}, worker.Nudges(), NOW + timedelta(minutes=1), force=True)
    assert a.steps == [NOW + timedelta(minutes=1)]


def test_a_changed_watched_file_steps_its_task(tmp_path: Path) -> None:
    request = tmp_path / "rollover"
    watch = {"a": [request]}
    first = worker.run_once({"a": Hourly(), "b": Hourly()}, None, watch, worker.Nudges(), NOW)
    soon = NOW + timedelta(minutes=1)
    a, b = Hourly(), Hourly()
    worker.run_once({"a": a, "b": b}, first, watch, worker.Nudges(), soon)
    assert a.steps == [] and b.steps == []  # nothing changed, nothing due
    request.write_text("next\n")
    worker.run_once({"a": a, "b": b}, first, watch, worker.Nudges(), soon)
    assert a.steps == [soon] and b.steps == []


def test_a_nudge_steps_the_nudged_task_again_in_the_same_run() -> None:
    nudges = worker.Nudges()
    keeper, watcher = Hourly(), Hourly(nudges, nudge="keeper")
    worker.run_once({"keeper": keeper, "dns": watcher}, None, {}, nudges, NOW)
    assert keeper.steps == [NOW, NOW] and watcher.steps == [NOW]


def test_a_state_that_cant_be_read_starts_the_task_afresh(
        caplog: pytest.LogCaptureFixture) -> None:
    saved = worker.Run({"a": NOW}, {"a": {"total": "many"}}, {"a": {}})
    a = Hourly()
    with caplog.at_level(logging.INFO):
        worker.run_once({"a": a}, saved, {}, worker.Nudges(), NOW)
    assert a.total == 1 and "starting a afresh" in caplog.text


@pytest.mark.parametrize(("content", "cause"), [
    ("{not json", "JSONDecodeError: Expecting property name enclosed in double quotes"),
    (json.dumps({"version": 0}), "its version is 0; this one reads 1"),
    (json.dumps({"version": 1, "tasks": {"a": {"due": "soon"}}}), "Invalid isoformat string"),
    ("[]", "AttributeError"),
])
def test_a_run_state_that_cant_be_read_is_said_once_with_its_cause(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, cause: str) -> None:
    path = tmp_path / "worker.json"
    path.write_text(content)
    with caplog.at_level(logging.INFO, logger="mailboot.worker"):
        assert worker.load_run(path) is None
    (record,) = caplog.records
    assert f"the last run's state {path} can't be read (" in record.getMessage()
    assert cause in record.getMessage()
    with pytest.raises(StateUnreadable):
        worker.read_run(content)


def test_a_run_state_file_that_cant_be_opened_is_a_warning_and_a_missing_one_is_silent(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mailboot.worker"):
        assert worker.load_run(tmp_path / "absent.json") is None  # the first run
        assert caplog.records == []
        assert worker.load_run(tmp_path) is None  # a directory: EISDIR
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert f"can't read the last run's state {tmp_path} (Is a directory)" in record.getMessage()


def test_the_keepers_memory_survives_a_run(
    make_keeper: Callable[..., Keeper], world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """What the next run needs: the CA backoff, the announcements, what was said."""
    world.dns = all_ready()
    keeper = make_keeper()
    keeper.step(NOW)
    saved = json.loads(json.dumps(keeper.state()))
    again = make_keeper()
    again.restore(saved)
    assert again.state() == keeper.state()
    assert isinstance(again, AcmeKeeper) and again.slots[0].told is not None
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again.step(NOW + timedelta(minutes=1))
    assert "renewal at" not in caplog.text  # the plan was said by the run before


def test_the_state_file_tells_the_supervisor_when_and_what_to_watch(tmp_path: Path) -> None:
    watched = tmp_path / "dkim"
    run = worker.run_once({"a": Hourly()}, None, {"a": [watched]}, worker.Nudges(), NOW)
    document = json.loads(worker.state_json(run, NOW))
    assert document["next_run"] == (NOW + timedelta(hours=1)).timestamp()
    assert document["watch"] == {str(watched): "missing"}
    assert document["ran"] == NOW.timestamp()


def test_the_dns_task_says_why_there_is_no_tlsa_record_once_across_runs(
        make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com", TLS_MODE="self-signed")
    paths = Paths(settings.data_dir)
    first = worker.dns_watcher(settings, paths, lambda: None)
    with caplog.at_level(logging.INFO):
        assert first.tlsa() is None
    assert caplog.text.count("no TLSA (DANE) records") == 1
    second = worker.dns_watcher(settings, paths, lambda: None)
    second.restore(json.loads(json.dumps(first.state())))
    with caplog.at_level(logging.INFO):
        second.tlsa()
    assert caplog.text.count("no TLSA (DANE) records") == 1
