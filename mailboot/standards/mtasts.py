"""MTA-STS (RFC 8461): our policy and the id that announces it in DNS, made here once; and
receivers' policies and TXT records, parsed here for the mail we send (`outbound.mtasts`).

The record set, the worker's announcement and the policy server all take the policy from
`policy_for`, so the id in DNS always matches the file served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the policy process parses receivers' policies without the settings table
    from mailboot.settings.table import Settings

POLICY_PATH = "/.well-known/mta-sts.txt"
_ID_LENGTH = 20  # RFC 8461 §3.1: id is 1 to 32 letters and digits


@dataclass(frozen=True)
class MtaStsPolicy:
    text: str  # the policy file, CRLF line endings (RFC 8461 §3.2)
    id: str  # changes exactly when the text changes


def policy_for(settings: Settings) -> MtaStsPolicy:
    """The policy every domain of ours publishes: MX is MAIL_HOSTNAME."""
    text = policy_text(settings.mta_sts_mode, [settings.hostname], settings.mta_sts_max_age)
    return MtaStsPolicy(text, policy_id(text))


def record_value(policy: MtaStsPolicy) -> str:
    """The `_mta-sts` TXT value (RFC 8461 §3.1)."""
    return f"v=STSv1; id={policy.id}"


def policy_hosts(settings: Settings) -> dict[str, bytes]:
    """Host name (mta-sts.<domain>) -> the bytes served at POLICY_PATH."""
    policy = policy_for(settings).text.encode("ascii")
    return {f"mta-sts.{domain}": policy for domain in settings.domains}


def policy_text(mode: str, mx_hosts: Sequence[str], max_age: int) -> str:
    """The policy file; RFC 8461 §3.2 asks for CRLF line endings."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {host}" for host in mx_hosts)]
    lines.append(f"max_age: {max_age}")
    return "".join(line + "\r\n" for line in lines)


def policy_id(policy: str) -> str:
    """An id derived from the policy's bytes: it changes exactly when the policy changes."""
    return hashlib.sha256(policy.encode("ascii")).hexdigest()[:_ID_LENGTH]


# --- Receivers' policies (what we obey when we send) -------------------------------------------
MODES = ("enforce", "testing", "none")
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: max_age is at most a year, in seconds
MAX_POLICY_BYTES = 64 * 1024  # a policy is a few lines; a larger body is not one


class PolicyError(ValueError):
    """A receiver's policy file or TXT record that RFC 8461 does not accept; the text says why."""


@dataclass(frozen=True)
class ReceiverPolicy:
    """A receiver domain's policy as RFC 8461 §3.2 defines it."""

    mode: str  # enforce, testing or none
    mx: tuple[str, ...]  # patterns: `mail.example.com` or `*.example.com`, lower case
    max_age: int  # seconds the policy may be cached

    def matches(self, host: str) -> bool:
        """Whether the MX host `host` is one the policy names (RFC 8461 §4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)


def record_id(values: tuple[str, ...]) -> str | None:
    """The policy id from a domain's `_mta-sts` TXT records: None when there is none.

    RFC 8461 §3.1: records that don't start with `v=STSv1` are ignored; more than one that does
    means no policy, as does a record without a valid id (1 to 32 letters and digits).
    Raises PolicyError for those, so the log can say which.
    """
    records = [value for value in values if value.startswith("v=STSv1")]
    if not records:
        return None
    if len(records) > 1:
        raise PolicyError(f"{len(records)} `v=STSv1` TXT records; RFC 8461 §3.1 wants exactly one")
    fields = dict(_record_field(field) for field in records[0].split(";") if field.strip())
    policy_id = fields.get("id", "")
    if not (1 <= len(policy_id) <= 32 and policy_id.isascii() and policy_id.isalnum()):
        raise PolicyError(f"the TXT record {records[0]!r} has no valid id (1 to 32 letters and "
                          "digits, RFC 8461 §3.1)")
    return policy_id


def _record_field(field: str) -> tuple[str, str]:
    name, _, value = field.strip().partition("=")
    return name.strip(), value.strip()


def parse_policy(text: str) -> ReceiverPolicy:
    """A policy file (RFC 8461 §3.2): `key: value` lines, CRLF or LF; unknown keys are ignored,
    `mx` may repeat, any other key counts at its first appearance.

    Raises PolicyError saying what is missing or wrong.
    """
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"the line {line[:80]!r} is not `key: value`")
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError(f"version is {fields.get('version')!r}, not 'STSv1'")
    mode = fields.get("mode")
    if mode not in MODES:
        raise PolicyError(f"mode is {mode!r}, not one of {', '.join(MODES)}")
    max_age = fields.get("max_age", "")
    if not max_age.isdigit() or int(max_age) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age is {max_age!r}, not a number of seconds up to "
                          f"{MAX_AGE_LIMIT}")
    if mode != "none" and not mx:
        raise PolicyError(f"mode {mode} names no mx")
    for pattern in mx:
        if not _valid_pattern(pattern):
            raise PolicyError(f"mx {pattern!r} is neither a host name nor `*.` and a domain")
    return ReceiverPolicy(mode, tuple(mx), int(max_age))


def _valid_pattern(pattern: str) -> bool:
    name = pattern.removeprefix("*.")
    labels = name.split(".")
    return len(labels) >= 2 and all(
        label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in labels)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: a pattern is a host name, or `*.` and a domain, where the wildcard stands
    for exactly one label (`*.example.com` matches `mx.example.com`, not `a.b.example.com`)."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return host == pattern


def postfix_match(policy: ReceiverPolicy) -> str:
    """The policy's mx patterns as Postfix's `match=` attribute (smtp_tls_policy_maps, `secure`
    level), colon-separated.

    Postfix's form of a wildcard is `.example.com`, which matches subdomains at ANY depth
    (`a.b.example.com` too), where RFC 8461's `*.example.com` stands for one label only. Postfix
    has no one-label form, so its certificate check is that much looser (as with
    postfix-mta-sts-resolver, which maps it the same way); the certificate must still be
    signed by a trusted CA for a name under the receiver's domain.
    """
    return ":".join(pattern[1:] if pattern.startswith("*.") else pattern
                    for pattern in policy.mx)
