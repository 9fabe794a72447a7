"""The metrics page: Prometheus's text exposition format, and the families read from each source.

The format (Prometheus text format 0.0.4, what `promtool check metrics` reads): per family one
`# HELP` and one `# TYPE` line, then its samples `name{label="value",...} value`. A name appears
once on a page. Label values escape `\\`, `"` and the line feed; HELP text `\\` and the line
feed. A counter's name ends in `_total` (promtool's lint).

The sources, each read when a scrape comes, never kept:
- Dovecot's own page (its stats service's OpenMetrics listener, on loopback), passed through:
  `from_openmetrics` turns OpenMetrics into the text format (a counter `x` with sample
  `x_total` becomes family `x_total`, `info` becomes a gauge, `# UNIT`, `_created` and `# EOF`
  go) and puts `dovecot_` before any name without it;
- Postfix's queue: `postqueue -j` counted per queue (`queue_families`);
- Postfix's log: recipients delivered, deferred, bounced and refusals counted by the supervisor
  as the log passes (`base.maillog`, `log_families`);
- the certificates in use: their expiry (`certificate_families`);
- the worker's state file: its last and next run, and the DNS watcher's status of each record
  (`worker_families`);
- our blocklist check's state file (`blocklist_families`).
A source that can't be read leaves its families out and says so in `mailboot_source_up`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mailboot.base.maillog import RESULTS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("counter", "gauge", "histogram", "summary", "untyped")
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # no ":" (kept for recording rules)
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    labels: Labels
    value: float
    suffix: str = ""  # a histogram's or summary's `_bucket`, `_sum`, `_count`


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # one of KINDS
    help: str
    samples: tuple[Sample, ...]

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or self.kind not in KINDS:
            raise ValueError(f"not a metric family: {self.name!r} of type {self.kind!r}")
        for sample in self.samples:
            for label, _ in sample.labels:
                if not _LABEL.fullmatch(label) or label.startswith("__"):
                    raise ValueError(f"{self.name}: {label!r} is not a label name")


def family(name: str, kind: str, help_text: str,
           samples: Iterable[tuple[Mapping[str, str], float]]) -> Family:
    """A family from (labels, value) pairs; a label set met again is left out (the first
    counts: a page must not say two values for one series)."""
    seen: set[Labels] = set()
    kept = []
    for labels, value in samples:
        key = tuple(sorted(labels.items()))
        if key not in seen:
            seen.add(key)
            kept.append(Sample(tuple(labels.items()), value))
    return Family(name, kind, help_text, tuple(kept))


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    """A sample value: whole numbers without a decimal point, NaN and +Inf/-Inf as spelt."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(families: Sequence[Family]) -> str:
    """The page. Raises ValueError when a name (of a family or a sample) comes twice."""
    lines: list[str] = []
    names: set[str] = set()
    for fam in families:
        series = {fam.name + sample.suffix for sample in fam.samples} | {fam.name}
        if series & names:
            raise ValueError(f"{sorted(series & names)[0]} is on the page twice")
        names |= series
        lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for sample in fam.samples:
            labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in sample.labels)
            lines.append(f"{fam.name}{sample.suffix}{{{labels}}} {number(sample.value)}"
                         if labels else f"{fam.name}{sample.suffix} {number(sample.value)}")
    return "\n".join(lines) + "\n"


def without_clashes(families: Iterable[Family]) -> list[Family]:
    """The families whose names (with their samples') no earlier family took."""
    kept: list[Family] = []
    names: set[str] = set()
    for fam in families:
        series = {fam.name + sample.suffix for sample in fam.samples} | {fam.name}
        if not series & names:
            kept.append(fam)
            names |= series
    return kept


# --- Dovecot's OpenMetrics -----------------------------------------------------------------------

# OpenMetrics 1.0 §"Metric types": the sample suffixes each type's samples may carry. And
# Dovecot 2.4.1's own: a metric with group_by writes its counter's ungrouped sample as `_count`
# and its duration's as `_sum` (seen: `dovecot_imap_command_count 0` under `# TYPE
# dovecot_imap_command counter`); both are the counter's value.
_SUFFIXES = {"counter": ("_total", "_created", "_count", "_sum"), "gauge": ("",), "unknown": ("",),
             "info": ("_info",), "stateset": ("",), "histogram": ("_bucket", "_sum", "_count",
                                                                  "_created"),
             "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
             "summary": ("", "_sum", "_count", "_created")}
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s.*)?")
_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = re.compile(r"\\(.)")


def _unescape(text: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def parse_labels(text: str) -> Labels:
    """`a="1",b="x\\"y"` -> (("a", "1"), ("b", 'x"y')); raises ValueError for anything else."""
    labels, position = [], 0
    while position < len(text):
        match = _PAIR.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"bad labels: {text[:200]!r}")
        labels.append((match.group(1), _unescape(match.group(2))))
        position = match.end()
    return tuple(labels)


@dataclass
class _Open:
    """A family while its lines are read (mutable; never leaves `from_openmetrics`)."""

    name: str
    kind: str = "unknown"
    help: str = ""
    samples: list[tuple[str, Labels, float]] | None = None


def from_openmetrics(text: str, prefix: str = "dovecot_") -> list[Family]:
    """Dovecot's OpenMetrics page as families of the text format, each name starting with
    `prefix`. A sample of no declared family is left out. Raises ValueError for a line that
    is neither metadata nor a sample."""
    opened: dict[str, _Open] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            if line.strip() == "# EOF":
                break
            _metadata(line, opened)
            continue
        match = _SAMPLE.fullmatch(line.strip())
        if match is None:
            raise ValueError(f"not a sample: {line[:200]!r}")
        name, labels, value = match.group(1), parse_labels(match.group(2) or ""), match.group(3)
        owner = _owner(name, opened)
        if owner is None:
            continue  # of no family declared before it: without a type, it can't be passed on
        suffix = name[len(owner.name):]
        if owner.samples is None:
            owner.samples = []
        owner.samples.append((suffix, labels, float(value)))
    return [converted for fam in opened.values()
            if (converted := _convert(fam, prefix)) is not None]


def _metadata(line: str, opened: dict[str, _Open]) -> None:
    parts = line.split(" ", 3)
    if len(parts) < 3 or parts[1] not in ("HELP", "TYPE", "UNIT"):
        return  # a comment
    name = parts[2]
    fam = opened.setdefault(name, _Open(name))
    rest = parts[3] if len(parts) > 3 else ""
    if parts[1] == "HELP":
        fam.help = _unescape(rest)
    elif parts[1] == "TYPE":
        fam.kind = rest.strip()


def _owner(name: str, opened: Mapping[str, _Open]) -> _Open | None:
    for suffix in ("", "_total", "_created", "_info", "_bucket", "_sum", "_count", "_gsum",
                   "_gcount"):
        if suffix and not name.endswith(suffix):
            continue
        fam = opened.get(name.removesuffix(suffix) if suffix else name)
        if fam is not None and suffix in _SUFFIXES.get(fam.kind, ("",)):
            return fam
    return None


def _convert(fam: _Open, prefix: str) -> Family | None:
    """One OpenMetrics family in the text format's terms; None for one it has no type for."""
    base = fam.name if fam.name.startswith(prefix) else prefix + fam.name
    samples = fam.samples or []
    help_text = fam.help or f"Dovecot's {fam.name}"

    def kept(*suffixes: str) -> tuple[Sample, ...]:
        return tuple(Sample(labels, value, suffix) for suffix, labels, value in samples
                     if suffix in suffixes)

    if fam.kind == "counter":
        plain = tuple(Sample(s.labels, s.value) for s in kept("_total", "_count", "_sum"))
        return Family(base + "_total", "counter", help_text, plain)
    if fam.kind == "info":
        plain = tuple(Sample(s.labels, s.value) for s in kept("_info"))
        return Family(base + "_info", "gauge", help_text, plain)
    if fam.kind in ("gauge", "stateset"):
        return Family(base, "gauge", help_text, kept(""))
    if fam.kind == "unknown":
        return Family(base, "untyped", help_text, kept(""))
    if fam.kind == "histogram":
        return Family(base, "histogram", help_text, kept("_bucket", "_sum", "_count"))
    if fam.kind == "summary":
        return Family(base, "summary", help_text, kept("", "_sum", "_count"))
    return None  # gaugehistogram: no such type in the text format


# --- our own sources -----------------------------------------------------------------------------


def count_queues(postqueue_json: str) -> dict[str, int]:
    """Messages per queue in `postqueue -j` output (postqueue(1): maildrop, incoming, active,
    deferred, hold); raises ValueError for a line that is not a queued message."""
    import json

    counts = dict.fromkeys(("maildrop", "incoming", "active", "deferred", "hold"), 0)
    for line in postqueue_json.splitlines():
        if not line.strip():
            continue
        message = json.loads(line)
        queue = message.get("queue_name") if isinstance(message, dict) else None
        if not isinstance(queue, str):
            raise ValueError(f"not a queued message: {line[:200]}")
        counts[queue] = counts.get(queue, 0) + 1
    return counts


def queue_families(counts: Mapping[str, int]) -> list[Family]:
    return [family("mailboot_postfix_queue_messages", "gauge",
                   "Messages in Postfix's queues now (postqueue -j), per queue.",
                   (({"queue": queue}, count) for queue, count in counts.items()))]


def log_families(since: float, counts: Mapping[str, int]) -> list[Family]:
    return [
        family("mailboot_postfix_recipients_total", "counter",
               "Recipients Postfix logged as delivered (status=sent), deferred, bounced "
               "(bounced or expired), and refusals (smtpd, postscreen or milter reject), "
               "since the container started.",
               (({"result": result}, counts.get(result, 0)) for result in RESULTS)),
        family("mailboot_postfix_log_counted_since_timestamp_seconds", "gauge",
               "When counting Postfix's log lines began (the container's start).",
               [({}, since)]),
    ]


def certificate_families(certificates: Sequence[tuple[str, str, datetime]],
                         now: datetime) -> list[Family]:
    """(slot directory, source, not after) of each certificate in use."""
    return [
        family("mailboot_certificate_expiry_timestamp_seconds", "gauge",
               "When each certificate the daemons serve expires (notAfter).",
               (({"slot": slot, "source": source}, not_after.timestamp())
                for slot, source, not_after in certificates)),
        family("mailboot_certificate_expires_in_seconds", "gauge",
               "Seconds until each certificate the daemons serve expires (negative: expired).",
               (({"slot": slot, "source": source}, (not_after - now).total_seconds())
                for slot, source, not_after in certificates)),
    ]


def not_after(pem: bytes) -> datetime:
    """The notAfter of the first certificate in a PEM chain, read from its DER (RFC 5280 §4.1:
    Certificate, then tbsCertificate, then validity) without loading a crypto library (about
    9 MiB that every scrape's process would carry). Raises ValueError for anything else."""
    import base64
    import binascii

    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError("no PEM certificate")
    try:
        der = base64.b64decode(b"".join(pem[start + len(begin):stop].split()), validate=True)
    except binascii.Error as error:
        raise ValueError(f"bad PEM certificate: {error}") from None
    certificate = _der_content(der, 0, 0x30)[0]
    tbs = _der_content(der, certificate, 0x30)[0]
    position = tbs
    if der[position:position + 1] == b"\xa0":  # [0] EXPLICIT version
        position = _der_skip(der, position)
    position = _der_skip(der, position)  # serialNumber
    position = _der_skip(der, position)  # signature AlgorithmIdentifier
    position = _der_skip(der, position)  # issuer
    validity = _der_content(der, position, 0x30)[0]
    after = _der_skip(der, validity)  # past notBefore
    tag = der[after] if after < len(der) else -1
    start, length = _der_content(der, after, tag)
    text = der[start:start + length].decode("ascii", "replace")
    # RFC 5280 §4.1.2.5.1: UTCTime YYMMDDHHMMSSZ, 19YY from 50; §4.1.2.5.2: GeneralizedTime.
    if tag == 0x17 and re.fullmatch(r"\d{12}Z", text):
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif not (tag == 0x18 and re.fullmatch(r"\d{14}Z", text)):
        raise ValueError(f"notAfter is no UTCTime or GeneralizedTime: {text!r}")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def _der_content(der: bytes, position: int, tag: int) -> tuple[int, int]:
    """Where the content of the DER element at `position` starts, and its length; raises
    ValueError unless the element has `tag` and fits (X.690 §8.1: tag, length, content)."""
    if position + 2 > len(der) or der[position] != tag:
        raise ValueError(f"not a certificate: expected tag {tag:#x} at byte {position}")
    first = der[position + 1]
    start = position + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or start + count > len(der):
            raise ValueError("not a certificate: bad length")
        length = int.from_bytes(der[start:start + count], "big")
        start += count
    if start + length > len(der):
        raise ValueError("not a certificate: truncated")
    return start, length


def _der_skip(der: bytes, position: int) -> int:
    """The position after the DER element at `position`."""
    if position >= len(der):
        raise ValueError("not a certificate: truncated")
    start, length = _der_content(der, position, der[position])
    return start + length


RECORD_STATUSES = ("ok", "missing", "wrong", "unknown")


def worker_families(state: Mapping[str, object]) -> list[Family]:
    """The worker's state file (`worker.tasks.state_json`): its runs, and the DNS watcher's
    last status of each record (when DNS_CHECK is not off). Raises ValueError when the file
    is not such a state."""
    ran, next_run = state.get("ran"), state.get("next_run")
    if not isinstance(ran, int | float):
        raise ValueError("the worker's state has no time of its last run")
    families = [family("mailboot_worker_last_run_timestamp_seconds", "gauge",
                       "When the worker's last run ended.", [({}, float(ran))])]
    if isinstance(next_run, int | float):
        families.append(family("mailboot_worker_next_run_timestamp_seconds", "gauge",
                               "When the worker runs next (sooner when a watched file changes).",
                               [({}, float(next_run))]))
    tasks = state.get("tasks")
    dns = tasks.get("dns") if isinstance(tasks, dict) else None
    watcher = dns.get("state", {}).get("watcher") if isinstance(dns, dict) else None
    if isinstance(watcher, dict):
        families += record_families(watcher)
    return families


def record_families(watcher: Mapping[str, object]) -> list[Family]:
    """The DNS watcher's state (`records.watch.DnsWatcher.state`): each record's status as a
    set of 0/1 series, one per status, and READY."""
    previous = watcher.get("previous")
    if not isinstance(previous, list):
        raise ValueError("the DNS watcher's state has no records")
    samples: list[tuple[dict[str, str], float]] = []
    for entry in previous:
        if not (isinstance(entry, list) and len(entry) == 4):
            raise ValueError(f"not a record's status: {entry!r}")
        name, kind, value, status = (str(part) if part is not None else "" for part in entry)
        labels = {"name": name, "kind": kind, "value": value}
        samples += [({**labels, "status": each}, float(each == status))
                    for each in RECORD_STATUSES]
    return [
        family("mailboot_dns_record_status", "gauge",
               "Each record to publish, as the worker's DNS check last found it at the zone's "
               "own name servers: 1 for its status (ok, missing, wrong, unknown), 0 for others.",
               samples),
        family("mailboot_dns_records_ready", "gauge",
               "1 when every required record is in place (READY), else 0.",
               [({}, float(watcher.get("ready") is True))]),
    ]


BLOCKLIST_VERDICTS = {"listed": "listed", "clean": "clean", "can't tell": "unknown"}


def blocklist_families(state: Mapping[str, object]) -> list[Family]:
    """Our blocklist check's state file (`network.reputation`): per list and address or
    domain, 1 for its verdict (listed, clean, unknown), 0 for the others; and when it ran.
    Raises ValueError when the file is not such a state."""
    findings = state.get("findings")
    if not isinstance(findings, list):
        raise ValueError("the blocklist state has no findings")
    samples: list[tuple[dict[str, str], float]] = []
    for finding in findings:
        if not isinstance(finding, dict):
            raise ValueError(f"not a finding: {finding!r}")
        verdict = BLOCKLIST_VERDICTS.get(str(finding.get("verdict")), "unknown")
        labels = {"list": str(finding.get("blocklist", "")),
                  "subject": str(finding.get("subject", ""))}
        samples += [({**labels, "verdict": each}, float(each == verdict))
                    for each in BLOCKLIST_VERDICTS.values()]
    families = [family("mailboot_blocklist_verdict", "gauge",
                       "Our public addresses and domains on the blocklists the worker asks: 1 "
                       "for the last verdict (listed, clean, unknown), 0 for the others.",
                       samples)]
    checked = state.get("checked")
    if isinstance(checked, str):
        try:
            when = datetime.fromisoformat(checked).timestamp()
        except ValueError:
            return families
        families.append(family("mailboot_blocklist_checked_timestamp_seconds", "gauge",
                               "When the worker last asked the blocklists.", [({}, when)]))
    return families


def source_family(up: Mapping[str, bool]) -> Family:
    return family("mailboot_source_up", "gauge",
                  "1 when this scrape could read the source (dovecot, postfix_queue, "
                  "postfix_log, certificates, worker, blocklists), else 0: its families are "
                  "missing then.", (({"source": name}, float(ok)) for name, ok in up.items()))
