"""Postfix's log lines, counted: recipients delivered, deferred and bounced, and refusals.

Postfix keeps no counters of its own; its log is the one record of what happened to each
recipient. With metrics on (METRICS_PORT), the supervisor passes Postfix's standard output (where
postlogd writes the log, `maillog_file = /dev/stdout`) through unchanged and counts the lines on
the way (`Tally`); the metrics child reads the counts from a small file in the run directory
(`read_counts`). The counts start at zero with the container, as Prometheus expects of a counter
that restarts with its process.

What counts (postfix-logs(7) wording, one line per recipient):
- `delivered`: `status=sent` (smtp, lmtp, local, virtual, pipe);
- `deferred`: `status=deferred` (tried again later);
- `bounced`: `status=bounced`, and `status=expired` (given up after maximal_queue_lifetime);
- `refused`: a `reject:` of smtpd or postscreen (`NOQUEUE: reject: RCPT ...`, `<id>: reject:`)
  or a milter's (`milter-reject:`): mail not taken at all.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from mailboot.base.files import write_atomically

RESULTS = ("delivered", "deferred", "bounced", "refused")
# The delivery agents write ", status=<word> (" after dsn=...; a header_checks WARN line
# carries a message's own text, which could hold "status=sent", but never after ", dsn=".
_STATUS = re.compile(rb", dsn=\d\.\d{1,3}\.\d{1,3}, status=(sent|deferred|bounced|expired) ")
_REFUSAL = re.compile(rb": (?:milter-)?reject: ")
_BY_STATUS = {b"sent": "delivered", b"deferred": "deferred", b"bounced": "bounced",
              b"expired": "bounced"}
# Only Postfix's own programs' lines: "postfix/smtp[123]: ", "postfix/submission/smtpd[9]: ".
_PROGRAM = re.compile(rb"(?:^|\s)postfix(?:/[\w.-]+)+\[\d+\]: ")
WRITE_EVERY = 1.0  # seconds: at most one write of the counts file per second


def outcome(line: bytes) -> str | None:
    """What a log line says happened (one of RESULTS), or None when it says none of them."""
    program = _PROGRAM.search(line)
    if program is None:
        return None
    rest = line[program.end():]
    status = _STATUS.search(rest)
    if status is not None:
        return _BY_STATUS[status.group(1)]
    return "refused" if _REFUSAL.search(rest) else None


def counts_json(counts: dict[str, int], since: float) -> str:
    return json.dumps({"since": since, "counts": {name: counts[name] for name in RESULTS}}) + "\n"


def read_counts(path: Path) -> tuple[float, dict[str, int]] | None:
    """When counting started and the counts; None when the file is missing or unreadable."""
    try:
        saved = json.loads(path.read_text())
        since, counts = float(saved["since"]), saved["counts"]
        return since, {name: int(counts[name]) for name in RESULTS}
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Tally:
    """Counts log lines as they pass and keeps the counts file at most WRITE_EVERY behind
    (real state: the counts, the partial last line)."""

    def __init__(self, path: Path, since: float | None = None) -> None:
        self.path = path
        self.since = time.time() if since is None else since
        self.counts = dict.fromkeys(RESULTS, 0)
        self.partial = b""
        self.written_at = float("-inf")  # the first save writes at once
        self.dirty = True  # the file is written once at the start: zeros, not "no file"

    def feed(self, data: bytes) -> None:
        """Count the complete lines in `data` (a line may end in the next call's data)."""
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()[-4096:]  # a line longer than that counts as nothing
        for line in lines:
            result = outcome(line)
            if result is not None:
                self.counts[result] += 1
                self.dirty = True

    def save(self, now: float, force: bool = False) -> None:
        """Write the counts file when they changed and WRITE_EVERY has passed (or `force`).
        An unwritable file is skipped: only the metrics miss it."""
        if not self.dirty or (not force and now - self.written_at < WRITE_EVERY):
            return
        try:
            write_atomically(self.path, counts_json(self.counts, self.since).encode(),
                             mode=0o644, sync=False)
        except OSError:
            return
        self.dirty, self.written_at = False, now
