"""DKIM keys: one RSA-2048 key per domain, created once below DATA_DIR and never overwritten.

Selector scheme (chosen so keys can be rotated without ever reusing a selector):

- a key lives at `DATA_DIR/dkim/<ascii-domain>/<selector>.key` (PEM, PKCS#8, mode 0600);
- mailboot names the selectors it creates `mb` + the UTC date of creation, e.g. `mb20261125`,
  so a later key always gets a new, later selector and both records can be published side by side;
- every key file present is published; the signing key is the newest `mb` selector (a key brought
  from another server under its own selector name signs only while it is the sole key);
- to retire a key, remove its file and, a week later, its DNS record (mail already sent with it
  is still verified meanwhile).

The public key is never stored: it is derived from the private key at every start, so the DNS
record can't disagree with the key that signs.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailboot.errors import StateError
from mailboot.files import fsync_directory, remove_stale_temp_files, temp_path_for, write_new_file
from mailboot.paths import Paths

log = logging.getLogger(__name__)

KEY_BITS = 2048  # RFC 8301 §3.2: at least 1024, 2048 recommended; fits one DNS TXT record set
MIN_KEY_BITS = 1024
KEY_SUFFIX = ".key"
OWN_SELECTOR_PREFIX = "mb"
_OWN_SELECTOR = re.compile(r"^mb\d{8}[a-z]?$")
# RFC 6376 §3.1: a selector is a sub-domain (letters, digits, inner hyphens; dots allowed).
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class DkimKey:
    """One DKIM key on disk and the public half that belongs in DNS."""

    domain: str
    selector: str
    path: Path
    public_key_b64: str  # RFC 6376 §3.6.1: base64 of the DER SubjectPublicKeyInfo

    @property
    def record_name(self) -> str:
        """The DNS name of the key record, without trailing dot (RFC 6376 §3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"


@dataclass(frozen=True)
class DomainKeys:
    """Every DKIM key of one domain, oldest first; the last one signs."""

    domain: str
    keys: tuple[DkimKey, ...]

    @property
    def signing(self) -> DkimKey:
        return self.keys[-1]


def selector_for(now: datetime) -> str:
    """The selector mailboot gives a key created at `now` (UTC date)."""
    return OWN_SELECTOR_PREFIX + now.strftime("%Y%m%d")


def ensure_keys(paths: Paths, domains: Iterable[str], now: datetime) -> tuple[DomainKeys, ...]:
    """Return the keys of every domain, creating a key where a domain has none.

    New keys are generated on every core at once (RSA generation is most of a first start with
    many domains). Raises StateError when a key can't be created or an existing key file is
    unusable.
    """
    domains = tuple(domains)
    missing = [d for d in domains if not find_key_files(paths.dkim_domain_dir(d))]
    for domain, pem in zip(missing, generate_private_key_pems(len(missing)), strict=True):
        path = create_key_file(paths.dkim_domain_dir(domain), selector_for(now), pem)
        log.info("dkim: created a new %d-bit key for %s (%s)", KEY_BITS, domain, path.name)
    return tuple(
        DomainKeys(domain, tuple(load_key(domain, path)
                                 for path in find_key_files(paths.dkim_domain_dir(domain))))
        for domain in domains
    )


def generate_private_key_pems(count: int) -> list[bytes]:
    """`count` new keys, generated in parallel processes when there is more than one."""
    workers = min(count, os.cpu_count() or 1)
    if workers <= 1:
        return [generate_private_key_pem() for _ in range(count)]
    # Imported here: a warm boot generates nothing and shouldn't pay for the import.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: the boot has no threads yet, and a forked child starts in milliseconds.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_generate_one, range(count), chunksize=max(1, count // workers // 4)))


def _generate_one(_index: int) -> bytes:
    return generate_private_key_pem()


def find_key_files(directory: Path) -> list[Path]:
    """Key files of one domain, oldest first (mailboot's dated selectors sort after others)."""
    remove_stale_temp_files(directory)
    try:
        names = [entry.name for entry in directory.iterdir()]
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise StateError(f"can't keep DKIM keys in {directory}: part of that path is a file, not a "
                         "directory. DATA_DIR must be a directory (a mounted volume).") from None
    except OSError as error:
        raise StateError(f"can't read the DKIM key directory {directory}: {error.strerror}. "
                         "Make DATA_DIR readable by the container.") from error
    selectors = [n[: -len(KEY_SUFFIX)] for n in names if n.endswith(KEY_SUFFIX) and n[0] != "."]
    unusable = [s for s in selectors if not _SELECTOR.match(s)]
    if unusable:
        raise StateError(
            f"{directory / (unusable[0] + KEY_SUFFIX)}: {unusable[0]!r} can't be a DKIM selector "
            "(lower-case letters, digits, hyphens and dots). Rename or remove the file."
        )
    selectors.sort(key=lambda s: (bool(_OWN_SELECTOR.match(s)), s))
    return [directory / (selector + KEY_SUFFIX) for selector in selectors]


def create_key_file(directory: Path, selector: str, pem: bytes | None = None) -> Path:
    """Generate a key and store it as `<selector>.key`, mode 0600, without ever replacing a file.

    The key is written to a temporary file, synced, then hard-linked into place: a crash leaves
    either no key or a whole one, and an existing key is never overwritten (link fails instead).
    """
    target = directory / (selector + KEY_SUFFIX)
    pem = pem or generate_private_key_pem()
    temp = temp_path_for(target)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_new_file(temp, pem, mode=0o600)
        try:
            os.link(temp, target)
        except FileExistsError:
            log.info("dkim: %s appeared meanwhile; keeping it", target)
        fsync_directory(directory)
    except OSError as error:
        raise StateError(
            f"can't create the DKIM key {target}: {error.strerror}. "
            "Make DATA_DIR writable by the container (a volume mounted read-write)."
        ) from error
    finally:
        temp.unlink(missing_ok=True)
    return target


def generate_private_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(domain: str, path: Path) -> DkimKey:
    """Read a private key and derive its public half; raises StateError if it is unusable."""
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise StateError(f"can't read the DKIM key {path}: {error.strerror}. "
                         "Make DATA_DIR readable by the container.") from error
    try:
        # Validating an RSA key's math costs ~25 ms (most of a warm boot with many domains);
        # the key is our own file, made by this code or placed by the admin, not peer input.
        key = serialization.load_pem_private_key(pem, password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise StateError(
            f"the DKIM key {path} is not a readable, unencrypted PEM private key. Restore it from "
            "a backup, or move it out of the way to have a new key made (then publish the new "
            "DKIM record mailboot prints)."
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_KEY_BITS:
        raise StateError(
            f"the DKIM key {path} is not an RSA key of at least {MIN_KEY_BITS} bits (RFC 8301). "
            "Move it out of the way to have a new key made."
        )
    _tighten_mode(path)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    selector = path.name[: -len(KEY_SUFFIX)]
    return DkimKey(domain, selector, path, base64.b64encode(der).decode("ascii"))


def _tighten_mode(path: Path) -> None:
    """A private key readable by others is a leak waiting to happen: make it 0600."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        try:
            path.chmod(0o600)
            log.warning("dkim: %s was readable by others (mode %o); changed to 600", path, mode)
        except OSError as error:
            log.warning("dkim: %s has mode %o and can't be made 600: %s", path, mode, error)
