"""Postfix: SMTP on 25 (inbound), submission on 465/587, the queue, delivery by LMTP and MX.

Its queue lives below DATA_DIR so queued mail survives a new container.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailboot.base.errors import CommandError, StateError
from mailboot.base.paths import Paths
from mailboot.base.programs import CHILD_ENV, chown, run, succeeds
from mailboot.base.sockets import SMTP_PORT
from mailboot.base.users import user_ids
from mailboot.daemons.daemon import Daemon

if TYPE_CHECKING:
    from mailboot.settings.table import Settings

log = logging.getLogger(__name__)

POSTFIX = "/usr/sbin/postfix"
DAEMON_DIRECTORY = "/usr/lib/postfix/sbin"  # postconf daemon_directory, Debian's
POSTCONF = "/usr/sbin/postconf"
# Lookup tables made from the accounts; re-rendered alone when an account changes.
ACCOUNT_TABLES = ("postfix/mailboxes", "postfix/aliases", "postfix/senders")
# Readable by root alone: Postfix opens its tables before dropping privileges.
RELAY_CREDENTIALS_TABLE = "postfix/relay_password"
# Inbound defence: forged verdicts removed, blocklist names shown without the DQS key.
INBOUND_TABLES = ("postfix/header_checks", "postfix/dnsbl_reply")
# SRS for forwarded copies: which leave through srs-forward, which recipients are SRS, and
# what of a forwarded copy is held instead.
SRS_TABLES = ("postfix/srs_senders", "postfix/srs_bounces", "postfix/forward_checks")
# The report addresses, read by mailboot.inbound.reports through a pipe (master.cf).
REPORTS_TABLE = "postfix/reports"
TEMPLATES = ("postfix/main.cf", "postfix/master.cf", *ACCOUNT_TABLES,
             RELAY_CREDENTIALS_TABLE, *INBOUND_TABLES, *SRS_TABLES, REPORTS_TABLE)

# Spamhaus's domain blocklist (DBL), for HELO names, sender domains and the client's name:
# 127.0.1.2-99 are listings; 127.255.255.x (query refused) never matches.
DBL_ZONE, DBL_LISTED = "dbl.spamhaus.org", "127.0.1.[2..99]"
# Our policy service (mailboot.policy.service), relative to the queue directory: the supervisor
# listens there and starts the policy process on the first question (socket activation).
POLICY_SERVICE = "mailboot-policy"
POLICY_SOCKET = f"private/{POLICY_SERVICE}"
# The policy process's SRS lookups (socketmap_table(5)), and the loopback port where forwarded
# copies come back in to have their sender rewritten (master.cf).
SRS_SOCKET = "private/mailboot-srs"
SRS_REINJECTION_PORT = 10026
# The submission services' connection check against login bans, on the same policy process.
BANS_SOCKET = "private/mailboot-bans"
# Who the policy process runs as: it needs nothing but the resolver and its notes (below the run
# directory, made for it here). A user of its own (the Dockerfile makes it).
POLICY_USER = "mailpolicy"
POLICY_PYTHON = "/usr/bin/python3"  # Debian's, where the image installs mailboot
# Receivers' MTA-STS policies (outbound.mtasts): the policy process answers Postfix's
# smtp_tls_policy_maps as a socketmap on this socket (relative to the queue directory).
MTASTS_SOCKET = "private/mailboot-mtasts"
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
SYSTEM_CA_DIRECTORY = "/etc/ssl/certs"  # Debian's hashed links to the same certificates
# Dovecot's quota-status policy service (dovecot.conf), relative to the queue directory.
QUOTA_STATUS_SOCKET = "private/quota-status"
QUEUE_DIRECTORIES = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
                     "incoming", "maildrop", "private", "public", "saved", "trace")


def context(settings: Settings, paths: Paths) -> Mapping[str, Any]:
    return {
        "postfix_dir": str(paths.config("postfix")),
        "queue_directory": str(paths.postfix_queue),
        "postscreen_cache": str(paths.postfix_state / "postscreen_cache"),
        "virtual_mailbox_domains": ", ".join(settings.domains),
        # Sending from an IPv6 address without a PTR gets mail refused: IPv6 only when declared.
        "inet_protocols": "all" if settings.public_ipv6 else "ipv4",
        "smtp_ipv4_only": smtp_ipv4_only(settings, paths),
        **outbound_context(settings),
        "mtasts_socket": (str(paths.postfix_queue / MTASTS_SOCKET)
                          if "mtasts" in policy_sockets(settings, paths) else ""),
        **inbound_context(settings),
        **srs_context(settings, paths),
        # The submission services ask our policy service only when a sending limit is on.
        "sending_limits": settings.sending_limits != (None, None),
        **reports_context(settings, paths),
    }


def reports_context(settings: Settings, paths: Paths) -> dict[str, Any]:
    """The report addresses Postfix pipes to mailboot.inbound.reports: those of DMARC_RUA and
    TLSRPT_RUA at one of our domains (others are someone else's mailbox, and https URIs are
    not mail)."""
    addresses = dict.fromkeys(
        uri.removeprefix("mailto:") for uri in (*settings.dmarc_rua, *settings.tlsrpt_rua)
        if uri.startswith("mailto:") and uri.rpartition("@")[2] in settings.domains)
    return {"report_addresses": list(addresses), "policy_user": POLICY_USER,
            "policy_python": POLICY_PYTHON, "policy_state": str(paths.policy_state),
            # pipe(8) gives its command a bare environment: where our package is, said here.
            "mailboot_path": str(Path(__file__).resolve().parents[2])}


def srs_context(settings: Settings, paths: Paths) -> dict[str, Any]:
    """SRS for forwarded copies (main.cf, master.cf): our domains as a regexp alternation, the
    policy process's socket, and the route a rewritten copy leaves by (the relay's, if any:
    a content filter without a next hop would go to the recipient's MX)."""
    relayhost = outbound_context(settings)["relayhost"]
    return {
        "srs_own_domains_pattern": "|".join(domain.replace(".", "\\.")
                                            for domain in settings.domains),
        "srs_socket": str(paths.postfix_queue / SRS_SOCKET),
        "srs_reinjection_port": SRS_REINJECTION_PORT,
        "srs_content_filter": f"smtp:{relayhost}",
    }


def smtp_ipv4_only(settings: Settings, paths: Paths) -> bool:
    """Keep the SMTP client to IPv4 although the server has PUBLIC_IPV6: until the worker has
    confirmed the address's PTR (`network.reputation`), big receivers would refuse mail sent
    from it. The relay (RELAY_HOST) authenticates us instead, so it is reached as before."""
    if settings.public_ipv6 is None or settings.relay_host is not None:
        return False
    try:
        confirmed = paths.ipv6_confirmed.read_text().strip()
    except OSError:
        return True  # not confirmed (yet)
    return confirmed != str(settings.public_ipv6)


def inbound_context(settings: Settings) -> dict[str, Any]:
    """What port 25 asks before it accepts mail: postscreen's blocklists, the DBL, our policy
    service, and the pattern of Authentication-Results headers that claim to be ours."""
    zones = [DBL_ZONE] if settings.dnsbl else []
    zones += [site.zone for site in settings.dnsbl]
    return {
        "dnsbl_sites": ", ".join(site.postscreen_form(settings.blocklist_zone(site.zone))
                                 for site in settings.dnsbl),
        # What a refused client is told: never the query name that holds the DQS key.
        "dnsbl_shown_as": {settings.blocklist_zone(zone): zone for zone in zones
                           if settings.blocklist_zone(zone) != zone},
        "dbl": (f"{settings.blocklist_zone(DBL_ZONE)}={DBL_LISTED}" if settings.dnsbl
                else ""),
        "policy_socket": POLICY_SOCKET,
        "bans_socket": BANS_SOCKET if settings.login_ban_failures != "off" else "",
        "quota_status_socket": QUOTA_STATUS_SOCKET,
        "own_authserv_id_pattern": settings.hostname.replace(".", "\\."),
    }


def policy_command(settings: Settings, paths: Paths) -> list[str]:
    """The policy process's command line (the supervisor adds the socket): where it asks each
    address blocklist (with the DQS key, as postscreen's sites in main.cf do) and the name shown
    in the log; where its state lives, and the sending limits (it never reads the settings)."""
    zones = dict.fromkeys(site.zone for site in settings.dnsbl)
    lists = [f"--blocklist={settings.blocklist_zone(zone)}={zone}" for zone in zones]
    mtasts = [f"--helo={settings.hostname}"]
    if settings.tls_trust_ca_file is not None:
        mtasts.append(f"--trust-ca-file={settings.tls_trust_ca_file}")
    # SRS (outbound.srs): addresses under the primary domain, whose SPF names this server;
    # bounces are taken back under any of our domains.
    srs = [f"--srs-domain={settings.primary_domain}", f"--state={paths.policy_state}",
           *(f"--mail-domain={domain}" for domain in settings.domains)]
    limits = [f"--send-limit-messages={settings.send_limit_messages_per_day}",
              f"--send-limit-first-time={settings.send_limit_first_time_recipients_per_day}"]
    return [POLICY_PYTHON, "-P", "-m", "mailboot.policy.service",
            f"--notes={paths.inbound_state}", *lists, *mtasts, *srs, *limits]


def policy_socket(paths: Paths) -> Path:
    return paths.postfix_queue / POLICY_SOCKET


def policy_sockets(settings: Settings, paths: Paths) -> dict[str, Path]:
    """The Unix sockets the policy process serves for Postfix, by name (`policy.service`)."""
    sockets = {"policy": policy_socket(paths), "srs": paths.postfix_queue / SRS_SOCKET}
    if settings.relay_host is None:  # through a relay, TLS is `encrypt` to it alone
        sockets["mtasts"] = paths.postfix_queue / MTASTS_SOCKET
    if settings.login_ban_failures != "off":
        sockets["bans"] = paths.postfix_queue / BANS_SOCKET
    return sockets


def outbound_context(settings: Settings) -> dict[str, Any]:
    """How mail leaves: by MX with DANE, MTA-STS or opportunistic TLS, or through RELAY_HOST
    over TLS; verified against the system's CAs and TLS_TRUST_CA_FILE's."""
    extra = settings.tls_trust_ca_file
    trust = {
        # Postfix takes one CA file; with TLS_TRUST_CA_FILE that one is the extra file and the
        # system's CAs come from their hashed directory (OpenSSL reads both).
        "smtp_tls_ca_file": str(extra) if extra is not None else SYSTEM_CA_FILE,
        "smtp_tls_ca_path": SYSTEM_CA_DIRECTORY if extra is not None else "",
    }
    if settings.relay_host is None:
        return {"relayhost": "", "smtp_tls_security_level": "dane",
                "smtp_tls_wrappermode": "no", "smtp_sasl_auth_enable": "no",
                "relay_credentials": [], **trust}
    host, port = settings.relay_host
    destination = f"[{host}]:{port}"
    credentials = []
    if settings.relay_user is not None and settings.relay_password is not None:
        credentials = [{"destination": destination, "user": settings.relay_user,
                        "password": settings.relay_password}]
    return {
        "relayhost": destination,
        "smtp_tls_security_level": "encrypt",
        # RFC 8314 §3.3: port 465 is TLS from the first byte; every other port uses STARTTLS.
        "smtp_tls_wrappermode": "yes" if port == 465 else "no",
        "smtp_sasl_auth_enable": "yes" if credentials else "no",
        "relay_credentials": credentials,
        **trust,
    }


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
    half a second, so it runs only when the queue is incomplete (first start, or damage).

    The master then starts (`MASTER`, after postsuper's structure check alone) without
    postfix-script's other integrity checks, which `postfix start-fg` would run first at every
    start (about 0.4 s before the SMTP banner: a find over the queue, the configuration and
    Postfix's own files): `check_beside` runs them once the master listens, and their warnings
    reach the log just the same."""
    paths.postfix_queue.mkdir(mode=0o755, parents=True, exist_ok=True)
    paths.postfix_state.mkdir(mode=0o700, exist_ok=True)
    owner = user_ids("postfix")
    if owner is not None:
        chown(paths.postfix_state, owner)
    chown(paths.postfix_queue, (0, 0))
    paths.postfix_queue.chmod(0o755)
    prepare_policy_notes(paths)
    if not queue_is_complete(paths.postfix_queue):
        run([POSTFIX, "-c", str(paths.config("postfix")), "set-permissions"])
        run([POSTFIX, "-c", str(paths.config("postfix")), "check"])


def check_beside(paths: Paths) -> None:
    """Postfix's own integrity checks, beside the running master (`postfix check`: missing
    queue directories made, misplaced queue files moved by postsuper, which `postfix reload`
    also runs beside the master, then owners, permissions and damaged messages). Their
    findings reach the log through Postfix's log service, as
    `postfix/postfix-script[PID]: warning: not owned by postfix: ...`; a failure is logged too."""
    try:
        run([POSTFIX, "-c", str(paths.config("postfix")), "check"], timeout=600)
    except CommandError as error:
        log.error("postfix: Postfix's own integrity checks failed (%s); the lines of "
                  "postfix/postfix-script above say what they found", error)


def prepare_policy_notes(paths: Paths) -> None:
    """The policy processes' notes: theirs alone, and fresh at each start (they are about this
    run: a warning is said again after a restart)."""
    notes = paths.inbound_state
    notes.mkdir(mode=0o700, parents=True, exist_ok=True)
    for note in notes.iterdir():
        note.unlink()
    owner = user_ids(POLICY_USER)
    if owner is not None:
        chown(notes, owner)
    prepare_policy_state(paths.policy_state, owner)


def prepare_policy_state(state: Path, owner: tuple[int, int] | None) -> None:
    """The policy process's state on the volume: its own, and every file in it too (a restore
    or a command run as root may have left one root's)."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    state.chmod(0o700)
    if owner is None:
        return
    for path in (state, *state.rglob("*")):
        if path.stat().st_uid != owner[0] or path.stat().st_gid != owner[1]:
            chown(path, owner)


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


# The master, started as `postfix start-fg` starts it when it isn't PID 1 (postfix-script: `master
# -s`, in the foreground), without the two programs before it: the `postfix` command and the
# script cost about 40 ms before the banner, and Debian's configure-instance copies /etc files
# into the queue directory for chrooted services (master.cf runs none chrooted). The script's
# checks run beside it (`check_beside`), all but one: postsuper's structure check, which "should
# be done once before Postfix startup" (postsuper(1) -s; -p removes what interrupted submissions
# left). It renames queue files whose name no longer matches their inode, as in a queue restored
# from a backup or moved to another disk; the queue manager would otherwise lose track of those
# it picked up meanwhile until its next scan. A few ms, run here so that only Postfix waits for
# it, not the other daemons; if it fails, Postfix doesn't start (postfix-script's check-fatal
# did the same). Then `exec`: SIGTERM reaches the master and stops it cleanly (master(8): it
# passes the signal to its processes and exits), where `postfix stop` polls once a second.
POSTSUPER = "/usr/sbin/postsuper"
MASTER = ("/bin/sh", "-c", f"{POSTSUPER} -s -p && exec {DAEMON_DIRECTORY}/master -s")

DAEMON = Daemon(
    "postfix", MASTER,
    templates=TEMPLATES, secret_templates=frozenset({RELAY_CREDENTIALS_TABLE}), context=context,
    check=check, prepare=prepare, reload=reload,
)


# proc(5): the kernel's TCP sockets, one per line: local address as HEX_IP:HEX_PORT, state 0A for
# LISTEN.
TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def wait_until_listening(timeout: float = 30.0,
                         tables: Sequence[Path] = TCP_TABLES) -> bool:
    """Until something listens on port 25 (Postfix's master binds it as it starts), at most
    `timeout` seconds; False when it never did. What runs beside the daemons' start waits for
    this: on two cores, the boot's work beside Postfix's start-up checks made that start 0.1 s
    slower (BENCHMARKS.md, Bare daemons). It only reads the kernel's tables: no connection."""
    deadline = time.monotonic() + timeout
    while not any(_listens(table, SMTP_PORT) for table in tables):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _listens(table: Path, port: int) -> bool:
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return False
    wanted = f":{port:04X}"
    return any(fields[1].endswith(wanted) and fields[3] == "0A"
               for fields in (line.split() for line in lines) if len(fields) > 3)
