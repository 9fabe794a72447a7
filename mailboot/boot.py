"""The boot story, top to bottom: settings -> keys -> TLS -> accounts -> configs -> checks -> DNS.

Each stage logs one line with its duration. Order is carried by data: rendering needs the keys and
the certificate, the record set needs the keys. Every stage is idempotent, so a restart finds what
the last start made, re-renders, writes only what changed, and is quick.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from mailboot import accounts, dane, dkim, dnscheck, dnsformat, publicaddress, render
from mailboot.dnsanswer import Lookup
from mailboot.dnsrecords import Record, RecordGroup, all_records, build_record_groups
from mailboot.errors import DnsNotReady, StateError
from mailboot.files import remove_stale_temp_files
from mailboot.paths import Paths
from mailboot.settings import Settings
from mailboot.tls import caa, certificates, tlskeys
from mailboot.tls.tlskeys import TlsaKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BootPlatform:
    """What the boot does to the machine beyond files: injected so tests can stub the daemons."""

    prepare: Callable[[Paths], None]
    validate: Callable[[Paths], None]
    lookup: Lookup | None = None  # DNS for the record check; None: no network (tests)
    # Finds the addresses the internet sees when PUBLIC_IPV4/6 are unset; None: no network
    discover: publicaddress.Discover | None = None


@contextmanager
def stage(name: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    log.info("boot: %s done (%.0f ms)", name, (time.monotonic() - started) * 1000)


def check_data_dir(paths: Paths) -> None:
    """DATA_DIR must be a directory we can write: say so plainly before anything else runs.

    access(2) answers without writing anything (EROFS for a read-only mount), so a refused
    start leaves DATA_DIR exactly as it was.
    """
    directory = paths.data_dir
    if not directory.exists():
        return  # made by the first stage that needs it
    if not directory.is_dir():
        raise StateError(f"DATA_DIR {directory} is a file, not a directory: mount a directory "
                         "(a volume) there")
    if not os.access(directory, os.W_OK):
        raise StateError(f"DATA_DIR {directory} is read-only here: mount it read-write; mailboot "
                         "keeps its keys, certificates, mail and queue there")


def remove_leftovers(paths: Paths) -> None:
    """Temporary files of a start that was killed mid-write never became real files: remove
    them where we write atomically (the DKIM directories clean themselves as they are read)."""
    for root in (paths.accounts_dir, paths.tls_dir, paths.data_dir / "acme"):
        for directory, _, _ in os.walk(root):
            remove_stale_temp_files(Path(directory))


def forget_the_last_run(paths: Paths) -> None:
    """The run directory survives `docker restart`: the worker's memory of the last run (and
    challenges it left) would hold its first run of this start back, and a start is when it
    says where everything stands. Its kept problems stay, for `mailboot status`."""
    paths.worker_state.unlink(missing_ok=True)
    if paths.acme_challenges.is_dir():
        for challenge in paths.acme_challenges.iterdir():
            challenge.unlink(missing_ok=True)


def boot(settings: Settings, paths: Paths, now: datetime, platform: BootPlatform,
         out: TextIO) -> None:
    """Make everything the daemons need, check it, and print the DNS records to `out`."""
    check_data_dir(paths)
    remove_leftovers(paths)
    forget_the_last_run(paths)
    with stage("public address"):
        settings = publicaddress.settle(settings, paths, platform.discover, now)
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
        log_outbound(settings)
    with stage("check configuration with the daemons' own parsers"):
        if render.already_validated(files, paths):
            log.info("boot: configuration unchanged since it was last checked")
        else:
            platform.validate(paths)
            render.mark_validated(files, paths)
    with stage("prepare the daemons"):
        platform.prepare(paths)
    with stage("dns records"):
        lookup = platform.lookup if settings.dns_check != "off" else None
        tlsa = dane.TlsaSource(settings, paths, lookup, budget=BOOT_DNS_BUDGET)()
        if (no_caa := caa.why_none(settings)) is not None:
            log.info("dns: %s", no_caa)
        print_records(settings, keys, platform.lookup, out,
                      certificates.names_with_real_certificates(paths, now), tlsa,
                      caa.value_for(settings, paths))


# Seconds: the boot never waits longer on name servers; the worker checks the rest right after.
BOOT_DNS_BUDGET = 1.0


def print_records(settings: Settings, keys: Sequence[dkim.DomainKeys], lookup: Lookup | None,
                  out: TextIO, real_names: Collection[str] | None = None,
                  tlsa: TlsaKeys | None = None, caa_value: str | None = None) -> None:
    """Print the records with their status (DNS_CHECK); strict mode fails on missing ones."""
    groups = build_record_groups(settings, keys, real_names, tlsa, caa_value)
    findings = None
    if settings.dns_check != "off" and lookup is not None:
        findings = check_published(groups, settings, lookup, budget=BOOT_DNS_BUDGET)
        log.info("dns: %s", dnscheck.summary(list(findings.values())))
    out.write(dnsformat.zone_text(groups, findings))
    out.write("\n" + dnsformat.table_text(groups, findings))
    out.flush()
    if settings.dns_check == "strict" and findings is not None:
        missing = [f for f in findings.values() if f.required_and_not_ok]
        if missing:
            raise DnsNotReady("DNS_CHECK=strict and these required records are not in place: "
                              + "; ".join(f"{f.record.name} {f.record.rtype} ({f.status}): "
                                          f"{f.hint}" for f in missing))


def check_published(groups: Sequence[RecordGroup], settings: Settings, lookup: Lookup,
                    budget: float | None = None) -> dict[Record, dnscheck.Finding]:
    """Look every record up where it is published (the boot, `mailboot dns --check`); when no
    lookup could be answered, for one reason, that reason is logged once."""
    checked = dnscheck.check_records(all_records(groups), lookup,
                                     [str(a) for a in settings.public_addresses], budget=budget)
    failure = dnscheck.shared_failure(checked)
    if failure is not None:
        log.warning("dns: can't check the DNS records: %s", failure)
    return {finding.record: finding for finding in checked}


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
    return certificates.ensure_certificate(paths, certificates.tls_names(settings), now, key_pem)


def log_outbound(settings: Settings) -> None:
    """One line: how mail leaves, and what SPF says about it (never the password)."""
    if settings.relay_host is None:
        tls = ("DANE or opportunistic TLS" if settings.dnssec_validation == "on" else
               "opportunistic TLS (no DANE: DNSSEC_VALIDATION=off)")
        log.info("outbound: direct delivery by MX lookup from %s, HELO %s, %s",
                 ", ".join(map(str, settings.public_addresses)) or "this server",
                 settings.hostname, tls)
        return
    host, port = settings.relay_host
    login = f"AUTH as {settings.relay_user}" if settings.relay_user else "no AUTH"
    spf = (f"SPF includes {settings.relay_spf_include}" if settings.relay_spf_include else
           "SPF names no relay (set RELAY_SPF_INCLUDE)")
    log.info("outbound: through the relay [%s]:%d (TLS required, %s); %s", host, port, login, spf)


def log_certificate(certificate: certificates.Certificate, settings: Settings) -> None:
    """One line: what is served, until when, from whom; or that it is temporary, and why."""
    if certificate.self_signed:
        why = {"acme": "no certificate from the CA yet; the worker asks for one now",
               "self-signed": "TLS_MODE=self-signed"}.get(settings.tls_mode, "")
        log.info("tls: temporary self-signed certificate for %s (%s)", settings.hostname, why)
    else:
        log.info("tls: certificate valid until %s for %s, from %s",
                 certificate.not_after.strftime("%Y-%m-%d %H:%M:%S UTC"),
                 ", ".join(certificate.names), certificate.issuer)
