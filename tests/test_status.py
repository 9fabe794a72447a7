"""`mailboot status`: each part read from files and fakes, the verdict and exit code, the
worker's problem log, the queue as `postqueue -j` prints it, and both renderings."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from mailboot.acme import ari
from mailboot.base.errors import CommandError
from mailboot.base.formats import format_size
from mailboot.base.paths import Paths
from mailboot.cli import accounts as cli_accounts
from mailboot.cli import main as cli
from mailboot.cli import status_view
from mailboot.diagnose import problems, status
from mailboot.diagnose import queue as mail_queue
from mailboot.diagnose.problems import Problem, ProblemLog
from mailboot.diagnose.queue import Queue
from mailboot.dkim.keys import DomainKeys
from mailboot.dns import names
from mailboot.records.build import Record, RecordGroup, build_record_groups
from mailboot.records.doctor import Finding, Status
from mailboot.settings.table import Settings
from mailboot.tls import certificates
from tests.conftest import NOW, FakeCa, FakeDns

HASH = "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuv"
# As postqueue -j prints it (one object per line; postqueue(1), Postfix 3.1+).
POSTQUEUE_J = "\n".join(json.dumps(message) for message in [
    {"queue_name": "active", "queue_id": "4B2C31F8A1", "arrival_time": NOW.timestamp() - 5,
     "message_size": 620, "forced_expire": False, "sender": "a@example.com",
     "recipients": [{"address": "b@example.net"}]},
    {"queue_name": "deferred", "queue_id": "1A2B3C4D5E",
     "arrival_time": int((NOW - timedelta(hours=3)).timestamp()), "message_size": 800,
     "forced_expire": False, "sender": "a@example.com",
     "recipients": [{"address": "c@unreachable.example",
                     "delay_reason": "connect to mx.unreachable.example[192.0.2.1]:25: "
                                     "Connection timed out"}]},
    {"queue_name": "deferred", "queue_id": "9F8E7D6C5B",
     "arrival_time": int((NOW - timedelta(minutes=10)).timestamp()), "message_size": 700,
     "forced_expire": False, "sender": "a@example.com",
     "recipients": [{"address": "d@slow.example", "delay_reason": "greylisted"}]},
    {"queue_name": "hold", "queue_id": "0000000001", "arrival_time": int(NOW.timestamp()),
     "message_size": 1, "forced_expire": False, "sender": "", "recipients": []},
    {"queue_name": "incoming", "queue_id": "0000000002", "arrival_time": int(NOW.timestamp()),
     "message_size": 1, "forced_expire": False, "sender": "", "recipients": []},
]) + "\n"


# --- the worker's problem log --------------------------------------------------------------------


@pytest.fixture
def mailboot_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("mailboot.test-status")
    handlers = list(logging.getLogger("mailboot").handlers)
    yield logger
    logging.getLogger("mailboot").handlers[:] = handlers


def test_the_problem_log_keeps_the_last_warnings_and_errors(
        tmp_path: Path, mailboot_logger: logging.Logger) -> None:
    path = tmp_path / "run" / "worker-problems.json"
    assert isinstance(problems.keep_problems(tmp_path / "other.json"), ProblemLog)
    logging.getLogger("mailboot").addHandler(ProblemLog(path, keep=3))
    mailboot_logger.info("dns: READY")  # not a problem
    for number in range(5):
        mailboot_logger.warning("tls: attempt %d failed", number)
    mailboot_logger.error("worker: a task crashed")
    kept = problems.read_problems(path)
    assert [p.message for p in kept] == ["tls: attempt 3 failed", "tls: attempt 4 failed",
                                         "worker: a task crashed"]
    assert [p.level for p in kept] == ["WARNING", "WARNING", "ERROR"]
    assert kept[0].source == "mailboot.test-status" and kept[0].time.tzinfo is not None
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_restarted_worker_keeps_what_was_logged_before(tmp_path: Path) -> None:
    path = tmp_path / "worker-problems.json"
    path.write_text(problems.problems_json([Problem(NOW, "WARNING", "mailboot.dns", "before")]))
    handler = ProblemLog(path)
    handler.handle(logging.LogRecord("mailboot.tls", logging.ERROR, __file__, 1, "after %s",
                                     ("restart",), None))
    assert [p.message for p in problems.read_problems(path)] == ["before", "after restart"]


@pytest.mark.parametrize("content", ["", "{not json", "{}", '[{"time": "yesterday"}]',
                                     '[{"time": "2026-11-25T12:00:00", "level": "WARNING", '
                                     '"source": "s", "message": "no zone"}]'])
def test_an_unreadable_problem_file_reads_as_no_problems(tmp_path: Path, content: str) -> None:
    path = tmp_path / "worker-problems.json"
    path.write_text(content)
    assert problems.read_problems(path) == ()
    assert problems.read_problems(tmp_path / "absent.json") == ()


# --- the queue -----------------------------------------------------------------------------------


def test_the_queue_counts_and_its_oldest_deferred_message_with_the_reason() -> None:
    queue = mail_queue.read_queue(lambda argv: POSTQUEUE_J if list(argv) == [
        mail_queue.POSTQUEUE, "-j"] else "")
    assert (queue.active, queue.deferred, queue.hold) == (2, 2, 1)
    oldest = queue.oldest_deferred
    assert oldest is not None and oldest.queue_id == "1A2B3C4D5E"
    assert oldest.arrival == NOW - timedelta(hours=3)
    assert oldest.recipient == "c@unreachable.example"
    assert oldest.reason.endswith("Connection timed out")


def test_an_empty_queue_and_output_that_is_not_postqueue_s() -> None:
    assert mail_queue.parse("") == Queue(0, 0, 0, None)
    with pytest.raises(ValueError):
        mail_queue.parse("Mail queue is empty\n")
    with pytest.raises(ValueError):
        mail_queue.parse('{"queue_name": "deferred", "queue_id": "X"}\n')


# --- gathering and judging -----------------------------------------------------------------------


class Fakes:
    """What status asks beyond files, as data a test changes."""

    def __init__(self) -> None:
        self.not_ok: dict[tuple[str, str], Status] = {}  # (name, type) -> status
        self.queue: Queue | Exception = Queue(0, 0, 0, None)
        self.disk = (100_000_000_000, 40_000_000_000)
        self.keys_error: Exception | None = None

    def sources(self, settings: Settings, make_keys: Callable[[Settings],
                                                             tuple[DomainKeys, ...]]
                ) -> status.Sources:
        def keys() -> tuple[DomainKeys, ...]:
            if self.keys_error is not None:
                raise self.keys_error
            return make_keys(settings)

        def check_dns(keys: Sequence[DomainKeys]) -> tuple[Sequence[RecordGroup],
                                                           Mapping[Record, Finding]]:
            groups = build_record_groups(settings, keys)
            findings = {}
            for group in groups:
                for record in group.records:
                    state = self.not_ok.get((record.name, record.rtype), Status.OK)
                    findings[record] = Finding(record, state, (),
                                               "" if state is Status.OK else "publish it")
            return groups, findings

        def queue() -> Queue:
            if isinstance(self.queue, Exception):
                raise self.queue
            return self.queue

        return status.Sources(keys, check_dns, queue, lambda _path: self.disk)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(MAIL_DOMAINS="example.com", MAIL_HOSTNAME="mail.example.com",
                         PUBLIC_IPV4="203.0.113.25", PUBLIC_ADDRESS_DISCOVERY="off")


@pytest.fixture
def paths(settings: Settings, tmp_path: Path) -> Paths:
    return Paths(settings.data_dir, run_dir=tmp_path / "run")


def all_in_place(settings: Settings, paths: Paths) -> None:
    """A certificate from the CA, a mailbox, port 25 open, an old problem only."""
    ca = FakeCa()
    issued = ca.issue(names.tls_names(settings))
    certificates.install(paths, "acme", issued.key_pem, issued.chain_pem, NOW)
    paths.accounts_dir.mkdir(parents=True)
    paths.passwd_file.write_text(f"alice@example.com:{HASH}::::::\n")
    inbox = paths.mail_dir / "example.com" / "alice" / "Maildir" / "cur"
    inbox.mkdir(parents=True)
    (inbox / "1.eml").write_bytes(b"x" * 1500)
    (inbox / "2.eml").write_bytes(b"y" * 500)
    paths.run_dir.mkdir(parents=True)
    paths.outbound_check_state.write_text(json.dumps({
        "status": "ok", "target": "gmail-smtp-in.l.google.com (192.0.2.7) port 25",
        "detail": "connected", "via_relay": None, "checked": NOW.isoformat()}))
    paths.worker_problems.write_text(problems.problems_json(
        [Problem(NOW - timedelta(hours=3), "WARNING", "mailboot.tls", "an old hiccup")]))


def gather(settings: Settings, paths: Paths, fakes: Fakes,
           make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
           now_later: timedelta = timedelta(days=1)) -> status.StatusReport:
    return status.gather(settings, paths, NOW + now_later, fakes.sources(settings, make_keys))


def test_everything_in_place_reports_each_part_and_nothing_missing(
        settings: Settings, paths: Paths, make_keys: Callable[[Settings],
                                                              tuple[DomainKeys, ...]]) -> None:
    all_in_place(settings, paths)
    report = gather(settings, paths, Fakes(), make_keys)
    assert report.not_in_place == ()
    certificate = report.certificate
    assert certificate is not None and certificate.source == "acme"
    assert certificate.issuer == "CN=Fake CA" and "mail.example.com" in certificate.names
    # No suggestion from the CA: renewed when a third of the 90 days remains.
    assert certificate.renewal == NOW + timedelta(days=60)
    assert certificate.renewal_plan == "when a third of its lifetime remains"
    assert isinstance(report.dns, tuple) and all(zone.ready for zone in report.dns)
    assert isinstance(report.dkim, tuple)
    assert report.dkim == (status.DkimState(
        "example.com", (status.SigningKey("mb20261125", "rsa", "ok"),)),)
    assert report.mailboxes == status.Mailboxes(1, 2000)
    assert isinstance(report.disk, status.Disk) and report.disk.free_share == 0.4
    assert report.outbound is not None and report.outbound.status == "ok"
    assert [p.message for p in report.worker_problems] == ["an old hiccup"]


def test_the_renewal_follows_the_ca_s_suggestion_for_the_live_certificate(
        settings: Settings, paths: Paths,
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    all_in_place(settings, paths)
    live = certificates.read_live(paths)
    assert live is not None
    suggested = NOW + timedelta(days=50)
    ari.write_memo(paths.renewal_info(0), ari.Memo(live.directory.name, NOW, suggested))
    certificate = gather(settings, paths, Fakes(), make_keys).certificate
    assert certificate is not None and certificate.renewal == suggested
    assert "ARI" in certificate.renewal_plan
    ari.write_memo(paths.renewal_info(0), ari.Memo("acme-other", NOW, suggested))
    certificate = gather(settings, paths, Fakes(), make_keys).certificate
    assert certificate is not None and certificate.renewal == NOW + timedelta(days=60)


def test_a_self_signed_certificate_alone_is_not_in_place(
        make_settings: Callable[..., Settings], paths: Paths,
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4="203.0.113.25",
                             PUBLIC_ADDRESS_DISCOVERY="off", TLS_MODE="self-signed")
    all_in_place(settings, paths)
    certificates.ensure_certificate(paths, ["other.example.com"], NOW)  # replaces the CA's
    report = gather(settings, paths, Fakes(), make_keys)
    assert report.not_in_place == (
        "certificate: self-signed, TLS_MODE=self-signed; mail clients can't verify it",)
    assert report.certificate is not None
    assert report.certificate.renewal == report.certificate.not_after - timedelta(days=30)


def test_a_certificate_near_expiry_is_not_in_place(
        settings: Settings, paths: Paths,
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    all_in_place(settings, paths)
    assert gather(settings, paths, Fakes(), make_keys, timedelta(days=80)).not_in_place == ()
    late = gather(settings, paths, Fakes(), make_keys, timedelta(days=82)).not_in_place
    assert len(late) == 1 and "should have been renewed by now" in late[0]
    expired = gather(settings, paths, Fakes(), make_keys, timedelta(days=91)).not_in_place
    assert expired[0].startswith("certificate: expired at")


def test_each_part_that_is_not_in_place_says_so(
        settings: Settings, paths: Paths,
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    all_in_place(settings, paths)
    fakes = Fakes()
    fakes.not_ok = {("example.com", "MX"): Status.MISSING,
                    ("_smtp._tls.example.com", "TXT"): Status.MISSING,  # optional: not counted
                    ("_dmarc.example.com", "TXT"): Status.WRONG}
    fakes.queue = mail_queue.parse(POSTQUEUE_J)
    fakes.disk = (100, 4)
    paths.outbound_check_state.write_text(json.dumps({
        "status": "blocked", "target": "gmail-smtp-in.l.google.com (192.0.2.7) port 25",
        "detail": "no answer within 5 s", "via_relay": None, "checked": NOW.isoformat()}))
    paths.worker_problems.write_text(problems.problems_json(
        [Problem(NOW + timedelta(hours=23), "ERROR", "mailboot.worker.tasks", "worker: it broke")]))
    report = gather(settings, paths, fakes, make_keys)
    found = report.not_in_place
    assert [line.split(":")[0] for line in found] == ["dns", "queue", "disk", "outbound",
                                                      "worker"]
    assert "example.com MX (missing), _dmarc.example.com TXT (wrong)" in found[0]
    assert "_smtp._tls" not in found[0]
    assert "c@unreachable.example" in found[1] and "Connection timed out" in found[1]
    assert "4.0% of" in found[2]
    assert "set RELAY_HOST" in found[3]
    assert "1 problem(s) logged in the last 2 hours; the latest: worker: it broke" in found[4]
    assert ("dns          example.com: NOT READY, 16 of 19 records ok (2 required not in "
            "place, 1 optional not in place)\n") in status_view.status_text(report)


def test_with_a_relay_only_an_unreachable_relay_counts(
        settings: Settings, paths: Paths,
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    all_in_place(settings, paths)
    for state, expected in (("ok", ()), ("dns-failed", ()), ("refused", ("outbound",))):
        paths.outbound_check_state.write_text(json.dumps({
            "status": state, "target": "relay.example.net port 587", "detail": "said no",
            "via_relay": "relay.example.net:587", "checked": NOW.isoformat()}))
        found = gather(settings, paths, Fakes(), make_keys).not_in_place
        assert tuple(line.split(":")[0] for line in found) == expected


def test_parts_that_can_t_be_read_are_unavailable_and_not_in_place(
        settings: Settings, paths: Paths,
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    fakes = Fakes()
    fakes.keys_error = OSError("Permission denied")
    fakes.queue = CommandError("`postqueue -j` failed (exit 69): mail system is down")
    paths.accounts_dir.mkdir(parents=True)
    paths.passwd_file.write_text("not an account line\n")
    report = gather(settings, paths, fakes, make_keys)
    assert report.certificate is None and report.outbound is None
    assert report.dns == report.dkim == status.Unavailable("Permission denied")
    assert isinstance(report.queue, status.Unavailable)
    assert isinstance(report.mailboxes, status.Unavailable)
    assert [line.split(":")[0] for line in report.not_in_place] == [
        "certificate", "dns", "dkim", "queue", "mailboxes"]


# --- rendering and the command -------------------------------------------------------------------


def test_the_json_has_every_field_and_the_text_one_line_per_part(
        settings: Settings, paths: Paths,
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    all_in_place(settings, paths)
    fakes = Fakes()
    fakes.queue = mail_queue.parse(POSTQUEUE_J)
    report = gather(settings, paths, fakes, make_keys, timedelta(0))
    document = json.loads(status_view.status_json(report))
    assert set(document) == {"ok", "not_in_place", "checked", "hostname", "certificate", "dns",
                             "dkim", "queue", "mailboxes", "disk", "outbound", "reputation",
                             "bans", "worker", "worker_problems", "sending_limits", "reports"}
    assert document["worker"] is None  # no run has finished (no state file)
    assert document["reputation"] is None  # not checked yet (no state file)
    assert document["ok"] is False and len(document["not_in_place"]) == 1  # the queue
    assert document["certificate"]["renewal"] == "2027-01-24T12:00:00Z"
    assert document["dns"][0]["zone"] == "example.com" and document["dns"][0]["ready"]
    assert document["dkim"] == [{"domain": "example.com", "signing": [
        {"selector": "mb20261125", "algorithm": "rsa", "record": "ok"}]}]
    assert document["queue"]["deferred"] == 2
    assert document["queue"]["oldest_deferred"]["queue_id"] == "1A2B3C4D5E"
    assert document["mailboxes"] == {"count": 1, "total_bytes": 2000}
    assert document["disk"]["free_percent"] == 40.0
    assert document["outbound"]["status"] == "ok"
    assert document["worker_problems"]["recent"] == 0  # three hours old
    assert document["worker_problems"]["last"][0]["message"] == "an old hiccup"
    assert document["sending_limits"] == {"messages_per_day": 1000,
                                          "first_time_recipients_per_day": 200, "held": [],
                                          "unreadable": []}
    screen = status_view.status_text(report)
    assert screen.startswith("mailboot status of mail.example.com at 2026-11-25 12:00:00 UTC: "
                             "NOT IN PLACE (1):")
    assert document["bans"] == []  # login bans on (the default), none now
    assert any(line.split() == ["login", "bans", "none"] for line in screen.splitlines())
    for title in ("certificate", "dns", "dkim", "queue", "mailboxes", "disk", "outbound",
                  "reputation", "worker", "limits"):
        assert any(line.startswith(title + " ") for line in screen.splitlines()), title
    assert "oldest deferred: 1A2B3C4D5E for c@unreachable.example, waiting 3 h 0 min" in screen
    assert "1 mailbox(es), 2.0 KiB of mail" in screen
    # The worker wrote `checked` as versions before this one did (+00:00): read, and shown in
    # the one form for programs and the one for people.
    assert document["outbound"]["checked"] == "2026-11-25T12:00:00Z"
    assert "connected), checked 2026-11-25 12:00:00 UTC" in screen


@pytest.mark.parametrize("size", [1536, 5 << 20, (1 << 20) - 1, 3 << 40])
def test_account_list_and_status_print_a_size_alike(
        make_settings: Callable[..., Settings], make_keys: Callable[[Settings],
                                                                    tuple[DomainKeys, ...]],
        tmp_path: Path, size: int) -> None:
    """Both used to print sizes, in KiB for one and in KB for the other."""
    settings = make_settings(MAIL_DOMAINS="example.com", MAIL_HOSTNAME="mail.example.com",
                             PUBLIC_IPV4="203.0.113.25", PUBLIC_ADDRESS_DISCOVERY="off",
                             MAILBOX_QUOTA=str(size))
    paths = Paths(settings.data_dir, run_dir=tmp_path / "run")
    all_in_place(settings, paths)
    listed = io.StringIO()
    cli_accounts.list_accounts(paths, settings, False, listed)  # LIMIT: MAILBOX_QUOTA
    address, used, number, unit, apps = listed.getvalue().splitlines()[1].split()
    assert (address, used, apps) == ("alice@example.com", "?", "-")  # no Dovecot here
    report = dataclasses.replace(gather(settings, paths, Fakes(), make_keys),
                                 mailboxes=status.Mailboxes(1, size))
    assert f"1 mailbox(es), {number} {unit} of mail" in status_view.status_text(report)
    assert f"{number} {unit}" == format_size(size)


def test_unavailable_parts_render_with_their_reason(
        settings: Settings, paths: Paths,
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    fakes = Fakes()
    fakes.queue = OSError("mail system is down")
    report = gather(settings, paths, fakes, make_keys)
    assert json.loads(status_view.status_json(report))["queue"] == {
        "unavailable": "mail system is down"}
    assert "queue        can't be read: mail system is down" in status_view.status_text(report)


def test_the_command_exits_1_and_still_reports_every_part(
        data_dir: Path, fake_dns: Callable[..., FakeDns]) -> None:
    """No Postfix here, and a DNS server that refuses: the queue is unavailable, the records
    unknown, the rest is read."""
    refusing = fake_dns()
    refusing.mode = "REFUSED"
    out = io.StringIO()
    code = cli.main(["status", "--json"], {
        "DATA_DIR": str(data_dir), "MAIL_DOMAINS": "example.com", "TLS_MODE": "self-signed",
        "PUBLIC_ADDRESS_DISCOVERY": "off", "DNS_RESOLVERS": f"127.0.0.1:{refusing.port}",
    }, out)
    assert code == 1
    document = json.loads(out.getvalue())
    assert document["ok"] is False and document["certificate"] is None
    assert "unavailable" in document["queue"]
    assert document["dkim"][0]["signing"][0]["selector"].startswith("mb")
    assert document["dns"][0]["zone"] == "example.com" and not document["dns"][0]["ready"]


def test_the_workers_last_run_is_shown_and_runs_failing_for_long_are_a_problem(
        settings: Settings, paths: Paths,
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    all_in_place(settings, paths)
    ran, next_run = NOW - timedelta(hours=1), NOW + timedelta(hours=11)
    paths.worker_state.write_text(json.dumps({"ran": ran.timestamp(),
                                              "next_run": next_run.timestamp()}))
    report = gather(settings, paths, Fakes(), make_keys, timedelta(0))
    assert report.worker == status.WorkerRun(ran, next_run)
    assert not any(line.startswith("worker:") for line in report.not_in_place)
    assert "last run 2026-11-25 11:00:00 UTC, next at 2026-11-25 23:00:00 UTC" in (
        status_view.status_text(report))
    stale = NOW - timedelta(hours=14)
    paths.worker_state.write_text(json.dumps({"ran": stale.timestamp(), "next_run": None}))
    report = gather(settings, paths, Fakes(), make_keys, timedelta(0))
    assert "worker: its last run finished at 2026-11-24 22:00:00 UTC; the runs since have failed" \
        in report.not_in_place[-1]
