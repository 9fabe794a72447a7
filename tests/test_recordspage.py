"""The records page: its secret link, its rate limit, what it shows from the worker's snapshot
(real findings of the DNS doctor against a DNS written as data), its Content-Security-Policy,
and its place on port 443 (served for real on loopback)."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
import socket
import ssl
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import cast

import pytest

from mailboot.base.paths import Paths
from mailboot.cli.main import main
from mailboot.diagnose.queue import Deferred, Queue
from mailboot.dkim.keys import DomainKeys
from mailboot.dns.answer import Answer
from mailboot.records.build import Kind, Record, all_records, build_record_groups
from mailboot.records.watch import DnsWatcher
from mailboot.records.zonefile import form_value
from mailboot.settings.table import Settings
from mailboot.tls import certificates
from mailboot.tls.dane import TlsaSource
from mailboot.web import port443, recordspage
from mailboot.web.clientconfig import MailService
from mailboot.web.recordspage import PageSource, RateLimiter, Snapshot
from mailboot.web.server import Request, Server, render
from mailboot.worker import tasks
from tests.conftest import NOW

LOOPBACK = "127.0.0.1"
HOST_IP = "203.0.113.25"
HOSTNAME = "mail.example.com"


# --- the secret link ------------------------------------------------------------------------------


def test_the_token_is_made_once_kept_private_and_replaced_on_demand(tmp_path: Path) -> None:
    path = tmp_path / "page-token"
    assert recordspage.read_token(path) is None
    token = recordspage.ensure_token(path)
    assert len(token) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", token)  # 256 bits, URL-safe
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert recordspage.ensure_token(path) == token  # kept across starts
    new = recordspage.new_token(path)
    assert new != token and recordspage.ensure_token(path) == new
    assert recordspage.page_link(HOSTNAME, new) == f"https://{HOSTNAME}/{new}"


# --- the rate limit -------------------------------------------------------------------------------


def test_a_client_gets_a_burst_then_one_request_per_refill() -> None:
    limiter = RateLimiter(burst=3, refill=2.0)
    assert [limiter.allow("192.0.2.1", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("192.0.2.2", 0.0)  # another client has its own bucket
    assert not limiter.allow("192.0.2.1", 1.9)
    assert limiter.allow("192.0.2.1", 2.0) and not limiter.allow("192.0.2.1", 2.1)
    assert [limiter.allow("192.0.2.1", 100.0) for _ in range(4)] == [True, True, True, False]


def test_an_ipv6_64_is_one_client_and_the_clients_remembered_are_bounded() -> None:
    limiter = RateLimiter(burst=1, refill=60.0, max_clients=2)
    assert limiter.allow("2001:db8:1:2::1", 0.0)
    assert not limiter.allow("2001:db8:1:2::ffff", 0.0)  # the same /64
    assert limiter.allow("2001:db8:1:3::1", 0.0)
    assert limiter.allow("192.0.2.9", 0.0)  # the third: the first is forgotten
    assert limiter.allow("2001:db8:1:2::1", 0.0)


# --- the snapshot, from real findings -------------------------------------------------------------


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4=HOST_IP, MAIL_HOSTNAME=HOSTNAME)


@pytest.fixture
def records(settings: Settings,
            make_keys: Callable[[Settings], tuple[DomainKeys, ...]]) -> list[Record]:
    return all_records(build_record_groups(settings, make_keys(settings)))


@pytest.fixture
def paths(data_dir: Path, tmp_path: Path) -> Paths:
    return Paths(data_dir, config_root=tmp_path / "root", run_dir=tmp_path / "run")


def one(records: list[Record], kind: Kind) -> Record:
    return next(r for r in records if r.kind is kind)


def served(records: list[Record], left_out: Kind, changed: Kind) -> Callable[[str, str], Answer]:
    """A DNS holding what we print, but one record left out and one with another value."""
    zone: dict[tuple[str, str], list[str]] = {}
    for record in records:
        if record.value is not None and record.kind is not left_out:
            value = "10 other.example.net." if record.kind is changed else record.value
            zone.setdefault((record.name, record.rtype), []).append(value)
    return lambda name, rtype: Answer(tuple(zone.get((name.rstrip("."), rtype), ())))


def checked_task(records: list[Record], lookup: Callable[[str, str], Answer]) -> tasks.DnsTask:
    """The worker's DNS task after one look at `lookup`'s DNS."""
    watcher = DnsWatcher(lambda: records, lookup, [HOST_IP], ["example.com"],
                         timedelta(minutes=1))
    watcher.step(NOW)
    return tasks.DnsTask(watcher, cast(TlsaSource, None))  # the records are given: no TLSA


QUEUE = Queue(1, 2, 0, Deferred("4Xyz", NOW - timedelta(hours=2), "bob@example.net",
                                "connect to mx.example.net: Connection timed out"))


def snapshot(records: list[Record], **served_kinds: Kind) -> Snapshot:
    lookup = served(records, served_kinds.get("left_out", Kind.DMARC),
                    served_kinds.get("changed", Kind.MX))
    return tasks.page_snapshot(Snapshot(None, None), checked_task(records, lookup),
                               lambda: QUEUE, NOW)


def test_the_snapshot_holds_each_record_as_web_forms_take_it_and_reads_back(
        records: list[Record], paths: Paths) -> None:
    taken = snapshot(records)
    assert taken.dns is not None and taken.queue is not None
    assert [r.fqdn for r in taken.dns.records] == [r.fqdn for r in records]
    by_kind = {(r.rtype, r.name): r for r in taken.dns.records}
    mx = by_kind[("MX", "@")]
    assert mx.status == "wrong" and mx.found == ("10 other.example.net.",)
    assert mx.value == form_value(one(records, Kind.MX)) == "10 mail.example.com"
    assert by_kind[("TXT", "_dmarc")].status == "missing"
    assert taken.dns.ready is False
    assert taken.queue.deferred == 2 and "bob@example.net" in (taken.queue.oldest_deferred or "")
    path = paths.page_state
    recordspage.write_state(path, taken)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert recordspage.read_state(path) == replace(taken, dns=replace(
        taken.dns, checked=taken.dns.checked.replace(microsecond=0)), queue=replace(
        taken.queue, checked=taken.queue.checked.replace(microsecond=0)))


def test_when_no_lookup_is_answered_the_last_findings_stay_marked_so(
        records: list[Record]) -> None:
    before = snapshot(records)
    down = checked_task(records, lambda name, rtype: Answer(error="timed out"))
    after = tasks.page_snapshot(before, down, lambda: QUEUE, NOW + timedelta(minutes=5))
    assert after.dns is not None and before.dns is not None
    assert after.dns.records == before.dns.records and after.dns.failing == "timed out"
    assert after.dns.checked == before.dns.checked
    # A run that did not check the DNS keeps what was found; the queue is read each run.
    later = tasks.page_snapshot(after, None, lambda: Queue(0, 0, 0, None), NOW)
    assert later.dns == after.dns and later.queue is not None and later.queue.deferred == 0


def test_a_queue_that_cant_be_read_says_why(records: list[Record]) -> None:
    def broken() -> Queue:
        raise OSError("postqueue: fatal: Queue report unavailable - mail system is down")

    state = tasks.queue_state(broken, NOW)
    assert state.error is not None and "mail system is down" in state.error


def test_an_unreadable_snapshot_is_nothing_looked_at_yet(paths: Paths) -> None:
    path = paths.page_state
    assert recordspage.read_state(path) == Snapshot(None, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"version": 1, "dns": {"checked": "yesterday"}, "queue": []}')
    assert recordspage.read_state(path) == Snapshot(None, None)


# --- the page -------------------------------------------------------------------------------------


class Parsed(HTMLParser):
    """The page's elements as a browser sees them: attributes, texts, script and style."""

    def __init__(self, page: bytes) -> None:
        super().__init__(convert_charrefs=True)
        self.attributes: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, str] = {}  # id -> text
        self.script = self.style = ""
        self._open: list[str] = []
        self._current = ""
        self.feed(page.decode())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes.append((tag, dict(attrs)))
        self._open.append(dict(attrs).get("id") or tag)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        where = self._open[-1] if self._open else ""
        if where == "script":
            self.script += data
        elif where == "style":
            self.style += data
        else:
            self.texts[where] = self.texts.get(where, "") + data


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def page(records: list[Record], **more: object) -> bytes:
    listing = recordspage.ListingView("Spamhaus ZEN", HOST_IP, "listed", "SBL: spam source",
                                      "https://check.spamhaus.org/results?query=203.0.113.25")
    arguments: dict[str, object] = {
        "certificate": recordspage.CertificateView("self-signed", True, "CN=" + HOSTNAME,
                                                   (HOSTNAME,), NOW + timedelta(days=89)),
        "blocklists": recordspage.BlocklistView("2026-11-25T11:00:00Z", (listing,)),
        "reports": ()} | more
    return recordspage.render(HOSTNAME, NOW, snapshot(records), **arguments)  # type: ignore[arg-type]


def test_every_record_is_shown_with_its_state_and_its_exact_value(records: list[Record]) -> None:
    parsed = Parsed(page(records))
    cards = [a for tag, a in parsed.attributes if tag == "div" and "data-status" in a]
    assert [(c["data-name"], c["data-type"]) for c in cards] == [
        (r.fqdn, r.rtype) for r in records]
    states = {(c["data-type"], c["data-name"]): c["data-status"] for c in cards}
    assert states[("MX", "example.com.")] == "wrong"
    assert states[("TXT", "_dmarc.example.com.")] == "missing"
    assert states[("A", HOSTNAME + ".")] == "ok"
    # Each value is in its own element, exactly as web forms take it, with its copy button.
    buttons = [a["data-copy"] for tag, a in parsed.attributes if tag == "button"]
    assert [parsed.texts[b] for b in buttons if b] == [form_value(r) for r in records]
    text = " ".join(parsed.texts.values())
    assert "Served now: 10 other.example.net." in text and "NOT READY" in text
    assert "1 being delivered, 2 deferred, 0 held" in text
    assert "listed: SBL: spam source" in text and "self-signed" in text
    assert "At 2026-11-25 11:00:00 UTC: listed on 1." in text
    assert "No report summaries yet." in text


def test_a_value_is_escaped_never_markup(records: list[Record]) -> None:
    dmarc = one(records, Kind.DMARC)
    hostile = [replace(dmarc, value='v=DMARC1; p=reject; x=<script>alert(1)</script>"\'&')
               if r is dmarc else r for r in records]
    body = page(hostile)
    assert b"<script>alert" not in body
    parsed = Parsed(body)
    assert 'v=DMARC1; p=reject; x=<script>alert(1)</script>"\'&' in parsed.texts.values()


def test_the_report_summaries_have_their_own_section(records: list[Record]) -> None:
    reports = (recordspage.ReportSummary("example.com", "2026-11-24", "google.com: 12 messages, "
                                         "all aligned"),
               recordspage.ReportSummary("example.com", "2026-11-24", "198.51.100.9 (no PTR): "
                                         "3 messages failing DMARC as us", alarming=True))
    body = page(records, reports=reports).decode()
    section = body[body.index("<section class=reports"):body.index("</section>")]
    assert "google.com: 12 messages" in section and "class=alarm" in section


def test_the_policy_allows_only_the_pages_own_script_and_style(records: list[Record]) -> None:
    body = page(records)
    parsed = Parsed(body)
    policy = dict(recordspage.HEADERS)["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == sha256(parsed.script)
    assert directives["style-src"] == sha256(parsed.style)
    assert directives["frame-ancestors"] == "'none'" and directives["form-action"] == "'none'"
    # No inline handler, no style attribute, nothing fetched from anywhere.
    for _tag, attributes in parsed.attributes:
        assert not [name for name in attributes if name.startswith("on") or name == "style"]
        assert "src" not in attributes and attributes.get("href", "data:,") == "data:,"
    assert dict(recordspage.HEADERS)["Referrer-Policy"] == "no-referrer"


# --- the answer -----------------------------------------------------------------------------------


@pytest.fixture
def source(paths: Paths, records: list[Record]) -> PageSource:
    recordspage.write_state(paths.page_state, snapshot(records))
    recordspage.ensure_token(paths.page_token)
    return PageSource(HOSTNAME, paths)


def ask(source: PageSource, target: str, limiter: RateLimiter | None = None,
        client: str = "192.0.2.7", method: str = "GET") -> bytes:
    """The response's bytes, as the server sends them (Date aside)."""
    request = Request(method, target, HOSTNAME, client=client)
    response = recordspage.answer(request, source, limiter or RateLimiter(), lambda: 0.0,
                                  lambda: NOW)
    return re.sub(rb"Date: [^\r]*", b"", render(response, True))


def test_the_right_token_gets_the_page_and_a_wrong_one_what_any_unknown_path_gets(
        source: PageSource) -> None:
    token = recordspage.read_token(source.paths.page_token) or ""
    answered = ask(source, f"/{token}")
    assert answered.startswith(b"HTTP/1.1 200 ") and b"<!DOCTYPE html>" in answered
    assert b"Content-Security-Policy: default-src 'none'" in answered
    unknown = re.sub(rb"Date: [^\r]*", b"", render(port443.NOT_FOUND, True))
    for wrong in (f"/{token}x", f"/{token[:-1]}", "/", f"/{token}/", f"/x{token}",
                  f"/{token.upper()}"):
        assert ask(source, wrong) == unknown, wrong
    assert ask(source, f"/{token}", method="POST").startswith(b"HTTP/1.1 405 ")


def test_no_token_yet_means_no_page(paths: Paths) -> None:
    source = PageSource(HOSTNAME, paths)
    assert ask(source, "/").startswith(b"HTTP/1.1 404 ")


def test_guesses_and_reloads_alike_count_against_the_rate(source: PageSource) -> None:
    token = recordspage.read_token(source.paths.page_token)
    limiter = RateLimiter(burst=3)
    assert [ask(source, f"/guess{n}", limiter)[:12] for n in range(3)] == [b"HTTP/1.1 404"] * 3
    assert ask(source, f"/{token}", limiter).startswith(b"HTTP/1.1 429 ")
    assert ask(source, f"/{token}", limiter, client="192.0.2.8").startswith(b"HTTP/1.1 200 ")


def test_the_page_holds_no_secret(source: PageSource) -> None:
    paths = source.paths
    live = certificates.write_self_signed(paths.tls_dir, [HOSTNAME], NOW)
    certificates.switch_live(paths, live)
    token = recordspage.read_token(paths.page_token) or ""
    body = ask(source, f"/{token}")
    assert b"PRIVATE KEY" not in body and token.encode() not in body.split(b"\r\n\r\n", 1)[1]
    for key in paths.dkim_dir.rglob("*.key"):
        secret = b"".join(key.read_bytes().splitlines()[1:-1])
        assert secret[:40] not in body
    assert html.escape("valid until") in body.decode()


# --- on port 443, served for real -----------------------------------------------------------------


def fetch(port: int, sni: str, host: str, target: str) -> tuple[int, dict[str, str]]:
    """The status and header fields of a GET over TLS (the certificate is not verified)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((LOOPBACK, port), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as connection:
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    lines = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return int(lines[0].split(" ")[1]), dict(line.split(": ", 1) for line in lines[1:])


@pytest.fixture
def served443(source: PageSource) -> Iterator[Server]:
    paths = source.paths
    certificates.switch_live(paths, certificates.write_self_signed(
        paths.tls_dir, [HOSTNAME, "autoconfig.example.com"], NOW))
    service = MailService(HOSTNAME, ("example.com",))
    server = port443.start(0, paths, {}, host=LOOPBACK, service=service,
                           page=recordspage.make_answer(source))
    yield server
    server.shutdown()


def test_port_443_serves_the_page_only_on_mail_hostname_and_counts_by_address(
        served443: Server, source: PageSource) -> None:
    token = recordspage.read_token(source.paths.page_token)
    status, headers = fetch(served443.port, HOSTNAME, HOSTNAME, f"/{token}")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert fetch(served443.port, "autoconfig.example.com", "autoconfig.example.com",
                 f"/{token}")[0] == 404
    # The mail clients' settings on MAIL_HOSTNAME are unchanged by the page.
    assert fetch(served443.port, HOSTNAME, HOSTNAME,
                 "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a@example.com"
                 )[0] == 200
    statuses = [fetch(served443.port, HOSTNAME, HOSTNAME, f"/{token}")[0]
                for _ in range(recordspage.BURST + 5)]
    assert statuses[0] == 200 and 429 in statuses  # the client's address is counted


# --- `mailboot status --link` ---------------------------------------------------------------------


def test_status_link_prints_the_kept_link_and_new_link_replaces_it(tmp_path: Path) -> None:
    environ = {"MAIL_DOMAINS": "example.com", "MAIL_HOSTNAME": HOSTNAME,
               "DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "data").mkdir()

    def status(*flags: str) -> str:
        out = io.StringIO()
        assert main(["status", *flags], environ=environ, stdout=out) == 0
        return out.getvalue()

    link = status("--link")
    assert re.fullmatch(rf"https://{HOSTNAME}/[A-Za-z0-9_-]{{43}}\n", link)
    assert status("--link") == link
    new = status("--new-link")
    assert new != link and status("--link") == new
    token = recordspage.read_token(Paths(tmp_path / "data").page_token)
    assert new == f"https://{HOSTNAME}/{token}\n"


def test_before_the_first_look_the_page_says_so() -> None:
    body = recordspage.render(HOSTNAME, NOW, Snapshot(None, None), None, None).decode()
    assert "have not been checked yet" in body and "No certificate is served" in body
    assert "Not looked at yet" in body and "Not checked yet" in body


def test_the_reports_read_are_summed_up_and_a_forger_called_out(tmp_path: Path) -> None:
    """The reports' part of the page: one line per domain and day, and the sender that failed
    DMARC as us from an address that isn't ours, marked."""
    from datetime import date

    from mailboot.inbound import reports
    from mailboot.settings.table import load_settings
    from mailboot.web import recordspage
    from tests import report_samples as samples

    ours = "203.0.113.25"
    settings = load_settings({"MAIL_DOMAINS": "example.com", "PUBLIC_IPV4": ours,
                              "DATA_DIR": str(tmp_path)})
    paths = Paths(settings.data_dir)
    sample = samples.good_samples("example.com", ours, "dmarc-reports@example.com")
    outcome = reports.deliver(sample["google-dmarc"], reports.reports_directory(paths.policy_state),
                              {"example.com"}, lambda address: None)
    assert outcome is not None
    lines = recordspage.report_summaries(settings, paths, date(2026, 12, 5))
    assert [(line.domain, line.day, line.alarming) for line in lines] == [
        ("example.com", "2026-12-04", False), ("example.com", "2026-12-04", True)]
    assert lines[0].text.startswith("DMARC: 1 reports, ")
    assert lines[1].text.startswith(f"NOT OURS: {samples.FORGER} (no PTR) sent ")
    assert recordspage.report_summaries(settings, paths, date(2026, 12, 20)) == []
