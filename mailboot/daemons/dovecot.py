"""Dovecot: IMAP for mail clients, LMTP delivery into the mailboxes, and SMTP AUTH for Postfix.

Accounts live in a passwd-file below DATA_DIR, which Dovecot re-reads by itself (by mtime and
size, at most once a second) when it changes.
"""

from __future__ import annotations

import logging
import math
import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailboot.base.errors import CommandError
from mailboot.base.files import create_once, write_atomically
from mailboot.base.paths import Paths
from mailboot.base.programs import chown, run
from mailboot.base.users import VMAIL_GID, VMAIL_UID, user_ids
from mailboot.daemons.daemon import Daemon

if TYPE_CHECKING:
    from mailboot.settings.table import Settings

log = logging.getLogger(__name__)

DOVECOT = "/usr/sbin/dovecot"
DOVECONF = "/usr/bin/doveconf"
DOVEADM = "/usr/bin/doveadm"
SIEVEC = "/usr/bin/sievec"
SIEVE_SCRIPTS = ("dovecot/sieve/spam-filing.sieve", "dovecot/sieve/learn-spam.sieve",
                 "dovecot/sieve/learn-ham.sieve")
# The only programs the global Sieve scripts may run (sieve_*_bin_dir).
SIEVE_PROGRAMS = ("dovecot/sieve-bin/bogofilter-classify", "dovecot/sieve-bin/bogofilter-train")
# Run by the quota-warning service: a note into the INBOX of a mailbox that is nearly full.
QUOTA_WARNING = "dovecot/quota-warning"
TEMPLATES = ("dovecot/dovecot.conf", *SIEVE_SCRIPTS, *SIEVE_PROGRAMS, QUOTA_WARNING)
# A save that takes a mailbox past this share of its quota puts a warning into its INBOX.
QUOTA_WARNING_PERCENTAGE = 90
# In Trash the quota is this share of the mailbox's own, so a full mailbox can still delete
# (clients move mail to Trash first). Dovecot's per-mailbox quota_storage_percentage.
TRASH_QUOTA_PERCENTAGE = 110
# App passwords per address: slot files 1..10, one passdb each. The same number as
# accounts.APP_PASSWORD_SLOTS (a test holds them equal: daemon modules don't import accounts).
APP_PASSWORD_SLOTS = range(1, 11)
# Parallel deliveries into mailboxes: Dovecot's lmtp processes, and Postfix's LMTP connections
# to them (one limit for both: more connections than processes are dropped and deferred).
LMTP_CONCURRENCY = 10
# Every other process that talks to Dovecot's auth, anvil, stats and config services besides
# the imap, imap-login and lmtp ones: Postfix's submission and submissions smtpd processes
# (default_process_limit, 100 each) each hold a connection to auth while they run; Dovecot's own
# helpers (auth, anvil, stats, config, log, dict, indexer) and doveadm take a few dozen.
OTHER_CLIENTS = 2 * 100 + 50
# Thunderbird opens up to 5 connections per account, and a household's phones and laptops all
# come from one NAT address: 4 devices of one person behind one address need 20.
MIN_USERIP_CONNECTIONS = 20
# One user behind one address may take at most this share of all connections, so one client
# stuck in a reconnect loop can't lock everybody else out.
USERIP_SHARE = 10
# An imap-login process's own memory plus what each TLS connection it holds may take (OpenSSL's
# state and Dovecot's buffers, both ways; measured: about 100 KiB of VSZ per connection).
LOGIN_BASE_MIB = 256
LOGIN_KIB_PER_CONNECTION = 256
# Descriptors an imap-login process needs per connection (the client's socket and the one to
# its imap process) and besides them (listeners, auth, anvil, master, log).
LOGIN_FDS_PER_CONNECTION = 2
LOGIN_FDS_BESIDES = 64
# Dovecot's default process_limit of the auth-worker service (doveconf -d).
AUTH_WORKER_PROCESS_LIMIT = 30
# imap-hibernate processes: one holds every hibernated connection (its client_limit is all of
# them); a second may start while the first one is being replaced.
HIBERNATE_PROCESSES = 2
# Seconds in IDLE before a connection is handed to imap-hibernate: long enough that a client
# which leaves IDLE right away (to fetch what EXISTS announced, or to change folders) isn't
# passed back and forth, short enough that the imap processes woken by new mail, or started by
# a burst of logins after a restart, are gone again within seconds.
HIBERNATE_TIMEOUT_SECONDS = 10
# Descriptors imap-hibernate holds per hibernated connection: the connection from imap-login
# and the inotify descriptor that watches the selected mailbox.
HIBERNATE_FDS_PER_CONNECTION = 2
# imap-hibernate's own memory and what each connection's exported state and buffers may take.
HIBERNATE_BASE_MIB = 256
HIBERNATE_KIB_PER_CONNECTION = 64

# Dovecot's auth policy server: the policy process (mailboot.policy.service, `auth` socket), on
# loopback TCP (Dovecot's HTTP client speaks no Unix sockets), held by the supervisor and served
# on demand. It refuses logins from addresses banned for failed logins (logins.bans).
AUTH_POLICY_HOST, AUTH_POLICY_PORT = "127.0.0.1", 8895
# Dovecot hashes each login's password with this before it tells the policy server (which never
# uses the hash); it refuses an auth policy without one. Made once, kept on the volume.
AUTH_POLICY_NONCE = "auth-policy-nonce"
# With METRICS_PORT: Dovecot's stats service serves its OpenMetrics page here, on loopback only;
# the metrics child (mailboot.diagnose.metrics_child) fetches it at each scrape and passes it on.
STATS_HOST, STATS_PORT = "127.0.0.1", 8896


@dataclass(frozen=True)
class ImapLimits:
    """Dovecot's limits for IMAP_MAX_CONNECTIONS connections held at once on `cores` cores."""

    connections: int
    cores: int

    @property
    def login_processes(self) -> int:
        """Long-lived imap-login processes, one per core, between them IMAP_MAX_CONNECTIONS."""
        return self.cores

    @property
    def login_processes_waiting(self) -> int:
        """imap-login processes kept running with no connection (process_min_avail): one. The
        master starts the next when every running one is full (client_limit), so the others
        exist only under load. One per core, waiting, cost about 2 MiB each at idle (measured)
        and bought little: a login's cost is its bcrypt check (about 0.25 s of CPU, in the
        auth-worker processes, which use every core); the login process's TLS handshake (an
        ECDHE exchange and one signature) is a small fraction of it."""
        return 1

    @property
    def login_client_limit(self) -> int:
        """Connections per imap-login process: together they hold all of them."""
        return math.ceil(self.connections / self.login_processes)

    @property
    def login_vsz_limit_mib(self) -> int:
        return LOGIN_BASE_MIB + math.ceil(self.login_client_limit * LOGIN_KIB_PER_CONNECTION
                                          / 1024)

    @property
    def imap_processes(self) -> int:
        """One imap process per logged-in connection (Dovecot's imap serves one client)."""
        return self.connections

    @property
    def login_process_limit(self) -> int:
        """Room beyond the long-lived ones: the login processes take connections from one shared
        listener, so they don't fill evenly, and a process with no room left makes the master
        start another; at the limit it drops connections."""
        return 2 * self.login_processes

    @property
    def hibernate_client_limit(self) -> int:
        """Hibernated connections per imap-hibernate process: one process can hold them all."""
        return self.connections

    @property
    def hibernate_processes(self) -> int:
        return HIBERNATE_PROCESSES

    @property
    def hibernate_timeout_seconds(self) -> int:
        return HIBERNATE_TIMEOUT_SECONDS

    @property
    def hibernate_vsz_limit_mib(self) -> int:
        return HIBERNATE_BASE_MIB + math.ceil(self.hibernate_client_limit
                                              * HIBERNATE_KIB_PER_CONNECTION / 1024)

    @property
    def auth_workers(self) -> int:
        """Dovecot's own limit for the auth-worker processes that check bcrypt hashes. They
        start on demand and leave when idle. It is left at Dovecot's default: with this and the
        imap-login limit both held at the number of cores, a CI run of 500 logins met
        "process_limit (2) reached" and a temporary login failure."""
        return AUTH_WORKER_PROCESS_LIMIT

    @property
    def default_client_limit(self) -> int:
        """default_client_limit, the limit of the single-process services (auth, anvil,
        stats, config): every Dovecot process keeps a connection to stats, for one."""
        return (self.imap_processes + self.login_process_limit + self.hibernate_processes
                + LMTP_CONCURRENCY + self.auth_workers + OTHER_CLIENTS)

    @property
    def userip_connections(self) -> int:
        """mail_max_userip_connections: per user and client address."""
        return max(MIN_USERIP_CONNECTIONS, self.connections // USERIP_SHARE)

    @property
    def open_files(self) -> int:
        """The RLIMIT_NOFILE Dovecot needs: its busiest process is an imap-login one, the
        imap-hibernate one with every connection hibernated, or a single-process service with
        client_limit clients."""
        login = self.login_client_limit * LOGIN_FDS_PER_CONNECTION + LOGIN_FDS_BESIDES
        hibernate = (self.hibernate_client_limit * HIBERNATE_FDS_PER_CONNECTION
                     + LOGIN_FDS_BESIDES)
        return max(login, hibernate, self.default_client_limit + LOGIN_FDS_BESIDES)


def imap_limits(connections: int, cores: int | None) -> ImapLimits:
    """The limits for `connections` (IMAP_MAX_CONNECTIONS) on `cores` usable cores."""
    return ImapLimits(connections, max(1, cores or 1))


def context(settings: Settings, paths: Paths) -> Mapping[str, Any]:
    return {
        "mail_dir": str(paths.mail_dir),
        "passwd_file": str(paths.passwd_file),
        "lmtp_concurrency": LMTP_CONCURRENCY,
        "sieve_dir": str(paths.config("dovecot/sieve")),
        "sieve_bin_dir": str(paths.config("dovecot/sieve-bin")),
        # Our authserv-id as a regular expression inside a Sieve string (backslashes doubled).
        "sieve_authserv_id_regex": settings.hostname.replace(".", "\\\\."),
        # Cores this container may run on (`docker run --cpuset-cpus` narrows them).
        "imap": imap_limits(settings.imap_max_connections, len(os.sched_getaffinity(0))),
        "quota": quota_values(settings.mailbox_quota, paths),
        "app_password_files": [AppPasswordFile(slot, str(paths.app_password_file(slot)))
                               for slot in APP_PASSWORD_SLOTS],
        "auth_policy": auth_policy(settings, paths),
        "stats_listener": (None if settings.metrics_port == "off"
                           else {"host": STATS_HOST, "port": STATS_PORT}),
    }


@dataclass(frozen=True)
class AuthPolicy:
    """What dovecot.conf says about the auth policy server (login bans)."""

    url: str
    nonce: str


def auth_policy(settings: Settings, paths: Paths) -> AuthPolicy | None:
    """The auth policy server with LOGIN_BAN_FAILURES set; None with it off. The nonce is made
    at the first boot that needs it and read after (the same configuration at every start)."""
    if settings.login_ban_failures == "off":
        return None
    nonce_file = paths.policy_state / AUTH_POLICY_NONCE
    if not nonce_file.exists():  # create_once writes a temporary file even when it exists
        nonce_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_once(nonce_file, os.urandom(16).hex().encode(), mode=0o600)
    return AuthPolicy(f"http://{AUTH_POLICY_HOST}:{AUTH_POLICY_PORT}/",
                      nonce_file.read_text().strip())


def login_ban_arguments(settings: Settings, paths: Paths) -> list[str]:
    """The policy process's arguments for the login bans (it doesn't read the settings)."""
    if settings.login_ban_failures == "off":
        return []
    rules = (f"{settings.login_ban_failures},{settings.login_ban_window},"
             f"{settings.login_ban_duration}")
    return [f"--login-bans={rules}",
            *(f"--login-ban-allow={network}" for network in settings.login_ban_allowlist)]


def auth_policy_address(settings: Settings) -> str | None:
    """Where the supervisor listens for Dovecot's auth policy questions (None: nowhere)."""
    if settings.login_ban_failures == "off":
        return None
    return f"{AUTH_POLICY_HOST}:{AUTH_POLICY_PORT}"


@dataclass(frozen=True)
class QuotaValues:
    """What dovecot.conf says about quotas."""

    storage_size: str  # Dovecot's size: bytes, or "unlimited"
    warning_percentage: int
    trash_percentage: int
    warning_script: str


def quota_values(mailbox_quota: int | None, paths: Paths) -> QuotaValues:
    """MAILBOX_QUOTA (bytes, None for no limit) as Dovecot's quota_storage_size."""
    return QuotaValues(
        storage_size="unlimited" if mailbox_quota is None else str(mailbox_quota),
        warning_percentage=QUOTA_WARNING_PERCENTAGE,
        trash_percentage=TRASH_QUOTA_PERCENTAGE,
        warning_script=str(paths.config(QUOTA_WARNING)),
    )


@dataclass(frozen=True)
class AppPasswordFile:
    """One slot of app passwords: a passwd-file Dovecot tries as a passdb of its own."""

    slot: int
    path: str


def check(paths: Paths) -> None:
    run([DOVECONF, "-n", "-c", str(paths.config("dovecot/dovecot.conf"))])


def prepare(paths: Paths) -> None:
    """The mailboxes belong to vmail; the passwd-file exists (Dovecot logs an error for every
    lookup while it is missing) and is readable by Dovecot's group alone; Dovecot may open as
    many files as the container allows."""
    paths.mail_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    chown(paths.mail_dir, (VMAIL_UID, VMAIL_GID))
    paths.mail_dir.chmod(0o750)
    paths.accounts_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    chown(paths.accounts_dir, (0, 0))
    paths.accounts_dir.chmod(0o755)
    owner = passwd_owner()
    prepare_passwd_file(paths.passwd_file, owner)
    app_passwords = paths.app_password_file(1).parent
    app_passwords.mkdir(mode=0o755, exist_ok=True)
    for slot in APP_PASSWORD_SLOTS:
        prepare_passwd_file(paths.app_password_file(slot), owner)
    raise_open_files_limit()
    compile_sieve_scripts(paths)
    # A container killed (not stopped) keeps Dovecot's pid file; at the next start its PID may
    # be another daemon's, and Dovecot then refuses to start ("already running"). Nothing runs
    # yet while the boot prepares, so any pid file is stale.
    (paths.config_root / "run" / "dovecot" / "master.pid").unlink(missing_ok=True)


def prepare_passwd_file(path: Path, owner: tuple[int, int] | None) -> None:
    """A passwd-file exists (Dovecot logs an error for every lookup in a missing one) and
    belongs to root:dovecot, 0640."""
    if not path.exists():
        write_atomically(path, b"", mode=0o640)
    if owner is not None:
        chown(path, owner)


def compile_sieve_scripts(paths: Paths) -> None:
    """Dovecot runs the global scripts from a directory it can't write: they are compiled here
    (sievec, as root, with the real configuration for its extensions), when they changed. One
    sievec run compiles the whole directory (each run costs about 0.4 s of start-up)."""
    if not Path(SIEVEC).exists():
        return  # not in the image
    scripts = [paths.config(name) for name in SIEVE_SCRIPTS]
    if all(_compiled(script) for script in scripts):
        return
    run([SIEVEC, "-c", str(paths.config("dovecot/dovecot.conf")), str(scripts[0].parent)])


def _compiled(script: Path) -> bool:
    binary = script.with_suffix(".svbin")
    return binary.exists() and binary.stat().st_mtime >= script.stat().st_mtime


# Linux's default fs.nr_open: the most a soft limit may be when the hard one is unlimited.
NR_OPEN = 1 << 20


def raise_open_files_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard one, for Dovecot and every daemon started after.

    Docker 29 starts containers with a soft limit of 1024 (hard 524288). Dovecot's imap-login
    processes hold two descriptors per IMAP connection and its auth, anvil and stats services one
    per process, so a few hundred connections need more, and Dovecot doesn't raise the limit
    itself: it only warns "fd limit (ulimit -n) is lower than required". The kernel keeps soft
    limits low for programs that use select(); a higher one costs nothing until it is used.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = raised_soft_limit(soft, hard)
    if target is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.info("dovecot: open files limit raised from %d to %d", soft, target)


def raised_soft_limit(soft: int, hard: int) -> int | None:
    """The soft limit to set, or None when `soft` is already as high as it may go."""
    ceiling = NR_OPEN if hard == resource.RLIM_INFINITY else hard
    return ceiling if soft != resource.RLIM_INFINITY and soft < ceiling else None


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


@dataclass(frozen=True)
class QuotaUse:
    """How much of its quota a mailbox uses; limit_bytes None: no limit."""

    used_bytes: int
    limit_bytes: int | None


def quota_usage() -> dict[str, QuotaUse]:
    """Every mailbox's use and limit, from one `doveadm quota get -A`.

    Raises CommandError when doveadm fails (Dovecot not running, say)."""
    return parse_quota_usage(run([DOVEADM, "-f", "tab", "quota", "get", "-A"]))


# doveadm counts storage in KiB (src/plugins/quota/doveadm-quota.c: STORAGE is kilobytes).
QUOTA_UNIT = 1024


def parse_quota_usage(text: str) -> dict[str, QuotaUse]:
    """address -> QuotaUse from `doveadm -f tab quota get -A`: a header line, then one line per
    user, quota root and resource ("Username, Quota name, Type, Value, Limit, %"); the limit is
    "-" when there is none. Only STORAGE counts; with several roots, the tightest limit.

    Raises CommandError on output it doesn't understand."""
    found: dict[str, QuotaUse] = {}
    for line in text.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) < 5:
            if line.strip():
                raise CommandError(f"doveadm quota get gave an unexpected line: {line!r}")
            continue
        user, _root, kind, value, limit = fields[:5]
        if kind != "STORAGE":
            continue
        try:
            use = QuotaUse(int(value) * QUOTA_UNIT,
                           None if limit == "-" else int(limit) * QUOTA_UNIT)
        except ValueError:
            raise CommandError(f"doveadm quota get gave an unexpected line: {line!r}") from None
        found[user] = _tighter(found.get(user), use)
    return found


def _tighter(known: QuotaUse | None, new: QuotaUse) -> QuotaUse:
    if known is None or known.limit_bytes is None:
        return new
    if new.limit_bytes is None or known.limit_bytes <= new.limit_bytes:
        return known
    return new


DAEMON = Daemon(
    "dovecot", (DOVECOT, "-F", "-c", "/etc/dovecot/dovecot.conf"),
    templates=TEMPLATES, executable_templates=frozenset({*SIEVE_PROGRAMS, QUOTA_WARNING}),
    context=context,
    check=check, prepare=prepare, reload=reload,
)
