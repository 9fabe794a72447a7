"""DMARC and TLS reports mailed to us, read as they arrive: Postfix pipes each message for the
report addresses (DMARC_RUA, TLSRPT_RUA at our domains) to this process, run as the policy
user (`python3 -P -m mailboot.inbound.reports`, master.cf's `mailboot-reports` service).

The message is taken apart with the standard library's email package; its report (DMARC
aggregate XML raw, gzip'd or in a zip, RFC 7489 §7.2.1.1; TLS-RPT JSON raw or gzip'd, RFC 8460
§5.3) is unpacked under limits and read (`standards.dmarcreport`, `standards.tlsrpt`). What it
says is added to one summary per domain and UTC day (`summaries/<domain>/<day>.json`, written
atomically), which `mailboot reports` and `mailboot status` read. A report seen before (same
reporter and id: resent) is counted once.

Anyone can mail these addresses, so everything is bounded: the message (Postfix's `size=` too),
the unpacked size and the compression ratio (a zip bomb stops after its first megabytes), one
member per zip, the XML without any DOCTYPE (no entity is ever expanded), the PTR lookups. A
message that can't be read is refused: one log line says why, the start of it is kept aside in
`refused/` (the newest few), and Postfix is told it was delivered (exit 0), so nobody is sent a
bounce for mail they may never have sent. Only our own trouble (the disk) defers it (EX_TEMPFAIL,
Postfix retries).

Log lines go to the supervisor's /dev/log (Postfix keeps a pipe command's output to itself), so
`docker logs` shows them as `mailboot: reports: ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import fcntl
import functools
import io
import ipaddress
import json
import logging
import logging.handlers
import re
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from mailboot.base.files import write_atomically
from mailboot.base.formats import machine_time
from mailboot.base.logs import LineFormat
from mailboot.standards import dmarcreport, tlsrpt

log = logging.getLogger("mailboot.reports")

MAX_MESSAGE = 16 * 1024 * 1024  # bytes of mail; real reports are kilobytes to a few megabytes
MAX_UNPACKED = 32 * 1024 * 1024  # bytes of XML or JSON, whatever the packing says
MAX_RATIO = 200  # unpacked / packed, judged past the first MiB (repetitive XML reaches ~50)
RATIO_FROM = 1024 * 1024
CHUNK = 64 * 1024
KEEP_REFUSED = 20  # refused messages kept aside, the newest
KEEP_BYTES = 1024 * 1024  # of each, its start
MAX_PTR_LOOKUPS = 50  # per report; the rest are summarised without a name
PTR_BUDGET = 20.0  # seconds of PTR lookups per message
EX_TEMPFAIL = 75  # sysexits.h: Postfix defers and retries

# Report packings by content type or file name: RFC 7489 §7.2.1.1 (gzip, zip), RFC 8460 §5.3
# (application/tlsrpt+gzip, application/tlsrpt+json); raw XML as some small receivers send it.
REPORT_TYPES = ("application/zip", "application/x-zip-compressed", "application/gzip",
                "application/x-gzip", "application/xml", "text/xml", "application/tlsrpt+gzip",
                "application/tlsrpt+json", "application/json", "application/octet-stream")
REPORT_SUFFIXES = (".zip", ".gz", ".xml", ".json")

Ptr = Callable[[str], "str | None"]


class Refused(Exception):
    """The message is no report we can read: why, for the log."""


@dataclass(frozen=True)
class Outcome:
    """What became of one message: its log line, and the exit code for Postfix."""

    line: str
    refused: bool
    exit_code: int = 0


def reports_directory(policy_state: Path) -> Path:
    """Below the policy user's state on the volume (`Paths.policy_state`): in backups, owned
    by the user the pipe runs as."""
    return policy_state / "reports"


# --- the message, its attachment, unpacked ------------------------------------------------------


def report_document(message_bytes: bytes) -> bytes:
    """The XML or JSON document the message carries. Raises Refused."""
    if len(message_bytes) > MAX_MESSAGE:
        raise Refused(f"the message is larger than {MAX_MESSAGE // 1024 // 1024} MiB")
    message = email.message_from_bytes(message_bytes, policy=email.policy.default)
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        filename = (part.get_filename() or "").lower()
        if content_type in REPORT_TYPES or filename.endswith(REPORT_SUFFIXES):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload.strip():
                return unpack(payload)
    raise Refused("it carries no report (no zip, gzip, XML or JSON attachment)")


def unpack(data: bytes) -> bytes:
    """The document inside zip or gzip packing (by their magic numbers), or the data itself."""
    if data.startswith(b"PK\x03\x04"):
        return _unzip(data)
    if data.startswith(b"\x1f\x8b"):
        return _gunzip(data)
    return data


def _unzip(data: bytes) -> bytes:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) != 1:
            raise Refused(f"its zip holds {len(members)} files; a report is one (RFC 7489 "
                          "§7.2.1.1)")
        with archive.open(members[0]) as member:
            return _bounded(iter(lambda: member.read(CHUNK), b""), len(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            zlib.error) as error:
        raise Refused(f"its zip can't be read ({error})") from None


def _gunzip(data: bytes) -> bytes:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def chunks() -> Iterator[bytes]:
        pending = data
        while pending and not decompressor.eof:
            # max_length: never more than a chunk out of one call, however small the input.
            yield decompressor.decompress(pending, CHUNK)
            pending = decompressor.unconsumed_tail
        if not decompressor.eof:
            raise Refused("its gzip data ends early")

    try:
        return _bounded(chunks(), len(data))
    except zlib.error as error:
        raise Refused(f"its gzip data can't be read ({error})") from None


def _bounded(chunks: Iterator[bytes], packed: int) -> bytes:
    """The chunks joined, refused as soon as they pass MAX_UNPACKED or, past the first MiB,
    MAX_RATIO times the packed size: a bomb is stopped after its first megabytes."""
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > MAX_UNPACKED:
            raise Refused(f"it unpacks to more than {MAX_UNPACKED // 1024 // 1024} MiB")
        if len(out) > RATIO_FROM and len(out) > MAX_RATIO * packed:
            raise Refused(f"it unpacks to more than {MAX_RATIO} times its packed size "
                          f"({packed} bytes): a zip bomb")
    return bytes(out)


def read_report(document: bytes) -> dmarcreport.AggregateReport | tlsrpt.TlsReport:
    """A DMARC aggregate report (XML) or a TLS report (JSON), told apart by the first
    character. Raises Refused."""
    start = document.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    try:
        if start == b"<":
            return dmarcreport.parse_report(document)
        if start == b"{":
            return tlsrpt.parse_report(document)
    except ValueError as error:  # both modules' errors are ValueErrors
        kind = "DMARC" if start == b"<" else "TLS"
        raise Refused(f"its {kind} report can't be read: {error}") from None
    raise Refused("its attachment is neither XML (a DMARC report) nor JSON (a TLS report)")


# --- the summaries ------------------------------------------------------------------------------


def summary_path(directory: Path, domain: str, day: date) -> Path:
    return directory / "summaries" / domain / f"{day.isoformat()}.json"


def empty_summary(domain: str, day: date) -> dict[str, Any]:
    return {"domain": domain, "day": day.isoformat(), "dmarc_reports": [], "sources": {},
            "tls_reports": [], "tls": {}}


# A host name in its ASCII form (RFC 1123 §2.1 letters, digits, hyphens; IDNs as xn--): the
# report's domain names a directory below the summaries, so nothing else may pass.
HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}"
                       r"[a-z0-9])?)*")


def ours(domain: str, domains: Collection[str]) -> bool:
    """One of our domains or below one, written as a host name (never `..` or a slash)."""
    return (HOST_NAME.fullmatch(domain) is not None
            and any(domain == d or domain.endswith("." + d) for d in domains))


def add_dmarc(summary: dict[str, Any], report: dmarcreport.AggregateReport,
              ptr: Ptr) -> bool:
    """Count `report` into the day's summary; False when it was counted before."""
    key = {"org": report.org_name, "id": report.report_id}
    if any(r["org"] == key["org"] and r["id"] == key["id"] for r in summary["dmarc_reports"]):
        return False
    messages = sum(row.count for row in report.rows)
    summary["dmarc_reports"].append({**key, "begin": machine_time(report.begin),
                                     "end": machine_time(report.end), "messages": messages})
    for row in report.rows:
        source = summary["sources"].setdefault(row.source, {
            "ptr": None, "messages": 0, "dkim_aligned": 0, "spf_aligned": 0, "failed": 0,
            "disposition": {}, "header_from": [], "reporters": []})
        if source["ptr"] is None:
            source["ptr"] = ptr(row.source)
        source["messages"] += row.count
        source["dkim_aligned"] += row.count if row.dkim_aligned else 0
        source["spf_aligned"] += row.count if row.spf_aligned else 0
        source["failed"] += 0 if row.passed else row.count
        source["disposition"][row.disposition] = (source["disposition"].get(row.disposition, 0)
                                                  + row.count)
        for field, value in (("header_from", row.header_from), ("reporters", report.org_name)):
            if value and value not in source[field] and len(source[field]) < 20:
                source[field].append(value)
    return True


def add_tls(summary: dict[str, Any], report: tlsrpt.TlsReport,
            policies: Sequence[tlsrpt.PolicyResult]) -> bool:
    """Count the report's `policies` (one domain's) into the summary; False when seen."""
    key = {"org": report.organization, "id": report.report_id}
    if any(r["org"] == key["org"] and r["id"] == key["id"] for r in summary["tls_reports"]):
        return False
    summary["tls_reports"].append({**key, "begin": machine_time(report.begin),
                                   "end": machine_time(report.end)})
    sender = summary["tls"].setdefault(report.organization, {
        "successful": 0, "failed": 0, "results": {}, "policies": [], "mx": []})
    for policy in policies:
        sender["successful"] += policy.successful
        sender["failed"] += policy.failed
        if policy.policy_type not in sender["policies"]:
            sender["policies"].append(policy.policy_type)
        for failure in policy.failures:
            sender["results"][failure.result_type] = (sender["results"].get(failure.result_type,
                                                                            0) + failure.count)
            if failure.receiving_mx and failure.receiving_mx not in sender["mx"]:
                sender["mx"].append(failure.receiving_mx)
    return True


def read_summary(path: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """One writer of the summaries at a time (master.cf runs one process; a lock all the same)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def store(directory: Path, domain: str, day: date,
          add: Callable[[dict[str, Any]], bool]) -> bool:
    """Add to the summary of `domain` on `day`, written atomically; False when already in."""
    path = summary_path(directory, domain, day)
    summary = read_summary(path) or empty_summary(domain, day)
    if not add(summary):
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode(),
                     mode=0o600)
    return True


# --- one message --------------------------------------------------------------------------------


def deliver(message: bytes, directory: Path, domains: Collection[str], ptr: Ptr) -> Outcome:
    """Read one message and count its report; a refused one is kept aside. Never raises for
    what the message holds; an OSError (the disk) is for the caller to defer."""
    sender = printable(_from_header(message))
    try:
        report = read_report(report_document(message))
        with locked(directory):
            if isinstance(report, dmarcreport.AggregateReport):
                return _deliver_dmarc(report, directory, domains, ptr, sender)
            return _deliver_tls(report, directory, domains, sender)
    except Refused as error:
        kept = keep_aside(directory, message)
        return Outcome(f"refused a report from {sender}: {error}; kept as {kept}", True)


def _deliver_dmarc(report: dmarcreport.AggregateReport, directory: Path,
                   domains: Collection[str], ptr: Ptr, sender: str) -> Outcome:
    if not ours(report.domain, domains):
        raise Refused(f"its DMARC report is about {printable(report.domain)}, not one of our "
                      "domains")
    day = report.begin.date()
    added = store(directory, report.domain, day, lambda s: add_dmarc(s, report, ptr))
    what = (f"DMARC report {printable(report.report_id)} from {printable(report.org_name)} "
            f"about {report.domain} for {day}")
    if not added:
        return Outcome(f"{what}: counted before, not again", False)
    failing = sum(row.count for row in report.rows if not row.passed)
    return Outcome(f"{what}: {len({r.source for r in report.rows})} sources, "
                   f"{sum(r.count for r in report.rows)} messages, {failing} failing DMARC "
                   f"(from {sender})", False)


def _deliver_tls(report: tlsrpt.TlsReport, directory: Path, domains: Collection[str],
                 sender: str) -> Outcome:
    by_domain: dict[str, list[tlsrpt.PolicyResult]] = {}
    for policy in report.policies:
        if ours(policy.domain, domains):
            by_domain.setdefault(policy.domain, []).append(policy)
    if not by_domain:
        raise Refused("its TLS report is about none of our domains")
    day = report.begin.date()
    parts = []
    for domain, policies in sorted(by_domain.items()):
        added = store(directory, domain, day, functools.partial(add_tls, report=report,
                                                                policies=policies))
        parts.append(f"{domain}: " + (
            f"{sum(p.successful for p in policies)} sessions with TLS, "
            f"{sum(p.failed for p in policies)} failed" if added else "counted before"))
    return Outcome(f"TLS report {printable(report.report_id)} from "
                   f"{printable(report.organization)} for {day}: {'; '.join(parts)} "
                   f"(from {sender})", False)


def keep_aside(directory: Path, message: bytes, now: float | None = None) -> Path:
    """The start of a refused message in `refused/`, only the newest KEEP_REFUSED kept."""
    refused = directory / "refused"
    refused.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    path = refused / f"{stamp.strftime('%Y%m%dT%H%M%S.%fZ')}.eml"
    write_atomically(path, message[:KEEP_BYTES], mode=0o600)
    for old in sorted(refused.glob("*.eml"))[:-KEEP_REFUSED]:
        old.unlink(missing_ok=True)
    return path


def _from_header(message: bytes) -> str:
    """The From header's address, read from the headers alone (the body may be anything)."""
    head = message[:64 * 1024].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    parsed = email.message_from_bytes(head, policy=email.policy.default)
    try:
        found = parsed.get("From")
        return str(found.addresses[0].addr_spec) if found and found.addresses else "(no From)"
    except (AttributeError, IndexError, TypeError, ValueError):
        return "(an unreadable From)"


def printable(text: str) -> str:
    """Text from a stranger, safe for one log line or a terminal: printable ASCII (no escape
    sequence), at most 100 characters."""
    return re.sub(r"[^\x20-\x7e]", "?", text)[:100]


# --- PTR lookups ---------------------------------------------------------------------------------


def ptr_lookup(budget: float = PTR_BUDGET, limit: int = MAX_PTR_LOOKUPS) -> Ptr:
    """The PTR of an address through the container's own resolver: short timeouts, at most
    `limit` names and `budget` seconds per message (a report of thousands of sources is still
    read in time); None when there is no name, or no time left. dnspython is loaded at the
    first question: a refused message never waits for it."""
    deadline = time.monotonic() + budget
    asked: dict[str, str | None] = {}

    def ptr(address: str) -> str | None:
        from mailboot.dns.lookup import local_lookup

        if address not in asked:
            if len(asked) >= limit or time.monotonic() >= deadline:
                return None
            lookup = local_lookup(timeout=2.0)
            answer = lookup(ipaddress.ip_address(address).reverse_pointer, "PTR")
            asked[address] = answer.values[0].rstrip(".").lower() if answer.values else None
        return asked[address]

    return ptr


# --- reading the summaries (`mailboot reports`, `mailboot status`) ------------------------------


@dataclass(frozen=True)
class Source:
    """One address that sent as one of our domains on one day, as the reports tell it."""

    domain: str
    day: str
    address: str
    ptr: str | None
    messages: int
    dkim_aligned: int
    spf_aligned: int
    failed: int
    ours: bool

    @property
    def called_out(self) -> bool:
        """Fails DMARC as us from an address that isn't ours: forgery, or a service of ours
        that still needs DKIM set up."""
        return self.failed > 0 and not self.ours


def recent_summaries(directory: Path, today: date, days: int) -> list[dict[str, Any]]:
    """The summaries of the last `days` UTC days (today included), by domain, then day."""
    first = today - timedelta(days=days - 1)
    found = []
    for path in sorted((directory / "summaries").glob("*/*.json")):
        try:
            day = date.fromisoformat(path.stem)
        except ValueError:
            continue
        summary = read_summary(path) if first <= day <= today else None
        if summary is not None:
            found.append(summary)
    return found


def sources(summary: dict[str, Any], addresses: Collection[str]) -> list[Source]:
    """The summary's senders, the most messages first; `addresses`: our public addresses."""
    found = []
    for address, entry in summary.get("sources", {}).items():
        if not isinstance(entry, dict):
            continue
        found.append(Source(summary["domain"], summary["day"], address, entry.get("ptr"),
                            int(entry.get("messages", 0)), int(entry.get("dkim_aligned", 0)),
                            int(entry.get("spf_aligned", 0)), int(entry.get("failed", 0)),
                            address in addresses))
    return sorted(found, key=lambda s: (-s.messages, s.address))


def summary_json(summary: dict[str, Any], addresses: Collection[str]) -> dict[str, Any]:
    """One day's summary as `mailboot reports --json` shows it: the senders as a list, each
    with `ours` and `called_out`, the most messages first."""
    return {**summary, "sources": [
        {"address": s.address, "ptr": s.ptr, "messages": s.messages,
         "dkim_aligned": s.dkim_aligned, "spf_aligned": s.spf_aligned, "failed": s.failed,
         "ours": s.ours, "called_out": s.called_out,
         **{k: summary["sources"][s.address].get(k) for k in ("disposition", "header_from",
                                                               "reporters")}}
        for s in sources(summary, addresses)]}


@dataclass(frozen=True)
class Overview:
    """The reports of the last days in numbers, for `mailboot status`."""

    days: int
    dmarc_reports: int
    messages: int  # that receivers saw as from our domains
    failed: int  # of them, failing DMARC
    called_out: tuple[Source, ...]  # failing DMARC as us from addresses not ours
    tls_reports: int
    tls_sessions: int
    tls_failed: int


def overview(summaries: Sequence[dict[str, Any]], addresses: Collection[str],
             days: int) -> Overview:
    found = [source for summary in summaries for source in sources(summary, addresses)]
    senders = [entry for summary in summaries for entry in summary.get("tls", {}).values()
               if isinstance(entry, dict)]
    return Overview(
        days, sum(len(s.get("dmarc_reports", [])) for s in summaries),
        sum(s.messages for s in found), sum(s.failed for s in found),
        tuple(s for s in found if s.called_out),
        sum(len(s.get("tls_reports", [])) for s in summaries),
        sum(int(e.get("successful", 0)) + int(e.get("failed", 0)) for e in senders),
        sum(int(e.get("failed", 0)) for e in senders))


def called_out_text(source: Source) -> str:
    """`198.51.100.66 (host66.example.net) sent 3 messages as example.com on 2026-12-04 that
    failed DMARC, and isn't ours`."""
    name = f" ({printable(source.ptr)})" if source.ptr else " (no PTR)"
    return (f"{source.address}{name} sent {source.failed} messages as {source.domain} on "
            f"{source.day} that failed DMARC, and isn't ours")


# --- the process ---------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m mailboot.inbound.reports",
                                     description="Read one report message from stdin.")
    parser.add_argument("--state", type=Path, required=True,
                        help="the policy user's state directory (DATA_DIR/policy)")
    parser.add_argument("--domain", action="append", default=[], help="one of our domains")
    parser.add_argument("--syslog", default="/dev/log", help="where log lines go")
    return parser


def log_to(socket_path: str) -> None:
    """Our lines to the supervisor's syslog socket (to stderr where there is none)."""
    root = logging.getLogger("mailboot")
    handler: logging.Handler
    if Path(socket_path).is_socket():  # SysLogHandler would fail only at the first line
        handler = logging.handlers.SysLogHandler(address=socket_path)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormat())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def main(argv: Sequence[str] | None = None, stdin: io.BufferedIOBase | None = None,
         ptr: Ptr | None = None) -> int:
    arguments = parser().parse_args(argv)
    if stdin is None:
        log_to(arguments.syslog)
    source = stdin or sys.stdin.buffer
    message = source.read(MAX_MESSAGE + 1)
    if len(message) > MAX_MESSAGE:
        # Read the rest, unkept (Postfix's message_size_limit bounds it): a command that exits
        # before its input is all written leaves Postfix unsure the mail was delivered.
        while source.read(CHUNK * 16):
            pass
    directory = reports_directory(arguments.state)
    try:
        outcome = deliver(message, directory, set(arguments.domain), ptr or ptr_lookup())
    except OSError as error:
        log.error("reports: can't keep a report (%s); Postfix will try again", error)
        return EX_TEMPFAIL
    except Exception:  # a bug of ours must not bounce reports nor lose them: keep and say
        log.exception("reports: reading a report failed unexpectedly")
        with contextlib.suppress(OSError):
            keep_aside(directory, message)
        return 0
    if outcome.refused:
        log.warning("reports: %s", outcome.line)
    else:
        log.info("reports: %s", outcome.line)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
