"""The certificate's private keys, kept across renewals so that a DANE TLSA record stays true.

Layout below DATA_DIR/tls/keys:
    current.pem   the key every certificate is ordered with (and the temporary one is made with)
    next.pem      the key a rollover switches to; its TLSA record is published ahead of time
    rollover      a requested rollover: the TLSA value of the key it switches to
    rollover-seen since when that key's TLSA record has been seen served, without a break (the
                  switch waits the record's TTL after that: `rotation.gate`)
    retiring      after a switch: the TLSA value of the replaced key, until the new one is served
    retired/      keys a rollover replaced

The TLSA records are DANE-EE, SubjectPublicKeyInfo, SHA-256 (`3 1 1`, RFC 7671 §5.1, RFC 7672
§3.1.1): they name the key, not the certificate, so a renewal with the same key changes nothing
in DNS. Publishing the next key's record before it is used is RFC 7671 §8.1's "current + next":
a rollover never leaves the served key without a matching record.

Keys are created 0600 and never overwritten: a new file is written under a temporary name and
linked into place (link(2) fails rather than replace an existing file).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from mailboot.base.errors import StateError
from mailboot.base.files import create_once, fsync_directory, write_atomically
from mailboot.base.paths import Paths

CURRENT = "current.pem"
NEXT = "next.pem"
REQUEST = "rollover"
SEEN = "rollover-seen"
RETIRING = "retiring"
RETIRED = "retired"


@dataclass(frozen=True)
class TlsaKeys:
    """The TLSA values (`3 1 1 <hex>`) of the key in use and of the next one."""

    current: str
    next: str


def normal_tlsa(value: str) -> str:
    """`3 1 1 ABCD EF01` -> `3 1 1 abcdef01`: the hex may be split and in either case."""
    fields = value.split()
    return " ".join([*fields[:3], "".join(fields[3:]).lower()])


def tlsa_value(public_key: PublicKeyTypes) -> str:
    """`3 1 1 <SHA-256 of the DER SubjectPublicKeyInfo>`: DANE-EE(3), SPKI(1), SHA2-256(1)."""
    spki = public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"3 1 1 {hashlib.sha256(spki).hexdigest()}"


def key_tlsa(key_pem: bytes) -> str:
    """The TLSA value of a PEM private key; raises StateError when it is unreadable."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise StateError(f"a kept certificate key is unreadable ({error}); move "
                         "DATA_DIR/tls/keys away to start with new keys") from None
    return tlsa_value(key.public_key())


def ensure_keys(paths: Paths, adopt: bytes | None = None) -> TlsaKeys:
    """Create current.pem (from `adopt`, the key of a certificate already served, when given)
    and next.pem where missing; return their TLSA values. Raises StateError on write errors."""
    directory = paths.tls_keys_dir
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_once(directory / CURRENT, adopt)
        _create_once(directory / NEXT, None)
        return TlsaKeys(key_tlsa((directory / CURRENT).read_bytes()),
                        key_tlsa((directory / NEXT).read_bytes()))
    except OSError as error:
        raise StateError(f"can't keep the certificate keys in {directory}: {error.strerror}. "
                         "Make DATA_DIR writable by the container.") from error


def current_key(paths: Paths) -> bytes:
    """The PEM key certificates are ordered with (created on first use)."""
    ensure_keys(paths)
    return (paths.tls_keys_dir / CURRENT).read_bytes()


def is_current_key(paths: Paths, key_pem: bytes) -> bool:
    """Whether `key_pem` is the kept current key; True when no key is kept (nothing to follow)."""
    try:
        kept = (paths.tls_keys_dir / CURRENT).read_bytes()
    except FileNotFoundError:
        return True
    return key_tlsa(kept) == key_tlsa(key_pem)


def _create_once(path: Path, content: bytes | None) -> None:
    if path.exists():
        return
    if content is None:
        content = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
    create_once(path, content, mode=0o600)  # never replaces a key another process made meanwhile


# --- rollover --------------------------------------------------------------------------------


def request_rollover(paths: Paths) -> TlsaKeys:
    """Ask the worker to switch to the next key once its TLSA record is served; idempotent."""
    keys = ensure_keys(paths)
    write_atomically(paths.tls_keys_dir / REQUEST, (keys.next + "\n").encode(), mode=0o600)
    return keys


def requested(paths: Paths) -> str | None:
    """The TLSA value of the key a requested rollover switches to, or None."""
    return _read_value(paths.tls_keys_dir / REQUEST)


def retiring(paths: Paths) -> str | None:
    """The TLSA value of the key a rollover replaced, until the new key is served."""
    return _read_value(paths.tls_keys_dir / RETIRING)


def switch(paths: Paths, now: datetime) -> str:
    """Make the next key current: the current one moves to retired/, a new next key is made and
    the request is done. Returns the replaced key's TLSA value. Each step is atomic, and one
    interrupted is finished by calling again (the request names the key to switch to)."""
    directory = paths.tls_keys_dir
    target = requested(paths)
    current = directory / CURRENT
    old = key_tlsa(current.read_bytes())
    if target is not None and old != target:
        (directory / RETIRED).mkdir(mode=0o700, exist_ok=True)
        retired = directory / RETIRED / f"{now:%Y%m%d%H%M%S}-{old.split()[-1][:16]}.pem"
        if not retired.exists():
            os.link(current, retired)
        write_atomically(directory / RETIRING, (old + "\n").encode(), mode=0o600)
        (directory / NEXT).replace(current)  # the one moment the kept key changes
        fsync_directory(directory)
    ensure_keys(paths)
    (directory / REQUEST).unlink(missing_ok=True)
    (directory / SEEN).unlink(missing_ok=True)
    return retiring(paths) or old


def rollover_seen(paths: Paths) -> tuple[str, datetime] | None:
    """(TLSA value, since when) of the requested key's record as last seen served; None when
    not seen, or when the file can't be read (the wait then starts over: the safe side)."""
    try:
        kept = json.loads((paths.tls_keys_dir / SEEN).read_text())
        since = datetime.fromisoformat(kept["since"])
        if since.tzinfo is None or not isinstance(kept["value"], str):
            return None
        return kept["value"], since
    except (OSError, ValueError, KeyError, TypeError):
        return None


def note_rollover_seen(paths: Paths, seen: tuple[str, datetime] | None) -> None:
    """Keep (TLSA value, since when) the requested key's record is served; None forgets it."""
    path = paths.tls_keys_dir / SEEN
    if seen is None:
        path.unlink(missing_ok=True)
        return
    if rollover_seen(paths) == seen:
        return  # written once per sighting, not at every look
    value, since = seen
    write_atomically(path, (json.dumps({"value": value, "since": since.isoformat()}) + "\n")
                     .encode(), mode=0o600)


def retired_done(paths: Paths) -> None:
    """The new key is served: the replaced key's record may go."""
    (paths.tls_keys_dir / RETIRING).unlink(missing_ok=True)


def _read_value(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
