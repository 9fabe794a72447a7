"""Our own reputation: query names (RFC 5782), verdicts on Spamhaus's answers, the worker task
that says what changed and keeps it for `mailboot status`, and IPv6 kept off outbound mail while
its PTR is not confirmed. DNS state is data (a dict of answers); one test asks a DNS server on
loopback, as the container's resolver is asked."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from mailboot import render
from mailboot.base.paths import Paths
from mailboot.cli import status_view
from mailboot.daemons import postfix
from mailboot.diagnose import status
from mailboot.dkim.keys import DomainKeys
from mailboot.dns.answer import Answer
from mailboot.dns.lookup import DnsLookup
from mailboot.mailboxes import accounts
from mailboot.network import reputation
from mailboot.network.reputation import (
    Ipv6Sending,
    PtrCheck,
    ReputationCheck,
    Verdict,
    check,
    classify,
    subjects,
)
from mailboot.settings.table import Settings
from mailboot.tls import certificates
from mailboot.worker import tasks
from tests.conftest import NOW, FakeDns

ADDRESS_V4 = "203.0.113.25"
ADDRESS_V6 = "2001:db8::25"
ZEN_V4 = "25.113.0.203.zen.spamhaus.org"
ZEN_V6 = ("5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
          ".zen.spamhaus.org")


def fake_lookup(answers: dict[str, Answer]) -> Callable[[str, str], Answer]:
    """DNS as data: each name's answer (A only); every other name does not exist."""

    def lookup(name: str, rtype: str) -> Answer:
        assert rtype == "A"
        return answers.get(name, Answer(nxdomain=True))

    return lookup


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(MAIL_DOMAINS="example.com,example.org", MAIL_HOSTNAME="mail.example.com",
                         PUBLIC_IPV4=ADDRESS_V4, PUBLIC_IPV6=ADDRESS_V6,
                         PUBLIC_ADDRESS_DISCOVERY="off")


@pytest.fixture
def paths(settings: Settings, tmp_path: Path) -> Paths:
    made = Paths(settings.data_dir, config_root=tmp_path / "root", run_dir=tmp_path / "run")
    made.run_dir.mkdir(parents=True)
    return made


# --- query names and verdicts --------------------------------------------------------------------


def test_query_names_follow_rfc_5782_and_a_dqs_key_changes_only_the_zone(
        settings: Settings, make_settings: Callable[..., Settings]) -> None:
    asked = {(blocklist.name, subject): blocklist.query_name(subject)
             for blocklist, subject in subjects(settings)}
    assert asked == {
        ("zen.spamhaus.org", ADDRESS_V4): ZEN_V4,  # §2.1: octets reversed
        ("zen.spamhaus.org", ADDRESS_V6): ZEN_V6,  # §2.4: 32 nibbles reversed
        ("dbl.spamhaus.org", "example.com"): "example.com.dbl.spamhaus.org",  # §2.3
        ("dbl.spamhaus.org", "example.org"): "example.org.dbl.spamhaus.org",
        ("dbl.spamhaus.org", "mail.example.com"): "mail.example.com.dbl.spamhaus.org",
    }
    keyed = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4=ADDRESS_V4,
                          PUBLIC_ADDRESS_DISCOVERY="off",
                          SPAMHAUS_DQS_KEY="abcdefghijklmnopqrstuvwxyz")
    names = {blocklist.name: blocklist.query_name(subject)
             for blocklist, subject in subjects(keyed)}
    assert names == {
        "zen.spamhaus.org": "25.113.0.203.abcdefghijklmnopqrstuvwxyz.zen.dq.spamhaus.net",
        "dbl.spamhaus.org": "mail.example.com.abcdefghijklmnopqrstuvwxyz.dbl.dq.spamhaus.net"}


def test_a_domain_that_is_also_the_hostname_is_asked_once(
        make_settings: Callable[..., Settings]) -> None:
    one = make_settings(MAIL_DOMAINS="example.com", MAIL_HOSTNAME="example.com",
                        PUBLIC_ADDRESS_DISCOVERY="off")
    assert [(b.name, s) for b, s in subjects(one)] == [("dbl.spamhaus.org", "example.com")]


def test_with_a_relay_our_addresses_are_not_asked_about(
        make_settings: Callable[..., Settings]) -> None:
    relayed = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4=ADDRESS_V4,
                            PUBLIC_ADDRESS_DISCOVERY="off", RELAY_HOST="smtp.relay.example.net")
    assert [(b.name, s) for b, s in subjects(relayed)] == [("dbl.spamhaus.org", "example.com"),
                                                          ("dbl.spamhaus.org", "mail.example.com")]


def test_the_dqs_key_is_never_logged_nor_kept(make_settings: Callable[..., Settings],
                                              tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    key = "abcdefghijklmnopqrstuvwxyz"
    keyed = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4=ADDRESS_V4,
                          PUBLIC_ADDRESS_DISCOVERY="off", SPAMHAUS_DQS_KEY=key)
    answers = {f"25.113.0.203.{key}.zen.dq.spamhaus.net": Answer(("127.0.0.2",)),
               f"example.com.{key}.dbl.dq.spamhaus.net": Answer(("127.255.255.252",))}
    state = tmp_path / "reputation.json"
    with caplog.at_level(logging.INFO, logger="mailboot"):
        ReputationCheck(subjects(keyed), fake_lookup(answers), state).step(NOW)
    assert "listed on zen.spamhaus.org" in caplog.text and "on dbl.spamhaus.org" in caplog.text
    assert key not in caplog.text and key not in state.read_text()


@pytest.mark.parametrize(("answer", "verdict", "detail"), [
    (Answer(nxdomain=True), Verdict.CLEAN, ""),
    (Answer(), Verdict.CLEAN, ""),
    (Answer(("127.0.0.2",)), Verdict.LISTED, "127.0.0.2: SBL: a known spam source"),
    (Answer(("127.0.0.4", "127.0.0.10")), Verdict.LISTED,
     "127.0.0.4: XBL: an exploited or infected machine (bot, open proxy); 127.0.0.10: PBL"),
    (Answer(("127.0.0.42",)), Verdict.LISTED, "a listing code Spamhaus does not document"),
    # "Query refused": never a listing, whatever else the list says.
    (Answer(("127.255.255.254",)), Verdict.CANT_TELL,
     "the list answered 127.255.255.254 (\"query refused\": it refuses queries that come "
     "through a public or open resolver); let the container's own resolver ask"),
    (Answer(("127.255.255.255",)), Verdict.CANT_TELL, "too many queries"),
    (Answer(("127.255.255.252",)), Verdict.CANT_TELL, "mistyped list name"),
    (Answer(("127.0.0.1",)), Verdict.CANT_TELL, "is no return code of this list"),
    # A resolver that answers every missing name with its own ad server.
    (Answer(("198.51.100.7",)), Verdict.CANT_TELL, "the resolver may rewrite answers"),
    (Answer(error="no answer from the container's own resolver"), Verdict.CANT_TELL,
     "no answer: no answer from the container's own resolver"),
])
def test_zen_answers(settings: Settings, answer: Answer, verdict: Verdict, detail: str) -> None:
    finding = classify(reputation.zen(settings), ADDRESS_V4, answer)
    assert finding.verdict is verdict
    assert detail in finding.detail
    assert finding.codes == answer.values


@pytest.mark.parametrize(("code", "verdict"), [
    ("127.0.1.2", Verdict.LISTED), ("127.0.1.102", Verdict.LISTED),
    ("127.0.1.255", Verdict.CANT_TELL),  # "you asked the DBL about an address": not ours to ask
    ("127.0.0.2", Verdict.CANT_TELL),  # a ZEN code is no DBL listing
])
def test_dbl_answers(settings: Settings, code: str, verdict: Verdict) -> None:
    finding = classify(reputation.dbl(settings), "example.com", Answer((code,)))
    assert finding.verdict is verdict


def test_a_listing_names_its_list_meaning_and_lookup_page(settings: Settings) -> None:
    listed = classify(reputation.zen(settings), ADDRESS_V6, Answer(("127.0.0.3",)))
    assert listed.page == "https://check.spamhaus.org/results/?query=2001:db8::25"
    assert listed.text() == (
        "2001:db8::25 is listed on zen.spamhaus.org (127.0.0.3: SBL CSS: spam detected "
        "automatically (snowshoe)): many receivers refuse or junk our mail; why, and how to ask "
        "for removal: https://check.spamhaus.org/results/?query=2001:db8::25")


def test_the_lists_are_asked_through_a_dns_server_as_the_container_asks_unbound(
        settings: Settings, fake_dns: Callable[..., FakeDns]) -> None:
    server = fake_dns()
    server.zones |= {"zen.spamhaus.org.", "dbl.spamhaus.org."}
    server.add(ZEN_V6, "A", "127.0.0.4")
    server.add("example.org.dbl.spamhaus.org", "A", "127.0.1.2")
    server.add(ZEN_V4, "A", "127.255.255.254")
    lookup = DnsLookup([(server.address, server.port)], timeout=2.0)
    found = {(f.blocklist, f.subject): f.verdict for f in check(subjects(settings), lookup)}
    assert found == {
        ("zen.spamhaus.org", ADDRESS_V4): Verdict.CANT_TELL,
        ("zen.spamhaus.org", ADDRESS_V6): Verdict.LISTED,
        ("dbl.spamhaus.org", "example.com"): Verdict.CLEAN,
        ("dbl.spamhaus.org", "example.org"): Verdict.LISTED,
        ("dbl.spamhaus.org", "mail.example.com"): Verdict.CLEAN}
    assert (ZEN_V6 + ".", "A") in server.asked


# --- the worker task, and what status makes of it ------------------------------------------------


def test_a_listing_is_a_warning_with_the_page_and_makes_status_fail(
        settings: Settings, paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    answers = {ZEN_V4: Answer(("127.0.0.2",)),
               "example.org.dbl.spamhaus.org": Answer(("127.0.1.2",)),
               ZEN_V6: Answer(("127.255.255.254",))}
    task = ReputationCheck(subjects(settings), fake_lookup(answers), paths.reputation_state)
    with caplog.at_level(logging.INFO, logger="mailboot"):
        assert task.step(NOW) == NOW + timedelta(days=1)
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        ("WARNING", "reputation: 203.0.113.25 is listed on zen.spamhaus.org (127.0.0.2: SBL: a "
                    "known spam source or spam operation): many receivers refuse or junk our "
                    "mail; why, and how to ask for removal: "
                    "https://check.spamhaus.org/results/?query=203.0.113.25"),
        ("INFO", "reputation: can't tell whether 2001:db8::25 is listed on zen.spamhaus.org: the "
                 "list answered 127.255.255.254 (\"query refused\": it refuses queries that come "
                 "through a public or open resolver); " + reputation.REFUSAL_ADVICE),
        ("WARNING", "reputation: example.org is listed on dbl.spamhaus.org (127.0.1.2: a spam "
                    "domain): many receivers refuse or junk our mail; why, and how to ask for "
                    "removal: https://check.spamhaus.org/results/?query=example.org"),
        ("INFO", "reputation: not listed: example.com, mail.example.com on dbl.spamhaus.org")]

    report = status.reputation_state(paths)
    assert report is not None and report.checked == NOW
    assert [(f.subject, f.verdict) for f in report.listed] == [
        (ADDRESS_V4, "listed"), ("example.org", "listed")]
    lines = status._reputation_problems(report)
    assert lines == [
        "reputation: 203.0.113.25 is listed on zen.spamhaus.org (127.0.0.2: SBL: a known spam "
        "source or spam operation); see https://check.spamhaus.org/results/?query=203.0.113.25",
        "reputation: example.org is listed on dbl.spamhaus.org (127.0.1.2: a spam domain); see "
        "https://check.spamhaus.org/results/?query=example.org"]


def test_can_t_tell_alone_is_no_problem_for_status(settings: Settings, paths: Paths) -> None:
    answers = {ZEN_V4: Answer(("127.255.255.254",))}
    ReputationCheck(subjects(settings), fake_lookup(answers), paths.reputation_state).step(NOW)
    report = status.reputation_state(paths)
    assert report is not None and not report.listed
    assert status._reputation_problems(report) == []
    assert [f.verdict for f in report.findings].count("can't tell") == 1


def test_only_changes_are_said_and_a_delisting_is_told(
        settings: Settings, paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    answers = {ZEN_V4: Answer(("127.0.0.2",))}
    task = ReputationCheck(subjects(settings), fake_lookup(answers), paths.reputation_state)
    task.step(NOW)
    # The next run is another process: the task's memory goes through the state file.
    again = ReputationCheck(subjects(settings), fake_lookup(answers), paths.reputation_state)
    again.restore(json.loads(json.dumps(task.state())))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mailboot"):
        assert again.step(NOW + timedelta(hours=1)) == NOW + timedelta(days=1, hours=1)
        assert not caplog.records  # the same listing: said once
        again.step(NOW + timedelta(hours=2))  # stepped early (another task's nudge): no check
        del answers[ZEN_V4]
        again.step(NOW + timedelta(days=2))
    assert [r.getMessage() for r in caplog.records] == [
        "reputation: 203.0.113.25 is no longer listed on zen.spamhaus.org"]


def test_a_nudge_at_ready_checks_again_at_once(settings: Settings, paths: Paths) -> None:
    asked: list[str] = []

    def lookup(name: str, rtype: str) -> Answer:
        asked.append(name)
        return Answer(nxdomain=True)

    task = ReputationCheck(subjects(settings)[:1], lookup, paths.reputation_state)
    task.step(NOW)
    task.step(NOW + timedelta(minutes=1))
    assert len(asked) == 1
    nudges = tasks.Nudges()
    tasks.on_ready(task, nudges)()
    assert nudges.names == {tasks.REPUTATION}
    task.step(NOW + timedelta(minutes=2))
    assert len(asked) == 2


def test_status_shows_the_findings_on_screen_and_in_json(settings: Settings,
                                                           paths: Paths) -> None:
    answers = {ZEN_V4: Answer(("127.0.0.2",)), ZEN_V6: Answer(("127.255.255.254",))}
    ReputationCheck(subjects(settings), fake_lookup(answers), paths.reputation_state).step(NOW)
    found = status.reputation_state(paths)
    assert found is not None
    document = status_view._reputation_json(found)
    assert document is not None and document["listed"] == 1
    assert document["findings"][0] == {
        "list": "zen.spamhaus.org", "subject": ADDRESS_V4, "verdict": "listed",
        "codes": ["127.0.0.2"], "detail": "127.0.0.2: SBL: a known spam source or spam operation",
        "page": "https://check.spamhaus.org/results/?query=203.0.113.25"}
    lines = status_view._reputation_lines(found)
    assert lines[0] == ("checked 2026-11-25 12:00:00 UTC: listed: 203.0.113.25 on "
                        "zen.spamhaus.org; can't tell: 2001:db8::25 on zen.spamhaus.org; clean: "
                        "example.com on dbl.spamhaus.org, example.org on dbl.spamhaus.org, "
                        "mail.example.com on dbl.spamhaus.org")
    assert lines[1].startswith("can't tell: 2001:db8::25 on zen.spamhaus.org: the list answered "
                               "127.255.255.254")


# --- IPv6: no confirmed PTR, no IPv6 for outbound mail -------------------------------------------


def ipv6_sending(results: list[PtrCheck], applied: list[bool]) -> Ipv6Sending:
    return Ipv6Sending(ipaddress.IPv6Address(ADDRESS_V6), "mail.example.com",
                       lambda: results.pop(0), applied.append)


def test_ipv6_is_used_once_its_ptr_is_confirmed_and_dropped_when_it_no_longer_is(
        paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    results = [PtrCheck(None, "no answer: timed out"), PtrCheck(True, ""),
               PtrCheck(False, "the address names host.provider.example, not mail.example.com"),
               PtrCheck(None, "no answer: timed out")]
    applied: list[bool] = []
    task = ReputationCheck([], fake_lookup({}), paths.reputation_state,
                           ipv6_sending(results, applied))
    with caplog.at_level(logging.INFO, logger="mailboot"):
        for day in range(4):
            task.step(NOW + timedelta(days=day))
    assert applied == [True, False]  # an unanswered check changes nothing
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "reputation: can't confirm the PTR of 2001:db8::25 yet (no answer: timed out); "
                 "until it is, mail leaves over IPv4 only"),
        ("INFO", "reputation: the PTR of 2001:db8::25 names mail.example.com, which resolves "
                 "back to it: mail leaves over IPv6 too"),
        ("WARNING", "reputation: mail leaves over IPv4 only: the IPv6 address 2001:db8::25 has "
                    "no PTR naming mail.example.com that resolves back to it (the address names "
                    "host.provider.example, not mail.example.com); big receivers refuse mail "
                    "from such an address. The PTR (rDNS) is set at your hosting provider; IPv6 "
                    "is used again once it is in place")]
    report = status.reputation_state(paths)
    assert report is not None and report.ipv6_address == ADDRESS_V6
    assert report.ipv6_sends is False and "host.provider.example" in report.ipv6_detail


def test_an_unconfirmed_ptr_said_again_after_a_restart_is_not_repeated(
        paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    applied: list[bool] = []
    first = ReputationCheck([], fake_lookup({}), paths.reputation_state,
                            ipv6_sending([PtrCheck(False, "no PTR")], applied))
    first.step(NOW)
    second = ReputationCheck([], fake_lookup({}), paths.reputation_state,
                             ipv6_sending([PtrCheck(False, "no PTR")], applied))
    second.restore(json.loads(json.dumps(first.state())))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mailboot"):
        second.step(NOW + timedelta(days=1))
    assert not caplog.records and applied == [False, False]


def render_postfix_files(settings: Settings, paths: Paths,
                         make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> str:
    certificate = certificates.ensure_certificate(paths, ["mail.example.com"], NOW)
    values = render.context(settings, paths, make_keys(settings), certificate,
                            accounts.postfix_maps(settings.domains, [], []))
    files = {f.template: f for f in render.render_all(values, paths)}
    return files["postfix/master.cf"].content.decode()


def test_postfix_sends_over_ipv4_only_until_the_ptr_of_public_ipv6_is_confirmed(
        settings: Settings, paths: Paths, make_settings: Callable[..., Settings],
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    override = ("smtp      unix  -       -       n       -       -       smtp\n"
                "  -o inet_protocols=ipv4\n")
    assert postfix.smtp_ipv4_only(settings, paths)
    assert override in render_postfix_files(settings, paths, make_keys)
    paths.ipv6_confirmed.write_text("2001:db8::99\n")  # confirmed for another address
    assert postfix.smtp_ipv4_only(settings, paths)
    paths.ipv6_confirmed.write_text(f"{ADDRESS_V6}\n")
    assert not postfix.smtp_ipv4_only(settings, paths)
    master = render_postfix_files(settings, paths, make_keys)
    assert "inet_protocols=ipv4" not in master
    assert "\nsmtp      unix  -       -       n       -       -       smtp\nrelay " in master
    # Without PUBLIC_IPV6 main.cf says ipv4 for everything; with a relay, the relay decides.
    for other in (make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4=ADDRESS_V4),
                  make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV6=ADDRESS_V6,
                                RELAY_HOST="smtp.relay.example.net")):
        paths.ipv6_confirmed.unlink(missing_ok=True)
        assert not postfix.smtp_ipv4_only(other, paths)


def test_the_worker_renders_postfix_again_when_the_decision_changes(
        settings: Settings, paths: Paths,
        make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> None:
    assert not tasks.render_postfix(settings, paths)  # no certificate yet: the boot renders
    render_postfix_files(settings, paths, make_keys)  # makes the certificate
    assert tasks.render_postfix(settings, paths)  # the first time: every file is new
    master = paths.config("postfix/master.cf")
    assert "-o inet_protocols=ipv4" in master.read_text()
    assert not tasks.render_postfix(settings, paths)  # nothing changed: no reload
    paths.ipv6_confirmed.write_text(f"{ADDRESS_V6}\n")
    assert tasks.render_postfix(settings, paths)
    assert "inet_protocols=ipv4" not in master.read_text()


def test_the_worker_has_the_task_and_reputation_check_off_keeps_only_the_ipv6_part(
        settings: Settings, paths: Paths, make_settings: Callable[..., Settings]) -> None:
    built = tasks.build_tasks(settings, settings, paths, tasks.Nudges())
    task = built[tasks.REPUTATION]
    assert isinstance(task, ReputationCheck)
    assert len(task.asked) == 5 and task.ipv6 is not None
    off = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV6=ADDRESS_V6,
                        REPUTATION_CHECK="off")
    kept = tasks.reputation_task(off, off, paths)
    assert kept is not None and kept.asked == [] and kept.ipv6 is not None
    nothing = make_settings(MAIL_DOMAINS="example.com", REPUTATION_CHECK="off")
    assert tasks.reputation_task(nothing, nothing, paths) is None


def test_the_ptr_check_is_the_dns_doctors_forward_confirmed_one() -> None:
    reverse = ipaddress.IPv6Address(ADDRESS_V6).reverse_pointer
    records: dict[tuple[str, str], Answer] = {}

    def lookup(name: str, rtype: str) -> Answer:
        return records.get((name.rstrip("."), rtype), Answer(nxdomain=True))

    check_ptr = tasks.ptr_check("mail.example.com", ipaddress.IPv6Address(ADDRESS_V6), lookup)
    assert check_ptr() == PtrCheck(False, (
        f"missing: Add {reverse}. PTR mail.example.com. at your hosting provider (reverse DNS / "
        "rDNS of the server's address)"))
    records[(reverse, "PTR")] = Answer(("mail.example.com.",))
    assert check_ptr() == PtrCheck(False, (
        "wrong: mail.example.com does not resolve back to 2001:db8::25 (forward-confirmed reverse "
        "DNS fails); publish its A/AAAA record"))
    records[("mail.example.com", "AAAA")] = Answer(error="timed out")
    assert check_ptr().confirmed is None  # can't tell: the last decision stands
    records[("mail.example.com", "AAAA")] = Answer((ADDRESS_V6,))
    assert check_ptr() == PtrCheck(True, "")
