"""What the boot and the CLI do to the machine inside the container: ownership, the daemons' own
configuration checks, preparing Postfix's queue, reloading, hashing passwords.

Every call runs an argv list with check semantics and carries the program's stderr into the error.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from mailboot.dkim import DomainKeys
from mailboot.errors import MailbootError, StateError
from mailboot.files import write_atomically
from mailboot.paths import Paths
from mailboot.users import VMAIL_GID, VMAIL_UID, user_ids

log = logging.getLogger(__name__)

CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
DOVECONF = "/usr/bin/doveconf"
DOVEADM = "/usr/bin/doveadm"
OPENDKIM = "/usr/sbin/opendkim"


class CommandError(MailbootError):
    """A program we ran failed; the message carries what it said."""


def run(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60,
        new_session: bool = False, strict: bool = False) -> str:
    """Run a program, return its stdout; raise CommandError with its stderr when it fails.

    `strict`: anything on stderr counts as failure too. Secrets go on stdin, never in argv.
    """
    try:
        result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                                env=CHILD_ENV, timeout=timeout, check=False,
                                start_new_session=new_session)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CommandError(f"`{' '.join(argv)}` could not run: {error}") from error
    if result.returncode != 0 or (strict and result.stderr.strip()):
        said = (result.stderr or result.stdout).strip()
        raise CommandError(f"`{' '.join(argv)}` failed (exit {result.returncode}): {said}")
    return result.stdout


def give_keys_to_opendkim(keys: Sequence[DomainKeys]) -> None:
    """OpenDKIM runs as its own user and reads keys it owns, mode 0600 (RequireSafeKeys)."""
    owner = user_ids("opendkim")
    if owner is None:
        return  # not in the image (unit tests, `mailboot dns` on a workstation)
    for domain_keys in keys:
        _chown(domain_keys.signing.path.parent, owner)
        for key in domain_keys.keys:
            _chown(key.path, owner)


def _chown(path: Path, owner: tuple[int, int]) -> None:
    status = path.stat()
    if (status.st_uid, status.st_gid) != owner:
        try:
            os.chown(path, *owner)
        except OSError as error:
            raise StateError(f"can't hand {path} to its daemon: {error.strerror}") from error


def validate_configuration(paths: Paths) -> None:
    """Let each daemon parse its own rendered configuration; any complaint stops the boot.

    `postconf` exits 0 on unknown parameters and only warns, so a warning counts as an error.
    """
    postfix_dir = str(paths.config("postfix"))
    result = subprocess.run([POSTCONF, "-c", postfix_dir, "-n"], capture_output=True,
                            text=True, env=CHILD_ENV, timeout=60, check=False)
    if result.returncode != 0 or "warning" in result.stderr:
        raise StateError(f"Postfix rejects the rendered configuration: {result.stderr.strip()}")
    run([POSTCONF, "-c", postfix_dir, "-M"])
    run([DOVECONF, "-n", "-c", str(paths.config("dovecot/dovecot.conf"))])
    run([OPENDKIM, "-n", "-x", str(paths.config("opendkim.conf"))])


def prepare_daemons(paths: Paths) -> None:
    """Create the state directories the daemons expect, with the owners they insist on."""
    make_traversable(paths.data_dir)
    for directory, owner, mode in (
        (paths.mail_dir, (VMAIL_UID, VMAIL_GID), 0o750),
        (paths.accounts_dir, (0, 0), 0o755),
        (paths.postfix_queue, (0, 0), 0o755),
    ):
        directory.mkdir(mode=mode, parents=True, exist_ok=True)
        _chown(directory, owner)
        directory.chmod(mode)
    passwd = paths.accounts_dir / "passwd"
    dovecot = user_ids("dovecot")
    if not passwd.exists():  # Dovecot logs an error for every lookup while it is missing
        write_atomically(passwd, b"", mode=0o640)
    if dovecot is not None:
        _chown(passwd, (0, dovecot[1]))
    # Postfix creates missing queue directories and fixes their ownership itself. That takes
    # half a second, so it runs only when the queue is incomplete (first start, or damage);
    # `postfix start-fg` checks the queue again by itself at every start.
    if not queue_is_complete(paths.postfix_queue):
        run([POSTFIX, "-c", str(paths.config("postfix")), "set-permissions"])
        run([POSTFIX, "-c", str(paths.config("postfix")), "check"])


POSTFIX_QUEUE_DIRECTORIES = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
                             "incoming", "maildrop", "private", "public", "saved", "trace")


def queue_is_complete(queue: Path) -> bool:
    postfix = user_ids("postfix")
    for name in POSTFIX_QUEUE_DIRECTORIES:
        try:
            owner = (queue / name).stat().st_uid
        except OSError:
            return False
        if postfix is not None and owner != postfix[0]:
            return False
    return True


def make_traversable(directory: Path) -> None:
    """The daemons run as their own users and must pass through DATA_DIR to their files.

    A volume mounted with mode 0700 would lock them out; search (x) permission lets them reach
    the files that are theirs without listing anything. Each subdirectory keeps its own mode.
    """
    mode = directory.stat().st_mode & 0o7777
    if mode & 0o011 != 0o011:
        directory.chmod(mode | 0o011)
        log.info("boot: %s had mode %o; added search permission so the daemons can reach their "
                 "files", directory, mode)


def reload_tls(paths: Paths) -> None:
    """Have Postfix and Dovecot load the new live certificate, without dropping connections."""
    for reload in (lambda: reload_postfix(paths),
                   lambda: run([DOVEADM, "reload"])):
        try:
            reload()
        except MailbootError as error:
            log.warning("tls: reloading failed: %s", error)


def reload_postfix(paths: Paths) -> None:
    """Make Postfix re-read its tables (and certificate), if it is running."""
    status = subprocess.run([POSTFIX, "-c", str(paths.config("postfix")), "status"],
                            capture_output=True, env=CHILD_ENV, timeout=30, check=False)
    if status.returncode == 0:
        run([POSTFIX, "-c", str(paths.config("postfix")), "reload"])


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
