"""The MTA-STS policy (RFC 8461) and the id that announces it in DNS: made here, once.

The record set, the worker's announcement and the policy server all take the policy from
`policy_for`, so the id in DNS always matches the file served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

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
