"""The port-25 policy: SPF failures without DMARC, refusing blocklists, Docker's proxy."""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from mailboot.dns.answer import Answer
from mailboot.inbound.decide import (
    DUNNO,
    PROBE_REPEAT,
    Blocklist,
    FileNotes,
    InboundChecks,
    default_gateway,
    reverse_name,
)
from mailboot.policy import delegation as policy_protocol
from mailboot.policy import service as policy_service
from mailboot.standards.publicsuffix import parse_rules

RULES = parse_rules(["// comment", "com", "net", "co.uk", "*.ck", "!www.ck"])
GOOD_IP, BAD_IP = "192.0.2.10", "198.51.100.7"


class Dns:
    """A recursive resolver as data: (name, type) -> values; names in `broken` fail."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[str, ...]] = {}
        self.broken: set[str] = set()
        self.asked: list[tuple[str, str]] = []

    def __call__(self, name: str, rtype: str) -> Answer:
        self.asked.append((name, rtype))
        if name in self.broken:
            return Answer(error="SERVFAIL")
        values = self.records.get((name, rtype), ())
        return Answer(values=values, nxdomain=not values)


@pytest.fixture
def dns() -> Dns:
    dns = Dns()
    for domain in ("strict.net", "shop.strict.com", "dmarc.net"):
        dns.records[(domain, "TXT")] = (f"v=spf1 ip4:{GOOD_IP} -all",)
    dns.records[("_dmarc.dmarc.net", "TXT")] = ("v=DMARC1; p=reject",)
    dns.records[("_dmarc.strict.com", "TXT")] = ("v=DMARC1; p=none",)
    return dns


def request(client: str, sender: str, **more: str) -> dict[str, str]:
    return {"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": client,
            "sender": sender, "helo_name": "mx.example.org", "instance": "a1.1", **more}


def test_spf_fail_without_dmarc_is_refused_with_5_7_23(dns: Dns) -> None:
    checks = InboundChecks(dns, RULES)
    action = checks.decide(request(BAD_IP, "boss@strict.net"))
    assert action.startswith("550 5.7.23 SPF: strict.net does not allow 198.51.100.7 ")
    assert "publishes no DMARC policy" in action


def test_spf_pass_and_other_results_are_left_alone(dns: Dns) -> None:
    checks = InboundChecks(dns, RULES)
    assert checks.decide(request(GOOD_IP, "boss@strict.net")) == DUNNO
    assert checks.decide(request(BAD_IP, "someone@no-spf.net")) == DUNNO  # none


@pytest.mark.parametrize("sender", ["boss@dmarc.net", "boss@shop.strict.com"])
def test_with_a_dmarc_policy_dmarc_decides(dns: Dns, sender: str) -> None:
    """At the domain or at its organizational domain (RFC 7489 §6.6.3)."""
    assert InboundChecks(dns, RULES).decide(request(BAD_IP, sender)) == DUNNO


def test_a_failed_dmarc_lookup_never_refuses(dns: Dns) -> None:
    dns.broken.add("_dmarc.strict.net")
    assert InboundChecks(dns, RULES).decide(request(BAD_IP, "boss@strict.net")) == DUNNO


def test_a_failed_lookup_at_the_organizational_domain_never_refuses(dns: Dns) -> None:
    dns.records[("shop.strict.net", "TXT")] = (f"v=spf1 ip4:{GOOD_IP} -all",)
    dns.broken.add("_dmarc.strict.net")  # _dmarc.shop.strict.net holds nothing: ask further
    assert InboundChecks(dns, RULES).decide(request(BAD_IP, "boss@shop.strict.net")) == DUNNO


@pytest.mark.parametrize(("published", "why"), [
    (("v=DMARC1; p=reject", "v=DMARC1; p=none"), "has 2 DMARC records, which count as none"),
    (("v=DMARC1; rua=mailto:reports@strict.net",), "has no valid p="),
    (("v=DMARC1; p=maybe",), "has no valid p="),
])
def test_dmarc_records_receivers_ignore_are_no_policy(
        dns: Dns, published: tuple[str, ...], why: str) -> None:
    """RFC 7489 §6.6.3: several records, or one without a valid p=, mean no DMARC policy."""
    dns.records[("_dmarc.strict.net", "TXT")] = published
    action = InboundChecks(dns, RULES).decide(request(BAD_IP, "boss@strict.net"))
    assert action.startswith("550 5.7.23 SPF: strict.net does not allow 198.51.100.7 ")
    assert "publishes no DMARC policy" in action and why in action


def test_two_records_at_the_domain_are_none_even_with_a_policy_above(dns: Dns) -> None:
    """Discovery stops at a name holding DMARC records: strict.com's p=none doesn't apply."""
    dns.records[("_dmarc.shop.strict.com", "TXT")] = ("v=DMARC1; p=reject", "v=DMARC1; p=none")
    action = InboundChecks(dns, RULES).decide(request(BAD_IP, "boss@shop.strict.com"))
    assert action.startswith("550 5.7.23 SPF: shop.strict.com does not allow")


@pytest.mark.parametrize("attributes", [
    {"sasl_username": "alice@example.com"},  # one of our users
    {"client_address": "127.0.0.1"},  # this container
    {"client_address": "unknown"},
    {"sender": ""},  # a bounce: DMARC judges it by its From: at the end of data
])
def test_our_users_local_mail_and_bounces_are_never_judged(
        dns: Dns, attributes: dict[str, str]) -> None:
    asked = {**request(BAD_IP, "boss@strict.net"), **attributes}
    assert InboundChecks(dns, RULES).decide(asked) == DUNNO


def test_one_verdict_per_message(dns: Dns) -> None:
    checks = InboundChecks(dns, RULES)
    for _ in range(5):  # five recipients of one message
        checks.decide(request(BAD_IP, "boss@strict.net"))
    assert dns.asked.count(("strict.net", "TXT")) == 1
    # The next message is judged afresh: the domain has published DMARC meanwhile.
    dns.records[("_dmarc.strict.net", "TXT")] = ("v=DMARC1; p=none",)
    assert checks.decide(request(BAD_IP, "boss@strict.net", instance="a2.1")) == DUNNO


def test_a_blocklist_that_refuses_our_resolver_is_said_once_an_hour(
        dns: Dns, caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    dns.records[(f"{reverse_name(GOOD_IP)}.key.zen.dq.spamhaus.net", "A")] = ("127.255.255.254",)
    checks = InboundChecks(dns, RULES, [Blocklist("key.zen.dq.spamhaus.net", "zen.spamhaus.org")],
                           clock=lambda: now[0])
    assert checks.decide(request(GOOD_IP, "boss@strict.net")) == DUNNO
    assert caplog.text.count("this blocklist refuses our resolver: zen.spamhaus.org answered "
                             f"127.255.255.254 (\"query refused\") for {GOOD_IP}") == 1
    assert "key.zen" not in caplog.text  # the DQS key stays out of our lines
    now[0] = 1800.0
    checks.decide(request("192.0.2.11", "boss@strict.net"))
    assert caplog.text.count("refuses our resolver") == 1
    now[0] = 3700.0
    checks.decide(request(GOOD_IP, "boss@strict.net"))
    assert caplog.text.count("refuses our resolver") == 2


def test_dnswls_limit_answer_is_a_refusal_too(dns: Dns, caplog: pytest.LogCaptureFixture) -> None:
    dns.records[(f"{reverse_name(GOOD_IP)}.list.dnswl.org", "A")] = ("127.0.0.255",)
    checks = InboundChecks(dns, RULES, [Blocklist("list.dnswl.org", "list.dnswl.org")])
    checks.decide(request(GOOD_IP, "boss@strict.net"))
    assert "this blocklist refuses our resolver: list.dnswl.org answered 127.0.0.255" in caplog.text


def test_a_real_listing_is_not_a_refusal(dns: Dns, caplog: pytest.LogCaptureFixture) -> None:
    dns.records[(f"{reverse_name(GOOD_IP)}.zen.spamhaus.org", "A")] = ("127.0.0.2",)
    checks = InboundChecks(dns, RULES, [Blocklist("zen.spamhaus.org", "zen.spamhaus.org")])
    checks.decide(request(GOOD_IP, "boss@strict.net"))
    assert "refuses" not in caplog.text


def test_many_sessions_from_the_gateway_mean_dockers_proxy(
        dns: Dns, caplog: pytest.LogCaptureFixture) -> None:
    checks = InboundChecks(dns, RULES, gateway="172.17.0.1")
    checks.decide(request("172.17.0.1", "a@no-spf.net", instance="1"))
    checks.decide(request("172.17.0.1", "a@no-spf.net", instance="1"))  # one session, 2 RCPTs
    checks.decide(request("172.17.0.2", "a@no-spf.net", instance="2"))  # another client
    checks.decide(request("172.17.0.1", "a@no-spf.net", instance="3"))
    assert "userland proxy" not in caplog.text
    for session in ("4", "5", "6"):
        checks.decide(request("172.17.0.1", "a@no-spf.net", instance=session))
    assert caplog.text.count("comes from 172.17.0.1, this container's gateway: Docker's "
                             "userland proxy hides the senders' addresses") == 1


def test_default_gateway_from_proc_net_route() -> None:
    table = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
             "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\n"
             "eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n")
    assert default_gateway(table) == "172.17.0.1"
    assert default_gateway(table.splitlines()[0]) is None


def test_reverse_names_for_blocklists() -> None:
    assert reverse_name("192.0.2.7") == "7.2.0.192"
    assert reverse_name("2001:db8::1").startswith("1.0.0.0.") and reverse_name(
        "2001:db8::1").endswith(".8.b.d.0.1.0.0.2")


@pytest.mark.parametrize(("domain", "organizational"), [
    ("a.b.example.com", "example.com"),
    ("example.com", "example.com"),
    ("x.y.example.co.uk", "example.co.uk"),
    ("a.b.foo.ck", "b.foo.ck"),  # *.ck: foo.ck is a suffix
    ("a.www.ck", "www.ck"),  # !www.ck: an exception to it
    ("example.unlisted", "example.unlisted"),  # the implicit * rule
    ("com", "com"),
])
def test_organizational_domain(domain: str, organizational: str) -> None:
    assert RULES.organizational_domain(domain) == organizational


def test_policy_protocol_on_one_stream() -> None:
    """What smtpd sends (SMTPD_POLICY_README), twice on one connection; a crash is DUNNO; the
    end of the stream ends the service."""
    seen: list[dict[str, str]] = []

    def decide(attributes: Mapping[str, str]) -> str:
        seen.append(dict(attributes))
        if attributes["sender"] == "crash@example.net":
            raise RuntimeError("bug")
        return "550 5.7.23 no"

    asked = b"".join(f"request=smtpd_access_policy\nsender={sender}\nclient_address=192.0.2.1"
                     "\n\n".encode() for sender in ("a@example.net", "crash@example.net"))
    answers = io.BytesIO()
    assert policy_protocol.serve(io.BytesIO(asked), answers, decide) == 2
    assert answers.getvalue() == b"action=550 5.7.23 no\n\naction=DUNNO\n\n"
    assert [s["sender"] for s in seen] == ["a@example.net", "crash@example.net"]


def test_one_policy_process_answers_every_smtpd_on_the_handed_socket_and_ends_when_idle(
        tmp_path: Path) -> None:
    """As the supervisor runs it: the listening socket is handed over; two smtpd connections at
    once are both answered; with none open for --idle seconds the process ends. Local clients
    are never judged, so no DNS is asked here."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "policy"))
    listener.listen(8)
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "mailboot.policy.service",
         f"--policy-fd={listener.fileno()}", "--idle=1", f"--notes={tmp_path}",
         "--blocklist=key.zen.dq.spamhaus.net=zen.spamhaus.org"],
        pass_fds=[listener.fileno()], stderr=subprocess.PIPE)
    asked = b"request=smtpd_access_policy\nclient_address=127.0.0.1\nsender=a@example.net\n\n"
    first, second = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2))
    with first, second:
        for connection in (first, second):
            connection.settimeout(30)
            connection.connect(str(tmp_path / "policy"))
        for connection in (first, second, first):
            connection.sendall(asked)
            assert connection.recv(100) == b"action=DUNNO\n\n"
    listener.close()
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 0
    assert b"key.zen.dq" not in errors


def test_what_is_said_once_is_said_once_across_processes(
        dns: Dns, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """Postfix runs one policy process per smtpd: the notes are files they share."""
    dns.records[(f"{reverse_name(GOOD_IP)}.zen.spamhaus.org", "A")] = ("127.255.255.254",)
    lists = [Blocklist("zen.spamhaus.org", "zen.spamhaus.org")]
    first, second = (InboundChecks(dns, RULES, lists, gateway="172.17.0.1",
                                   notes=FileNotes(tmp_path)) for _ in range(2))
    first.decide(request(GOOD_IP, "boss@strict.net"))
    second.decide(request(GOOD_IP, "boss@strict.net"))
    assert caplog.text.count("refuses our resolver") == 1
    for checks, session in ((first, "1"), (second, "2"), (first, "3"), (second, "4")):
        checks.decide(request("172.17.0.1", "a@no-spf.net", instance=session))
    assert caplog.text.count("Docker's userland proxy hides") == 1


def test_notes_that_cant_be_written_are_said_once_and_kept_in_memory(
        dns: Dns, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """A run directory the policy user can't write (here a file stands where it should be: the
    tests run as root) used to silence the proxy warning for good, without a word."""
    blocked = tmp_path / "inbound"
    blocked.write_text("")
    dns.records[(f"{reverse_name(GOOD_IP)}.zen.spamhaus.org", "A")] = ("127.255.255.254",)
    now = [1000.0]
    policy = InboundChecks(dns, RULES, [Blocklist("zen.spamhaus.org", "zen.spamhaus.org")],
                           gateway="172.17.0.1", clock=lambda: now[0], notes=FileNotes(blocked))
    policy.decide(request(GOOD_IP, "boss@strict.net"))
    for session in ("1", "2", "3", "4"):
        policy.decide(request("172.17.0.1", "a@no-spf.net", instance=session))
    problems = [r for r in caplog.records if "can't keep the policy service's notes" in
                r.getMessage()]
    assert len(problems) == 1
    assert problems[0].levelno == logging.WARNING
    assert f"in {blocked} (" in problems[0].getMessage()
    assert "Not a directory" in problems[0].getMessage()  # the cause
    assert caplog.text.count("refuses our resolver") == 1
    assert caplog.text.count("Docker's userland proxy hides") == 1  # said, not silenced
    now[0] += PROBE_REPEAT + 1  # asked again, and refused again, within the hour
    policy.decide(request(GOOD_IP, "boss@strict.net"))
    assert dns.asked.count((f"{reverse_name(GOOD_IP)}.zen.spamhaus.org", "A")) == 2
    assert caplog.text.count("refuses our resolver") == 1


def test_the_blocklist_argument_keeps_the_key_out_of_the_log() -> None:
    assert policy_service.blocklist("key.zen.dq.spamhaus.net=zen.spamhaus.org") == Blocklist(
        "key.zen.dq.spamhaus.net", "zen.spamhaus.org")
    assert policy_service.blocklist("list.dnswl.org") == Blocklist("list.dnswl.org",
                                                                   "list.dnswl.org")
