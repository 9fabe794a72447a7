"""ACME Renewal Information (RFC 9773): the CA's suggested renewal time, remembered on disk.

The suggestion is asked at most every `REFRESH` and kept in DATA_DIR/tls, so a restart with a
valid certificate sends the CA no request at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from mailboot.files import write_atomically

REFRESH = timedelta(hours=6)  # how often to ask the CA's renewal info (RFC 9773 §4.3)


@dataclass(frozen=True)
class Memo:
    """What the CA suggested for one certificate (by its directory), and when we asked."""

    certificate: str
    checked: datetime
    suggested: datetime | None

    def is_fresh_for(self, certificate: str, now: datetime) -> bool:
        return self.certificate == certificate and now - self.checked < REFRESH


def read_memo(path: Path) -> Memo | None:
    """The memo, or None when there is none or it can't be read (then the CA is asked again)."""
    try:
        saved = json.loads(path.read_text())
        return Memo(saved["directory"], datetime.fromisoformat(saved["checked"]),
                    datetime.fromisoformat(saved["suggested"]) if saved["suggested"] else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_memo(path: Path, memo: Memo) -> None:
    content = json.dumps({"directory": memo.certificate, "checked": memo.checked.isoformat(),
                          "suggested": memo.suggested.isoformat() if memo.suggested else None})
    write_atomically(path, content.encode(), mode=0o644)
