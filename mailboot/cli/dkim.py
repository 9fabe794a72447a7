"""`mailboot dkim list|rotate|import`: the DKIM keys of every domain, and their rotation.

A rotation never makes a key sign by itself: the commands make or store the next key and print
its record, and the worker switches once the record is served (`rotation.dkim`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from mailboot.base.errors import UsageError
from mailboot.base.formats import human_time, machine_time
from mailboot.base.paths import Paths
from mailboot.dkim import keys as dkim
from mailboot.dkim.keys import DkimKey, DomainKeys
from mailboot.dkim.state import Role
from mailboot.dns.answer import Lookup
from mailboot.records import doctor, zonefile
from mailboot.records.build import dkim_record
from mailboot.rotation import dkim as dkimrotation
from mailboot.settings.table import Settings
from mailboot.settings.values import SettingValueError, parse_domain_name

RETIRED = "retired"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dkim_command = commands.add_parser("dkim", help="list, rotate and import DKIM keys")
    actions = dkim_command.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every key per domain: what signs, what its "
                                 "record looks like in DNS")
    listing.add_argument("--json", action="store_true", help="a JSON array, one object per key")
    listing.set_defaults(run=run_list)
    rotate = actions.add_parser("rotate", help="make the next key(s) and print the records to "
                                "add; the worker switches once they are served")
    rotate.add_argument("--domain", metavar="DOMAIN", help="only this mail domain")
    rotate.set_defaults(run=run_rotate)
    bring = actions.add_parser("import", help="bring a key from another server (PEM on "
                               "standard input); it signs once its record is served")
    bring.add_argument("--domain", metavar="DOMAIN", required=True)
    bring.add_argument("--selector", metavar="SELECTOR", required=True)
    bring.set_defaults(run=run_import)


@dataclass(frozen=True)
class KeyLine:
    """One key as `dkim list` shows it."""

    key: DkimKey
    role: str  # signing, next, previous, retired
    created: datetime
    record: str | None  # OK, MISSING, WRONG, UNKNOWN; None for a retired key (not published)
    retire_after: datetime | None

    def as_json(self) -> dict[str, object]:
        return {"domain": self.key.domain, "selector": self.key.selector,
                "algorithm": self.key.algorithm, "bits": self.key.bits,
                "created": machine_time(self.created), "role": self.role,
                "signs": self.role == Role.SIGNING, "record_name": self.key.record_name,
                "record": self.record,
                "retire_after": machine_time(self.retire_after) if self.retire_after else None}


def key_lines(settings: Settings, paths: Paths, lookup: Lookup | None) -> list[KeyLine]:
    """Every key of every domain, retired ones last; `lookup` None: records not checked."""
    keys = dkim.ensure_keys(paths, settings.domains, datetime.now(UTC), settings.dkim_algorithms)
    grace = settings.dkim_rotation_grace
    lines = []
    for domain_keys in keys:
        state = domain_keys.state
        for key in domain_keys.keys:
            role = _role(domain_keys, key)
            switched = state.switched(key.algorithm, key.selector) if state else None
            record = None
            if lookup is not None:
                finding = doctor.check_record(
                    dkim_record(key, signing=role is Role.SIGNING, role=role), lookup)
                record = finding.status.value.upper()
            lines.append(KeyLine(key, role.value, _created(key), record,
                                 _after(switched, grace)))
        for key in retired_keys(paths, domain_keys.domain):
            lines.append(KeyLine(key, RETIRED, _created(key), None, None))
    return lines


def _role(domain_keys: DomainKeys, key: DkimKey) -> Role:
    if key in domain_keys.signers:
        return Role.SIGNING
    role = domain_keys.role(key)
    return Role.PREVIOUS if role is Role.SIGNING else role  # an algorithm turned off


def _after(switched: datetime | None, grace: int) -> datetime | None:
    return None if switched is None else switched + timedelta(seconds=grace)


def _created(key: DkimKey) -> datetime:
    # Key files are written once and never changed (retiring renames): mtime is creation.
    return datetime.fromtimestamp(key.path.stat().st_mtime, UTC)


def retired_keys(paths: Paths, domain: str) -> list[DkimKey]:
    directory = paths.dkim_domain_dir(domain) / dkim.RETIRED
    return [dkim.load_key(domain, path) for path in sorted(directory.glob("*" + dkim.KEY_SUFFIX))]


def run_list(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from mailboot.dns.lookup import DnsLookup  # here: dnspython stays out of `mailboot run`

    paths = Paths(settings.data_dir)
    lines = key_lines(settings, paths, DnsLookup(settings.dns_resolvers))
    if arguments.json:
        out.write(json.dumps([line.as_json() for line in lines], indent=2) + "\n")
        return 0
    domain = None
    for line in lines:
        if line.key.domain != domain:
            domain = line.key.domain
            out.write(f"{domain}\n")
        size = f"{line.key.algorithm} {line.key.bits}"
        record = f"record {line.record}" if line.record else "not published"
        extra = f", retired after {human_time(line.retire_after)}" if line.retire_after else ""
        out.write(f"  {line.key.selector:<16} {size:<12} created {line.created:%Y-%m-%d}  "
                  f"{line.role:<8} {record}{extra}\n")
    return 0


def _domains(settings: Settings, text: str | None) -> tuple[str, ...]:
    if text is None:
        return settings.domains
    try:
        domain = parse_domain_name(text)
    except SettingValueError as error:
        raise UsageError(f"--domain: {error}") from None
    if domain not in settings.domains:
        raise UsageError(f"--domain: {domain} is not one of MAIL_DOMAINS "
                         f"({', '.join(settings.domains)})")
    return (domain,)


def run_rotate(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Make the next keys and print their records; the worker does the rest."""
    paths, now = Paths(settings.data_dir), datetime.now(UTC)
    domains = _domains(settings, arguments.domain)
    dkim.ensure_keys(paths, domains, now, settings.dkim_algorithms)
    out.write("; DKIM rotation: add these records at your DNS provider. The current keys keep "
              "signing;\n; the worker switches to a new key once its record is served (the log "
              "says so).\n")
    for domain in domains:
        for key in dkimrotation.start_rotation(paths, domain, settings.dkim_algorithms, now):
            record = dkim_record(key, signing=False, role=Role.NEXT)
            out.write(zonefile.zone_line(record) + "\n")
    return 0


def run_import(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Store a key read from standard input as the next key of its domain."""
    paths = Paths(settings.data_dir)
    (domain,) = _domains(settings, arguments.domain)
    selector = arguments.selector.strip().lower()
    pem = sys.stdin.buffer.read()
    dkimrotation.parse_import(pem)  # a key that can't sign changes nothing, not even a new key
    dkim.ensure_keys(paths, (domain,), datetime.now(UTC), settings.dkim_algorithms)
    key = dkimrotation.import_key(paths, domain, selector, pem, settings.dkim_algorithms)
    record = dkim_record(key, signing=False, role=Role.NEXT)
    out.write(f"; imported {key.algorithm} key {key.selector} for {domain}: it signs once this "
              "record is served (the log says so):\n" + zonefile.zone_line(record) + "\n")
    return 0

