"""The DNS doctor: is each record published, and does it mean what we need?

`check_records` takes the record set and a lookup function and returns one `Finding` per record:
ok, missing, wrong (with what was found) or unknown (no answer could be had). A record is judged
by its kind and by meaning, not by text: MX by host and preference, DKIM by the key, SPF by
evaluating it for the server's addresses as receivers do (RFC 7208 §4, through `dnsspf`), DMARC,
MTA-STS and TLS-RPT by their tags, TXT split or not. Findings never raise: a failed lookup is a
finding too (mox's approach). When every lookup failed for one reason (no DNS server reachable),
`shared_failure` gives that reason for the caller to log once, and each record's hint is short.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final, assert_never

from mailboot.dns.answer import Answer, Lookup
from mailboot.records.build import Kind, Record, Where
from mailboot.standards import dmarc
from mailboot.standards.taglist import parse_tags, squeezed
from mailboot.tls.keys import normal_tlsa

if TYPE_CHECKING:
    from mailboot.standards.spf import SpfResult

PROPAGATION = ("changes usually show within minutes; a record that existed before may take up to "
               "its old TTL (often an hour)")
# The hint of a record whose lookup failed for the reason every lookup failed for.
SHARED_FAILURE_HINT = "no answer (DNS lookups fail, see above); checked again later"
# RFC 5737 documentation addresses, never real senders: they stand for "any other host" when a
# record is evaluated for a host that is not ours.
FOREIGN_ADDRESSES = ("192.0.2.1", "198.51.100.1")


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"
    WRONG = "wrong"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Finding:
    record: Record
    status: Status
    found: tuple[str, ...]
    hint: str  # empty when ok
    failure: str | None = None  # the lookup error that left the record unknown

    @property
    def required_and_not_ok(self) -> bool:
        return self.record.required and self.status is not Status.OK


def check_records(records: Sequence[Record], lookup: Lookup,
                  public_addresses: Sequence[str] = (),
                  budget: float | None = None) -> list[Finding]:
    """Check every record, in parallel; with a `budget` (seconds), a record not answered by
    then is `unknown` (the boot must not wait for slow name servers). When every lookup failed
    for the same reason, the hints say so briefly: the caller logs `shared_failure` once."""
    pool = ThreadPoolExecutor(max_workers=16)
    futures = [pool.submit(check_record, r, lookup, public_addresses) for r in records]
    wait(futures, timeout=budget)
    pool.shutdown(wait=False, cancel_futures=True)
    # A record still queued when the budget ran out was cancelled: done, but with no result.
    findings = [
        future.result() if future.done() and not future.cancelled() else
        Finding(record, Status.UNKNOWN, (), "no answer yet; checked again in the background")
        for record, future in zip(records, futures, strict=True)
    ]
    shared = shared_failure(findings)
    if shared is None:
        return findings
    return [dataclasses.replace(f, hint=SHARED_FAILURE_HINT) if f.failure == shared else f
            for f in findings]


def shared_failure(findings: Sequence[Finding]) -> str | None:
    """The reason every lookup failed, if more than one failed and all for the same reason (no
    DNS server reachable, say); None when any record got an answer or the reasons differ."""
    if any(f.status is not Status.UNKNOWN for f in findings):
        return None
    failures = [f.failure for f in findings if f.failure is not None]
    return failures[0] if len(failures) > 1 and len(set(failures)) == 1 else None


def summary(findings: Sequence[Finding]) -> str:
    """`12 ok, 2 missing (_dmarc.example.com TXT, example.com MX)`"""
    counts: dict[Status, list[str]] = {}
    for finding in findings:
        counts.setdefault(finding.status, []).append(
            f"{finding.record.name} {finding.record.rtype}")
    parts = [f"{len(counts[Status.OK])} ok"] if Status.OK in counts else []
    for status in (Status.MISSING, Status.WRONG, Status.UNKNOWN):
        if status in counts:
            parts.append(f"{len(counts[status])} {status.value} ({', '.join(counts[status])})")
    return ", ".join(parts)


def check_record(record: Record, lookup: Lookup, ours: Sequence[str] = ()) -> Finding:
    if record.is_placeholder:
        return Finding(record, Status.UNKNOWN, (), record.placeholder or "")
    lookup = _remembering(lookup)
    if record.kind is Kind.PTR:
        return _check_ptr(record, lookup)
    answer = lookup(record.name, record.rtype)
    if answer.error is not None:
        return _no_answer(record, answer.error)
    values = _relevant(record, answer.values)
    if record.hold:
        if values:
            return Finding(record, Status.WRONG, values,
                           f"it is published too early: {record.hold}")
        return Finding(record, Status.UNKNOWN, (), record.hold)
    if not values:
        return Finding(record, Status.MISSING, (), _missing_hint(record))
    problem = _judge(record, values, ours, lookup)
    if problem is None:
        return Finding(record, Status.OK, values, "")
    if problem.status is Status.UNKNOWN:
        return Finding(record, Status.UNKNOWN, values, problem.text, problem.failure)
    return Finding(record, Status.WRONG, values, f"{problem.text}. {_fix_hint(record)}")


def _no_answer(record: Record, error: str) -> Finding:
    return Finding(record, Status.UNKNOWN, (), f"no answer: {error}; checked again later", error)


def _remembering(lookup: Lookup) -> Lookup:
    """The lookup, asking each question once (SPF asks the same names for every address)."""
    answers: dict[tuple[str, str], Answer] = {}

    def remembered(name: str, rtype: str) -> Answer:
        key = (name.rstrip(".").lower(), rtype)
        if key not in answers:
            answers[key] = lookup(name, rtype)
        return answers[key]

    return remembered


# --- judging by kind -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    text: str
    status: Status = Status.WRONG
    failure: str | None = None  # UNKNOWN: the lookup error behind it


def _relevant(record: Record, values: tuple[str, ...]) -> tuple[str, ...]:
    """For TXT kinds, only the values with the kind's tag (a name may hold other TXT records);
    for TLSA, only the record itself (the current and the next key's records share a name)."""
    if record.kind is Kind.TLSA:
        return tuple(v for v in values if normal_tlsa(v) == normal_tlsa(record.value or ""))
    if record.kind is Kind.CAA:  # `issuewild` and `iodef` records are the user's own business
        return tuple(v for v in values if _caa(v)[0] == "issue")
    if record.kind in (Kind.DMARC, Kind.DMARC_REPORT_AUTH):
        return tuple(v for v in values if dmarc.is_dmarc_record(v))  # RFC 7489 §6.6.3 step 2
    tag = record.kind.tag
    if tag is None:
        return values
    return tuple(v for v in values if _first_tag(v) == tag.lower())


def _first_tag(value: str) -> str:
    """`v=spf1 a -all` -> `v=spf1`; `v=STSv1; id=1` -> `v=stsv1`."""
    words = value.split(";", 1)[0].split(maxsplit=1)
    return words[0].lower() if words else ""


# Why a second record of a TXT kind at one name is an error (DMARC's: `_check_dmarc`).
_ONE_RECORD: Final[Mapping[Kind, str]] = {
    Kind.SPF: "RFC 7208 §4.5", Kind.HELO_SPF: "RFC 7208 §4.5", Kind.DKIM: "RFC 6376 §3.6.2.2",
    Kind.DMARC_REPORT_AUTH: "RFC 7489 §7.1", Kind.MTA_STS: "RFC 8461 §3.1",
    Kind.TLSRPT: "RFC 8460 §3",
}


def _judge(record: Record, values: tuple[str, ...], ours: Sequence[str],
           lookup: Lookup) -> _Problem | None:
    expected = record.value or ""
    if record.kind is Kind.DMARC:
        return _check_dmarc(record.name, expected, values)
    if record.kind in _ONE_RECORD and len(values) > 1:
        return _Problem(f"there are {len(values)} such records; there must be exactly one "
                        f"({_ONE_RECORD[record.kind]})")
    match record.kind:
        case Kind.MX:
            return _wrong(_compare_mx(expected, values))
        case Kind.A | Kind.AAAA:
            if ipaddress.ip_address(expected) not in {ipaddress.ip_address(v) for v in values}:
                return _Problem(f"it points to {', '.join(values)}, not to {expected}")
            return None
        case Kind.SPF | Kind.HELO_SPF:
            if not ours:  # no public address set: we can only compare the text
                return _wrong(_compare_spf_text(expected, values[0]))
            return _check_spf(record.name, values[0], ours, lookup)
        case Kind.DKIM:
            if _tags(values[0]).get("p", "") != _tags(expected)["p"]:
                return _Problem("the published key (p=) is not the key this server signs with")
            return None
        case Kind.DMARC | Kind.DMARC_REPORT_AUTH | Kind.MTA_STS | Kind.TLSRPT:
            return _wrong(_compare_tags(_tags(expected), _tags(values[0])))
        case Kind.TLSA:
            return None  # present means right: only the matching record is relevant
        case Kind.CAA:  # other CAs may be allowed too; ours must be, as printed
            if _caa(expected) not in {_caa(v) for v in values}:
                return _Problem(f"it allows {', '.join(values)}, not {expected}")
            return None
        case Kind.MTA_STS_HOST | Kind.CLIENT_HOST | Kind.SRV | Kind.PTR:
            if {_norm(v) for v in values} != {_norm(expected)}:
                return _Problem(f"it is {', '.join(values)} instead of {expected}")
            return None
        case _:
            assert_never(record.kind)


def _wrong(problem: str | None) -> _Problem | None:
    return None if problem is None else _Problem(problem)


def _caa(value: str) -> tuple[str, str, tuple[str, ...]]:
    """`0 issue "ca.example; accounturi=X"` -> ("issue", "ca.example", ("accounturi=X",)): the
    tag, the issuer and its parameters, spacing and case of names aside (RFC 8659 §4.2)."""
    _flags, tag, *rest = [*value.split(maxsplit=2), "", ""]
    issuer, *parameters = " ".join(rest).strip().strip('"').split(";")
    return (tag.lower(), issuer.strip().lower(),
            tuple(sorted("".join(p.split()) for p in parameters if p.strip())))


def _norm(value: str) -> str:
    return " ".join(value.lower().rstrip(".").split()).rstrip(".")


def _compare_mx(expected: str, values: tuple[str, ...]) -> str | None:
    # Any preference will do, as long as no other host is preferred over ours.
    _, host = expected.split()
    published = [(int(v.split()[0]), _norm(v.split()[1])) for v in values]
    ours = [p for p, h in published if h == _norm(host)]
    if not ours:
        return f"mail goes to {', '.join(values)}, not to {host.rstrip('.')}"
    others = [f"{p} {h}" for p, h in published if h != _norm(host) and p <= min(ours)]
    if others:
        return f"other servers ({', '.join(others)}) are preferred over ours or equal to it"
    return None


def _tags(value: str) -> dict[str, str]:
    """`v=DMARC1; p=reject` -> {"v": "DMARC1", "p": "reject"} (RFC 6376 §3.2 tag lists), each
    value without whitespace: a key split over strings is the same key."""
    return {name: squeezed(tag_value) for name, tag_value in parse_tags(value).items()}


def _check_dmarc(name: str, expected: str, values: tuple[str, ...]) -> _Problem | None:
    """Our DMARC record, judged first as receivers discover it (`standards.dmarc`): several
    records, or one without a valid p=, are no policy at all, whatever their tags say."""
    found = dmarc.at_name(name, Answer(values))
    if found is not None and found.records > 1:
        return _Problem(f"{found.reason}; keep one")
    differing = _compare_tags(_tags(expected), _tags(values[0]))
    if found is not None and found.outcome is dmarc.Outcome.PERMERROR:
        return _Problem(f"{found.reason}; {differing}" if differing else found.reason)
    return _wrong(differing)


# Where reports go is the owner's choice (a DMARC service, a mailbox of theirs, or ours, which
# we print): a record that sends them elsewhere, or asks for none, still does its job.
_OWNERS_CHOICE = ("rua",)


def _compare_tags(expected: dict[str, str], found: dict[str, str]) -> str | None:
    differing = [f"{name}={found.get(name, '(absent)')} instead of {name}={value}"
                 for name, value in expected.items()
                 if name not in _OWNERS_CHOICE and found.get(name, "").lower() != value.lower()]
    return "; ".join(differing) if differing else None


# --- SPF ------------------------------------------------------------------------------------------


def _check_spf(domain: str, value: str, ours: Sequence[str], lookup: Lookup) -> _Problem | None:
    """Evaluate the published record as receivers will (RFC 7208 §4): it must pass each of our
    addresses and fail any other host. Fail, not softfail: -all is what lets receivers reject
    forged mail outright (the record we print ends in -all; ~all is reported as wrong)."""
    # Here, not at the top: pyspf loads dnspython, which the boot's path to the daemons (it
    # formats records, never checks them) should not wait for.
    from mailboot.standards import spf

    for address in ours:
        outcome = spf.evaluate(value, domain, address, lookup)
        if outcome.result != "pass":
            return _spf_problem(outcome, f"it does not authorise this server ({address})")
    other = next(a for a in FOREIGN_ADDRESSES if a not in ours)
    outcome = spf.evaluate(value, domain, other, lookup)
    if outcome.result == "fail":
        return None
    if outcome.result in ("temperror", "permerror"):
        return _spf_problem(outcome, "")
    via = f" (from {outcome.mechanism})" if outcome.mechanism else ""
    if outcome.result == "pass":
        return _Problem(f"it lets any host send as {domain}: {other}, a documentation address "
                        f"standing for any other host, passes{via}")
    return _Problem(f"it does not end in -all: other hosts get {outcome.result}{via}, so "
                    "receivers can't reject forged mail")


def _spf_problem(outcome: SpfResult, wrong: str) -> _Problem:
    if outcome.result == "temperror":
        return _Problem(f"SPF can't be evaluated: a lookup it needs got no answer "
                        f"({outcome.lookup_error}); checked again later", Status.UNKNOWN,
                        outcome.lookup_error)
    if outcome.result == "permerror":
        return _Problem(f"it is invalid (SPF permerror: {outcome.reason}), so receivers "
                        "treat it as broken")
    decided = f", decided by {outcome.mechanism}" if outcome.mechanism else ""
    return _Problem(f"{wrong}: SPF result {outcome.result}{decided}")


def _compare_spf_text(expected: str, value: str) -> str | None:
    """Without the server's address, the terms we print must be there, and -all at the end."""
    terms = value.lower().split()[1:]
    if not terms or terms[-1] != "-all":
        return "it does not end in -all, so receivers can't reject forged mail"
    needed = {t for t in expected.lower().split()[1:] if t != "-all"}
    allowed = set(terms) | {t.lstrip("+") for t in terms}
    if needed <= allowed:
        return None
    return f"it does not authorise this server ({' '.join(sorted(needed))} is missing)"


# --- reverse DNS ---------------------------------------------------------------------------------


def _check_ptr(record: Record, lookup: Lookup) -> Finding:
    """RFC 8314 / big receivers: the address names the host, and the host has the address."""
    answer = lookup(record.name, "PTR")
    if answer.error is not None:
        return _no_answer(record, answer.error)
    wanted = _norm(record.value or "")
    if not answer.values:
        return Finding(record, Status.MISSING, (), _missing_hint(record))
    if wanted not in {_norm(v) for v in answer.values}:
        return Finding(record, Status.WRONG, answer.values,
                       f"the address names {', '.join(answer.values)}, not {wanted}. "
                       f"{_fix_hint(record)}")
    address = str(_address_of_reverse_name(record.name))
    forward = lookup(wanted, "A" if ":" not in address else "AAAA")
    if forward.error is not None:  # we can't tell whether it resolves back
        return Finding(record, Status.UNKNOWN, answer.values,
                       f"the address names {wanted}, but whether {wanted} resolves back to "
                       f"{address} is unknown: no answer: {forward.error}; checked again later",
                       forward.error)
    if address not in {str(ipaddress.ip_address(v)) for v in forward.values}:
        return Finding(record, Status.WRONG, answer.values,
                       f"{wanted} does not resolve back to {address} (forward-confirmed reverse "
                       "DNS fails); publish its A/AAAA record")
    return Finding(record, Status.OK, answer.values, "")


def _address_of_reverse_name(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    labels = name.rstrip(".").split(".")
    if name.endswith("in-addr.arpa"):
        return ipaddress.IPv4Address(".".join(reversed(labels[:4])))
    nibbles = "".join(reversed(labels[:32]))
    return ipaddress.IPv6Address(":".join(nibbles[i:i + 4] for i in range(0, 32, 4)))


# --- hints ---------------------------------------------------------------------------------------

_CONSEQUENCES: Final[Mapping[Kind, str]] = {
    Kind.MX: "other servers don't know where to deliver mail for the domain",
    Kind.A: "mail can't reach this server, and no certificate can be issued for it",
    Kind.AAAA: "clients and servers using IPv6 can't reach this server",
    Kind.SPF: "receivers can't tell our mail from forgeries; much of it lands in spam",
    Kind.HELO_SPF: "receivers can't check this server's bounces by SPF, and some refuse them",
    Kind.DKIM: "our signatures can't be verified; DMARC then depends on SPF alone",
    Kind.DMARC: "receivers apply no policy to forged mail, and some treat ours as suspicious",
    Kind.DMARC_REPORT_AUTH: "that domain's reports for us are dropped",
    Kind.MTA_STS: "senders don't insist on TLS when delivering to us",
    Kind.MTA_STS_HOST: "senders can't fetch the MTA-STS policy",
    Kind.CLIENT_HOST: ("mail clients don't find their settings there, and the certificate "
                       "doesn't cover the name"),
    Kind.TLSRPT: "nobody tells us when TLS delivery to us fails",
    Kind.SRV: "mail clients can't configure themselves automatically",
    Kind.PTR: "large receivers (Gmail, Microsoft) refuse or junk mail from this address",
    Kind.CAA: "any CA may issue a certificate for this server to anyone who can pass its checks",
    Kind.TLSA: ("senders that use DANE can't verify our certificate (and, for the next key, a "
                "key rollover waits for it)"),
}


def _where(record: Record) -> str:
    if record.where is Where.PROVIDER:
        return "at your hosting provider (reverse DNS / rDNS of the server's address)"
    return f"at the DNS provider of {record.zone}"


def _missing_hint(record: Record) -> str:
    return (f"Add {record.relative_name} {record.rtype} {record.value} {_where(record)}. "
            f"Without it, {_CONSEQUENCES[record.kind]}; {PROPAGATION}.")


def _fix_hint(record: Record) -> str:
    return (f"Change it to {record.value} {_where(record)}; until then, "
            f"{_CONSEQUENCES[record.kind]}; {PROPAGATION}.")
