"""Dovecot: IMAP for mail clients, LMTP delivery into the mailboxes, and SMTP AUTH for Postfix.

Accounts live in a passwd-file below DATA_DIR, which Dovecot re-reads by itself (by mtime and
size, at most once a second) when it changes.
"""

from __future__ import annotations

from mailboot.commands import chown, run
from mailboot.daemons.daemon import Daemon
from mailboot.errors import CommandError
from mailboot.files import write_atomically
from mailboot.paths import Paths
from mailboot.users import VMAIL_GID, VMAIL_UID, user_ids

DOVECOT = "/usr/sbin/dovecot"
DOVECONF = "/usr/bin/doveconf"
DOVEADM = "/usr/bin/doveadm"
TEMPLATES = ("dovecot/dovecot.conf",)
# Parallel deliveries into mailboxes: Dovecot's lmtp processes, and Postfix's LMTP connections
# to them (one limit for both: more connections than processes are dropped and deferred).
LMTP_CONCURRENCY = 10


def check(paths: Paths) -> None:
    run([DOVECONF, "-n", "-c", str(paths.config("dovecot/dovecot.conf"))])


def prepare(paths: Paths) -> None:
    """The mailboxes belong to vmail; the passwd-file exists (Dovecot logs an error for every
    lookup while it is missing) and is readable by Dovecot's group alone."""
    paths.mail_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    chown(paths.mail_dir, (VMAIL_UID, VMAIL_GID))
    paths.mail_dir.chmod(0o750)
    paths.accounts_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    chown(paths.accounts_dir, (0, 0))
    paths.accounts_dir.chmod(0o755)
    if not paths.passwd_file.exists():
        write_atomically(paths.passwd_file, b"", mode=0o640)
    owner = passwd_owner()
    if owner is not None:
        chown(paths.passwd_file, owner)


def passwd_owner() -> tuple[int, int] | None:
    """root:dovecot, so Dovecot's auth process reads it and nobody else does."""
    dovecot = user_ids("dovecot")
    return (0, dovecot[1]) if dovecot else None


def reload(_paths: Paths) -> None:
    run([DOVEADM, "reload"])


def hash_password(password: str) -> str:
    """A bcrypt hash (cost 12) Dovecot verifies; the password travels on stdin only.

    BLF-CRYPT rather than ARGON2ID: Argon2 takes 64 MiB per login in Dovecot's auth process,
    more than the whole container should use. doveadm reads stdin only without a controlling
    terminal (hence a new session), and on a mismatch it still prints a hash of the *empty*
    password with exit 0: so any complaint counts as failure and the hash is verified.
    """
    hashed = run([DOVEADM, "-O", "pw", "-s", "BLF-CRYPT", "-r", "12"],
                 stdin=f"{password}\n{password}\n", new_session=True, strict=True).strip()
    if not hashed.startswith("{BLF-CRYPT}"):
        raise CommandError("doveadm pw gave an unexpected hash format")
    run([DOVEADM, "-O", "pw", "-t", hashed], stdin=f"{password}\n", new_session=True,
        strict=True)
    return hashed


DAEMON = Daemon(
    "dovecot", (DOVECOT, "-F", "-c", "/etc/dovecot/dovecot.conf"),
    templates=TEMPLATES, check=check, prepare=prepare, reload=reload,
)
