"""Unbound: the container's own validating DNS resolver, on 127.0.0.1, for every daemon and us.

Blocklists such as Spamhaus refuse queries that reach them through large public resolvers and
answer 127.255.255.254 instead (a resolver that isn't ours is shared with the world), and only a
validating resolver sets the AD bit that makes Postfix's outbound DANE (RFC 7672) real. So the
container resolves for itself: from the root servers, or through DNS_FORWARDERS where outbound
DNS is blocked. The cache lives in memory only; nothing is written to DATA_DIR.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailboot.base.paths import Paths
from mailboot.base.programs import run
from mailboot.daemons.daemon import Daemon

if TYPE_CHECKING:
    from mailboot.settings.table import Settings

log = logging.getLogger(__name__)

UNBOUND = "/usr/sbin/unbound"
CHECKCONF = "/usr/sbin/unbound-checkconf"
TEMPLATES = ("unbound/unbound.conf",)
# The DNSSEC root trust anchor, from Debian's dns-root-data (updated with the package, so no
# writable RFC 5011 state is needed in the container).
ROOT_TRUST_ANCHOR = "/usr/share/dns/root.key"
CONTROL_SOCKET = "/run/unbound.ctl"
# glibc's resolver (Postfix, OpenDMARC) asks only this resolver; trust-ad: glibc passes on the
# AD bit only when told the resolver is trusted (resolv.conf(5), glibc 2.31), which DANE needs.
RESOLV_CONF = "nameserver 127.0.0.1\noptions edns0 trust-ad\n"
SYSTEM_RESOLV_CONF = Path("/etc/resolv.conf")
# What Docker gave the container, kept for the boot's own DNS check: it runs before Unbound.
DOCKER_RESOLV_CONF = Path("/run/mailboot/resolv.conf.docker")


def context(settings: Settings, _paths: Paths) -> Mapping[str, Any]:
    return {
        "unbound_forwarders": [f"{host}@{port}" for host, port in settings.dns_forwarders],
        # Asking root and other servers over IPv6 only helps where the container has it.
        "unbound_ipv6": "yes" if settings.public_ipv6 else "no",
        "unbound_trust_anchor": ROOT_TRUST_ANCHOR,
        "unbound_validate": settings.dnssec_validation == "on",
        "unbound_control_socket": CONTROL_SOCKET,
    }


def check(paths: Paths) -> None:
    run([CHECKCONF, str(paths.config("unbound/unbound.conf"))])


def prepare(_paths: Paths) -> None:
    if Path(UNBOUND).exists():  # outside the image the machine's resolver is left alone
        use_local_resolver(SYSTEM_RESOLV_CONF, DOCKER_RESOLV_CONF)


def use_local_resolver(resolv_conf: Path, saved: Path) -> None:
    """Point the container's resolver configuration at Unbound, keeping Docker's aside.

    Docker bind-mounts /etc/resolv.conf into the container, so it is rewritten in place (a
    rename would fail: the mount point can't be replaced).
    """
    current = resolv_conf.read_text()
    if current == RESOLV_CONF:
        return
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(current)
    with resolv_conf.open("w") as file:
        file.write(RESOLV_CONF)
    log.info("boot: the daemons resolve through the container's own resolver (127.0.0.1)")


def boot_resolv_conf(resolv_conf: Path = SYSTEM_RESOLV_CONF,
                     saved: Path = DOCKER_RESOLV_CONF) -> Path:
    """The resolver configuration the boot can use before Unbound runs: Docker's own."""
    try:
        ours = resolv_conf.read_text() == RESOLV_CONF
    except OSError:
        return resolv_conf
    return saved if ours and saved.exists() else resolv_conf


DAEMON = Daemon(
    "unbound", (UNBOUND, "-d", "-p", "-c", "/etc/unbound/unbound.conf"),
    templates=TEMPLATES, context=context, check=check, prepare=prepare,
)
