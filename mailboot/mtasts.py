"""The MTA-STS policy (RFC 8461) and the id that announces it in DNS."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

POLICY_PATH = "/.well-known/mta-sts.txt"
_ID_LENGTH = 20  # RFC 8461 §3.1: id is 1 to 32 letters and digits


def policy_text(mode: str, mx_hosts: Sequence[str], max_age: int) -> str:
    """The policy file; RFC 8461 §3.2 asks for CRLF line endings."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {host}" for host in mx_hosts)]
    lines.append(f"max_age: {max_age}")
    return "".join(line + "\r\n" for line in lines)


def policy_id(policy: str) -> str:
    """An id derived from the policy's bytes: it changes exactly when the policy changes."""
    return hashlib.sha256(policy.encode("ascii")).hexdigest()[:_ID_LENGTH]
