"""DMARC and TLS reports read as they arrive (`inbound.reports`, `standards.dmarcreport`,
`standards.tlsrpt`): the big receivers' shapes summarised per domain and day; hostile ones
refused with a log line, kept aside, and nothing else touched."""

from __future__ import annotations

import gzip
import io
import json
import logging
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mailboot.inbound import reports
from mailboot.standards import dmarcreport, tlsrpt
from tests import report_samples as samples

DOMAIN, OURS, TO = "example.com", "203.0.113.25", "dmarc-reports@example.com"
PTRS = {OURS: "mail.example.com", samples.FORGER: "host66.forger.example"}


def ptr(address: str) -> str | None:
    return PTRS.get(address)


def deliver(message: bytes, directory: Path) -> reports.Outcome:
    return reports.deliver(message, directory, {DOMAIN, "example.org"}, ptr)


def summary(directory: Path, domain: str = DOMAIN) -> dict[str, Any]:
    found = reports.read_summary(reports.summary_path(directory, domain, date(2026, 12, 4)))
    assert found is not None
    return found


def test_every_big_receivers_report_is_summarised(tmp_path: Path) -> None:
    for name, message in samples.good_samples(DOMAIN, OURS, TO).items():
        outcome = deliver(message, tmp_path)
        assert not outcome.refused, (name, outcome.line)
        assert outcome.exit_code == 0
    day = summary(tmp_path)
    assert [r["org"] for r in day["dmarc_reports"]] == [
        "google.com", "Enterprise Outlook", "Yahoo", "small.example"]
    sources = day["sources"]
    assert sources[OURS] == {
        "ptr": "mail.example.com", "messages": 169, "dkim_aligned": 169, "spf_aligned": 162,
        "failed": 0, "disposition": {"none": 169}, "header_from": [DOMAIN],
        "reporters": ["google.com", "Enterprise Outlook", "Yahoo", "small.example"]}
    assert sources[samples.FORGER]["failed"] == 3
    assert sources[samples.FORGER]["ptr"] == "host66.forger.example"
    assert sources["2001:db8::66"]["disposition"] == {"reject": 1}
    assert day["tls"] == {
        "Google Inc.": {"successful": 250, "failed": 0, "results": {}, "policies": ["sts"],
                        "mx": []},
        "Microsoft Corporation": {"successful": 90, "failed": 5, "policies": ["sts"],
                                  "results": {"certificate-expired": 4, "validation-failure": 1},
                                  "mx": ["mail.example.com"]}}


def test_a_report_resent_is_counted_once(tmp_path: Path) -> None:
    google = samples.good_samples(DOMAIN, OURS, TO)["google-dmarc"]
    deliver(google, tmp_path)
    again = deliver(google, tmp_path)
    assert "counted before" in again.line and not again.refused
    assert summary(tmp_path)["sources"][OURS]["messages"] == 120


def test_sources_call_out_who_fails_dmarc_as_us_and_isnt_ours(tmp_path: Path) -> None:
    deliver(samples.good_samples(DOMAIN, OURS, TO)["google-dmarc"], tmp_path)
    [day] = reports.recent_summaries(tmp_path, date(2026, 12, 5), days=7)
    found = reports.sources(day, {OURS})
    assert [(s.address, s.ours, s.called_out) for s in found] == [
        (OURS, True, False), (samples.FORGER, False, True)]
    assert reports.recent_summaries(tmp_path, date(2026, 12, 20), days=7) == []


def test_the_log_line_says_who_what_and_how_many(tmp_path: Path) -> None:
    outcome = deliver(samples.good_samples(DOMAIN, OURS, TO)["google-dmarc"], tmp_path)
    assert outcome.line == ("DMARC report 12345678901234567890 from google.com about "
                            "example.com for 2026-12-04: 2 sources, 123 messages, 3 failing "
                            "DMARC (from noreply-dmarc-support@google.com)")
    tls = deliver(samples.good_samples(DOMAIN, OURS, TO)["microsoft-tls"], tmp_path)
    assert tls.line == ("TLS report 133774560000000000+example.com from Microsoft Corporation "
                        "for 2026-12-04: example.com: 90 sessions with TLS, 5 failed "
                        "(from tlsrpt-noreply@microsoft.com)")


@pytest.mark.parametrize(("name", "reason"), [
    ("malformed", "not well-formed XML"),
    ("entity-bomb", "declares a DOCTYPE"),
    ("zip-bomb", "unpacks to more than 32 MiB"),
    ("big", "larger than 16 MiB"),
])
def test_hostile_reports_are_refused_kept_aside_and_nothing_else_changes(
        tmp_path: Path, name: str, reason: str) -> None:
    deliver(samples.good_samples(DOMAIN, OURS, TO)["google-dmarc"], tmp_path)
    before = summary(tmp_path)
    message = samples.hostile_sample(name, TO)
    outcome = deliver(message, tmp_path)
    assert outcome.refused and reason in outcome.line, outcome.line
    assert outcome.line.startswith("refused a report from dmarc@bad.example: ")
    kept = sorted((tmp_path / "refused").glob("*.eml"))
    assert len(kept) == 1 and kept[0].read_bytes() == message[:reports.KEEP_BYTES]
    assert summary(tmp_path) == before


def test_main_logs_a_refusal_as_a_warning_and_exits_0(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    message = samples.hostile_sample("entity-bomb", TO)
    with caplog.at_level(logging.INFO, logger="mailboot"):
        code = reports.main([f"--state={tmp_path}", f"--domain={DOMAIN}"],
                            stdin=io.BytesIO(message), ptr=ptr)
    assert code == 0
    [record] = [r for r in caplog.records if r.name == "mailboot.reports"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        "reports: refused a report from dmarc@bad.example: its DMARC report can't be read: it "
        "declares a DOCTYPE (lolz)")


def test_main_reads_a_too_large_message_to_its_end_and_keeps_only_its_start(
        tmp_path: Path) -> None:
    message = samples.hostile_sample("big", TO)
    stdin = io.BytesIO(message)
    code = reports.main([f"--state={tmp_path}", f"--domain={DOMAIN}"], stdin=stdin, ptr=ptr)
    assert code == 0 and stdin.tell() == len(message)  # Postfix could write all of it
    [kept] = (tmp_path / "reports" / "refused").glob("*.eml")
    assert kept.read_bytes() == message[:reports.KEEP_BYTES]


def test_main_defers_when_the_summaries_cant_be_written(tmp_path: Path) -> None:
    (tmp_path / "reports").write_text("a file where the directory belongs")
    message = samples.good_samples(DOMAIN, OURS, TO)["google-dmarc"]
    code = reports.main([f"--state={tmp_path}", f"--domain={DOMAIN}"],
                        stdin=io.BytesIO(message), ptr=ptr)
    assert code == reports.EX_TEMPFAIL


def test_main_logs_to_the_syslog_socket_when_run_by_postfix(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "log.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    try:
        reports.log_to(str(path))
        logging.getLogger("mailboot.reports").warning("reports: refused a report")
        assert listener.recv(4096).rstrip(b"\x00") == b"<12>mailboot: warning: reports: " \
                                                      b"refused a report"
    finally:
        listener.close()
        for handler in logging.getLogger("mailboot").handlers:
            handler.close()
        logging.getLogger("mailboot").handlers.clear()


def test_reports_about_others_domains_are_refused(tmp_path: Path) -> None:
    other = samples.good_samples("stranger.example", OURS, TO)
    dmarc = deliver(other["yahoo-dmarc"], tmp_path)
    assert dmarc.refused and "about stranger.example, not one of our domains" in dmarc.line
    tls = deliver(other["google-tls"], tmp_path)
    assert tls.refused and "about none of our domains" in tls.line
    assert not (tmp_path / "summaries").exists()


@pytest.mark.parametrize("domain", ["../../x.example.com", "a/b.example.com", "x..example.com",
                                    "-x.example.com", "example.com.evil"])
def test_a_domain_that_isnt_a_host_name_of_ours_names_no_directory(tmp_path: Path,
                                                                    domain: str) -> None:
    xml = samples.dmarc_xml("o", "1", domain, [(OURS, 1, True, True)])
    outcome = deliver(samples.message("a@o.example", TO, "s", xml, "text/xml", "r.xml"),
                      tmp_path)
    assert outcome.refused and "not one of our domains" in outcome.line
    assert not (tmp_path / "summaries").exists()
    assert reports.ours("mail.example.com", {DOMAIN}) and reports.ours("xn--bcher-kva.de",
                                                                       {"xn--bcher-kva.de"})


def test_a_message_without_a_report_is_refused(tmp_path: Path) -> None:
    plain = b"From: someone@example.net\r\nSubject: hi\r\n\r\njust words\r\n"
    outcome = deliver(plain, tmp_path)
    assert outcome.refused and "carries no report" in outcome.line
    assert "someone@example.net" in outcome.line


def test_only_the_newest_refused_messages_are_kept(tmp_path: Path) -> None:
    for second in range(reports.KEEP_REFUSED + 5):
        reports.keep_aside(tmp_path, f"message {second}".encode(), now=1_800_000_000 + second)
    kept = sorted((tmp_path / "refused").glob("*.eml"))
    assert len(kept) == reports.KEEP_REFUSED
    assert kept[-1].read_bytes() == f"message {reports.KEEP_REFUSED + 4}".encode()
    assert kept[0].read_bytes() == b"message 5"


# --- unpacking -----------------------------------------------------------------------------------


def test_a_zip_bomb_below_the_absolute_limit_is_stopped_by_its_ratio() -> None:
    with pytest.raises(reports.Refused, match="200 times its packed size"):
        reports.unpack(samples.zip_bomb(0, 20))


def test_a_gzip_bomb_is_stopped() -> None:
    with pytest.raises(reports.Refused, match="unpacks to more than"):
        reports.unpack(gzip.compress(bytes(100 * 1024 * 1024)))


def test_a_zip_of_two_files_is_refused() -> None:
    buffer = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.xml", "<feedback/>")
        archive.writestr("b.xml", "<feedback/>")
    with pytest.raises(reports.Refused, match="holds 2 files"):
        reports.unpack(buffer.getvalue())


def test_broken_packings_are_refused() -> None:
    with pytest.raises(reports.Refused, match="gzip data ends early"):
        reports.unpack(gzip.compress(b"<feedback/>" * 100)[:30])
    with pytest.raises(reports.Refused, match="zip can't be read"):
        reports.unpack(b"PK\x03\x04 not really")
    with pytest.raises(reports.Refused, match="neither XML"):
        reports.read_report(b"plain text")


# --- the formats ---------------------------------------------------------------------------------


def test_dmarc_xml_without_required_parts_is_refused() -> None:
    with pytest.raises(dmarcreport.ReportError, match="root element is <report>"):
        dmarcreport.parse_report(b"<report/>")
    with pytest.raises(dmarcreport.ReportError, match="lacks report_metadata"):
        dmarcreport.parse_report(b"<feedback><report_metadata/></feedback>")
    bad_ip = samples.dmarc_xml("o", "1", DOMAIN, [("not-an-ip", 1, True, True)])
    with pytest.raises(dmarcreport.ReportError, match="source_ip 'not-an-ip'"):
        dmarcreport.parse_report(bad_ip)


def test_dmarc_xml_with_an_external_entity_is_refused() -> None:
    xxe = (b'<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b"<feedback>&x;</feedback>")
    with pytest.raises(dmarcreport.ReportError, match="DOCTYPE"):
        dmarcreport.parse_xml(xxe)


def test_dmarc_xml_nesting_is_bounded() -> None:
    deep = b"<a>" * 30 + b"</a>" * 30
    with pytest.raises(dmarcreport.ReportError, match="nests deeper"):
        dmarcreport.parse_xml(deep)


def test_tls_json_must_follow_rfc_8460() -> None:
    with pytest.raises(tlsrpt.TlsReportError, match="not JSON"):
        tlsrpt.parse_report(b"{not json")
    with pytest.raises(tlsrpt.TlsReportError, match="date-range"):
        tlsrpt.parse_report(b'{"organization-name": "x", "report-id": "1", "policies": []}')
    good = json.loads(samples.tls_json("Org", "1", DOMAIN, 1, [("starttls-not-supported", 2)]))
    good["policies"][0]["summary"]["total-failure-session-count"] = -1
    with pytest.raises(tlsrpt.TlsReportError, match="not a count"):
        tlsrpt.parse_report(json.dumps(good).encode())
    with pytest.raises(tlsrpt.TlsReportError, match="not JSON"):
        tlsrpt.parse_report(b"[" * 100_000 + b"]" * 100_000)


# --- what the commands show ----------------------------------------------------------------------


def delivered_all(directory: Path) -> list[dict[str, Any]]:
    for message in samples.good_samples(DOMAIN, OURS, TO).values():
        deliver(message, directory)
    return reports.recent_summaries(directory, date(2026, 12, 5), days=14)


def test_mailboot_reports_text(tmp_path: Path) -> None:
    from mailboot.cli.reports import reports_text
    from mailboot.settings.table import load_settings

    settings = load_settings({"MAIL_DOMAINS": DOMAIN})
    text = reports_text(settings, delivered_all(tmp_path), {OURS}, 14)
    assert text.splitlines() == [
        "example.com 2026-12-04: DMARC, 4 reports (google.com, Enterprise Outlook, Yahoo, "
        "small.example)",
        "  203.0.113.25 (mail.example.com) (ours): 169 messages, DKIM aligned 169, SPF aligned "
        "162, failed DMARC 0",
        "  198.51.100.66 (host66.forger.example)  <- NOT OURS, FAILS DMARC: 3 messages, DKIM "
        "aligned 0, SPF aligned 0, failed DMARC 3",
        "  2001:db8::66 (no PTR)  <- NOT OURS, FAILS DMARC: 1 messages, DKIM aligned 0, SPF "
        "aligned 0, failed DMARC 1",
        "example.com 2026-12-04: TLS, 2 reports",
        "  Google Inc.: 250 sessions with TLS, 0 failed",
        "  Microsoft Corporation: 90 sessions with TLS, 5 failed (certificate-expired 4, "
        "validation-failure 1 at mail.example.com)"]
    assert reports_text(settings, [], set(), 14) == (
        "no DMARC or TLS reports in the last 14 days (they arrive at "
        "dmarc-reports@example.com, tls-reports@example.com, usually once a day)\n")


def test_mailboot_reports_json(tmp_path: Path) -> None:
    from mailboot.base.paths import Paths
    from mailboot.cli.main import main

    delivered_all(reports.reports_directory(Paths(tmp_path).policy_state))
    out = io.StringIO()
    environ = {"MAIL_DOMAINS": DOMAIN, "DATA_DIR": str(tmp_path), "PUBLIC_IPV4": OURS,
               "PUBLIC_ADDRESS_DISCOVERY": "off"}
    assert main(["reports", "--json", "--days", "3650"], environ=environ, stdout=out) == 0
    [day] = json.loads(out.getvalue())
    assert (day["domain"], day["day"]) == (DOMAIN, "2026-12-04")
    assert [(s["address"], s["ours"], s["called_out"]) for s in day["sources"]] == [
        (OURS, True, False), (samples.FORGER, False, True), ("2001:db8::66", False, True)]
    assert day["sources"][1]["ptr"] == "host66.forger.example"
    assert day["tls"]["Microsoft Corporation"]["failed"] == 5


def test_status_sums_up_the_week_and_calls_out_who_isnt_ours(tmp_path: Path) -> None:
    from mailboot.cli import status_view

    found = reports.overview(delivered_all(tmp_path), {OURS}, 7)
    lines = status_view._reports_lines(found)
    assert lines == [
        "last 7 days: 4 DMARC reports, 173 messages as us, 4 failed DMARC; 2 TLS reports, 345 "
        "sessions, 5 failed TLS (`mailboot reports`)",
        "NOT OURS: 198.51.100.66 (host66.forger.example) sent 3 messages as example.com on "
        "2026-12-04 that failed DMARC, and isn't ours",
        "NOT OURS: 2001:db8::66 (no PTR) sent 1 messages as example.com on 2026-12-04 that "
        "failed DMARC, and isn't ours"]
    assert status_view._reports_lines(reports.overview([], set(), 7)) == [
        "none in the last 7 days"]
