"""OpenDMARC: judges every message that arrives on port 25 by its sender's DMARC policy (RFC 7489).

It runs after OpenDKIM as a milter on Postfix's port-25 service and reads OpenDKIM's DKIM
verdict from the Authentication-Results header OpenDKIM adds (same authserv-id). SPF is checked
here too, by OpenDMARC's own libspf2 (measured: 2.6 MiB PSS for the whole milter, where
postfix-policyd-spf-python takes 19.6 MiB per running process), and only OpenDMARC's own result
counts (SPFIgnoreResults): an SPF verdict in a header could come from the sender.

A failure under p=reject is refused with a 5xx at the end of DATA; under p=quarantine the
message is delivered with the verdict in Authentication-Results, and Dovecot's global Sieve
script files it into Junk (Postfix's hold queue, the milter's alternative, is a place nobody
looks). Our own users (465/587, logged in) never pass through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mailboot.base.paths import Paths
from mailboot.base.programs import run
from mailboot.daemons.daemon import Daemon

if TYPE_CHECKING:
    from mailboot.settings.table import Settings

OPENDMARC = "/usr/sbin/opendmarc"
SOCKET = "inet:8893@127.0.0.1"
POSTFIX_MILTER = "inet:127.0.0.1:8893"
TEMPLATES = ("opendmarc/opendmarc.conf", "opendmarc/ignore.hosts")
# Debian's publicsuffix package: the organizational domain of RFC 7489 §3.2.
PUBLIC_SUFFIX_LIST = "/usr/share/publicsuffix/public_suffix_list.dat"


def context(_settings: Settings, paths: Paths) -> Mapping[str, Any]:
    return {"opendmarc_dir": str(paths.config("opendmarc")), "opendmarc_socket": SOCKET,
            "dmarc_milter": POSTFIX_MILTER, "public_suffix_list": PUBLIC_SUFFIX_LIST}


def check(paths: Paths) -> None:
    # -n: parse the configuration and exit; it names the line it can't use.
    run([OPENDMARC, "-n", "-c", str(paths.config("opendmarc/opendmarc.conf"))])


DAEMON = Daemon(
    "opendmarc", (OPENDMARC, "-f", "-c", "/etc/opendmarc/opendmarc.conf"),
    templates=TEMPLATES, context=context, check=check,
)
