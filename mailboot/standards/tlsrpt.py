"""SMTP TLS reports (RFC 8460 §4): the JSON sending servers mail to our TLS-RPT `rua`, read into
typed data.

A report says, per policy of ours the sender applied (`sts`, `tlsa` or `no-policy-found`, for a
policy domain), how many sessions reached us with TLS and how many failed, and why
(`failure-details`: the result type, e.g. `certificate-expired`, `starttls-not-supported`,
`validation-failure`, with the sending and receiving addresses and a count). The caller bounds
the size (`inbound.reports`); nesting is bounded here (the json module recurses). Standard
library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_POLICIES = 1000
MAX_FAILURES = 10_000


class TlsReportError(ValueError):
    """The report can't be read: what is wrong with it, in words for the log."""


@dataclass(frozen=True)
class Failure:
    """Sessions that failed alike (RFC 8460 §4.3, failure-details)."""

    result_type: str
    sending_ip: str
    receiving_mx: str
    count: int


@dataclass(frozen=True)
class PolicyResult:
    """The sessions of one report for one policy of one of our domains."""

    policy_type: str
    domain: str
    successful: int
    failed: int
    failures: tuple[Failure, ...]


@dataclass(frozen=True)
class TlsReport:
    organization: str
    report_id: str
    begin: datetime
    end: datetime
    policies: tuple[PolicyResult, ...]


def parse_report(data: bytes) -> TlsReport:
    """A report from its JSON (UTF-8, RFC 8460 §4). Raises TlsReportError when it is no JSON or
    lacks what §4.4 requires."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise TlsReportError(f"it is not JSON in UTF-8 ({error})") from None
    if not isinstance(document, dict):
        raise TlsReportError("it is not a JSON object (RFC 8460 §4.4)")
    dates = _object(document.get("date-range"), "date-range")
    policies = document.get("policies")
    if not isinstance(policies, list) or len(policies) > MAX_POLICIES:
        raise TlsReportError(f"its policies are not a list of at most {MAX_POLICIES}")
    return TlsReport(_text(document, "organization-name"), _text(document, "report-id"),
                     _time(dates, "start-datetime"), _time(dates, "end-datetime"),
                     tuple(_policy(_object(p, "policies[]")) for p in policies))


def _policy(entry: Mapping[str, Any]) -> PolicyResult:
    policy = _object(entry.get("policy"), "policy")
    summary = _object(entry.get("summary"), "summary")
    details = entry.get("failure-details", [])
    if not isinstance(details, list) or len(details) > MAX_FAILURES:
        raise TlsReportError(f"its failure-details are not a list of at most {MAX_FAILURES}")
    failures = tuple(
        Failure(_text(d, "result-type"), str(d.get("sending-mta-ip", "")),
                str(d.get("receiving-mx-hostname", "")).rstrip(".").lower(),
                _count(d, "failed-session-count"))
        for d in (_object(item, "failure-details[]") for item in details))
    return PolicyResult(_text(policy, "policy-type"),
                        _text(policy, "policy-domain").rstrip(".").lower(),
                        _count(summary, "total-successful-session-count"),
                        _count(summary, "total-failure-session-count"), failures)


def _object(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TlsReportError(f"its {name} is missing or not an object (RFC 8460 §4.4)")
    return value


def _text(entry: Mapping[str, Any], name: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        raise TlsReportError(f"its {name} is missing or not a short text (RFC 8460 §4.4)")
    return value.strip()


def _count(entry: Mapping[str, Any], name: str) -> int:
    value = entry.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TlsReportError(f"its {name} is {value!r}, not a count (RFC 8460 §4.4)")
    return value


def _time(entry: Mapping[str, Any], name: str) -> datetime:
    """RFC 3339 date-time (RFC 8460 §4.4), e.g. 2026-12-04T00:00:00Z."""
    text = _text(entry, name)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise TlsReportError(f"its {name} {text!r} is not an RFC 3339 date-time") from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
