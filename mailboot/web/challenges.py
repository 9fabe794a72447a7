"""The HTTP-01 challenges in flight (RFC 8555 §8.3), shared between processes as files.

The worker's short run that orders a certificate puts each token's key authorisation here; the
port-80 child, another process started by the supervisor on the CA's connection, reads it. One
file per token in a directory of the run directory (memory, gone with the container): a token
is written atomically before the CA is asked to validate, and removed once it is done.
"""

from __future__ import annotations

import re
from pathlib import Path

from mailboot.base.files import write_atomically

# RFC 8555 §8.3: a token is base64url without padding; anything else never names a file here.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


class ChallengeStore:
    """Tokens and their answers in `directory` (one file each): the ordering process writes,
    the port-80 process reads."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, token: str, answer: str) -> None:
        """Raises ValueError for a token that isn't base64url (the CA chose it: never seen)."""
        write_atomically(self._path(token), answer.encode("ascii"), mode=0o644)

    def remove(self, token: str) -> None:
        self._path(token).unlink(missing_ok=True)

    def get(self, token: str) -> str | None:
        """The answer for `token`; None for an unknown token or one that can't be a token."""
        if not _TOKEN.fullmatch(token):
            return None
        try:
            return (self.directory / token).read_text("ascii")
        except (OSError, UnicodeDecodeError):
            return None

    def _path(self, token: str) -> Path:
        if not _TOKEN.fullmatch(token):
            raise ValueError(f"not an ACME token: {token!r}")
        return self.directory / token
