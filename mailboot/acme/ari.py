"""ACME Renewal Information (RFC 9773): the CA's suggested renewal time, remembered on disk.

The suggestion is asked at most every `REFRESH` and kept in DATA_DIR/tls, so a restart with a
valid certificate sends the CA no request at all. acme 5.x asks the CA itself
(`ClientV2.renewal_time`); Debian trixie's acme 4.0, which the image ships, can't, so `ask_ca`
does it with that library's own network client.
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from mailboot.base.files import write_atomically
from mailboot.base.formats import machine_time

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
    content = json.dumps({"directory": memo.certificate, "checked": machine_time(memo.checked),
                          "suggested": machine_time(memo.suggested) if memo.suggested else None})
    write_atomically(path, content.encode(), mode=0o644)


# --- asking the CA where the acme library can't (Debian trixie's acme 4.0) ---------------------


@dataclass(frozen=True)
class Window:
    """RFC 9773 §4.2 suggestedWindow: renew at a moment between start and end."""

    start: datetime
    end: datetime


def certificate_id(certificate: x509.Certificate) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial's DER content octets).

    Raises ValueError when the certificate has no Authority Key Identifier (a CA's certificates
    always have one, RFC 5280 §4.2.1.1).
    """
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        raise ValueError("the certificate has no Authority Key Identifier") from None
    key_id = aki.value.key_identifier
    if key_id is None:
        raise ValueError("the certificate's Authority Key Identifier has no key identifier")
    serial = certificate.serial_number
    # DER INTEGER: minimal two's complement, so a leading 0x00 when the top bit is set.
    serial_octets = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return f"{_b64url(key_id)}.{_b64url(serial_octets)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def parse_window(body: object) -> Window:
    """The window of a renewalInfo response; raises ValueError when it is malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("suggestedWindow"), dict):
        raise ValueError("no suggestedWindow in the renewal information")
    window = body["suggestedWindow"]
    start, end = _rfc3339(window.get("start")), _rfc3339(window.get("end"))
    if end < start:  # RFC 9773 §4.2: the client MUST treat such a window as invalid
        raise ValueError("the suggested window ends before it starts")
    return Window(start, end)


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def _rfc3339(value: object) -> datetime:
    """RFC 3339 times as CAs write them (Go's nanoseconds and `Z` included), in UTC."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a time")
    text = _FRACTION.sub(r"\1", value.strip().replace("z", "Z").replace("Z", "+00:00"), count=1)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return moment.astimezone(UTC)


def moment_in(window: Window, fraction: float) -> datetime:
    """RFC 9773 §4.2: a moment chosen uniformly at random in the window (fraction in [0, 1])."""
    return window.start + (window.end - window.start) * fraction


def ask_ca(net: Any, renewal_info_url: str, chain_pem: bytes,
           fraction: Callable[[], float] = random.random) -> datetime:
    """GET the certificate's renewalInfo resource (unauthenticated, RFC 9773 §4.1) with the
    acme library's own network client; raises ValueError on an answer that can't be used."""
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    url = renewal_info_url.rstrip("/") + "/" + certificate_id(leaf)
    response = net.get(url, content_type="application/json")
    return moment_in(parse_window(response.json()), fraction())
