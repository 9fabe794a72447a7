"""DKIM keys: RSA-2048 (and, with DKIM_ALGORITHMS, Ed25519) keys per domain, created once below
DATA_DIR and never overwritten.

Selector scheme (chosen so keys can be rotated without ever reusing a selector):

- a key lives at `DATA_DIR/dkim/<ascii-domain>/<selector>.key` (PEM, PKCS#8, mode 0600);
- mailboot names the selectors it creates `mb` + the UTC date of creation, e.g. `mb20261125`,
  with `e` after the date for Ed25519 keys (`mb20261125e`) and `-2`, `-3`... for a second key of
  the same day, so a later key always gets a new selector and records can be published side by
  side;
- which key signs, which one waits for its record and which ones were replaced is kept in
  `state.json` beside the keys (`dkim.state`); without it, the newest key of each algorithm signs
  (the rule before rotations existed, so an upgrade keeps signing with the same key);
- every key file present is published; a rotation retires a replaced key by moving it to
  `retired/` (kept, no longer published) once its grace period is over.

The public key is never stored: it is derived from the private key at every start, so the DNS
record can't disagree with the key that signs.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from mailboot.base.errors import StateError
from mailboot.base.files import create_once, fsync_directory, remove_stale_temp_files
from mailboot.base.paths import DKIM_KEY_SUFFIX, Paths
from mailboot.dkim import state as dkimstate
from mailboot.dkim.state import DomainState, Role

log = logging.getLogger(__name__)

KEY_BITS = 2048  # RFC 8301 §3.2: at least 1024, 2048 recommended; fits one DNS TXT record set
MIN_KEY_BITS = 1024
KEY_SUFFIX = DKIM_KEY_SUFFIX
RETIRED = "retired"
OWN_SELECTOR_PREFIX = "mb"
RSA = "rsa"
ED25519 = "ed25519"  # RFC 8463
ALGORITHMS = (RSA, ED25519)
_OWN_SELECTOR = re.compile(r"^mb\d{8}[a-z]?(?:-\d+)?$")
# RFC 6376 §3.1: a selector is a sub-domain (letters, digits, inner hyphens; dots allowed).
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class DkimKey:
    """One DKIM key on disk and the public half that belongs in DNS."""

    domain: str
    selector: str
    path: Path
    # RFC 6376 §3.6.1: base64 of the DER SubjectPublicKeyInfo (rsa); RFC 8463 §4: base64 of
    # the raw 32-byte public key (ed25519)
    public_key_b64: str
    algorithm: str = RSA
    bits: int = KEY_BITS

    @property
    def record_name(self) -> str:
        """The DNS name of the key record, without trailing dot (RFC 6376 §3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record_value(self) -> str:
        """The TXT value of the key record (RFC 6376 §3.6.1, RFC 8463 §4)."""
        return f"v=DKIM1; k={self.algorithm}; t=s; p={self.public_key_b64}"


@dataclass(frozen=True)
class DomainKeys:
    """Every published DKIM key of one domain, oldest first, and which of them sign."""

    domain: str
    keys: tuple[DkimKey, ...]
    state: DomainState | None = None  # None: the newest key of each algorithm signs
    algorithms: tuple[str, ...] = field(default=(RSA,), compare=False)

    def role(self, key: DkimKey) -> Role:
        return self._state().role(key.algorithm, key.selector)

    @property
    def signers(self) -> tuple[DkimKey, ...]:
        """The keys that sign every message: one per configured algorithm, RSA first."""
        state = self._state()
        found = [k for k in self.keys if k.algorithm in self.algorithms
                 and state.role(k.algorithm, k.selector) is Role.SIGNING]
        return tuple(sorted(found, key=lambda k: ALGORITHMS.index(k.algorithm)))

    @property
    def signing(self) -> DkimKey:
        """The RSA key that signs (what the self-test signs with)."""
        signers = self.signers
        return signers[0] if signers else self.keys[-1]

    def _state(self) -> DomainState:
        if self.state is not None:
            return self.state
        return dkimstate.derived(_by_algorithm(self.keys))


def _by_algorithm(keys: Iterable[DkimKey]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key in keys:
        found.setdefault(key.algorithm, []).append(key.selector)
    return found


def selector_for(now: datetime, algorithm: str = RSA, taken: Iterable[str] = ()) -> str:
    """The selector mailboot gives a key created at `now` (UTC date), not one of `taken`."""
    base = OWN_SELECTOR_PREFIX + now.strftime("%Y%m%d") + ("e" if algorithm == ED25519 else "")
    taken = set(taken)
    selector, number = base, 1
    while selector in taken:
        number += 1
        selector = f"{base}-{number}"
    return selector


def taken_selectors(directory: Path) -> set[str]:
    """Every selector used in a domain's directory, retired keys included (never reused)."""
    names = {p.name for p in directory.glob("*" + KEY_SUFFIX)}
    names |= {p.name for p in (directory / RETIRED).glob("*" + KEY_SUFFIX)}
    return {n[: -len(KEY_SUFFIX)] for n in names}


def ensure_keys(paths: Paths, domains: Iterable[str], now: datetime,
                algorithms: Sequence[str] = (RSA,)) -> tuple[DomainKeys, ...]:
    """Return the keys of every domain, creating a key of each algorithm a domain lacks.

    A domain's first keys sign at once; a key added to a domain that already signs (Ed25519
    turned on later) waits, like a rotation's, until the worker sees its record. New RSA keys
    are generated on every core at once (RSA generation is most of a first start with many
    domains). Raises StateError when a key can't be created or an existing key file is unusable.
    """
    domains = tuple(domains)
    algorithms = tuple(algorithms)
    loaded = {d: load_keys(d, paths.dkim_domain_dir(d)) for d in domains}
    missing = [(d, a) for d in domains for a in algorithms
               if not any(k.algorithm == a for k in loaded[d])]
    rsa_missing = [d for d, a in missing if a == RSA]
    pems = dict(zip(rsa_missing, generate_private_key_pems(len(rsa_missing)), strict=True))
    for domain, algorithm in missing:
        directory = paths.dkim_domain_dir(domain)
        pem = pems[domain] if algorithm == RSA else generate_private_key_pem(ED25519)
        selector = selector_for(now, algorithm, taken_selectors(directory))
        path = create_key_file(directory, selector, pem)
        log.info("dkim: created a new %s key for %s (%s)", describe(algorithm), domain, path.name)
    result = []
    for domain in domains:
        directory = paths.dkim_domain_dir(domain)
        added = {a for d, a in missing if d == domain}
        already_signed = bool(loaded[domain])
        keys, state = domain_state(domain, directory, added if already_signed else set(),
                                   None if added else loaded[domain])
        result.append(DomainKeys(domain, keys, state, algorithms))
    return tuple(result)


def is_selector(text: str) -> bool:
    """Whether `text` can be a selector (RFC 6376 §3.1), in the lower case we store."""
    return bool(_SELECTOR.match(text))


def describe(algorithm: str) -> str:
    return f"{KEY_BITS}-bit" if algorithm == RSA else "Ed25519"


def load_keys(domain: str, directory: Path) -> tuple[DkimKey, ...]:
    return tuple(load_key(domain, path) for path in find_key_files(directory))


def domain_state(domain: str, directory: Path, waiting: Iterable[str] = (),
                 loaded: tuple[DkimKey, ...] | None = None,
                 ) -> tuple[tuple[DkimKey, ...], DomainState | None]:
    """The domain's keys and state (None: none stored, the newest key of each algorithm signs);
    keys of the `waiting` algorithms were just added to a signing domain and become `next`.
    `loaded`: the keys, when just read (used only when no state is stored)."""
    waiting = set(waiting)
    if dkimstate.read_state(directory) is None and not waiting:
        return (loaded if loaded is not None else load_keys(domain, directory)), None
    with dkimstate.locked(directory):
        keys = load_keys(domain, directory)  # under the lock: a rotation adds key and state
        stored = dkimstate.read_state(directory)
        by_algorithm = _by_algorithm(keys)
        if stored is None:
            # What signs today is written down before a new key joins it.
            base = dkimstate.derived({a: s for a, s in by_algorithm.items() if a not in waiting})
            stored = DomainState(base.slots, stored=True)
        state = dkimstate.reconcile(stored, by_algorithm)
        for algorithm in waiting:
            slot = state.slot(algorithm)
            newest = by_algorithm[algorithm][-1]
            state = state.with_slot(algorithm, dkimstate.Slot(
                slot.signing, newest, None,
                tuple(r for r in slot.previous if r.selector != newest)))
        if waiting or state != stored:
            dkimstate.write_state(directory, state)
    return keys, state


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
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not create_once(target, pem, mode=0o600):
            log.info("dkim: %s appeared meanwhile; keeping it", target)
    except OSError as error:
        raise StateError(
            f"can't create the DKIM key {target}: {error.strerror}. "
            "Make DATA_DIR writable by the container (a volume mounted read-write)."
        ) from error
    return target


def generate_private_key_pem(algorithm: str = RSA) -> bytes:
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
    else:
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
    problem = key_problem(key)
    if problem is not None:
        raise StateError(f"the DKIM key {path} is {problem}. Move it out of the way to have a "
                         "new key made.")
    _tighten_mode(path)
    selector = path.name[: -len(KEY_SUFFIX)]
    algorithm, bits, public = public_half(key)
    return DkimKey(domain, selector, path, public, algorithm, bits)


def key_problem(key: PrivateKeyTypes) -> str | None:
    """Why a private key can't be a DKIM key, or None."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_KEY_BITS:
        return (f"not an RSA key of at least {MIN_KEY_BITS} bits (RFC 8301) nor an Ed25519 key "
                "(RFC 8463)")
    return None


def public_half(key: PrivateKeyTypes) -> tuple[str, int, str]:
    """(algorithm, bits, base64 public key as the record's p= holds it) of a checked key."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        return ED25519, 256, base64.b64encode(raw).decode("ascii")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"not a DKIM key: {type(key).__name__}")
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RSA, key.key_size, base64.b64encode(der).decode("ascii")


def retire_key(key: DkimKey) -> Path:
    """Move a key to `retired/` beside it (kept, never published again); returns where."""
    directory = key.path.parent / RETIRED
    directory.mkdir(mode=0o700, exist_ok=True)
    target = directory / key.path.name
    if target.exists():  # a selector is never reused, but a hand-made copy may be there
        target = directory / f"{key.selector}-{os.getpid()}{KEY_SUFFIX}"
    key.path.rename(target)
    fsync_directory(key.path.parent)
    return target


def _tighten_mode(path: Path) -> None:
    """A private key readable by others is a leak waiting to happen: make it 0600."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        try:
            path.chmod(0o600)
            log.warning("dkim: %s was readable by others (mode %o); changed to 600", path, mode)
        except OSError as error:
            log.warning("dkim: %s has mode %o and can't be made 600: %s", path, mode, error)
