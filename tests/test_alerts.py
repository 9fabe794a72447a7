"""Alerts by mail: what each condition sees, what to mail when, with a fixed clock; the message;
the task's memory in DATA_DIR; the records looked at by the real DNS doctor over DNS as data."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailboot.base.errors import CommandError
from mailboot.base.paths import Paths
from mailboot.diagnose import status
from mailboot.diagnose.queue import Deferred, Queue
from mailboot.dns.answer import Answer
from mailboot.inbound.reports import Overview, Source
from mailboot.mailboxes import accounts
from mailboot.outbound.limits import Held, Limit, Limits
from mailboot.records import doctor
from mailboot.records.build import Kind, Record, mx_record
from mailboot.records.watch import DnsWatcher
from mailboot.settings.table import Settings, TlsMode
from mailboot.worker import alerts, tasks
from mailboot.worker.alerts import (
    GOOD,
    UNSURE,
    Bad,
    Facts,
    MailKind,
    Memory,
    decide,
    observe,
)
from tests.conftest import NOW

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
MX = mx_record("example.com", "mail.example.com")
A = Record("mail.example.com", Kind.A, "203.0.113.25", "the mail host's address",
           "example.com")
MISSING = Bad("the MX record of example.com is missing", "the MX record of example.com is in "
              "place again", "none served", "add it")
FULL = Bad("only 5.0% of /data is free", "/data has more than 10% free again", "5 MiB free",
           "make room")


def facts(**parts: object) -> Facts:
    """Everything fine (nothing listed, nothing queued, room to spare), but for `parts`."""
    fine: dict[str, object] = {
        "now": NOW, "hostname": "mail.example.com", "tls_mode": TlsMode.ACME,
        "certificate": status.CertificateState(
            "acme", False, "Test CA", ("mail.example.com",), NOW - 10 * DAY, NOW + 80 * DAY,
            NOW + 50 * DAY, "when a third of its lifetime remains"),
        "findings": {}, "queue": Queue(0, 0, 0, None),
        "disk": status.Disk(Path("/data"), 100 << 30, 50 << 30),
        "reputation": status.Reputation(NOW, (), None, False, ""),
        "sending": status.Sending(Limits(1000, 200), (), ()),
        "reports": Overview(7, 0, 0, 0, (), 0, 0, 0)}
    return Facts(**{**fine, **parts})  # type: ignore[arg-type]


# --- the decision, with a fixed clock ----------------------------------------------------------


def run(memory: Memory, seen: dict[str, alerts.Seen], at: datetime,
        unsure: frozenset[str] = frozenset()) -> tuple[Memory, list[tuple[MailKind, str]]]:
    decision = decide(memory, seen, unsure, at, after_good=frozenset({"dns"}))
    return decision.memory, [(mail.kind, mail.headline) for mail in decision.mails]


def test_a_record_that_disappears_is_mailed_once_its_return_once_and_then_nothing() -> None:
    memory, mails = run(Memory(), {"dns:mx": GOOD}, NOW)
    assert mails == []
    memory, mails = run(memory, {"dns:mx": MISSING}, NOW + HOUR)
    assert mails == [(MailKind.ALERT, "the MX record of example.com is missing")]
    memory, mails = run(memory, {"dns:mx": MISSING}, NOW + 2 * HOUR)
    assert mails == []
    assert memory.tracked["dns:mx"].bad_since == NOW + HOUR
    memory, mails = run(memory, {"dns:mx": GOOD}, NOW + 3 * HOUR)
    assert mails == [(MailKind.RECOVERY, "the MX record of example.com is in place again")]
    memory, mails = run(memory, {"dns:mx": GOOD}, NOW + 4 * HOUR)
    assert mails == []


def test_a_record_never_seen_in_place_is_the_boot_s_business_not_an_alert() -> None:
    memory, mails = run(Memory(), {"dns:mx": MISSING}, NOW)
    assert mails == [] and "dns:mx" not in memory.tracked
    memory, mails = run(memory, {"dns:mx": GOOD}, NOW + HOUR)  # published at last
    assert mails == []
    _, mails = run(memory, {"dns:mx": MISSING}, NOW + 2 * HOUR)
    assert mails == [(MailKind.ALERT, "the MX record of example.com is missing")]


def test_a_lasting_problem_is_mailed_again_once_a_day_and_never_more_often() -> None:
    memory, mails = run(Memory(), {"disk:free": FULL}, NOW)
    assert mails == [(MailKind.ALERT, FULL.title)]  # not a record: bad from the start counts
    for hours in (1, 12, 23):
        memory, mails = run(memory, {"disk:free": FULL}, NOW + hours * HOUR)
        assert mails == []
    memory, mails = run(memory, {"disk:free": FULL}, NOW + DAY)
    assert mails == [(MailKind.REMINDER, FULL.title)]
    assert memory.tracked["disk:free"].bad_since == NOW  # the spell began at the first look
    _, mails = run(memory, {"disk:free": FULL}, NOW + DAY + HOUR)
    assert mails == []


def test_a_flapping_condition_is_alerted_at_most_once_a_day() -> None:
    memory, mails = run(Memory(), {"disk:free": FULL}, NOW)
    assert mails == [(MailKind.ALERT, FULL.title)]
    memory, mails = run(memory, {"disk:free": GOOD}, NOW + HOUR)
    assert mails == [(MailKind.RECOVERY, FULL.fixed)]
    memory, mails = run(memory, {"disk:free": FULL}, NOW + 2 * HOUR)
    assert mails == []  # the day since the alert has not passed
    # Good again before anything was said of this spell: nothing to take back.
    memory, mails = run(memory, {"disk:free": GOOD}, NOW + 3 * HOUR)
    assert mails == []
    memory, mails = run(memory, {"disk:free": FULL}, NOW + 4 * HOUR)
    assert mails == []
    memory, mails = run(memory, {"disk:free": FULL}, NOW + DAY)
    assert mails == [(MailKind.ALERT, FULL.title)]
    assert memory.tracked["disk:free"].bad_since == NOW + 4 * HOUR


def test_what_can_t_be_told_now_keeps_its_state_and_what_is_gone_is_good() -> None:
    memory, _ = run(Memory(), {"disk:free": FULL, "limits:bob@example.com": FULL}, NOW)
    # No answer about the disk this time (a key, then its whole family): no recovery.
    memory, mails = run(memory, {"disk:free": UNSURE, "limits:bob@example.com": FULL},
                        NOW + HOUR)
    assert mails == [] and memory.tracked["disk:free"].bad_since == NOW
    memory, mails = run(memory, {"limits:bob@example.com": FULL}, NOW + 2 * HOUR,
                        unsure=frozenset({"disk"}))
    assert mails == [] and memory.tracked["disk:free"].bad_since == NOW
    # The held login is released: its key is no longer given, so it is good.
    memory, mails = run(memory, {}, NOW + 3 * HOUR, unsure=frozenset({"disk"}))
    assert mails == [(MailKind.RECOVERY, FULL.fixed)]
    assert memory.tracked["limits:bob@example.com"].bad_since is None


def test_the_memory_of_a_good_key_is_dropped_a_day_after_its_last_mail() -> None:
    memory, _ = run(Memory(), {"disk:free": FULL}, NOW)
    memory, _ = run(memory, {"disk:free": GOOD}, NOW + HOUR)
    assert "disk:free" in memory.tracked
    memory, _ = run(memory, {"disk:free": GOOD}, NOW + DAY)
    assert "disk:free" not in memory.tracked
    # Keys seen good (of records only) are kept only while they are looked at.
    memory, _ = run(memory, {"dns:mx": GOOD, "disk:free": GOOD}, NOW + DAY)
    assert memory.seen_good == {"dns:mx"}
    memory, _ = run(memory, {}, NOW + DAY, unsure=frozenset({"dns"}))
    assert memory.seen_good == {"dns:mx"}
    memory, _ = run(memory, {}, NOW + DAY)
    assert memory.seen_good == frozenset()


def test_the_memory_reads_back_and_an_unreadable_one_starts_afresh(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    memory, _ = run(Memory(), {"dns:mx": GOOD, "disk:free": FULL}, NOW)
    memory, _ = run(memory, {"dns:mx": GOOD, "disk:free": GOOD}, NOW + HOUR)
    memory, _ = run(memory, {"dns:mx": MISSING, "disk:free": GOOD}, NOW + 2 * HOUR)
    assert alerts.read_memory(alerts.memory_json(memory)) == memory
    path = tmp_path / "alerts.json"
    assert alerts.load_memory(path) == Memory()
    for text in ("{", "[]", '{"version": 2}', '{"version": 1, "tracked": {"k": {"mailed": 5}}}'):
        path.write_text(text)
        with caplog.at_level(logging.WARNING, "mailboot.alerts"):
            assert alerts.load_memory(path) == Memory()
        assert f"alerts: can't read {path}" in caplog.text
        caplog.clear()


# --- what each condition sees ------------------------------------------------------------------


def finding(record: Record, state: doctor.Status, found: tuple[str, ...] = (),
            hint: str = "") -> doctor.Finding:
    return doctor.Finding(record, state, found, hint)


def test_records_are_keyed_by_name_type_and_value_and_judged_by_the_doctor() -> None:
    seen, unsure = observe(facts(findings={
        MX: finding(MX, doctor.Status.MISSING, hint="Add @ MX 10 mail.example.com. at the DNS "
                    "provider of example.com."),
        A: finding(A, doctor.Status.WRONG, ("198.51.100.7",), "Change it to 203.0.113.25.")}))
    assert unsure == frozenset()
    mx = seen[f"dns:{alerts.record_key(MX)}"]
    assert alerts.record_key(MX).startswith("example.com MX ")
    assert isinstance(mx, Bad) and alerts.after_good() == {"dns"}
    assert mx.title == "the MX record of example.com is missing"
    assert mx.fixed == "the MX record of example.com is in place again"
    assert mx.advice.startswith("Add @ MX 10 mail.example.com.")
    a = seen[f"dns:{alerts.record_key(A)}"]
    assert isinstance(a, Bad) and a.title == "the A record of mail.example.com is wrong"
    assert a.found == "its name servers serve: 198.51.100.7"
    assert alerts.record_key(replace(MX, value="20 mail.example.com.")) != alerts.record_key(MX)
    unknown = observe(facts(findings={MX: finding(MX, doctor.Status.UNKNOWN)}))[0]
    assert unknown[f"dns:{alerts.record_key(MX)}"] is UNSURE
    assert observe(facts(findings=None))[1] == {"dns"}


def certificate(**changes: object) -> status.CertificateState:
    made = facts().certificate
    assert made is not None
    return replace(made, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("state", "title"), [
    (certificate(), None),
    (certificate(not_after=NOW + 13 * DAY, renewal=NOW - 20 * DAY),
     "the certificate of mail.example.com expires in 13 days"),
    (certificate(not_after=NOW - HOUR), "the certificate of mail.example.com has expired"),
    (certificate(renewal=NOW - DAY - HOUR),
     "the certificate of mail.example.com has not been renewed for over a day"),
    (certificate(renewal=NOW - DAY + HOUR), None),  # the CA may answer at the next try
    # The temporary self-signed one, until the CA's first: the records are what is missing.
    (certificate(self_signed=True, source="self-signed", not_after=NOW + DAY), None),
])
def test_the_certificate_is_bad_under_14_days_left_or_a_day_late_for_renewal(
        state: status.CertificateState, title: str | None) -> None:
    seen = observe(facts(certificate=state))[0]["certificate:certificate"]
    assert (seen.title if isinstance(seen, Bad) else seen) == (title or GOOD)


def test_a_mounted_certificate_near_expiry_says_to_mount_a_new_one() -> None:
    seen = observe(facts(tls_mode=TlsMode.MANUAL, certificate=certificate(
        source="manual", renewal=None, not_after=NOW + 3 * DAY)))[0]["certificate:certificate"]
    assert isinstance(seen, Bad) and "TLS_CERT_FILE" in seen.advice


def test_the_queue_is_bad_when_a_message_was_deferred_for_over_an_hour() -> None:
    def deferred(age: timedelta) -> Queue:
        return Queue(1, 2, 0, Deferred("4XyZ", NOW - age, "bob@example.net",
                                       "connect to mx.example.net[192.0.2.9]:25: timed out"))

    assert observe(facts(queue=deferred(50 * timedelta(minutes=1))))[0]["queue:deferred"] \
        is GOOD
    bad = observe(facts(queue=deferred(2 * HOUR)))[0]["queue:deferred"]
    assert isinstance(bad, Bad)
    assert bad.title == "mail has waited in the queue for over an hour"
    assert bad.found == ("2 deferred message(s); the oldest, for bob@example.net, since "
                         "2026-11-25 10:00:00 UTC: connect to mx.example.net[192.0.2.9]:25: "
                         "timed out")
    assert observe(facts(queue=None))[1] == {"queue"}


def test_data_under_10_percent_free_is_bad() -> None:
    assert observe(facts(disk=status.Disk(Path("/data"), 1000, 100)))[0]["disk:free"] is GOOD
    bad = observe(facts(disk=status.Disk(Path("/data"), 1000, 99)))[0]["disk:free"]
    assert isinstance(bad, Bad) and bad.title == "only 9.9% of /data is free"


def test_each_listing_of_ours_and_each_held_login_is_its_own_key() -> None:
    listings = tuple(status.Listing("zen.spamhaus.org", subject, verdict, (), detail, "page")
                     for subject, verdict, detail in (
                         ("203.0.113.25", "listed", "127.0.0.2: SBL"),
                         ("example.com", "clean", ""), ("mail.example.com", "can't tell", "")))
    held = Held("bob@example.com", Limit.MESSAGES, 1000, 1000, NOW + 12 * HOUR)
    seen, _ = observe(facts(reputation=status.Reputation(NOW, listings, None, False, ""),
                            sending=status.Sending(Limits(1000, 200), (held,), ())))
    listed = seen["blocklist:zen.spamhaus.org 203.0.113.25"]
    assert isinstance(listed, Bad) and listed.title == "203.0.113.25 is listed on " \
        "zen.spamhaus.org" and listed.advice.endswith("removal: page")
    assert seen["blocklist:zen.spamhaus.org example.com"] is GOOD
    assert seen["blocklist:zen.spamhaus.org mail.example.com"] is UNSURE
    login = seen["limits:bob@example.com"]
    assert isinstance(login, Bad) and login.title == "bob@example.com is held at its sending limit"
    assert "`mailboot account release bob@example.com`" in login.advice
    assert observe(facts(reputation=None, sending=None))[1] == {"blocklist", "limits"}


def test_a_forger_in_the_dmarc_reports_is_its_own_key_until_the_reports_forget_it() -> None:
    forger = Source("example.com", "2026-12-04", "198.51.100.66", "host66.forger.example", 3, 0,
                    0, 3, ours=False)
    seen, _ = observe(facts(reports=Overview(7, 1, 172, 3, (forger,), 0, 0, 0)))
    bad = seen["reports:example.com 198.51.100.66"]
    assert isinstance(bad, Bad)
    assert bad.title == "198.51.100.66 sent mail as example.com that failed DMARC"
    assert bad.found.startswith("198.51.100.66 (host66.forger.example) sent 3 messages")
    assert "reports:example.com 198.51.100.66" not in observe(facts())[0]  # gone: good again
    assert observe(facts(reports=None))[1] == {"reports"}  # unreadable: unsure


# --- the task: mail through a sender, memory in DATA_DIR ---------------------------------------


HASH = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"


def add_mailbox(paths: Paths, address: str) -> None:
    accounts.write_accounts(paths, accounts.add_account(
        accounts.read_accounts(paths), [], address, HASH), owner=None)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    made = make_settings(MAIL_DOMAINS="example.com,example.org", PUBLIC_IPV4="203.0.113.25")
    add_mailbox(Paths(made.data_dir), "owner@example.com")  # postmaster@ goes there
    return made


class Outbox:
    """What the task submitted, or (`refuse`) the error sendmail gave."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, EmailMessage]] = []
        self.refuse: str | None = None

    def __call__(self, sender: str, recipient: str, message: EmailMessage) -> None:
        if self.refuse is not None:
            raise CommandError(self.refuse)
        self.sent.append((sender, recipient, message))


def test_an_mx_removed_and_restored_mails_one_alert_then_one_recovery_then_nothing(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """The real DNS doctor over DNS as data: the MX record is served, gone, back."""
    paths = Paths(settings.data_dir)
    served = {("example.com", "MX"): Answer(("10 mail.example.com.",)),
              ("mail.example.com", "A"): Answer(("203.0.113.25",))}

    asked: list[tuple[str, str]] = []

    def lookup(name: str, rtype: str) -> Answer:
        asked.append((name, rtype))
        return served.get((name.rstrip("."), rtype), Answer(nxdomain=True))

    outbox = Outbox()
    watcher = DnsWatcher(lambda: [MX, A], lookup, ["203.0.113.25"], ["example.com"], HOUR)
    task = alerts.alert_task(settings, paths, watcher, lookup)
    task.send = outbox
    caplog.set_level(logging.INFO, "mailboot.alerts")
    # The watch looked in this run: the alerts take its answers instead of asking again.
    watcher.step(NOW)
    before = len(asked)
    assert task.step(NOW) == NOW + alerts.CHECK_EVERY
    assert outbox.sent == [] and len(asked) == before
    del served[("example.com", "MX")]
    task.step(NOW + HOUR)
    task.step(NOW + 2 * HOUR)  # still missing: nothing new
    [(sender, recipient, alert)] = outbox.sent
    assert (sender, recipient) == ("postmaster@example.com", "postmaster@example.com")
    assert alert["Subject"] == ("[mailboot] mail.example.com: the MX record of example.com is "
                                "missing")
    assert alert["From"] == "mailboot <postmaster@example.com>"
    assert alert["Auto-Submitted"] == "auto-generated"
    text = alert.get_content()
    assert text.startswith("The MX record of example.com is missing.\n\nSince:      "
                           "2026-11-25 13:00:00 UTC\n")
    assert "What to do: Add @ MX 10 mail.example.com." in text
    assert "set ALERT_TO=off" in text
    assert ("alerts: mailed an alert to postmaster@example.com: the MX record of example.com "
            "is missing") in caplog.messages
    served[("example.com", "MX")] = Answer(("10 mail.example.com.",))
    task.step(NOW + 3 * HOUR)
    task.step(NOW + 4 * HOUR)
    assert len(outbox.sent) == 2
    recovery = outbox.sent[1][2]
    assert recovery["Subject"] == ("[mailboot] mail.example.com: the MX record of example.com "
                                   "is in place again")
    assert "It began at 2026-11-25 13:00:00 UTC and was over at this check, 2026-11-25 " \
        "15:00:00 UTC." in " ".join(recovery.get_content().split())
    # Wrapped, so it goes as 7bit and reads as it is.
    assert recovery["Content-Transfer-Encoding"] == alert["Content-Transfer-Encoding"] == "7bit"
    assert max(len(line) for line in text.splitlines()) <= alerts.WRAP
    assert len([m for m in caplog.messages if m.startswith("alerts: mailed")]) == 2


def test_a_mail_sendmail_refuses_is_tried_again_at_the_next_check(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    paths = Paths(settings.data_dir)
    outbox = Outbox()
    outbox.refuse = "`/usr/sbin/sendmail` could not run: no such file"
    task = alerts.AlertTask(settings, paths, lambda now: facts(
        now=now, disk=status.Disk(Path("/data"), 1000, 10)), outbox)
    task.step(NOW)
    assert outbox.sent == [] and "can't mail the alert \"only 1.0% of /data is free\" to " \
        "postmaster@example.com: `/usr/sbin/sendmail` could not run" in caplog.text
    outbox.refuse = None
    task.step(NOW + HOUR)
    assert [m["Subject"] for _, _, m in outbox.sent] == [
        "[mailboot] mail.example.com: only 1.0% of /data is free"]
    assert alerts.load_memory(paths.alerts_state).tracked["disk:free"].bad_since == NOW + HOUR
    assert paths.alerts_state.stat().st_mode & 0o777 == 0o600


def test_a_reminder_says_still_in_its_subject(settings: Settings) -> None:
    outbox = Outbox()
    task = alerts.AlertTask(settings, Paths(settings.data_dir), lambda now: facts(
        now=now, disk=status.Disk(Path("/data"), 1000, 10)), outbox)
    task.step(NOW)
    task.step(NOW + DAY)
    assert outbox.sent[1][2]["Subject"] == ("[mailboot] mail.example.com: still: only 1.0% of "
                                            "/data is free")
    assert outbox.sent[1][2].get_content().startswith("Still: only 1.0% of /data is free.\n")


def test_the_worker_has_the_alert_task_last_unless_alert_to_is_off(
        make_settings: Callable[..., Settings]) -> None:
    on = make_settings(MAIL_DOMAINS="example.com")
    built = tasks.build_tasks(on, on, Paths(on.data_dir), tasks.Nudges())
    assert list(built)[-1] == tasks.ALERTS
    assert isinstance(built[tasks.ALERTS], alerts.AlertTask)
    off = make_settings(MAIL_DOMAINS="example.com", ALERT_TO="off")
    assert tasks.ALERTS not in tasks.build_tasks(off, off, Paths(off.data_dir), tasks.Nudges())


def test_what_one_check_finds_goes_out_as_one_message_per_kind(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    spf = Bad("the TXT record of example.com is wrong", "the TXT record of example.com is in "
              "place again", "its name servers serve: v=spf1 mx -all", "publish the MX record")
    seen: dict[str, alerts.Seen] = {"dns:mx": GOOD, "dns:spf": GOOD}
    outbox = Outbox()
    task = alerts.AlertTask(settings, Paths(settings.data_dir), lambda now: replace(
        facts(now=now), findings=None), outbox)
    memory = Memory(seen_good=frozenset(seen))
    decision = decide(memory, {"dns:mx": MISSING, "dns:spf": spf}, frozenset(), NOW,
                      alerts.after_good())
    [batch] = alerts.batches(decision.mails)
    made = alerts.message(settings, batch, NOW)
    assert made["Subject"] == ("[mailboot] mail.example.com: the MX record of example.com is "
                               "missing (and 1 more)")
    assert made["X-Mailboot-Alert"] == "alert"
    text = made.get_content()
    assert text.index("The MX record of example.com is missing.") < text.index(
        "The TXT record of example.com is wrong.") < text.index("-- \n")
    # Mixed kinds: one message each, alerts first.
    later = decide(decision.memory, {"dns:mx": GOOD, "dns:spf": spf, "disk:free": FULL},
                   frozenset(), NOW + HOUR, alerts.after_good())
    assert [[mail.kind for mail in batch] for batch in alerts.batches(later.mails)] == [
        [MailKind.ALERT], [MailKind.RECOVERY]]
    # A message that can't be sent leaves each of its keys as it was: all are mailed later.
    held = Held("bob@example.com", Limit.MESSAGES, 1000, 1000, NOW + 12 * HOUR)
    task.look = lambda now: facts(now=now, disk=status.Disk(Path("/data"), 1000, 10),
                                  sending=status.Sending(Limits(1000, 200), (held,), ()))
    outbox.refuse = "`/usr/sbin/sendmail -i -f postmaster@example.com` failed (exit 75)"
    caplog.set_level(logging.INFO, "mailboot.alerts")
    task.step(NOW)
    assert alerts.load_memory(task.paths.alerts_state).tracked == {}
    assert ("can't mail the alert \"only 1.0% of /data is free; bob@example.com is held at its "
            "sending limit\" to postmaster@example.com") in caplog.text
    outbox.refuse = None
    task.step(NOW + HOUR)
    [(_, _, sent)] = outbox.sent
    assert sent["Subject"] == "[mailboot] mail.example.com: only 1.0% of /data is free (and 1 " \
        "more)"
    assert ("alerts: mailed an alert to postmaster@example.com: only 1.0% of /data is free; "
            "bob@example.com is held at its sending limit") in caplog.messages


def test_with_nothing_to_remember_nothing_is_written_to_data_dir(settings: Settings) -> None:
    """A restart with all well changes no file in DATA_DIR (test_hardening holds the image to
    it)."""
    paths = Paths(settings.data_dir)
    outbox = Outbox()
    task = alerts.AlertTask(settings, paths, lambda now: facts(now=now, findings=None), outbox)
    task.step(NOW)
    assert not paths.alerts_state.exists() and outbox.sent == []


def test_an_address_of_ours_without_a_mailbox_is_not_mailed_but_said_and_kept(
        make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    """Before the first mailbox, postmaster@ goes nowhere: Postfix would take the mail and
    bounce it to postmaster@ again."""
    settings = make_settings(MAIL_DOMAINS="example.com,example.org")
    paths = Paths(settings.data_dir)
    outbox = Outbox()
    task = alerts.AlertTask(settings, paths, lambda now: facts(
        now=now, disk=status.Disk(Path("/data"), 1000, 10)), outbox)
    task.step(NOW)
    assert outbox.sent == []
    assert ("postmaster@example.com has no mailbox and no alias yet; add a mailbox (`mailboot "
            "account add`, postmaster@ then goes to it) or an alias (`mailboot alias add "
            "postmaster@example.com you@example.net`); trying again at the next check"
            in caplog.text)
    add_mailbox(paths, "owner@example.org")  # postmaster@ of every domain goes to the first
    task.step(NOW + HOUR)
    assert [recipient for _, recipient, _ in outbox.sent] == ["postmaster@example.com"]
    # Elsewhere, or an alias of ours: Postfix knows where it goes.
    for alert_to in ("owner@example.net", "info@example.org"):
        elsewhere = make_settings(MAIL_DOMAINS="example.com,example.org", ALERT_TO=alert_to)
        accounts.write_aliases(paths, [accounts.Alias("info@example.org",
                                                      ("owner@example.net",))])
        assert alerts.missing_mailbox(elsewhere, paths) is None
    assert alerts.missing_mailbox(make_settings(MAIL_DOMAINS="example.com",
                                                ALERT_TO="nobody@example.com"), paths)
