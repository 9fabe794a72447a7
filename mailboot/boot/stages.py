"""The boot story, top to bottom: settings -> keys -> TLS -> accounts -> configs -> checks.

Each stage logs one line with its duration. Order is carried by data: rendering needs the keys and
the certificate. Every stage is idempotent, so a restart finds what the last start made,
re-renders, writes only what changed, and is quick. What needs the network (the public address,
the DNS records and their check) is `records_and_address`'s: it runs beside the daemons, so a
slow name server never holds mail up, and this module imports no DNS library.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailboot import render
from mailboot.base.formats import human_time
from mailboot.base.paths import Paths
from mailboot.dkim import keys as dkim
from mailboot.dns import names
from mailboot.mailboxes import accounts
from mailboot.settings.table import Settings
from mailboot.tls import certificates
from mailboot.tls import keys as tlskeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BootPlatform:
    """What the boot does to the machine beyond files: injected so tests can stub the daemons."""

    prepare: Callable[[Paths], None]
    validate: Callable[[Paths], None]


@contextmanager
def stage(name: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    log.info("boot: %s done (%.0f ms)", name, (time.monotonic() - started) * 1000)


@dataclass(frozen=True)
class Prepared:
    """What the boot made: the DKIM keys (for the records), the certificate served, the
    rendered files, and which of them it changed (a warm start's check beside the daemons
    reloads them)."""

    keys: tuple[dkim.DomainKeys, ...]
    certificate: certificates.Certificate
    rendered: tuple[Path, ...]
    changed: tuple[Path, ...]


def prepare(settings: Settings, paths: Paths, now: datetime, platform: BootPlatform) -> Prepared:
    """Make everything the daemons need and check it.

    DATA_DIR is `datadir.begin`'s, first. Nothing here waits on the network: what asks the DNS
    (the public address, the records' check) is `records_and_address`'s, which runs beside the
    daemons.
    """
    with stage("dkim keys"):
        keys = dkim.ensure_keys(paths, settings.domains, now, settings.dkim_algorithms)
    with stage("tls certificate"):
        certificate = ensure_tls(settings, paths, now)
        log_certificate(certificate, settings)
    with stage("accounts"):
        maps = accounts.postfix_maps(settings.domains, accounts.read_accounts(paths),
                                     accounts.read_aliases(paths))
        if not maps.mailboxes:
            log.warning("boot: no mailbox yet; create one with `docker exec <container> mailboot "
                        "account add you@%s --password-stdin`", settings.primary_domain)
    with stage("render configuration"):
        values = render.context(settings, paths, keys, certificate, maps)
        files = render.render_all(values, paths)
        changed = render.write_files(files)
        log.info("boot: %d configuration file(s) changed", len(changed))
    with stage("check configuration with the daemons' own parsers"):
        if render.already_validated(files, paths):
            log.info("boot: configuration unchanged since it was last checked")
        else:
            platform.validate(paths)
            render.mark_validated(files, paths)
    with stage("prepare the daemons"):
        platform.prepare(paths)
    return Prepared(keys, certificate, tuple(file.target for file in files),
                    tuple(changed))


def ensure_tls(settings: Settings, paths: Paths, now: datetime) -> certificates.Certificate:
    """The certificate to start with: the mounted one (manual), else whatever valid one is live
    (from the CA or self-signed), else a new self-signed one."""
    if settings.tls_mode == "manual" and settings.tls_cert_file and settings.tls_key_file:
        certificates.install_manual(paths, settings.tls_cert_file, settings.tls_key_file, now)
        live = certificates.read_live(paths)
        if live is not None:
            return live
    key_pem = None
    if settings.tls_mode == "acme":  # the kept key, so a TLSA record holds for this one too
        live = certificates.read_live(paths)
        adopt = live.key_path.read_bytes() if live is not None and live.source == "acme" else None
        tlskeys.ensure_keys(paths, adopt)  # an upgrade keeps the key it serves: no new order
        key_pem = tlskeys.current_key(paths)
    return certificates.ensure_certificate(paths, names.tls_names(settings), now, key_pem)


def log_certificate(certificate: certificates.Certificate, settings: Settings) -> None:
    """One line: what is served, until when, from whom; or that it is temporary, and why."""
    if certificate.self_signed:
        why = {"acme": "no certificate from the CA yet; the worker asks for one now",
               "self-signed": "TLS_MODE=self-signed"}.get(settings.tls_mode, "")
        log.info("tls: temporary self-signed certificate for %s (%s)", settings.hostname, why)
    else:
        log.info("tls: certificate valid until %s for %s, from %s",
                 human_time(certificate.not_after), ", ".join(certificate.names),
                 certificate.issuer)
