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

from mailboot.base.files import write_atomically
from mailboot.base.paths import Paths
from mailboot.base.users import VMAIL_GID, VMAIL_UID
from mailboot.daemons import opendkim, postfix, registry
from mailboot.dkim.keys import DomainKeys
from mailboot.mailboxes.accounts import PostfixMaps
from mailboot.settings.table import Settings
from mailboot.tls.certificates import Certificate

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
# Every daemon's templates (templates/ mirrors /etc); secret ones are readable by root alone.
CONFIG_TEMPLATES = registry.templates()
SECRET_TEMPLATES = registry.secret_templates()
EXECUTABLE_TEMPLATES = registry.executable_templates()


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
    """Every value the templates use, ready to print: what all daemons share, and each
    daemon's own (`Daemon.context`)."""
    live = paths.tls_live
    return {
        "hostname": settings.hostname,
        "domains": settings.domains,
        "primary_domain": settings.primary_domain,
        "data_dir": str(paths.data_dir),
        "tls_key": str(live / certificate.key_path.name),
        "tls_chain": str(live / certificate.chain_path.name),
        "vmail_uid": VMAIL_UID,
        "vmail_gid": VMAIL_GID,
        **dkim_table_values(keys),
        "mailboxes": maps.mailboxes,
        "aliases": maps.aliases,
        "senders": maps.senders,
        **daemon_values(settings, paths),
    }


def signing_keys(keys: Sequence[DomainKeys], algorithm: str = "rsa") -> list[dict[str, str]]:
    """OpenDKIM's KeyTable and SigningTable rows: every key of `algorithm` that signs."""
    return [{"name": key.record_name, "domain": key.domain, "selector": key.selector,
             "path": str(key.path)}
            for domain_keys in keys for key in domain_keys.signers if key.algorithm == algorithm]


def dkim_table_values(keys: Sequence[DomainKeys]) -> dict[str, Any]:
    """What OpenDKIM's tables need: the RSA instance's keys and the Ed25519 instance's."""
    return {"signing_keys": signing_keys(keys), "ed25519_signing_keys": signing_keys(keys,
                                                                                    "ed25519")}


def render_dkim_tables(keys: Sequence[DomainKeys], paths: Paths,
                       templates_dir: Path = TEMPLATES_DIR) -> list[RenderedFile]:
    """Only OpenDKIM's KeyTables and SigningTables (a DKIM key switch changes nothing else)."""
    return _render(opendkim.SIGNING_TABLES, dkim_table_values(keys), paths, templates_dir)


def daemon_values(settings: Settings, paths: Paths) -> dict[str, Any]:
    """What each daemon's module gives its templates; a name given twice is a bug, said loudly."""
    values: dict[str, Any] = {}
    for daemon in registry.DAEMONS:
        own = daemon.context(settings, paths)
        twice = set(own) & set(values)
        if twice:
            raise ValueError(f"{daemon.name} gives template values others give too: {twice}")
        values |= own
    return values


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
                     _mode(name))
        for name in names
    ]


def _mode(name: str) -> int:
    if name in SECRET_TEMPLATES:
        return 0o600
    return 0o755 if name in EXECUTABLE_TEMPLATES else 0o644


def _with_header(name: str, template: jinja2.Template, values: Mapping[str, Any]) -> bytes:
    header = (f"# Generated by mailboot from templates/{name}; edits here are overwritten at the "
              "next start.\n")
    text = template.render(values)
    if text.startswith("#!"):  # a program: the interpreter line stays first
        shebang, _, rest = text.partition("\n")
        return f"{shebang}\n{header}{rest}".encode()
    return (header + text).encode("utf-8")


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
