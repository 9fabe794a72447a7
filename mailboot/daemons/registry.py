"""The one list of daemons the boot prepares and checks and the supervisor runs, in start order.

A new daemon is one module in this package, its templates, and one entry in `DAEMONS`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mailboot.base.errors import MailbootError
from mailboot.base.paths import Paths
from mailboot.daemons import dovecot, opendkim, opendmarc, postfix, unbound
from mailboot.daemons.daemon import Daemon

if TYPE_CHECKING:  # the supervisor imports this module, and never needs the settings
    from mailboot.settings.table import Settings

log = logging.getLogger(__name__)

# Start order: the resolver before everything that resolves; the milters before Postfix, which
# uses them; Dovecot before Postfix delivers to it. Our own worker and the servers of ports 80
# and 443 are not daemons: the supervisor starts them as short runs (`on_demand`).
DAEMONS: tuple[Daemon, ...] = (unbound.DAEMON, opendkim.DAEMON, opendkim.ED25519_DAEMON,
                               opendmarc.DAEMON, dovecot.DAEMON, postfix.DAEMON)


def unwanted(settings: Settings) -> tuple[str, ...]:
    """The daemons these settings don't call for (the supervisor leaves them out)."""
    return tuple(daemon.name for daemon in DAEMONS if not daemon.wanted(settings))


def templates() -> tuple[str, ...]:
    return tuple(name for daemon in DAEMONS for name in daemon.templates)


def secret_templates() -> frozenset[str]:
    return frozenset(name for daemon in DAEMONS for name in daemon.secret_templates)


def executable_templates() -> frozenset[str]:
    return frozenset(name for daemon in DAEMONS for name in daemon.executable_templates)


def check_all(paths: Paths) -> None:
    """Let each daemon parse its own rendered configuration; any complaint stops the boot."""
    for daemon in DAEMONS:
        daemon.check(paths)


def prepare_all(paths: Paths) -> None:
    """Create the state each daemon expects, with the owners it insists on."""
    make_traversable(paths.data_dir)
    for daemon in DAEMONS:
        daemon.prepare(paths)


def reload_all(paths: Paths) -> None:
    """Have every daemon load the new live certificate, without dropping connections. A
    failure is logged, not raised: the daemon keeps serving the previous certificate."""
    for daemon in DAEMONS:
        try:
            daemon.reload(paths)
        except MailbootError as error:
            log.warning("tls: %s did not reload: %s", daemon.name, error)


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
