"""`mailboot status` for people (one screen) and for programs (`--json`, fields in README)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from mailboot.base.formats import format_size, human_time, machine_time
from mailboot.cli.bans import ban_json, ban_text
from mailboot.diagnose.queue import Queue
from mailboot.diagnose.status import (
    RECENT,
    CertificateState,
    Disk,
    DkimState,
    Mailboxes,
    Outbound,
    Reputation,
    Sending,
    StatusReport,
    Unavailable,
    ZoneDns,
    judge,
    recent_problems,
)
from mailboot.inbound import reports
from mailboot.logins.bans import Ban

# Worker problems shown on the screen (all of them are in --json).
SHOWN_PROBLEMS = 5

T = TypeVar("T")


def status_json(report: StatusReport) -> str:
    problems = judge(report)
    document = {
        "ok": not problems,
        "not_in_place": list(problems),
        "checked": _time(report.checked),
        "hostname": report.hostname,
        "certificate": _certificate_json(report.certificate),
        "dns": _part(report.dns, lambda zones: [_zone_json(zone) for zone in zones]),
        "dkim": _part(report.dkim, lambda states: [_dkim_json(state) for state in states]),
        "queue": _part(report.queue, _queue_json),
        "mailboxes": _part(report.mailboxes, lambda m: {"count": m.count,
                                                         "total_bytes": m.total_bytes}),
        "disk": _part(report.disk, _disk_json),
        "outbound": None if report.outbound is None else {
            "status": report.outbound.status, "target": report.outbound.target,
            "detail": report.outbound.detail, "via_relay": report.outbound.via_relay,
            "checked": _time(report.outbound.checked)},
        "reputation": _reputation_json(report.reputation),
        "bans": None if report.bans is None else _part(report.bans, _bans_json),
        "worker": None if report.worker is None else {
            "ran": _time(report.worker.ran), "next_run": _time(report.worker.next_run)},
        "worker_problems": {
            "recent_seconds": int(RECENT.total_seconds()),
            "recent": len(recent_problems(report)),
            "last": [{"time": _time(p.time), "level": p.level, "source": p.source,
                      "message": p.message} for p in report.worker_problems]},
        "sending_limits": (None if report.sending is None
                           else _part(report.sending, _sending_json)),
        "reports": None if report.reports is None else _part(report.reports, _reports_json),
    }
    return json.dumps(document, indent=2) + "\n"


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else machine_time(moment)


def _part(value: T | Unavailable, shown: Callable[[T], object]) -> object:
    """A part as JSON, or {"unavailable": why} when it could not be read."""
    return {"unavailable": value.reason} if isinstance(value, Unavailable) else shown(value)


def _certificate_json(certificate: CertificateState | None) -> dict[str, Any] | None:
    if certificate is None:
        return None
    return {"source": certificate.source, "self_signed": certificate.self_signed,
            "issuer": certificate.issuer, "names": list(certificate.names),
            "not_before": _time(certificate.not_before),
            "not_after": _time(certificate.not_after),
            "renewal": _time(certificate.renewal), "renewal_plan": certificate.renewal_plan}


def _zone_json(zone: ZoneDns) -> dict[str, Any]:
    return {"zone": zone.zone, "ready": zone.ready, "records": zone.records, "ok": zone.ok,
            "not_ok": [{"name": r.name, "type": r.rtype, "status": r.status,
                        "required": r.required, "hint": r.hint} for r in zone.not_ok]}


def _dkim_json(state: DkimState) -> dict[str, Any]:
    return {"domain": state.domain,
            "signing": [{"selector": key.selector, "algorithm": key.algorithm,
                         "record": key.record} for key in state.signing]}


def _queue_json(queue: Queue) -> dict[str, Any]:
    oldest = queue.oldest_deferred
    return {"active": queue.active, "deferred": queue.deferred, "hold": queue.hold,
            "oldest_deferred": None if oldest is None else {
                "queue_id": oldest.queue_id, "arrival": _time(oldest.arrival),
                "recipient": oldest.recipient, "reason": oldest.reason}}


def _reputation_json(found: Reputation | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "checked": _time(found.checked),
        "listed": len(found.listed),
        "findings": [{"list": f.blocklist, "subject": f.subject, "verdict": f.verdict,
                      "codes": list(f.codes), "detail": f.detail, "page": f.page}
                     for f in found.findings],
        "ipv6": None if found.ipv6_address is None else {
            "address": found.ipv6_address, "sends": found.ipv6_sends,
            "detail": found.ipv6_detail},
    }


def _bans_json(bans: Mapping[str, Ban]) -> list[dict[str, Any]]:
    return [ban_json(address, ban) for address, ban in bans.items()]


def _sending_json(sending: Sending) -> dict[str, Any]:
    return {"messages_per_day": sending.limits.messages,
            "first_time_recipients_per_day": sending.limits.first_time,
            "held": [{"account": held.login, "limit": str(held.limit), "count": held.count,
                      "maximum": held.maximum, "until": _time(held.until)}
                     for held in sending.held],
            "unreadable": list(sending.unreadable)}


def _disk_json(disk: Disk) -> dict[str, Any]:
    return {"path": str(disk.path), "total_bytes": disk.total_bytes,
            "free_bytes": disk.free_bytes, "free_percent": round(disk.free_share * 100, 1)}


# --- the screen ----------------------------------------------------------------------------------


def status_text(report: StatusReport) -> str:
    problems = judge(report)
    verdict = ("everything is in place" if not problems else
               f"NOT IN PLACE ({len(problems)}):")
    lines = [f"mailboot status of {report.hostname} at {human_time(report.checked)}: {verdict}"]
    lines += [f"  - {problem}" for problem in problems]
    lines.append("")
    rows = [("certificate", _certificate_lines(report.certificate, report.checked)),
            ("dns", _lines(report.dns, lambda zones: [_zone_line(z) for z in zones])),
            ("dkim", _lines(report.dkim, lambda states: [_dkim_line(s) for s in states])),
            ("queue", _lines(report.queue, lambda q: _queue_lines(q, report.checked))),
            ("mailboxes", _lines(report.mailboxes, _mailbox_lines)),
            ("disk", _lines(report.disk, _disk_lines)),
            ("outbound", _outbound_lines(report.outbound)),
            ("reputation", _reputation_lines(report.reputation)),
            *([] if report.bans is None else [("login bans", _lines(
                report.bans, lambda bans: [ban_text(a, b) for a, b in bans.items()] or
                ["none"]))]),
            ("worker", _worker_lines(report))]
    if report.sending is not None:
        rows.append(("limits", _lines(report.sending, _sending_lines)))
    if report.reports is not None:
        rows.append(("reports", _lines(report.reports, _reports_lines)))
    for title, values in rows:
        for index, value in enumerate(values):
            lines.append(f"{title if index == 0 else '':<12} {value}")
    return "\n".join(lines) + "\n"


def _lines(value: T | Unavailable, shown: Callable[[T], list[str]]) -> list[str]:
    return [f"can't be read: {value.reason}"] if isinstance(value, Unavailable) else shown(value)


def _certificate_lines(certificate: CertificateState | None, now: datetime) -> list[str]:
    if certificate is None:
        return ["none"]
    kind = "self-signed" if certificate.self_signed else f"issued by {certificate.issuer}"
    first = kind if certificate.source == "self-signed" else f"{certificate.source}, {kind}"
    left = certificate.not_after - now
    renewal = (f"renewal at {human_time(certificate.renewal)}, {certificate.renewal_plan}"
               if certificate.renewal is not None else certificate.renewal_plan)
    return [first, f"for {', '.join(certificate.names)}",
            f"valid until {human_time(certificate.not_after)} ({_span(left)} left)", renewal]


def _zone_line(zone: ZoneDns) -> str:
    """Counts only: the required records not in place are listed at the top, and
    `mailboot dns --check` (or --json) has every record with its hint."""
    state = "ready" if zone.ready else "NOT READY"
    required = sum(1 for record in zone.not_ok if record.required)
    optional = len(zone.not_ok) - required
    parts = [f"{required} required not in place"] if required else []
    parts += [f"{optional} optional not in place"] if optional else []
    return (f"{zone.zone}: {state}, {zone.ok} of {zone.records} records ok"
            + (f" ({', '.join(parts)})" if parts else ""))


def _dkim_line(state: DkimState) -> str:
    if not state.signing:
        return f"{state.domain}: no key signs"
    keys = ", ".join(f"{key.selector} ({key.algorithm}, record {key.record})"
                     for key in state.signing)
    return f"{state.domain}: signed by {keys}"


def _queue_lines(queue: Queue, now: datetime) -> list[str]:
    lines = [f"{queue.active} active, {queue.deferred} deferred, {queue.hold} on hold"]
    oldest = queue.oldest_deferred
    if oldest is not None:
        lines.append(f"oldest deferred: {oldest.queue_id} for {oldest.recipient}, waiting "
                     f"{_span(now - oldest.arrival)}: {oldest.reason}")
    return lines


def _mailbox_lines(mailboxes: Mailboxes) -> list[str]:
    return [f"{mailboxes.count} mailbox(es), {format_size(mailboxes.total_bytes)} of mail"]


def _disk_lines(disk: Disk) -> list[str]:
    return [f"{format_size(disk.free_bytes)} free of {format_size(disk.total_bytes)} "
            f"({disk.free_share:.0%}) on {disk.path}"]


def _sending_lines(sending: Sending) -> list[str]:
    daily = [f"{maximum} {what}" for maximum, what in
             ((sending.limits.messages, "messages"),
              (sending.limits.first_time, "first-time recipients")) if maximum is not None]
    lines = [f"{' and '.join(daily)} a day per login" if daily else "off"]
    lines += [f"{held.login} HELD: {held.count} of {held.maximum} {held.limit} today, until "
              f"{human_time(held.until)} or `mailboot account release {held.login}`"
              for held in sending.held]
    if not sending.held and daily:
        lines[0] += "; none held"
    lines += [f"unreadable (counted from zero again): {line}" for line in sending.unreadable]
    return lines


def _reports_json(found: reports.Overview) -> dict[str, Any]:
    return {"days": found.days, "dmarc_reports": found.dmarc_reports, "messages": found.messages,
            "failed_dmarc": found.failed, "tls_reports": found.tls_reports,
            "tls_sessions": found.tls_sessions, "tls_failed": found.tls_failed,
            "called_out": [{"domain": s.domain, "day": s.day, "address": s.address,
                            "ptr": s.ptr, "failed": s.failed} for s in found.called_out]}


def _reports_lines(found: reports.Overview) -> list[str]:
    """`last 7 days: 4 DMARC reports, 172 messages as us, 4 failed DMARC; 2 TLS reports, 345
    sessions, 5 failed`, then each sender called out; `mailboot reports` has the rest."""
    if not found.dmarc_reports and not found.tls_reports:
        return [f"none in the last {found.days} days"]
    lines = [f"last {found.days} days: {found.dmarc_reports} DMARC reports, {found.messages} "
             f"messages as us, {found.failed} failed DMARC; {found.tls_reports} TLS reports, "
             f"{found.tls_sessions} sessions, {found.tls_failed} failed TLS "
             "(`mailboot reports`)"]
    return lines + [f"NOT OURS: {reports.called_out_text(s)}" for s in found.called_out]


def _outbound_lines(outbound: Outbound | None) -> list[str]:
    if outbound is None:
        return ["not checked (yet, or OUTBOUND_CHECK=off)"]
    what = f"the relay {outbound.via_relay}" if outbound.via_relay else "port 25"
    checked = "" if outbound.checked is None else f", checked {human_time(outbound.checked)}"
    return [f"{what}: {outbound.status} ({outbound.target}: {outbound.detail}){checked}"]


def _reputation_lines(found: Reputation | None) -> list[str]:
    if found is None:
        return ["not checked (yet, or REPUTATION_CHECK=off)"]
    checked = "" if found.checked is None else f"checked {human_time(found.checked)}: "
    by_verdict: dict[str, list[str]] = {}
    for finding in found.findings:
        by_verdict.setdefault(finding.verdict, []).append(
            f"{finding.subject} on {finding.blocklist}")
    lines = [f"{checked}" + ("; ".join(f"{verdict}: {', '.join(subjects)}"
                                       for verdict, subjects in by_verdict.items())
                             or "no blocklist asked (REPUTATION_CHECK=off)")]
    lines += [f"can't tell: {f.subject} on {f.blocklist}: {f.detail}" for f in found.findings
              if f.verdict == "can't tell"]
    if found.ipv6_address is not None:
        lines.append(f"IPv6 {found.ipv6_address}: " + (
            "mail leaves over IPv6 too (PTR confirmed)" if found.ipv6_sends else
            f"mail leaves over IPv4 only ({found.ipv6_detail or 'PTR not confirmed yet'})"))
    return lines


def _worker_lines(report: StatusReport) -> list[str]:
    recent = recent_problems(report)
    hours = f"{RECENT.total_seconds() / 3600:g} hours"
    run = report.worker
    lines = ["no run finished yet" if run is None else
             f"last run {human_time(run.ran)}" + ("" if run.next_run is None else
                                                 f", next at {human_time(run.next_run)}")]
    if not report.worker_problems:
        return [*lines, "no problems logged"]
    lines += [f"{len(recent)} problem(s) in the last {hours}; the last ones:"]
    lines += [f"{human_time(p.time)} {p.level} {p.message}"
              for p in report.worker_problems[-SHOWN_PROBLEMS:]]
    return lines


def _span(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    if seconds < 0:
        return "expired"
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s"
