"""OpenDKIM: signs outgoing mail and verifies incoming mail, as a milter for Postfix (RFC 6376).

It runs as its own user and insists on owning its keys, mode 0600 (RequireSafeKeys). The image's
OpenDKIM (2.11.0 beta2) signs a message with one algorithm only, its SignatureAlgorithm, and
fails on a key of another type ("expecting an rsa key"): the Ed25519 signature (RFC 8463) comes
from a second instance, signing only, which Postfix asks after the first when
DKIM_ALGORITHMS includes ed25519 (otherwise it idles with empty tables).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailboot.base.paths import DKIM_KEY_SUFFIX, Paths
from mailboot.base.programs import chown, run
from mailboot.base.users import user_ids
from mailboot.daemons.daemon import Daemon

if TYPE_CHECKING:
    from mailboot.settings.table import Settings

OPENDKIM = "/usr/sbin/opendkim"
# The milter's socket: OpenDKIM's notation, and the same in Postfix's (main.cf smtpd_milters).
SOCKET = "inet:8891@127.0.0.1"
POSTFIX_MILTER = "inet:127.0.0.1:8891"
ED25519_SOCKET = "inet:8892@127.0.0.1"
ED25519_MILTER = "inet:127.0.0.1:8892"
RSA_TABLES = ("opendkim/KeyTable", "opendkim/SigningTable")
ED25519_TABLES = ("opendkim/ed25519/KeyTable", "opendkim/ed25519/SigningTable")
SIGNING_TABLES = (*RSA_TABLES, *ED25519_TABLES)
TEMPLATES = ("opendkim.conf", *RSA_TABLES)
ED25519_TEMPLATES = ("opendkim-ed25519.conf", *ED25519_TABLES)


def context(settings: Settings, paths: Paths) -> Mapping[str, Any]:
    milters = [POSTFIX_MILTER]
    if "ed25519" in settings.dkim_algorithms:
        milters.append(ED25519_MILTER)
    return {"opendkim_dir": str(paths.config("opendkim")), "opendkim_socket": SOCKET,
            "milter": POSTFIX_MILTER, "ed25519_socket": ED25519_SOCKET,
            "signing_milters": ", ".join(milters)}


def check(paths: Paths) -> None:
    run([OPENDKIM, "-n", "-x", str(paths.config("opendkim.conf"))])


def check_ed25519(paths: Paths) -> None:
    run([OPENDKIM, "-n", "-x", str(paths.config("opendkim-ed25519.conf"))])


def prepare(paths: Paths) -> None:
    """Hand every key below DATA_DIR/dkim (and its directories) to the opendkim user."""
    owner = user_ids("opendkim")
    if owner is None or not paths.dkim_dir.is_dir():
        return  # not in the image (unit tests, `mailboot dns` on a workstation)
    for domain_dir in paths.dkim_dir.iterdir():
        if domain_dir.is_dir() and not domain_dir.is_symlink():
            chown(domain_dir, owner)
            for key in domain_dir.glob("*" + DKIM_KEY_SUFFIX):
                chown(key, owner)


def reload(_paths: Paths, proc: Path = Path("/proc")) -> None:
    """Have OpenDKIM re-read its configuration and tables (SIGUSR1, opendkim(8)), if running:
    both instances. It reloads at its next connection, and logs "configuration reloaded".

    No pid file is configured: its processes are found by their command line (/proc/PID/exe
    can't be read: OpenDKIM runs as its own user, and the container has no CAP_SYS_PTRACE).
    """
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            program = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue  # gone meanwhile
        if program == OPENDKIM.encode():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGUSR1)


DAEMON = Daemon(
    "opendkim", (OPENDKIM, "-f", "-x", "/etc/opendkim.conf"),
    templates=TEMPLATES, context=context, check=check, prepare=prepare, reload=reload,
)
def _signs_ed25519(settings: Settings) -> bool:
    return "ed25519" in settings.dkim_algorithms


# Its reload is the first instance's: SIGUSR1 reaches every OpenDKIM process.
ED25519_DAEMON = Daemon(
    "opendkim-ed25519", (OPENDKIM, "-f", "-x", "/etc/opendkim-ed25519.conf"),
    templates=ED25519_TEMPLATES, check=check_ed25519, wanted=_signs_ed25519,
)
