"""Render the daemons' configuration from templates/, and write only what changed.

Templates mirror the target tree below /etc (`templates/postfix/main.cf` -> `/etc/postfix/main.cf`)
and hold no logic beyond loops over ready sequences and flags: every value is computed here, in
Python, where it is tested. Jinja runs with StrictUndefined, so a misspelt name fails the boot.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from mailboot.accounts import PostfixMaps
from mailboot.daemons import dovecot, opendkim, postfix, registry
from mailboot.dkim import DomainKeys
from mailboot.files import write_atomically
from mailboot.paths import Paths
from mailboot.settings import Settings
from mailboot.tls.certificates import Certificate
from mailboot.users import VMAIL_GID, VMAIL_UID

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
# Every daemon's templates (templates/ mirrors /etc); secret ones are readable by root alone.
CONFIG_TEMPLATES = registry.templates()
SECRET_TEMPLATES = registry.secret_templates()


@dataclass(frozen=True)
class RenderedFile:
    template: str
    target: Path
    content: bytes
    mode: int


def environment(templates_dir: Path = TEMPLATES_DIR) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - configuration files, not HTML
    )


def context(settings: Settings, paths: Paths, keys: Sequence[DomainKeys],
            certificate: Certificate, maps: PostfixMaps) -> dict[str, Any]:
    """Every value the templates use, ready to print."""
    live = paths.tls_live
    return {
        "hostname": settings.hostname,
        "domains": settings.domains,
        "primary_domain": settings.primary_domain,
        "data_dir": str(paths.data_dir),
        "queue_directory": str(paths.postfix_queue),
        "mail_dir": str(paths.mail_dir),
        "passwd_file": str(paths.passwd_file),
        "tls_key": str(live / certificate.key_path.name),
        "tls_chain": str(live / certificate.chain_path.name),
        "postfix_dir": str(paths.config("postfix")),
        "opendkim_dir": str(paths.config("opendkim")),
        "opendkim_socket": opendkim.SOCKET,
        "milter": opendkim.POSTFIX_MILTER,
        "lmtp_concurrency": dovecot.LMTP_CONCURRENCY,
        # Cores this container may run on (`docker run --cpuset-cpus` narrows them).
        "imap": dovecot.imap_limits(settings.imap_max_connections,
                                    len(os.sched_getaffinity(0))),
        "virtual_mailbox_domains": ", ".join(settings.domains),
        # Sending from an IPv6 address without a PTR gets mail refused: IPv6 only when declared.
        "inet_protocols": "all" if settings.public_ipv6 else "ipv4",
        "vmail_uid": VMAIL_UID,
        "vmail_gid": VMAIL_GID,
        "signing_keys": [
            {"domain": k.domain, "selector": k.signing.selector, "path": str(k.signing.path)}
            for k in keys
        ],
        "mailboxes": maps.mailboxes,
        "aliases": maps.aliases,
        "senders": maps.senders,
        **outbound_context(settings),
    }


def outbound_context(settings: Settings) -> dict[str, Any]:
    """How mail leaves: by MX with DANE or opportunistic TLS, or through RELAY_HOST over TLS."""
    if settings.relay_host is None:
        return {"relayhost": "", "smtp_tls_security_level": "dane",
                "smtp_tls_wrappermode": "no", "smtp_sasl_auth_enable": "no",
                "relay_credentials": []}
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
    }


def render_all(values: Mapping[str, Any], paths: Paths,
               templates_dir: Path = TEMPLATES_DIR) -> list[RenderedFile]:
    return _render(CONFIG_TEMPLATES, values, paths, templates_dir)


def render_maps(values: Mapping[str, Any], paths: Paths,
                templates_dir: Path = TEMPLATES_DIR) -> list[RenderedFile]:
    """Only Postfix's account tables (values: mailboxes, aliases, senders)."""
    return _render(postfix.ACCOUNT_TABLES, values, paths, templates_dir)


def _render(names: Sequence[str], values: Mapping[str, Any], paths: Paths,
            templates_dir: Path) -> list[RenderedFile]:
    env = environment(templates_dir)
    return [
        RenderedFile(name, paths.config(name), _with_header(name, env.get_template(name), values),
                     0o600 if name in SECRET_TEMPLATES else 0o644)
        for name in names
    ]


def _with_header(name: str, template: jinja2.Template, values: Mapping[str, Any]) -> bytes:
    header = (f"# Generated by mailboot from templates/{name}; edits here are overwritten at the "
              "next start.\n")
    return (header + template.render(values)).encode("utf-8")


# Postfix keeps re-reading a main.cf modified within the last second or so, to let an editor's
# write settle (strace shows postconf re-opening it for 2 s): that was most of a first start.
# Our files appear whole (written, then renamed), so they are dated back and read at once.
SETTLED_AGE = 3.0


def write_files(files: Sequence[RenderedFile]) -> list[Path]:
    """Write files whose content or mode changed; return those written."""
    written = [f.target for f in files if write_atomically(f.target, f.content, f.mode)]
    settled = time.time() - SETTLED_AGE
    for target in written:
        os.utime(target, (settled, settled))
    return written


def _fingerprint(files: Sequence[RenderedFile]) -> bytes:
    digest = hashlib.sha256()
    for rendered in files:
        digest.update(str(rendered.target).encode() + b"\0" + rendered.content + b"\0")
    return digest.hexdigest().encode()


def already_validated(files: Sequence[RenderedFile], paths: Paths) -> bool:
    """True when exactly these files passed the daemons' checks in this container before.

    The mark lives in the container's own filesystem, not on the volume: a new image (new
    daemons) has no mark and checks again.
    """
    try:
        return paths.validated_mark.read_bytes() == _fingerprint(files)
    except OSError:
        return False


def mark_validated(files: Sequence[RenderedFile], paths: Paths) -> None:
    write_atomically(paths.validated_mark, _fingerprint(files), mode=0o644)
