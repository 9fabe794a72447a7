"""The records page: `https://MAIL_HOSTNAME/<token>`, read-only, for the owner's eyes only.

What it shows, per zone: every record to add, in the one-value-per-line form web forms take (the
records block's table), each with a copy button and its state at the last look of the worker's
DNS check (ok, missing, wrong with what is served, unknown); then READY, the certificate served,
the queue, our blocklist state, and the DMARC/TLS report summaries (a section of its own, filled
from `reports`).

The HTTP child answers it (`child`), so it must stay light: it asks no DNS and runs no program.
It reads files: the worker's snapshot (`write_state`, in the run directory: the DNS findings and
the queue at the worker's last run), the blocklist check's state (`network.reputation`), and the
live certificate. Rendered with the standard library (`html.escape`), no template engine.

The link is the secret: a random token kept in DATA_DIR (`ensure_token`, `new_token`), compared
in constant time (`hmac.compare_digest`); any other path gets the same 404 as every unknown path
of port 443, and every request that reaches the page's router (a right token or not) counts
against a per-client rate limit (`RateLimiter`), so a token can't be guessed quickly. The page
holds no key and no password. Its one script (the copy buttons) and its one style sheet are
inline and allowed by their hashes in a Content-Security-Policy that allows nothing else: no
external asset, no inline handler, no form, no frame, and no Referer that would carry the token
to a linked site. Without JavaScript everything is there but the copy buttons (the values are
selectable, one tap selects a whole value).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Final, TypeVar

from mailboot.base.files import write_atomically
from mailboot.base.formats import human_time, machine_time
from mailboot.base.paths import Paths
from mailboot.network import reputation
from mailboot.network.found import effective_settings
from mailboot.settings.table import Settings
from mailboot.tls import certificates
from mailboot.web.port443 import NOT_FOUND
from mailboot.web.server import Request, Response, source_of

# 32 bytes from the OS's CSPRNG (RFC 4086 §7.1.2): 256 bits, URL-safe base64 (RFC 4648 §5).
TOKEN_BYTES = 32
# Requests per client (an IPv4 address or an IPv6 /64) that reach the page's router: a burst of
# BURST, then one every REFILL seconds. Enough for a person reloading; far too few to guess.
BURST = 20
REFILL = 3.0
MAX_CLIENTS = 4096  # clients remembered at once; the one seen longest ago is forgotten first
STATE_VERSION = 1

_T = TypeVar("_T")

TOO_MANY = Response(HTTPStatus.TOO_MANY_REQUESTS, b"too many requests; try again in a minute\n",
                    (("Content-Type", "text/plain"), ("Retry-After", "60")))  # RFC 6585 §4


# --- the secret link ------------------------------------------------------------------------------


def read_token(path: Path) -> str | None:
    """The page's token, or None when there is none (yet) or it can't be read."""
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def new_token(path: Path) -> str:
    """Make a new token and keep it (0600): the old link stops working at once."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    write_atomically(path, f"{token}\n".encode(), mode=0o600)
    return token


def ensure_token(path: Path) -> str:
    """The kept token, made on the first call. Raises OSError when it can't be written."""
    return read_token(path) or new_token(path)


def page_link(hostname: str, token: str) -> str:
    return f"https://{hostname}/{token}"


class RateLimiter:
    """A token bucket per client source (`server.source_of`): real state, kept by the one
    event-loop thread of the port-443 server, so it needs no lock."""

    def __init__(self, burst: int = BURST, refill: float = REFILL,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.burst, self.refill, self.max_clients = burst, refill, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, client: str, now: float) -> bool:
        """True when `client` may have one more request at `now` (monotonic seconds)."""
        source = source_of(client)
        tokens, at = self._buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.refill)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed


# --- the worker's snapshot ------------------------------------------------------------------------


@dataclass(frozen=True)
class PageRecord:
    """One record to add, as the web-form table prints it, and its state at the last look."""

    zone: str | None  # None: set at the hosting provider (PTR)
    name: str  # relative to the zone (@: the zone itself)
    fqdn: str
    rtype: str
    value: str  # one line, exactly as a web form takes it
    required: bool
    purpose: str
    status: str  # ok, missing, wrong, unknown; "" when not checked
    found: tuple[str, ...]  # what is served (for a wrong one)
    hint: str  # what to do, when not ok
    note: str  # a placeholder's or a held-back record's reason, else ""


@dataclass(frozen=True)
class DnsState:
    checked: datetime
    ready: bool  # every required record in place
    failing: str | None  # why no lookup got an answer at the last look (statuses are older)
    records: tuple[PageRecord, ...]


@dataclass(frozen=True)
class QueueState:
    checked: datetime
    active: int
    deferred: int
    hold: int
    oldest_deferred: str | None  # `since <time>, for <recipient>: <reason>`
    error: str | None  # why the queue could not be read


@dataclass(frozen=True)
class Snapshot:
    dns: DnsState | None
    queue: QueueState | None


def state_text(snapshot: Snapshot) -> str:
    def encode(value: object) -> object:
        return machine_time(value) if isinstance(value, datetime) else value

    def part(state: DnsState | QueueState | None) -> object:
        if state is None:
            return None
        return {key: [asdict(r) for r in value] if key == "records" else encode(value)
                for key, value in ((k, getattr(state, k)) for k in asdict(state))}

    return json.dumps({"version": STATE_VERSION, "dns": part(snapshot.dns),
                       "queue": part(snapshot.queue)}, indent=1) + "\n"


def write_state(path: Path, snapshot: Snapshot) -> None:
    """Keep the snapshot for the page (the worker, at the end of each run). Raises OSError."""
    write_atomically(path, state_text(snapshot).encode(), mode=0o600)


def read_state(path: Path) -> Snapshot:
    """The worker's last snapshot; a part missing or unreadable is None (not looked at yet)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return Snapshot(None, None)
    if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
        return Snapshot(None, None)
    return Snapshot(_read_part(saved.get("dns"), _dns_state),
                    _read_part(saved.get("queue"), _queue_state))


def _read_part(value: object, read: Callable[[dict[str, object]], _T]) -> _T | None:
    if not isinstance(value, dict):
        return None
    try:
        return read(value)
    except (KeyError, TypeError, ValueError):
        return None


def _time(value: object) -> datetime:
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _dns_state(saved: dict[str, object]) -> DnsState:
    records = saved["records"]
    if not isinstance(records, list):
        raise TypeError("records is not a list")
    failing = saved.get("failing")
    return DnsState(_time(saved["checked"]), saved.get("ready") is True,
                    None if failing is None else str(failing),
                    tuple(_page_record(r) for r in records))


def _page_record(saved: object) -> PageRecord:
    if not isinstance(saved, dict):
        raise TypeError("a record is not an object")
    zone, found = saved["zone"], saved["found"]
    if not isinstance(found, list):
        raise TypeError("found is not a list")
    return PageRecord(None if zone is None else str(zone), str(saved["name"]),
                      str(saved["fqdn"]), str(saved["rtype"]), str(saved["value"]),
                      saved["required"] is True, str(saved["purpose"]), str(saved["status"]),
                      tuple(map(str, found)), str(saved["hint"]), str(saved["note"]))


def _queue_state(saved: dict[str, object]) -> QueueState:
    def count(key: str) -> int:
        value = saved[key]
        if not isinstance(value, int):
            raise TypeError(f"{key} is not a number")
        return value

    oldest, error = saved.get("oldest_deferred"), saved.get("error")
    return QueueState(_time(saved["checked"]), count("active"), count("deferred"), count("hold"),
                      None if oldest is None else str(oldest),
                      None if error is None else str(error))


# --- what else the page shows ---------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateView:
    source: str  # acme, manual, self-signed
    self_signed: bool
    issuer: str
    names: tuple[str, ...]
    not_after: datetime


@dataclass(frozen=True)
class ListingView:
    blocklist: str
    subject: str
    verdict: str  # listed, clean, can't tell
    detail: str
    page: str


@dataclass(frozen=True)
class BlocklistView:
    checked: str  # as the worker wrote it
    listings: tuple[ListingView, ...]


@dataclass(frozen=True)
class ReportSummary:
    """One line of the DMARC and TLS report summaries (made elsewhere; shown as given)."""

    domain: str
    day: str
    text: str
    alarming: bool = False  # a source failing DMARC as us that isn't ours


def certificate_view(paths: Paths) -> CertificateView | None:
    """The certificate served for MAIL_HOSTNAME, None when none is live."""
    live = certificates.read_live(paths)
    if live is None:
        return None
    return CertificateView(live.source, live.self_signed, live.issuer, live.names,
                           live.not_after)


def blocklist_view(state_file: Path) -> BlocklistView | None:
    """The worker's last blocklist check (`network.reputation`), None before the first."""
    state = reputation.read_state(state_file)
    if state is None:
        return None
    entries = state.get("findings")
    listings = tuple(
        ListingView(str(e.get("blocklist", "")), str(e.get("subject", "")),
                    str(e.get("verdict", "")), str(e.get("detail", "")), str(e.get("page", "")))
        for e in (entries if isinstance(entries, list) else ()) if isinstance(e, dict))
    return BlocklistView(str(state.get("checked", "")), listings)


# --- the page -------------------------------------------------------------------------------------

STYLE: Final = """
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#c62828;--warn:#9a6700;--line:#8884}
body{font:16px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:0 1rem 3rem}
h1{font-size:1.4rem;margin:1rem 0 .2rem}h2{font-size:1.2rem;margin:2rem 0 .3rem}
.zone{color:#888;margin:0 0 .6rem}
.verdict{font-weight:600;padding:.6rem .8rem;border-radius:.4rem;border:2px solid}
.verdict.ok{border-color:var(--ok)}.verdict.bad{border-color:var(--bad)}
.rec{border:1px solid var(--line);border-radius:.4rem;padding:.5rem .7rem;margin:.5rem 0}
.head{display:flex;flex-wrap:wrap;gap:.3rem .8rem;align-items:baseline}
.name{font-family:ui-monospace,monospace;font-weight:600;overflow-wrap:anywhere}
.st{font-weight:700;font-size:.85rem;padding:0 .4rem;border-radius:.3rem;color:#fff}
.st.ok{background:var(--ok)}.st.missing,.st.wrong{background:var(--bad)}
.st.unknown,.st.hold,.st.unchecked{background:var(--warn)}
.need{font-size:.85rem;color:#888}.purpose{font-size:.9rem;margin:.2rem 0}
.val{display:flex;gap:.5rem;align-items:flex-start;margin:.3rem 0}
code{font:14px/1.4 ui-monospace,monospace;word-break:break-all;user-select:all;flex:1;
padding:.3rem .4rem;background:#8881;border-radius:.3rem}
button{font:inherit;font-size:.9rem;padding:.3rem .8rem;border-radius:.3rem;cursor:pointer}
.found,.hint{font-size:.9rem;margin:.2rem 0;overflow-wrap:anywhere}.found{color:var(--bad)}
ul{padding-left:1.2rem}li{margin:.2rem 0;overflow-wrap:anywhere}.alarm{color:var(--bad)}
.reports{border-top:3px double var(--line);margin-top:2.5rem}
"""

# The copy buttons: shown only when this runs; each copies its value's exact text.
SCRIPT: Final = """
for (const button of document.querySelectorAll("button[data-copy]")) {
  const value = document.getElementById(button.dataset.copy);
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(value.textContent);
      button.textContent = "Copied";
    } catch (error) {
      getSelection().selectAllChildren(value);
      button.textContent = "Selected: copy it";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 2500);
  });
}
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# CSP Level 3 (W3C): nothing but our own inline style and script, by hash.
CSP: Final = (f"default-src 'none'; style-src {_sha256(STYLE)}; script-src {_sha256(SCRIPT)}; "
              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS: Final = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Security-Policy", CSP),
    ("Referrer-Policy", "no-referrer"),  # the token is in the URL: never send it anywhere
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),  # for browsers without CSP frame-ancestors
    ("X-Robots-Tag", "noindex, nofollow"),
)
STATUS_WORDS: Final = {"ok": "OK", "missing": "MISSING", "wrong": "WRONG",
                       "unknown": "UNKNOWN", "": "NOT CHECKED"}
PROVIDER_TITLE = "Reverse DNS (PTR): set at your hosting provider, not in a zone"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def render(hostname: str, now: datetime, snapshot: Snapshot,
           certificate: CertificateView | None, blocklists: BlocklistView | None,
           reports: Sequence[ReportSummary] = ()) -> bytes:
    """The whole page, as UTF-8 HTML."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        '<link rel="icon" href="data:,">',  # no /favicon.ico request (it would count, and 404)
        f"<title>{_e(hostname)}: records and state</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{_e(hostname)}</h1>",
        f"<p class=zone>As of {_e(human_time(now))}. This page is read-only; anyone with its "
        "link can read it (<code>mailboot status --new-link</code> replaces the link).</p>",
        *_dns_section(snapshot.dns),
        *_certificate_section(certificate, now),
        *_queue_section(snapshot.queue),
        *_blocklist_section(blocklists),
        *_reports_section(reports),
        f"<script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts).encode()


def _dns_section(dns: DnsState | None) -> list[str]:
    if dns is None:
        return ["<h2>DNS records</h2>",
                "<p class='verdict bad'>The records have not been checked yet: the worker looks "
                "within a minute of the start; reload then. (With DNS_CHECK=off it never does: "
                "<code>mailboot dns</code> prints the records.)</p>"]
    not_ok = [r for r in dns.records if r.required and r.status != "ok"]
    if dns.ready:
        verdict = "<p class='verdict ok'>READY: every required DNS record is in place.</p>"
    else:
        verdict = (f"<p class='verdict bad'>NOT READY: {len(not_ok)} required record(s) not in "
                   "place yet (below).</p>")
    lines = ["<h2>DNS records</h2>", verdict,
             f"<p class=zone>Checked at their zones' own name servers at "
             f"{_e(human_time(dns.checked))}. Add each record at the DNS provider of its zone; "
             "NAME is relative to the zone (@ is the zone itself). Paste the value as one line, "
             "exactly as shown.</p>"]
    if dns.failing is not None:
        lines.append(f"<p class='verdict bad'>The last look got no answer ({_e(dns.failing)});"
                     " the states below are from the look before.</p>")
    zones: dict[str | None, list[PageRecord]] = {}
    for record in dns.records:
        zones.setdefault(record.zone, []).append(record)
    number = 0
    for zone, records in zones.items():
        lines.append(f"<h2>{_e(zone) if zone is not None else PROVIDER_TITLE}</h2>")
        for record in records:
            lines += _record(record, number)
            number += 1
    return lines


def _record(record: PageRecord, number: int) -> list[str]:
    status = record.status if record.status in STATUS_WORDS else "unknown"
    word = STATUS_WORDS[status]
    css = status or "unchecked"
    if record.note and status != "wrong":
        word, css = "NOT YET", "hold"
    value_id = f"v{number}"
    lines = [
        f"<div class=rec data-name='{_e(record.fqdn)}' data-type='{_e(record.rtype)}' "
        f"data-status='{_e(status or 'unchecked')}'>",
        f"<div class=head><span class=name>{_e(record.name)} {_e(record.rtype)}</span>"
        f"<span class='st {css}'>{word}</span>"
        f"<span class=need>{'required' if record.required else 'optional'}</span></div>",
        f"<p class=purpose>{_e(record.purpose)}</p>",
        f"<div class=val><code id={value_id}>{_e(record.value)}</code>"
        f"<button type=button data-copy={value_id} hidden>Copy</button></div>",
    ]
    if record.found and status == "wrong":
        lines.append(f"<p class=found>Served now: {_e(' | '.join(record.found))}</p>")
    if record.note:
        lines.append(f"<p class=hint>{_e(record.note)}</p>")
    elif record.hint and status != "ok":
        lines.append(f"<p class=hint>{_e(record.hint)}</p>")
    lines.append("</div>")
    return lines


def _certificate_section(certificate: CertificateView | None, now: datetime) -> list[str]:
    lines = ["<h2>Certificate</h2>"]
    if certificate is None:
        return [*lines, "<p class='verdict bad'>No certificate is served.</p>"]
    days = (certificate.not_after - now).total_seconds() / 86400
    kind = ("self-signed (temporary: mail clients can't verify it)" if certificate.self_signed
            else f"from {_e(certificate.issuer)}")
    return [*lines, "<ul>",
            f"<li>{_e(certificate.source)}, {kind}</li>",
            f"<li>valid until {_e(human_time(certificate.not_after))} ({days:.0f} days)</li>",
            f"<li>for {_e(', '.join(certificate.names))}</li>", "</ul>"]


def _queue_section(queue: QueueState | None) -> list[str]:
    lines = ["<h2>Mail queue</h2>"]
    if queue is None:
        return [*lines, "<p>Not looked at yet.</p>"]
    if queue.error is not None:
        return [*lines, f"<p class=alarm>Could not be read at {_e(human_time(queue.checked))}: "
                        f"{_e(queue.error)}</p>"]
    lines += [f"<p>At {_e(human_time(queue.checked))}: {queue.active} being delivered, "
              f"{queue.deferred} deferred, {queue.hold} held.</p>"]
    if queue.oldest_deferred is not None:
        lines.append(f"<p class=alarm>Oldest deferred: {_e(queue.oldest_deferred)}</p>")
    return lines


def _blocklist_section(blocklists: BlocklistView | None) -> list[str]:
    lines = ["<h2>Blocklists</h2>"]
    if blocklists is None:
        return [*lines, "<p>Not checked yet (or REPUTATION_CHECK=off).</p>"]
    listed = [item for item in blocklists.listings if item.verdict == reputation.Verdict.LISTED]
    summary = (f"listed on {len(listed)}" if listed else "not listed anywhere we asked")
    try:
        checked = human_time(_time(blocklists.checked))
    except ValueError:
        checked = blocklists.checked
    lines += [f"<p>At {_e(checked)}: {summary}.</p>", "<ul>"]
    for item in blocklists.listings:
        css = " class=alarm" if item.verdict == reputation.Verdict.LISTED else ""
        # Shown, not linked: a click would carry nothing (no-referrer), but text is enough.
        lines.append(f"<li{css}>{_e(item.subject)} on {_e(item.blocklist)}: "
                     f"{_e(item.verdict)}{': ' + _e(item.detail) if item.detail else ''}"
                     f"{' (see ' + _e(item.page) + ')' if item.page else ''}</li>")
    return [*lines, "</ul>"]


# The days of reports the page sums up, as `mailboot status` does (one report a day per receiver).
REPORT_DAYS = 7


def report_summaries(settings: Settings, paths: Paths, today: date) -> list[ReportSummary]:
    """One line per domain and day of the DMARC and TLS reports read (`inbound.reports`), and
    one alarming line per sender that failed DMARC as us from an address that isn't ours."""
    from mailboot.inbound import reports

    addresses = {str(a) for a in effective_settings(settings, paths).public_addresses}
    found = []
    for summary in reports.recent_summaries(reports.reports_directory(paths.policy_state),
                                            today, REPORT_DAYS):
        domain, day = str(summary["domain"]), str(summary["day"])
        senders = reports.sources(summary, addresses)
        tls = [entry for entry in summary.get("tls", {}).values() if isinstance(entry, dict)]
        sessions = sum(int(e.get("successful", 0)) + int(e.get("failed", 0)) for e in tls)
        text = (f"DMARC: {len(summary.get('dmarc_reports', []))} reports, "
                f"{sum(s.messages for s in senders)} messages as us, "
                f"{sum(s.failed for s in senders)} failing DMARC; TLS: "
                f"{len(summary.get('tls_reports', []))} reports, {sessions} sessions, "
                f"{sum(int(e.get('failed', 0)) for e in tls)} failed")
        found.append(ReportSummary(domain, day, text))
        found += [ReportSummary(domain, day, "NOT OURS: " + reports.called_out_text(sender),
                                alarming=True) for sender in senders if sender.called_out]
    return found


def _reports_section(reports: Sequence[ReportSummary]) -> list[str]:
    """The DMARC and TLS report summaries: a part of its own, filled from `reports`."""
    lines = ["<section class=reports id=reports>", "<h2>DMARC and TLS reports</h2>"]
    if not reports:
        return [*lines, "<p>No report summaries yet.</p>", "</section>"]
    lines.append("<ul>")
    lines += [f"<li{' class=alarm' if r.alarming else ''}>{_e(r.day)} {_e(r.domain)}: "
              f"{_e(r.text)}</li>" for r in reports]
    return [*lines, "</ul>", "</section>"]


# --- the answer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageSource:
    """Where the page reads what it shows."""

    hostname: str
    paths: Paths
    reports: Callable[[], Sequence[ReportSummary]] = tuple  # the report summaries, when made


def answer(request: Request, source: PageSource, limiter: RateLimiter,
           clock: Callable[[], float] = time.monotonic,
           now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Response:
    """The page at `/<token>`; 404 (port 443's own) for any other path, 429 over the rate."""
    if not limiter.allow(request.client, clock()):
        return TOO_MANY
    token = read_token(source.paths.page_token)
    if token is None or not hmac.compare_digest(request.path.encode(), f"/{token}".encode()):
        return NOT_FOUND
    if request.method not in ("GET", "HEAD"):
        return Response(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET and HEAD\n",
                        (("Content-Type", "text/plain"), ("Allow", "GET, HEAD")))
    body = render(source.hostname, now(), read_state(source.paths.page_state),
                  certificate_view(source.paths), blocklist_view(source.paths.reputation_state),
                  source.reports())
    return Response(HTTPStatus.OK, body, HEADERS)


def make_answer(source: PageSource) -> Callable[[Request], Response]:
    """The page's router for port 443, with its own rate limiter."""
    limiter = RateLimiter()
    return lambda request: answer(request, source, limiter)
