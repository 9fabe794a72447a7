"""`mailboot selftest`: our own mail judged as a receiver will judge it, before anyone else does.

For each mail domain a test message is built as one of its users, signed with the live DKIM key
(the one OpenDKIM signs with), and evaluated as if it arrived from each public address
(PUBLIC_IPV4 / PUBLIC_IPV6) after HELO MAIL_HOSTNAME, against the records as published:

- DKIM (RFC 6376) by dkimpy, the key record fetched through our lookup;
- SPF (RFC 7208) by pyspf, through our lookup (`dnsspf`);
- DMARC (RFC 7489): the record that applies by `standards.dmarc` (the one discovery the port-25
  policy service and the DNS doctor use too), then here identifier alignment, and a pass when
  an aligned SPF or DKIM result passes.

The lookup is injected: the zones' own name servers (or DNS_RESOLVERS) in production, DNS as data
in tests. Each failure names the record to fix, with the value `records.build` says belongs there.
"""

from __future__ import annotations

import logging
import secrets
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

from mailboot.base import programs
from mailboot.base.errors import MailbootError, StateError
from mailboot.base.paths import Paths
from mailboot.dkim import keys as dkim_keys
from mailboot.dkim.keys import DkimKey, DomainKeys
from mailboot.dns.answer import Lookup
from mailboot.mailboxes import accounts
from mailboot.records.build import Kind, Record, all_records, build_record_groups
from mailboot.records.zonefile import zone_rdata
from mailboot.settings.table import Settings
from mailboot.standards import dmarc
from mailboot.standards import spf as dnsspf
from mailboot.standards.publicsuffix import SuffixRules, load_rules

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # dkimpy's docstrings hold invalid escapes, as pyspf's do
    import dkim

log = logging.getLogger(__name__)

# Signed as OpenDKIM signs our users' mail (templates/opendkim.conf): relaxed/simple.
CANONICALIZATION = (b"relaxed", b"simple")
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]
NO_ADDRESS = ("no public address is set (PUBLIC_IPV4 / PUBLIC_IPV6): receivers judge SPF by the "
              "address mail comes from, so nothing can be evaluated. Set the server's public "
              "address and restart")
# SPF results of the HELO identity that are no problem: its record is optional (records.build).
_HELO_FINE = ("pass", "none", "neutral")


@dataclass(frozen=True)
class Check:
    """One method's verdict (RFC 8601 result words) and, when it fails, the record to fix."""

    method: str  # dkim, spf, dmarc, helo
    result: str  # pass, fail, softfail, neutral, none, permerror, temperror
    reason: str
    fix: Record | None = None

    @property
    def ok(self) -> bool:
        return self.result in _HELO_FINE if self.method == "helo" else self.result == "pass"


@dataclass(frozen=True)
class Verdict:
    """What a receiver concludes about one domain's mail arriving from one public address."""

    domain: str
    address: str
    sender: str
    checks: tuple[Check, ...]  # dkim, spf, dmarc

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


@dataclass(frozen=True)
class Report:
    verdicts: tuple[Verdict, ...]
    helo: tuple[tuple[str, Check], ...] = ()  # (address, SPF of the HELO name)
    problem: str | None = None  # why nothing could be evaluated

    @property
    def ok(self) -> bool:
        return (self.problem is None and bool(self.verdicts)
                and all(v.ok for v in self.verdicts) and all(c.ok for _, c in self.helo))


# --- the whole test -------------------------------------------------------------------------------

def run(settings: Settings, paths: Paths, lookup: Lookup, now: datetime,
        suffixes: SuffixRules | None = None) -> Report:
    """Evaluate every domain's mail with the live keys and our users. Raises StateError when
    the keys or the accounts can't be read."""
    keys = dkim_keys.ensure_keys(paths, settings.domains, now, settings.dkim_algorithms)
    return evaluate(settings, keys, senders_for(settings, paths), lookup, now,
                    load_rules() if suffixes is None else suffixes)


def senders_for(settings: Settings, paths: Paths) -> dict[str, str]:
    """Each domain's first mailbox, or postmaster@ (which always exists, RFC 2142)."""
    found: dict[str, str] = {}
    for account in accounts.read_accounts(paths):
        found.setdefault(account.address.rpartition("@")[2], account.address)
    return {domain: found.get(domain, f"postmaster@{domain}") for domain in settings.domains}


def evaluate(settings: Settings, keys: Sequence[DomainKeys], senders: Mapping[str, str],
             lookup: Lookup, now: datetime, suffixes: SuffixRules) -> Report:
    """The verdicts for every domain and public address; no public address is a problem."""
    addresses = [str(address) for address in settings.public_addresses]
    if not addresses:
        return Report((), problem=NO_ADDRESS)
    records = all_records(build_record_groups(settings, keys))
    verdicts: list[Verdict] = []
    for domain_keys in keys:
        domain, sender = domain_keys.domain, senders[domain_keys.domain]
        message = sign(build_message(sender, sender, now), domain_keys.signing)
        dkim_check = check_dkim(message, domain_keys.signing, lookup,
                                _record(records, Kind.DKIM, domain_keys.signing.record_name))
        found = dmarc.discover(domain, lookup, suffixes)
        dmarc_record = _record(records, Kind.DMARC, f"_dmarc.{domain}")
        spf_record = _record(records, Kind.SPF, domain)
        for address in addresses:
            spf_check = check_spf(address, sender, settings.hostname, lookup, spf_record)
            dmarc_check = judge_dmarc(domain, found, (dkim_check, domain_keys.signing.domain),
                                      (spf_check, sender.rpartition("@")[2]), suffixes,
                                      dmarc_record)
            verdicts.append(Verdict(domain, address, sender, (dkim_check, spf_check,
                                                              dmarc_check)))
    helo_record = (_record(records, Kind.HELO_SPF, settings.hostname)
                   or _record(records, Kind.SPF, settings.hostname))
    helo = tuple((address, check_helo(address, settings.hostname, lookup, helo_record))
                 for address in addresses)
    return Report(tuple(verdicts), helo)


def _record(records: Sequence[Record], kind: Kind, name: str) -> Record | None:
    return next((r for r in records if r.kind is kind and r.name == name), None)


# --- the message ----------------------------------------------------------------------------------

def build_message(sender: str, recipient: str, now: datetime) -> bytes:
    """A small message from `sender`, with CRLF line ends as it travels (RFC 5322 §2.1)."""
    domain = sender.rpartition("@")[2]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = f"mailboot self-test for {domain}"
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<selftest.{secrets.token_hex(8)}@{domain}>"
    message.set_content(
        f"This message tests how receivers judge mail from {domain}: its DKIM signature, the\n"
        "SPF record and the DMARC policy. It was sent by `mailboot selftest`.\n")
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def sign(message: bytes, key: DkimKey) -> bytes:
    """The message with a DKIM-Signature by `key` on top. Raises StateError if the key can't
    be read."""
    try:
        pem = key.path.read_bytes()
    except OSError as error:
        raise StateError(f"can't read the DKIM key {key.path}: {error.strerror}") from error
    signature = dkim.sign(message, key.selector.encode(), key.domain.encode(), pem,
                          canonicalize=CANONICALIZATION, include_headers=SIGNED_HEADERS)
    return bytes(signature) + message


SENDMAIL = "/usr/sbin/sendmail"


def send(sender: str, recipient: str, now: datetime) -> None:
    """Send a test message for real, through the local Postfix, for an external checker.

    It goes in unsigned through sendmail: Postfix's pickup hands it to OpenDKIM (the
    non-SMTP milter), which signs it as it signs every user's mail, so the checker judges the
    real signing path, and the message carries one signature, not two. Raises CommandError
    when Postfix refuses it.
    """
    message = build_message(sender, recipient, now).replace(b"\r\n", b"\n")  # UNIX form
    programs.run([SENDMAIL, "-i", "-f", sender, "--", recipient],
                 stdin=message.decode("ascii"))


# --- DKIM -----------------------------------------------------------------------------------------

def check_dkim(message: bytes, key: DkimKey, lookup: Lookup, fix: Record | None) -> Check:
    """Verify the signature of `key` as a receiver does, its key record fetched by `lookup`."""
    name = key.record_name
    published: list[str] = []
    failed: list[str] = []
    problems = _Collected()

    def txt(qname: bytes, timeout: int = 5) -> bytes | None:  # dkimpy's dnsfunc
        del timeout  # the lookup keeps its own
        answer = lookup(qname.decode("ascii").rstrip("."), "TXT")
        if answer.error is not None:
            failed.append(answer.error)
            raise dkim.DnsTimeoutError(answer.error)  # dkimpy: the key is unknown for now
        published.extend(answer.values)
        return answer.values[0].encode() if answer.values else None

    if dkim.verify(message, logger=problems.logger, dnsfunc=txt):
        return Check("dkim", "pass", f"the signature by {name} verifies (d={key.domain})")
    if failed:
        return Check("dkim", "temperror", f"no answer for {name} TXT: {failed[-1]}")
    if not published:
        return Check("dkim", "fail", f"no key record at {name}: receivers can't verify the "
                     "signature", fix)
    said = f" ({problems.lines[-1]})" if problems.lines else ""
    return Check("dkim", "fail", f"the key published at {name} does not verify the signature "
                 f"of the signing key{said}", fix)


class _Collected(logging.Handler):
    """dkimpy says why a signature failed only in its log: keep the lines for the reason."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.logger = logging.Logger("mailboot.selftest.dkimpy")  # unregistered: no global state
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.lines.append(record.getMessage())


# --- SPF ------------------------------------------------------------------------------------------

def check_spf(address: str, sender: str, helo: str, lookup: Lookup,
              fix: Record | None) -> Check:
    """SPF of the MAIL FROM identity (RFC 7208 §2.4) for mail from `address`."""
    domain = sender.rpartition("@")[2]
    outcome = dnsspf.check_sender(address, sender, helo, lookup)
    published = _spf_text(domain, lookup)
    if outcome.result == "pass":
        return Check("spf", "pass", f"{published} allows {address}")
    if outcome.result == "temperror":
        return Check("spf", "temperror", f"no answer looking up SPF for {domain}: "
                     f"{outcome.lookup_error or outcome.reason}")
    if outcome.result == "none":
        return Check("spf", "none", f"{domain} publishes no SPF record", fix)
    if outcome.result == "permerror":
        return Check("spf", "permerror", f"{published} is broken: {outcome.reason}", fix)
    decided = f" (decided by {outcome.mechanism})" if outcome.mechanism else ""
    return Check("spf", outcome.result, f"{published} does not allow {address}{decided}", fix)


def check_helo(address: str, helo: str, lookup: Lookup, fix: Record | None) -> Check:
    """SPF of the HELO identity (RFC 7208 §2.3), what receivers judge bounces by."""
    outcome = dnsspf.check_sender(address, "", helo, lookup)
    if outcome.result in _HELO_FINE:
        words = {"pass": "allows", "none": "no SPF record (optional) for",
                 "neutral": "says nothing about"}[outcome.result]
        return Check("helo", outcome.result, f"{helo}: {words} {address}")
    return Check("helo", outcome.result, f"{_spf_text(helo, lookup)} does not allow {address} "
                 f"({outcome.lookup_error or outcome.reason})", fix)


def _spf_text(domain: str, lookup: Lookup) -> str:
    """`the SPF record of example.com ("v=spf1 a mx -all")`, for reasons."""
    answer = lookup(domain, "TXT")
    found = [v for v in answer.values if v.lower().startswith("v=spf1")]
    if len(found) == 1:
        return f'the SPF record of {domain} ("{found[0]}")'
    return f"the SPF record of {domain}"


# --- DMARC ----------------------------------------------------------------------------------------

def aligned(identifier: str, from_domain: str, mode: str, suffixes: SuffixRules) -> bool:
    """RFC 7489 §3.1: strict, the same name; relaxed, the same organizational domain."""
    identifier, from_domain = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if mode == "s":
        return identifier == from_domain
    return suffixes.organizational_domain(identifier) == suffixes.organizational_domain(
        from_domain)


def judge_dmarc(domain: str, found: dmarc.DmarcDiscovery, dkim_result: tuple[Check, str],
                spf_result: tuple[Check, str], suffixes: SuffixRules,
                fix: Record | None) -> Check:
    """RFC 7489 §4.2: pass when SPF or DKIM passes with its identifier (the signature's d=,
    the MAIL FROM domain) aligned with the From: `domain`."""
    record = found.record
    if record is None:  # no policy (none, several, invalid) or no answer
        return Check("dmarc", found.outcome.value, found.reason,
                     None if found.outcome is dmarc.Outcome.TEMPERROR else fix)
    passing = [check.method.upper() for check, identifier in (dkim_result, spf_result)
               if check.ok and aligned(identifier, domain, record.alignment(
                   "dkim" if check.method == "dkim" else "spf"), suffixes)]
    where = f"p={record.disposition} at {found.name}"
    if passing:
        return Check("dmarc", "pass", f"aligned {' and '.join(passing)} pass ({where})")
    return Check("dmarc", "fail", f"neither SPF nor DKIM passes for {domain} ({where}): "
                 f"receivers apply p={record.disposition}; fix the records above")


# --- telling it -----------------------------------------------------------------------------------

def report_text(report: Report, helo: str) -> str:
    """One block per domain and address, each failure followed by the record to fix."""
    if report.problem is not None:
        return f"selftest: FAIL - {report.problem}\n"
    lines: list[str] = []
    for verdict in report.verdicts:
        lines.append(f"{verdict.domain}: {'PASS' if verdict.ok else 'FAIL'} - mail from "
                     f"{verdict.sender} arriving from {verdict.address} (HELO {helo})")
        for check in verdict.checks:
            lines += _check_lines(check)
        lines.append("")
    for address, check in report.helo:
        lines.append(f"HELO {helo} from {address}: {'PASS' if check.ok else 'FAIL'} "
                     "(the identity bounces are judged by)")
        lines += [*_check_lines(check), ""]
    passed = sum(v.ok for v in report.verdicts)
    lines.append(f"selftest: {'PASS' if report.ok else 'FAIL'} - {passed} of "
                 f"{len(report.verdicts)} domain and address pairs pass")
    return "\n".join(lines) + "\n"


def _check_lines(check: Check) -> list[str]:
    lines = [f"  {check.method.upper():<6}{check.result:<10}{check.reason}"]
    if not check.ok and check.fix is not None:
        record = check.fix
        lines.append(f"  {'':<16}fix: publish {record.fqdn} {record.ttl} IN {record.rtype} "
                     f"{zone_rdata(record)}")
    return lines


def summary_line(report: Report) -> str:
    """The report in one log line: the verdicts that failed, with the records to fix."""
    if report.problem is not None:
        return f"selftest: nothing evaluated - {report.problem}"
    if report.ok:
        domains = ", ".join(dict.fromkeys(v.domain for v in report.verdicts))
        addresses = ", ".join(dict.fromkeys(v.address for v in report.verdicts))
        return (f"selftest: PASS - receivers will find DKIM, SPF and DMARC passing for "
                f"{domains} from {addresses}")
    failures = [f"{verdict.domain} from {verdict.address}: "
                + ", ".join(f"{c.method}={c.result}" + (f" (fix {c.fix.name} {c.fix.rtype})"
                                                         if c.fix else "")
                            for c in verdict.checks if not c.ok)
                for verdict in report.verdicts if not verdict.ok]
    failures += [f"HELO from {address}: spf={check.result}" for address, check in report.helo
                 if not check.ok]
    return (f"selftest: FAIL - receivers will find problems with our mail: "
            f"{'; '.join(failures)}; `mailboot selftest` shows the records to publish")


def log_summary(settings: Settings, paths: Paths, lookup: Lookup, now: datetime,
                suffixes: SuffixRules | None = None) -> Report | None:
    """Run the self-test and log one line (for the worker, once DNS is READY); never raises
    for what the test finds or can't read. None when it could not run."""
    try:
        report = run(settings, paths, lookup, now, suffixes)
    except (MailbootError, dkim.DKIMException) as error:
        log.warning("selftest: could not run: %s", error)
        return None
    if report.ok:
        log.info("%s", summary_line(report))
    else:
        log.warning("%s", summary_line(report))
    return report
