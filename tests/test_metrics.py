"""The metrics page: the exposition format, each source's parser, the page promtool reads, the
child that serves it on demand, and the Postfix log counts the supervisor keeps."""

from __future__ import annotations

import http.client
import json
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailboot.base import maillog
from mailboot.base.errors import CommandError
from mailboot.base.paths import Paths
from mailboot.base.sockets import listening_socket
from mailboot.daemons import supervisor
from mailboot.daemons.on_demand import MetricsActivation
from mailboot.diagnose import metrics, metrics_child
from mailboot.diagnose.metrics import Family, Sample
from mailboot.dns import names
from mailboot.settings.table import Settings
from mailboot.tls import certificates
from tests.conftest import NOW, require_tool

# What Dovecot 2.4.1's stats service serves with the metrics of templates/dovecot/dovecot.conf
# (as it served it in the image: a counter's family without `_total`, an info family, `# EOF`,
# and for a metric with group_by its ungrouped samples as `_count` and `_sum`).
DOVECOT_PAGE = """\
# HELP process_start_time_seconds Timestamp of service start
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1764936000
# HELP dovecot_build Dovecot build information
# TYPE dovecot_build info
dovecot_build_info{version="2.4.1",revision="7d8c0e5759"} 1
# HELP dovecot_auth_success Total number of all events of this kind
# TYPE dovecot_auth_success counter
dovecot_auth_success_total 3
# HELP dovecot_auth_success_duration_seconds Total duration of all events of this kind
# TYPE dovecot_auth_success_duration_seconds counter
dovecot_auth_success_duration_seconds_total 0.012345
# HELP dovecot_imap_command Total number of all events of this kind
# TYPE dovecot_imap_command counter
dovecot_imap_command_count 7
dovecot_imap_command_total{cmd_name="LOGIN"} 2
dovecot_imap_command_total{cmd_name="SELECT"} 5
# HELP dovecot_imap_command_duration_seconds Total duration of all events of this kind
# TYPE dovecot_imap_command_duration_seconds counter
dovecot_imap_command_duration_seconds_sum 0.25
# HELP dovecot_lookup_duration Lookup durations
# TYPE dovecot_lookup_duration histogram
dovecot_lookup_duration_bucket{le="0.01"} 1
dovecot_lookup_duration_bucket{le="+Inf"} 2
dovecot_lookup_duration_sum 0.5
dovecot_lookup_duration_count 2
# EOF
"""


# --- the exposition format ------------------------------------------------------------------

def test_a_family_has_help_and_type_then_its_samples() -> None:
    page = metrics.render([metrics.family("x_total", "counter", "Things.",
                                          [({"kind": "a"}, 2), ({"kind": "b"}, 0.5)]),
                           metrics.family("y", "gauge", "One.", [({}, 7)])])
    assert page == ('# HELP x_total Things.\n# TYPE x_total counter\n'
                    'x_total{kind="a"} 2\nx_total{kind="b"} 0.5\n'
                    '# HELP y One.\n# TYPE y gauge\ny 7\n')


def test_label_values_and_help_are_escaped() -> None:
    page = metrics.render([metrics.family("z", "gauge", 'a \\ b\nc "d"',
                                          [({"v": 'back\\slash "quote"\nline'}, 1)])])
    assert '# HELP z a \\\\ b\\nc "d"\n' in page  # HELP escapes \ and the line feed, not "
    assert 'z{v="back\\\\slash \\"quote\\"\\nline"} 1\n' in page


def test_special_values_are_spelt_as_the_format_says() -> None:
    assert [metrics.number(v) for v in (3.0, -1, 0.25, math.nan, math.inf, -math.inf)] == \
        ["3", "-1", "0.25", "NaN", "+Inf", "-Inf"]


def test_a_name_comes_once_per_page() -> None:
    one = metrics.family("x", "gauge", "x", [({}, 1)])
    with pytest.raises(ValueError, match="twice"):
        metrics.render([one, one])
    histogram = Family("h", "histogram", "h", (Sample((), 1, "_count"),))
    with pytest.raises(ValueError, match="h_count"):  # a sample's name counts too
        metrics.render([histogram, metrics.family("h_count", "gauge", "c", [({}, 1)])])
    assert metrics.without_clashes([one, histogram, one]) == [one, histogram]


def test_a_series_is_said_once_and_bad_names_are_refused() -> None:
    fam = metrics.family("x", "gauge", "x", [({"a": "1"}, 1), ({"a": "1"}, 2)])
    assert fam.samples == (Sample((("a", "1"),), 1),)
    for name, label in (("9x", "a"), ("x:y", "a"), ("x", "__a"), ("x", "a-b")):
        with pytest.raises(ValueError):
            metrics.family(name, "gauge", "x", [({label: "1"}, 1)])
    with pytest.raises(ValueError):
        metrics.family("x", "info", "x", [])


# --- Dovecot's OpenMetrics ------------------------------------------------------------------

def test_dovecots_page_becomes_the_text_format_with_one_prefix() -> None:
    page = metrics.render(metrics.from_openmetrics(DOVECOT_PAGE))
    assert "# EOF" not in page
    assert "# TYPE dovecot_process_start_time_seconds gauge\n" in page
    assert "# TYPE dovecot_build_info gauge\n" in page
    assert 'dovecot_build_info{version="2.4.1",revision="7d8c0e5759"} 1\n' in page
    assert "# TYPE dovecot_auth_success_total counter\ndovecot_auth_success_total 3\n" in page
    assert "dovecot_auth_success_duration_seconds_total 0.012345\n" in page
    assert ('# TYPE dovecot_imap_command_total counter\ndovecot_imap_command_total 7\n'
            'dovecot_imap_command_total{cmd_name="LOGIN"} 2\n') in page
    assert 'dovecot_imap_command_total{cmd_name="SELECT"} 5\n' in page
    assert "dovecot_imap_command_duration_seconds_total 0.25\n" in page
    assert "_count" not in page.replace("dovecot_lookup_duration_count", "")
    assert ('# TYPE dovecot_lookup_duration histogram\n'
            'dovecot_lookup_duration_bucket{le="0.01"} 1\n'
            'dovecot_lookup_duration_bucket{le="+Inf"} 2\n'
            'dovecot_lookup_duration_sum 0.5\ndovecot_lookup_duration_count 2\n') in page


def test_dovecot_labels_with_escapes_survive() -> None:
    text = ('# TYPE dovecot_x counter\n'
            'dovecot_x_total{user="a\\"b\\\\c",d="e,f"} 1 1700000000\n'
            'dovecot_x_created 1700000000\n# EOF\n')
    (fam,) = metrics.from_openmetrics(text)
    assert fam.samples == (Sample((("user", 'a"b\\c'), ("d", "e,f")), 1.0),)  # no _created


def test_a_sample_of_no_declared_family_is_left_out() -> None:
    assert metrics.from_openmetrics("dovecot_x 1\n# TYPE dovecot_y gauge\ndovecot_z 2\n") == [
        Family("dovecot_y", "gauge", "Dovecot's dovecot_y", ())]


@pytest.mark.parametrize("text", ["# TYPE dovecot_x gauge\ndovecot_x{a=1} 1\n",
                                  "# TYPE dovecot_x gauge\ndovecot_x one\n",
                                  "# TYPE dovecot_x gauge\n{} 1\n"])
def test_a_page_that_is_not_openmetrics_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        metrics.from_openmetrics(text)


# --- our own sources ------------------------------------------------------------------------

def test_postqueue_lines_are_counted_per_queue() -> None:
    lines = [{"queue_name": "deferred", "queue_id": "A"}, {"queue_name": "deferred"},
             {"queue_name": "active"}, {"queue_name": "hold"}]
    counts = metrics.count_queues("\n".join(json.dumps(line) for line in lines) + "\n")
    assert counts == {"maildrop": 0, "incoming": 0, "active": 1, "deferred": 2, "hold": 1}
    assert metrics.count_queues("") == dict.fromkeys(counts, 0)
    with pytest.raises(ValueError):
        metrics.count_queues('{"queue_id": "A"}\n')
    with pytest.raises(ValueError):
        metrics.count_queues("mail system is down\n")


@pytest.mark.parametrize(("line", "result"), [
    (b"Dec  5 10:00:00 mail postfix/smtp[812]: 4F2A1: to=<a@example.net>, relay=mx.example.net"
     b"[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
     "delivered"),
    (b"Dec  5 10:00:00 mail postfix/lmtp[90]: 4F2A1: to=<u@example.com>, relay=mail.example.com"
     b"[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 "
     b"<u@example.com> Saved)", "delivered"),
    (b"Dec  5 10:00:00 mail postfix/smtp[812]: 4F2A1: to=<a@example.net>, relay=none, delay=30, "
     b"delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx.example.net: timed out)",
     "deferred"),
    (b"Dec  5 10:00:00 mail postfix/smtp[812]: 4F2A1: to=<a@example.net>, relay=mx.example.net"
     b"[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.1.1, status=bounced (host said: 550 "
     b"5.1.1 no such user)", "bounced"),
    (b"Dec  5 10:00:00 mail postfix/qmgr[61]: 4F2A1: from=<a@example.com>, status=expired, "
     b"returned to sender", None),  # the recipients' bounce lines count, not this one
    (b"Dec  5 10:00:00 mail postfix/error[70]: 4F2A1: to=<a@example.net>, relay=none, delay=5e5,"
     b" delays=5e5/0/0/0, dsn=4.4.1, status=expired (delivery temporarily suspended)", "bounced"),
    (b"Dec  5 10:00:00 mail postfix/smtpd[33]: NOQUEUE: reject: RCPT from unknown[192.0.2.9]: "
     b"554 5.7.1 <x@example.com>: Relay access denied; from=<s@x.test> to=<x@example.com>",
     "refused"),
    (b"Dec  5 10:00:00 mail postfix/postscreen[20]: NOQUEUE: reject: RCPT from [192.0.2.9]:5000:"
     b" 550 5.7.1 Service unavailable; client [192.0.2.9] blocked using zen.spamhaus.org",
     "refused"),
    (b"Dec  5 10:00:00 mail postfix/cleanup[40]: 4F2A1: milter-reject: END-OF-MESSAGE from x"
     b"[192.0.2.9]: 5.7.1 rejected by DMARC policy", "refused"),
    (b"Dec  5 10:00:00 mail postfix/submission/smtpd[33]: NOQUEUE: reject: RCPT from x[192.0.2."
     b"9]: 451 4.7.1 sending limit reached", "refused"),
    # A header's text in a WARN line is the message's own: it never counts.
    (b"Dec  5 10:00:00 mail postfix/cleanup[40]: 4F2A1: warning: header Subject: dsn=2.0.0, "
     b"status=sent  from x", None),
    (b"opendkim[50]: 4F2A1: reject: dsn=2.0.0, status=sent ", None),  # not Postfix's
    (b"Dec  5 10:00:00 mail postfix/qmgr[61]: 4F2A1: removed", None),
])
def test_postfix_log_lines_are_told_apart(line: bytes, result: str | None) -> None:
    assert maillog.outcome(line) == result


def test_the_tally_counts_lines_split_anywhere_and_saves_them(tmp_path: Path) -> None:
    counts_file = tmp_path / "counts.json"
    tally = maillog.Tally(counts_file, since=1000.0)
    tally.save(0.0)
    assert maillog.read_counts(counts_file) == (1000.0, dict.fromkeys(maillog.RESULTS, 0))
    sent = b"x postfix/smtp[1]: A: to=<a@b>, relay=r, dsn=2.0.0, status=sent (ok)\n"
    stream = sent * 3 + b"x postfix/smtpd[2]: NOQUEUE: reject: RCPT from x\n"
    for start in range(0, len(stream), 7):  # as the pipe might hand it over
        tally.feed(stream[start:start + 7])
    tally.save(0.5)  # within a second of the last write: not yet
    assert maillog.read_counts(counts_file) == (1000.0, dict.fromkeys(maillog.RESULTS, 0))
    tally.save(1.5)
    assert maillog.read_counts(counts_file) == (1000.0, {"delivered": 3, "deferred": 0,
                                                         "bounced": 0, "refused": 1})
    counts_file.write_text("{}")
    assert maillog.read_counts(counts_file) is None


def test_the_supervisor_passes_the_log_through_unchanged_and_counts_it(tmp_path: Path) -> None:
    counts_file = tmp_path / "counts.json"
    log = (b"Dec  5 mail postfix/smtp[1]: A: to=<a@b>, relay=r, dsn=5.0.0, status=bounced (no)\n"
           b"Dec  5 mail postfix/master[1]: daemon started\n" * 2000)
    source_read, source_write = os.pipe()
    out_read, out_write = os.pipe()
    writer = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.buffer.write("
                               "sys.stdin.buffer.read())"], stdin=subprocess.PIPE,
                              stdout=source_write)
    os.close(source_write)
    with os.fdopen(out_read, "rb") as copied_out:
        copied: list[bytes] = []
        reader = threading.Thread(target=lambda: copied.append(copied_out.read()))
        reader.start()
        assert writer.stdin is not None
        writer.stdin.write(log)
        writer.stdin.close()
        supervisor.pass_through(source_read, maillog.Tally(counts_file, since=5.0), out_write)
        os.close(out_write)
        reader.join(timeout=30)
    writer.wait(timeout=30)
    os.close(source_read)
    assert copied == [log]
    assert maillog.read_counts(counts_file) == (5.0, {"delivered": 0, "deferred": 0,
                                                      "bounced": 2000, "refused": 0})


def test_certificates_say_when_they_expire() -> None:
    families = metrics.certificate_families([("live", "acme", NOW + timedelta(days=60))], NOW)
    page = metrics.render(families)
    assert (f'mailboot_certificate_expiry_timestamp_seconds{{slot="live",source="acme"}} '
            f'{int((NOW + timedelta(days=60)).timestamp())}\n') in page
    assert 'mailboot_certificate_expires_in_seconds{slot="live",source="acme"} 5184000\n' in page


def made_certificate(not_after: datetime) -> bytes:
    """A PEM certificate (with an intermediate after it, as a chain) from cryptography."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.com")])
    built = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(NOW).not_valid_after(not_after).sign(key, hashes.SHA256()))
    return built.public_bytes(serialization.Encoding.PEM) * 2


@pytest.mark.parametrize("expiry", [NOW + timedelta(days=90),  # UTCTime (RFC 5280 §4.1.2.5.1)
                                    datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
                                    datetime(2050, 1, 1, tzinfo=UTC),  # GeneralizedTime
                                    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)])
def test_the_expiry_is_read_from_the_certificate_itself(expiry: datetime) -> None:
    assert metrics.not_after(made_certificate(expiry)) == expiry


def test_what_is_no_certificate_is_refused() -> None:
    pem = made_certificate(NOW + timedelta(days=90))
    body = pem.split(b"\n")
    for broken in (b"", b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                   b"\n".join([body[0], body[1][:8], *body[-3:]]),  # truncated DER
                   b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"):
        with pytest.raises(ValueError):
            metrics.not_after(broken)


def test_the_childs_certificate_sources_are_the_tls_packages() -> None:
    assert metrics_child.CERTIFICATE_SOURCES == certificates.SOURCES
    assert metrics_child.CHAIN_FILE == certificates.CHAIN_FILE


WORKER_STATE = {
    "version": 1, "ran": 1764936000.5, "next_run": 1764939600.0, "watch": {},
    "tasks": {"dns": {"due": None, "watched": {}, "state": {"tlsa_told": None, "watcher": {
        "ready": False, "failing": None,
        "previous": [["example.com", "mx", "10 mail.example.com.", "ok"],
                     ["_25._tcp.mail.example.com", "tlsa", "3 1 1 aa", "ok"],
                     ["_25._tcp.mail.example.com", "tlsa", "3 1 1 bb", "missing"],
                     ["mail.example.com", "ptr", None, "wrong"]]}}}},
}


def test_the_worker_state_gives_its_runs_and_each_records_status() -> None:
    page = metrics.render(metrics.worker_families(WORKER_STATE))
    assert "mailboot_worker_last_run_timestamp_seconds 1764936000.5\n" in page
    assert "mailboot_worker_next_run_timestamp_seconds 1764939600\n" in page
    assert "mailboot_dns_records_ready 0\n" in page
    tlsa = 'name="_25._tcp.mail.example.com",kind="tlsa"'
    assert f'mailboot_dns_record_status{{{tlsa},value="3 1 1 bb",status="missing"}} 1\n' in page
    assert f'mailboot_dns_record_status{{{tlsa},value="3 1 1 bb",status="ok"}} 0\n' in page
    assert f'mailboot_dns_record_status{{{tlsa},value="3 1 1 aa",status="ok"}} 1\n' in page
    ptr = 'name="mail.example.com",kind="ptr",value=""'
    assert f'mailboot_dns_record_status{{{ptr},status="wrong"}} 1\n' in page
    assert page.count("mailboot_dns_record_status{") == 4 * 4
    without_dns = {**WORKER_STATE, "tasks": {}}  # DNS_CHECK=off
    assert "mailboot_dns" not in metrics.render(metrics.worker_families(without_dns))
    with pytest.raises(ValueError):
        metrics.worker_families({"tasks": {}})
    with pytest.raises(ValueError):
        metrics.record_families({"previous": [["a", "mx"]]})


def test_the_blocklist_state_gives_each_verdict() -> None:
    state = {"checked": "2026-12-05T08:15:30Z", "ipv6": None, "findings": [
        {"blocklist": "zen.spamhaus.org", "subject": "203.0.113.25", "verdict": "listed"},
        {"blocklist": "dbl.spamhaus.org", "subject": "example.com", "verdict": "can't tell"}]}
    page = metrics.render(metrics.blocklist_families(state))
    zen = 'list="zen.spamhaus.org",subject="203.0.113.25"'
    assert f'mailboot_blocklist_verdict{{{zen},verdict="listed"}} 1\n' in page
    assert f'mailboot_blocklist_verdict{{{zen},verdict="clean"}} 0\n' in page
    dbl = 'list="dbl.spamhaus.org",subject="example.com"'
    assert f'mailboot_blocklist_verdict{{{dbl},verdict="unknown"}} 1\n' in page
    assert "mailboot_blocklist_checked_timestamp_seconds 1796458530\n" in page
    with pytest.raises(ValueError):
        metrics.blocklist_families({"checked": "x"})


# --- the whole page, and promtool ----------------------------------------------------------

@pytest.fixture
def filled(make_settings: Callable[..., Settings], data_dir: Path, tmp_path: Path) -> Paths:
    """Every source's file in place: a certificate, the worker's and blocklists' states, the
    Postfix counts."""
    settings = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4="203.0.113.25")
    paths = Paths(data_dir, run_dir=tmp_path / "run")
    paths.run_dir.mkdir()
    certificates.ensure_certificate(paths, names.tls_names(settings), NOW)
    paths.worker_state.write_text(json.dumps(WORKER_STATE))
    paths.reputation_state.write_text(json.dumps({"checked": "2026-12-05T08:15:30Z",
                                                  "findings": []}))
    maillog.Tally(paths.postfix_log_counts, since=1764930000.0).save(0.0)
    return paths


def test_the_page_has_every_source_and_promtool_accepts_it(filled: Paths, tmp_path: Path) -> None:
    queue = json.dumps({"queue_name": "deferred"}) + "\n"
    page = metrics_child.page(filled, NOW, dovecot=lambda: DOVECOT_PAGE, postqueue=lambda: queue)
    for family_name in ("dovecot_auth_success_total", "mailboot_postfix_queue_messages",
                        "mailboot_postfix_recipients_total",
                        "mailboot_certificate_expiry_timestamp_seconds",
                        "mailboot_worker_last_run_timestamp_seconds",
                        "mailboot_dns_record_status", "mailboot_blocklist_verdict"):
        assert f"# TYPE {family_name} " in page
    assert 'mailboot_postfix_queue_messages{queue="deferred"} 1\n' in page
    assert 'mailboot_source_up{source="dovecot"} 1\n' in page
    check_with_promtool(page)


def test_a_source_that_fails_is_left_out_and_said(filled: Paths) -> None:
    def down() -> str:
        raise CommandError("`postqueue -j` failed: mail system is down")

    filled.worker_state.write_text("{")
    page = metrics_child.page(filled, NOW, dovecot=lambda: "garbage\n", postqueue=down)
    assert 'mailboot_source_up{source="postfix_queue"} 0\n' in page
    assert 'mailboot_source_up{source="dovecot"} 0\n' in page
    assert 'mailboot_source_up{source="worker"} 0\n' in page
    assert 'mailboot_source_up{source="certificates"} 1\n' in page
    assert "mailboot_postfix_queue_messages" not in page and "dovecot_" not in page
    check_with_promtool(page)


def check_with_promtool(page: str) -> None:
    """`promtool check metrics`: the text parser and its lint (HELP, _total, units...)."""
    result = subprocess.run([require_tool("promtool"), "check", "metrics"], input=page,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- on demand ------------------------------------------------------------------------------

@pytest.fixture
def activation(make_settings: Callable[..., Settings], data_dir: Path) -> Iterator[
        tuple[MetricsActivation, int]]:
    environment = {"DATA_DIR": str(data_dir), "MAIL_DOMAINS": "example.com",
                   "PUBLIC_IPV4": "203.0.113.25", "PATH": os.environ.get("PATH", "")}
    make_settings(**environment)
    sock = listening_socket("127.0.0.1", 0)
    said: list[str] = []
    served = MetricsActivation(sock, environment, said.append, idle=1.0)
    yield served, sock.getsockname()[1]
    served.stop()
    sock.close()
    assert said == []


def wait_for_a_client(served: MetricsActivation, timeout: float = 10.0) -> None:
    """The supervisor's loop, reduced to the socket."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select(served.watched(), [], [], 0.1)
        if ready:
            served.start()
            return
    raise AssertionError("no connection seen")


def test_a_scrape_starts_the_child_which_answers_and_ends_when_idle(
        activation: tuple[MetricsActivation, int]) -> None:
    served, port = activation
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    client.request("GET", "/metrics")
    wait_for_a_client(served)
    answer = client.getresponse()
    body = answer.read().decode()
    client.close()
    assert answer.status == 200
    assert answer.getheader("Content-Type") == metrics.CONTENT_TYPE
    assert 'mailboot_source_up{source="certificates"} 1\n' in body  # none yet: nothing to say
    check_with_promtool(body)
    assert served.process is not None
    served.process.wait(timeout=15)  # idle for a second: it ends
    assert served.watched() != []


def test_the_supervisor_is_told_the_port_and_the_counts_file_only_with_metrics_on(
        make_settings: Callable[..., Settings], data_dir: Path) -> None:
    from mailboot.boot.run import metrics_arguments

    paths = Paths(data_dir)
    off = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4="203.0.113.25")
    assert metrics_arguments(off, paths) == []
    on = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4="203.0.113.25",
                       METRICS_PORT="9166")
    assert metrics_arguments(on, paths) == [
        "--metrics-port=9166", f"--postfix-log-counts={paths.postfix_log_counts}"]


def test_the_supervisor_counts_postfixs_output_when_told_and_passes_it_on(
        tmp_path: Path) -> None:
    """The supervisor as the boot starts it with metrics on: a stand-in for Postfix writes its
    log to its standard output, then exits (so the supervisor ends too)."""
    counts_file = tmp_path / "counts.json"
    lines = ("x postfix/lmtp[9]: A: to=<a@example.com>, relay=r, dsn=2.0.0, status=sent (ok)\n"
             "x postfix/smtp[9]: B: to=<b@example.net>, relay=r, dsn=4.4.1, status=deferred (t)\n"
             "x postfix/master[1]: daemon started\n")
    stand_in = [sys.executable, "-c", f"import sys, time; sys.stdout.write({lines!r}); "
                "sys.stdout.flush(); time.sleep(0.5)"]
    programs = supervisor.programs_json([supervisor.Program("postfix", stand_in)])
    result = subprocess.run(
        [sys.executable, "-P", "-m", "mailboot.daemons.supervisor",
         f"--syslog={tmp_path / 'log.sock'}", f"--daemons={programs}",
         f"--postfix-log-counts={counts_file}"],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == supervisor.EXIT_DAEMON_DIED, result.stderr
    assert result.stdout == lines
    counted = maillog.read_counts(counts_file)
    assert counted is not None
    assert counted[1] == {"delivered": 1, "deferred": 1, "bounced": 0, "refused": 0}
