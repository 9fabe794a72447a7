"""Postfix: SMTP on 25 (inbound), submission on 465/587, the queue, delivery by LMTP and MX.

Its queue lives below DATA_DIR so queued mail survives a new container.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from mailboot.commands import CHILD_ENV, chown, run, succeeds
from mailboot.daemons.daemon import Daemon
from mailboot.errors import StateError
from mailboot.paths import Paths
from mailboot.users import user_ids

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
# Lookup tables made from the accounts; re-rendered alone when an account changes.
ACCOUNT_TABLES = ("postfix/mailboxes", "postfix/aliases", "postfix/senders")
# Readable by root alone: Postfix opens its tables before dropping privileges.
RELAY_CREDENTIALS_TABLE = "postfix/relay_password"
TEMPLATES = ("postfix/main.cf", "postfix/master.cf", *ACCOUNT_TABLES,
             RELAY_CREDENTIALS_TABLE)
QUEUE_DIRECTORIES = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
                     "incoming", "maildrop", "private", "public", "saved", "trace")


def check(paths: Paths) -> None:
    """`postconf` exits 0 on unknown parameters and only warns, so a warning is an error."""
    postfix_dir = str(paths.config("postfix"))
    try:
        result = subprocess.run([POSTCONF, "-c", postfix_dir, "-n"], capture_output=True,
                                text=True, env=CHILD_ENV, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StateError(f"postconf could not run: {error}") from error
    if result.returncode != 0 or "warning" in result.stderr:
        raise StateError(f"Postfix rejects the rendered configuration: {result.stderr.strip()}")
    run([POSTCONF, "-c", postfix_dir, "-M"])


def prepare(paths: Paths) -> None:
    """Postfix creates missing queue directories and fixes their ownership itself. That takes
    half a second, so it runs only when the queue is incomplete (first start, or damage);
    `postfix start-fg` checks the queue again by itself at every start."""
    paths.postfix_queue.mkdir(mode=0o755, parents=True, exist_ok=True)
    chown(paths.postfix_queue, (0, 0))
    paths.postfix_queue.chmod(0o755)
    if not queue_is_complete(paths.postfix_queue):
        run([POSTFIX, "-c", str(paths.config("postfix")), "set-permissions"])
        run([POSTFIX, "-c", str(paths.config("postfix")), "check"])


def queue_is_complete(queue: Path) -> bool:
    postfix = user_ids("postfix")
    for name in QUEUE_DIRECTORIES:
        try:
            owner = (queue / name).stat().st_uid
        except OSError:
            return False
        if postfix is not None and owner != postfix[0]:
            return False
    return True


def reload(paths: Paths) -> None:
    """Make Postfix re-read its tables (and certificate), if it is running."""
    config = str(paths.config("postfix"))
    if succeeds([POSTFIX, "-c", config, "status"]):
        run([POSTFIX, "-c", config, "reload"])


DAEMON = Daemon(
    "postfix", (POSTFIX, "start-fg"), stop_argv=(POSTFIX, "stop"),
    templates=TEMPLATES, secret_templates=frozenset({RELAY_CREDENTIALS_TABLE}),
    check=check, prepare=prepare, reload=reload,
)
