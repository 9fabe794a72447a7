"""SRS for copies forwarded off the server: the secret, and the answers to Postfix's two
lookups (socketmap_table(5), served by the policy process on private/mailboot-srs).

- `forward` (the re-injection's cleanup, `sender_canonical_maps`): the envelope sender of a copy
  that an alias forwards to another server becomes `SRS0=...@<SRS domain>`, an address under
  the primary mail domain, whose SPF record names this server, so the copy passes SPF at the
  next receiver (`standards.srs`). Not found (the sender stays): the empty sender (a bounce
  must keep it, RFC 5321 §4.5.5), our own domains (their SPF names us already), anything that
  is not local@domain.
- `reverse` (`recipient_canonical_maps`, also what smtpd asks before it accepts the
  recipient): a bounce to an SRS address under any of our domains goes back to the address
  it stands for. A hash that does not hold (not made with our secret) or an address older
  than 21 days is not found: smtpd refuses that recipient as unknown (550 5.1.1), so nobody
  can use the SRS domain to relay.

The secret is random, made once in the policy process's state on the volume (so `mailboot
backup` keeps it and a restore or a new container still reverses last week's bounces),
readable by the policy process alone. A new secret would leave the bounces to every address
made before it undeliverable for 21 days.

Postfix folds the case of what it looks up: a bounce goes back to the original address in
lower case (what postsrsd gives too); SRS's hash is checked without case for this reason.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from mailboot.base.errors import StateError
from mailboot.base.files import create_once
from mailboot.standards import srs

log = logging.getLogger(__name__)

SECRET_FILE = "srs-secret"  # noqa: S105 - a file name, not a password
SECRET_BYTES = 32


@dataclass(frozen=True)
class Rewriting:
    """What the lookups need: the secret, the domain SRS addresses are made under, and every
    mail domain of ours (lower case)."""

    secret: bytes
    srs_domain: str
    own_domains: frozenset[str]

    def ours(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.own_domains


def rewriting(state: Path, srs_domain: str, own_domains: tuple[str, ...]) -> Rewriting:
    """The rewriting with the secret in `state` (made there first if there is none).
    Raises StateError when the secret can't be read or made."""
    return Rewriting(load_secret(state), srs_domain.lower(),
                     frozenset(domain.lower() for domain in own_domains))


def load_secret(state: Path) -> bytes:
    """The SRS secret: the first line of `state/srs-secret`, made once (random, mode 0600) when
    the file does not exist; a second process making it at the same time keeps the first's.
    Raises StateError when it can't be read or made, or is empty."""
    path = state / SECRET_FILE
    try:
        if not path.exists():
            made = secrets.token_urlsafe(SECRET_BYTES).encode() + b"\n"
            if create_once(path, made, 0o600):
                log.info("srs: made the secret for forwarded mail's return addresses in %s "
                         "(kept by `mailboot backup`)", path)
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise StateError(f"srs: can't read or make the SRS secret {path} ({error}); forwarded "
                         f"mail waits in the queue until it can. Check that {state} belongs "
                         "to the policy process's user (each start sets it)") from error
    secret = lines[0].strip() if lines else b""
    if not secret:
        raise StateError(f"srs: the SRS secret {path} is empty; remove the file and restart "
                         "to make a new one (bounces to forwarded mail of the last 21 days "
                         "then can't be returned)")
    return secret


def forward(rewriting: Rewriting, sender: str, now: float) -> str | None:
    """The SRS address for `sender` in a copy forwarded off the server; None (not found: the
    sender stays) for the empty sender, our own domains and what is not local@domain."""
    try:
        address = srs.split(sender)
    except srs.InvalidAddress:
        return None
    if rewriting.ours(address.domain):
        return None
    rewritten = srs.forward(sender, rewriting.srs_domain, rewriting.secret, now)
    # Before the forwarded copy's header checks: a quarantined copy is held after this line.
    log.info("srs: a copy of mail from %s for another server has the return address %s",
             sender, rewritten)
    return rewritten


def reverse(rewriting: Rewriting, recipient: str, now: float) -> str | None:
    """Where a bounce to the SRS address `recipient` goes; None (not found: the recipient is
    unknown) for an address not under our domains, not SRS, or whose hash or age fails."""
    try:
        address = srs.split(recipient)
    except srs.InvalidAddress:
        return None
    if not rewriting.ours(address.domain) or not srs.is_srs(address.local):
        return None
    try:
        original = srs.reverse(recipient, rewriting.secret, now)
    except srs.InvalidAddress as error:
        log.warning("srs: refused a bounce address: %s", error)
        return None
    # Not logged: Postfix's delivery line says it (to=<original>, orig_to=<SRS address>), and
    # smtpd and cleanup each ask once per bounce.
    return original
