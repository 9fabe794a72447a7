"""The system users the image creates (Dockerfile), looked up without importing anything heavy."""

from __future__ import annotations

import pwd

VMAIL_UID = VMAIL_GID = 5000  # created in the Dockerfile; owns every mailbox


def user_ids(name: str) -> tuple[int, int] | None:
    """uid and gid of a system user, or None where it doesn't exist (outside the image)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid
