"""The Sender Rewriting Scheme (SRS): a forwarder's envelope sender that passes SPF and still
routes a bounce home.

A message forwarded with its original envelope sender fails SPF at the next receiver (RFC 7208
§1.1.3 names forwarding as SPF's known cost): the forwarder is not among the sender domain's
hosts. SRS makes the forwarder's own domain the envelope sender, with the original address
folded into the local part and a keyed hash, so only the forwarder can turn a bounce to it
back into the original address (Shevek's "Sender Rewriting Scheme" paper, 2004, and its
reference implementations Mail::SRS and libsrs2; Debian's postsrsd uses libsrs2's format):

    SRS0=HHHH=TT=domain=local@forwarder      HHHH: hash, TT: day stamp
    SRS1=HHHH=first-forwarder==HHHH=TT=domain=local@forwarder

- HHHH: the first 4 characters of the base64 HMAC-SHA1, keyed with the secret, over the
  lower-cased timestamp, domain and local part (SRS0), or over the first forwarder's domain
  and the rest of its SRS0 local part (SRS1). Lower-cased because MTAs fold the case of
  addresses (Postfix looks its tables up in lower case); the check ignores case likewise.
- TT: the day (days since the epoch, modulo 1024) in two base32 characters, so a bounce
  address expires: older than `MAX_AGE_DAYS` (21, as libsrs2 and postsrsd) is refused.
- SRS1: a forwarder that forwards an SRS0 address again keeps the first forwarder's address
  intact and points the bounce at it (no chain grows with each hop), hashed by itself.

Pure functions of (address, secret, now): no files, no clock, no DNS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

SRS0, SRS1 = "SRS0", "SRS1"
SEPARATOR = "="  # after the tag, libsrs2 also accepts "+" and "-"; inside, always "="
TAG_SEPARATORS = "=+-"
HASH_LENGTH = 4
MAX_AGE_DAYS = 21
DAY = 86400
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
TIME_SLOTS = len(BASE32) ** 2  # two characters: 1024 days, then the stamps come round again


class InvalidAddress(ValueError):
    """An address that is not SRS, or whose hash or day stamp does not hold; the message says
    which."""


@dataclass(frozen=True)
class Address:
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def split(address: str) -> Address:
    """`local@domain` at the last @; raises InvalidAddress for anything else (an empty part)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddress(f"{address!r} is not an address of the form local@domain")
    return Address(local, domain)


def is_srs(local: str) -> bool:
    """An SRS0 or SRS1 local part (tag followed by one of libsrs2's separators)."""
    return (len(local) > 4 and local[:4].upper() in (SRS0, SRS1)
            and local[4] in TAG_SEPARATORS)


def timestamp(now: float) -> str:
    """Today's two-character day stamp."""
    day = int(now // DAY) % TIME_SLOTS
    return BASE32[day // len(BASE32)] + BASE32[day % len(BASE32)]


def timestamp_valid(stamp: str, now: float, max_age_days: int = MAX_AGE_DAYS) -> bool:
    """A stamp from today or the last `max_age_days` days (none from the future)."""
    stamp = stamp.upper()
    if len(stamp) != 2 or any(char not in BASE32 for char in stamp):
        return False
    then = BASE32.index(stamp[0]) * len(BASE32) + BASE32.index(stamp[1])
    today = int(now // DAY) % TIME_SLOTS
    age = (today - then) % TIME_SLOTS  # the stamps wrap around after 1024 days
    return age <= max_age_days


def hash_of(secret: bytes, *parts: str) -> str:
    """The keyed hash of `parts`, lower-cased first (libsrs2's srs_hash_create)."""
    mac = hmac.new(secret, digestmod=hashlib.sha1)
    for part in parts:
        mac.update(part.lower().encode())
    return base64.b64encode(mac.digest()).decode()[:HASH_LENGTH]


def hash_valid(secret: bytes, found: str, *parts: str) -> bool:
    """Compared without case: the address may have come back case-folded."""
    return (len(found) == HASH_LENGTH
            and hmac.compare_digest(hash_of(secret, *parts).lower(), found.lower()))


def forward(sender: str, srs_domain: str, secret: bytes, now: float) -> str:
    """The SRS address under `srs_domain` that stands for `sender` in a forwarded copy: SRS0
    for an ordinary address, SRS1 for an SRS0 or SRS1 address of another forwarder. Raises
    InvalidAddress for what is not local@domain."""
    original = split(sender)
    local = original.local
    if is_srs(local) and local[:4].upper() == SRS1:
        # Already SRS1: keep the first forwarder and its SRS0 part, hash them anew.
        parts = local[5:].split(SEPARATOR, 2)
        if len(parts) == 3 and all(parts[1:]):
            _, first, rest = parts
            return _srs1(first, rest, srs_domain, secret)
    if is_srs(local) and local[:4].upper() == SRS0:
        # The previous forwarder becomes the first; its SRS0 part after the tag stays intact.
        return _srs1(original.domain, local[4:], srs_domain, secret)
    stamp = timestamp(now)
    digest = hash_of(secret, stamp, original.domain, local)
    return f"{SRS0}{SEPARATOR}{digest}={stamp}={original.domain}={local}@{srs_domain}"


def _srs1(first: str, rest: str, srs_domain: str, secret: bytes) -> str:
    digest = hash_of(secret, first, rest)
    return f"{SRS1}{SEPARATOR}{digest}={first}={rest}@{srs_domain}"


def reverse(address: str, secret: bytes, now: float, max_age_days: int = MAX_AGE_DAYS) -> str:
    """The address an SRS address made with `secret` stands for: the original sender for
    SRS0, the first forwarder's SRS0 address for SRS1. Raises InvalidAddress, saying why,
    when it is not SRS, the hash does not hold, or (SRS0) the day stamp is too old."""
    local = split(address).local
    if not is_srs(local):
        raise InvalidAddress(f"{address!r} is not an SRS address")
    if local[:4].upper() == SRS1:
        parts = local[5:].split(SEPARATOR, 2)
        if len(parts) != 3 or not all(parts):
            raise InvalidAddress(f"{address!r} is not a well-formed SRS1 address")
        digest, first, rest = parts
        if not hash_valid(secret, digest, first, rest):
            raise InvalidAddress(f"{address!r}: the hash does not hold (not made here)")
        return f"{SRS0}{rest}@{first}"
    parts = local[5:].split(SEPARATOR, 3)
    if len(parts) != 4 or not all(parts):
        raise InvalidAddress(f"{address!r} is not a well-formed SRS0 address")
    digest, stamp, domain, original = parts
    if not hash_valid(secret, digest, stamp, domain, original):
        raise InvalidAddress(f"{address!r}: the hash does not hold (not made here)")
    if not timestamp_valid(stamp, now, max_age_days):
        raise InvalidAddress(f"{address!r}: made more than {max_age_days} days ago, or not "
                             "by a clock like ours")
    return f"{original}@{domain}"
