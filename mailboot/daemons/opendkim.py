"""OpenDKIM: signs outgoing mail and verifies incoming mail, as a milter for Postfix (RFC 6376).

It runs as its own user and insists on owning its keys, mode 0600 (RequireSafeKeys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mailboot.commands import chown, run
from mailboot.daemons.daemon import Daemon
from mailboot.paths import Paths
from mailboot.users import user_ids

if TYPE_CHECKING:
    from mailboot.settings import Settings

OPENDKIM = "/usr/sbin/opendkim"
# The milter's socket: OpenDKIM's notation, and the same in Postfix's (main.cf smtpd_milters).
SOCKET = "inet:8891@127.0.0.1"
POSTFIX_MILTER = "inet:127.0.0.1:8891"
TEMPLATES = ("opendkim.conf", "opendkim/KeyTable", "opendkim/SigningTable")


def context(_settings: Settings, paths: Paths) -> Mapping[str, Any]:
    return {"opendkim_dir": str(paths.config("opendkim")), "opendkim_socket": SOCKET,
            "milter": POSTFIX_MILTER}


def check(paths: Paths) -> None:
    run([OPENDKIM, "-n", "-x", str(paths.config("opendkim.conf"))])


def prepare(paths: Paths) -> None:
    """Hand every key below DATA_DIR/dkim (and its directories) to the opendkim user."""
    owner = user_ids("opendkim")
    if owner is None or not paths.dkim_dir.is_dir():
        return  # not in the image (unit tests, `mailboot dns` on a workstation)
    from mailboot.dkim import KEY_SUFFIX  # local: the supervisor never needs cryptography

    for domain_dir in paths.dkim_dir.iterdir():
        if domain_dir.is_dir() and not domain_dir.is_symlink():
            chown(domain_dir, owner)
            for key in domain_dir.glob("*" + KEY_SUFFIX):
                chown(key, owner)


DAEMON = Daemon(
    "opendkim", (OPENDKIM, "-f", "-x", "/etc/opendkim.conf"),
    templates=TEMPLATES, context=context, check=check, prepare=prepare,
)
