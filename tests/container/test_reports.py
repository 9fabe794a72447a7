"""DMARC and TLS reports, end to end: the samples shaped like Google's, Microsoft's and Yahoo's
mailed to the report addresses on port 25, piped by Postfix to `mailboot.inbound.reports`
(as the policy user), summarised, and shown by `mailboot reports --json` and `mailboot status`;
malformed XML, an entity bomb, a zip bomb and a 50 MB attachment refused with a log line, while
mail to a mailbox still arrives."""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests import report_samples as samples
from tests.container.clients import search_inbox
from tests.container.containers import Container, running
from tests.polling import eventually

pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

DOMAIN, OURS = "example.com", "203.0.113.25"
DMARC_TO, TLS_TO = f"dmarc-reports@{DOMAIN}", f"tls-reports@{DOMAIN}"
ALICE, PASSWORD = f"alice@{DOMAIN}", "correct horse battery"
# Yesterday, as receivers report it: within `mailboot status`'s week.
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


@pytest.fixture(scope="module")
def mail(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    with running(image, tmp_path_factory.mktemp("data"),
                 {"MAIL_DOMAINS": DOMAIN, "PUBLIC_IPV4": OURS, "DNSBL": "off",
                  "OUTBOUND_CHECK": "off", "REPUTATION_CHECK": "off"},
                 "mailboot-reports", {ALICE: PASSWORD}) as container:
        yield container


def send(mail: Container, sender: str, recipient: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", mail.ports[25], local_hostname="mx.example.net",
                      timeout=120) as smtp:
        smtp.sendmail(sender, [recipient], raw)


def shown(mail: Container) -> list[dict[str, Any]]:
    result = mail.exec("mailboot", "reports", "--json")
    return list(json.loads(result.stdout))


def test_the_big_receivers_reports_are_summarised(mail: Container) -> None:
    for name, raw in samples.good_samples(DOMAIN, OURS, DMARC_TO, DAY).items():
        send(mail, f"reports@{name}.example.net", TLS_TO if name.endswith("-tls") else DMARC_TO,
             raw)

    def all_in() -> dict[str, Any] | None:
        days = shown(mail)
        complete = days and len(days[0]["dmarc_reports"]) == 4 and len(days[0]["tls_reports"]) == 2
        return days[0] if complete else None

    day = eventually(all_in, 120, lambda: f"six reports summarised:\n{mail.log_tail()}")
    assert (day["domain"], day["day"]) == (DOMAIN, f"{DAY:%Y-%m-%d}")
    by_address = {source["address"]: source for source in day["sources"]}
    assert by_address[OURS]["messages"] == 169 and by_address[OURS]["ours"]
    assert by_address[samples.FORGER]["called_out"] and by_address[samples.FORGER]["failed"] == 3
    assert day["tls"]["Microsoft Corporation"]["results"] == {
        "certificate-expired": 4, "validation-failure": 1}
    logs = mail.logs()
    assert ("mailboot: reports: DMARC report 12345678901234567890 from google.com about "
            f"example.com for {DAY:%Y-%m-%d}: 2 sources, 123 messages, 3 failing DMARC (from "
            "noreply-dmarc-support@google.com)") in logs
    assert ("mailboot: reports: TLS report 133774560000000000+example.com from Microsoft "
            f"Corporation for {DAY:%Y-%m-%d}: example.com: 90 sessions with TLS, 5 failed (from "
            "tlsrpt-noreply@microsoft.com)") in logs
    # Read, never stored as mail: nobody's mailbox got them, and nothing waits in the queue.
    assert not mail.exec("postqueue", "-j").stdout.strip()
    text = mail.exec("mailboot", "reports").stdout
    assert "198.51.100.66 (no PTR)  <- NOT OURS, FAILS DMARC: 3 messages" in text
    status = json.loads(mail.exec("mailboot", "status", "--json", check=False).stdout)
    assert status["reports"]["dmarc_reports"] == 4 and status["reports"]["tls_failed"] == 5
    assert [(s["address"], s["failed"]) for s in status["reports"]["called_out"]] == [
        (samples.FORGER, 3), ("2001:db8::66", 1)]
    screen = mail.exec("mailboot", "status", check=False).stdout
    assert (f"NOT OURS: 198.51.100.66 (no PTR) sent 3 messages as example.com on "
            f"{DAY:%Y-%m-%d} that failed DMARC, and isn't ours") in screen


REFUSED = "mailboot: warning: reports: refused a report from dmarc@bad.example: "


def test_hostile_reports_are_refused_with_a_log_line_and_mail_still_flows(
        mail: Container) -> None:
    before = shown(mail)
    for name, reason in (
            ("malformed", "its DMARC report can't be read: it is not well-formed XML"),
            ("entity-bomb", "its DMARC report can't be read: it declares a DOCTYPE (lolz)"),
            ("zip-bomb", "it unpacks to more than 32 MiB"),
            # 50 MB on the wire, under Postfix's message_size_limit (50 MiB): it reaches us.
            ("big", "the message is larger than 16 MiB")):
        send(mail, "dmarc@bad.example.net", DMARC_TO, samples.hostile_sample(name, DMARC_TO))
        mail.wait_for_log(REFUSED + reason, timeout=120)

    kept = mail.exec("sh", "-c", "ls /data/policy/reports/refused").stdout.split()
    assert len(kept) == 4
    assert shown(mail) == before
    assert not mail.exec("postqueue", "-j").stdout.strip()  # delivered (read), no bounce
    token = "still-flows-7f3a"
    send(mail, "someone@example.net", ALICE,
         f"From: someone@example.net\r\nTo: {ALICE}\r\nSubject: test {token}\r\n\r\n"
         "after the bombs\r\n".encode())
    assert search_inbox(mail, ALICE, ("SUBJECT", f'"test {token}"'), token, 60, PASSWORD)
    assert mail.state()["Running"] and mail.restart_count() == 0
