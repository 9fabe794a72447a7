"""The DNS doctor: is each record published, and does it mean what we need?

`check_records` takes the record set and a lookup function and returns one `Finding` per record:
ok, missing, wrong (with what was found) or unknown (no answer could be had). Comparison is by
meaning, not by text: MX by host and preference, DKIM by the key, SPF by whether it lets our
server send and ends in -all, DMARC and TLS-RPT by their tags, TXT split or not. Findings never
raise: a failed lookup is a finding too (mox's approach).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum

from mailboot.dnsrecords import Record, Where

PROPAGATION = ("changes usually show within minutes; a record that existed before may take up to "
               "its old TTL (often an hour)")


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"
    WRONG = "wrong"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Answer:
    """What the DNS said: values in presentation form (TXT strings joined, unquoted)."""

    values: tuple[str, ...] = ()
    nxdomain: bool = False
    error: str | None = None  # set when no server answered (timeout, refused, ...)


Lookup = Callable[[str, str], Answer]


@dataclass(frozen=True)
class Finding:
    record: Record
    status: Status
    found: tuple[str, ...]
    hint: str  # empty when ok

    @property
    def required_and_not_ok(self) -> bool:
        return self.record.required and self.status is not Status.OK


def check_records(records: Sequence[Record], lookup: Lookup,
                  public_addresses: Sequence[str] = (),
                  budget: float | None = None) -> list[Finding]:
    """Check every record, in parallel; with a `budget` (seconds), a record not answered by
    then is `unknown` (the boot must not wait for slow name servers)."""
    pool = ThreadPoolExecutor(max_workers=16)
    futures = [pool.submit(check_record, r, lookup, public_addresses) for r in records]
    wait(futures, timeout=budget)
    pool.shutdown(wait=False, cancel_futures=True)
    # A record still queued when the budget ran out was cancelled: done, but with no result.
    return [future.result() if future.done() and not future.cancelled() else
            Finding(record, Status.UNKNOWN, (), "no answer yet; checked again in the background")
            for record, future in zip(records, futures, strict=True)]


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
    if record.where is Where.PROVIDER:
        return _check_ptr(record, lookup)
    answer = lookup(record.name, record.rtype)
    if record.hold and answer.error is None:
        if _relevant_txt(record, answer.values):
            return Finding(record, Status.WRONG, answer.values,
                           f"it is published too early: {record.hold}")
        return Finding(record, Status.UNKNOWN, (), record.hold)
    if answer.error is not None:
        return Finding(record, Status.UNKNOWN, (),
                       f"no answer from the name servers ({answer.error}); checked again later")
    values = answer.values
    if record.rtype == "TXT":
        values = _relevant_txt(record, values)
    if not values:
        return Finding(record, Status.MISSING, (), _missing_hint(record))
    problem = _compare(record, values, ours)
    if problem is None:
        return Finding(record, Status.OK, values, "")
    return Finding(record, Status.WRONG, values, f"{problem}. {_fix_hint(record)}")


# --- comparison by meaning ------------------------------------------------------------------------


def _relevant_txt(record: Record, values: tuple[str, ...]) -> tuple[str, ...]:
    """Only the TXT values of the same kind (a domain may hold other TXT records too)."""
    prefix = (record.value or "").split(";")[0].split(" ")[0].strip().lower()
    return tuple(v for v in values if v.strip().lower().startswith(prefix))


def _compare(record: Record, values: tuple[str, ...], ours: Sequence[str]) -> str | None:
    expected = record.value or ""
    kind = record.rtype
    if kind == "TXT":
        return _compare_txt(expected, values, ours)
    if kind == "MX":
        return _compare_mx(expected, values)
    if kind in ("A", "AAAA"):
        wanted = ipaddress.ip_address(expected)
        if wanted not in {ipaddress.ip_address(v) for v in values}:
            return f"it points to {', '.join(values)}, not to {expected}"
        return None
    if kind in ("CNAME", "SRV"):
        if {_norm(v) for v in values} != {_norm(expected)}:
            return f"it is {', '.join(values)} instead of {expected}"
        return None
    return None if _norm(expected) in {_norm(v) for v in values} else "it differs"


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


def _compare_txt(expected: str, values: tuple[str, ...], ours: Sequence[str]) -> str | None:
    if len(values) > 1:
        return f"there are {len(values)} such records; there must be exactly one (RFC 7208 §4.5)"
    value = values[0]
    if expected.startswith("v=spf1"):
        return _compare_spf(expected, value, ours)
    if expected.startswith("v=DKIM1"):
        return (None if _tags(value).get("p", "").replace(" ", "") == _tags(expected)["p"]
                else "the published key (p=) is not the key this server signs with")
    if expected.startswith(("v=DMARC1", "v=TLSRPTv1", "v=STSv1")):
        return _compare_tags(_tags(expected), _tags(value))
    return None if value == expected else f"it is {value!r}"


def _tags(value: str) -> dict[str, str]:
    """`v=DMARC1; p=reject` -> {"v": "DMARC1", "p": "reject"} (RFC 6376 §3.2 tag lists)."""
    tags = {}
    for part in value.split(";"):
        name, _, tag_value = part.partition("=")
        if name.strip():
            tags[name.strip().lower()] = "".join(tag_value.split())
    return tags


def _compare_tags(expected: dict[str, str], found: dict[str, str]) -> str | None:
    differing = [f"{name}={found.get(name, '(absent)')} instead of {name}={value}"
                 for name, value in expected.items()
                 if found.get(name, "").lower() != value.lower()]
    return "; ".join(differing) if differing else None


def _compare_spf(expected: str, value: str, ours: Sequence[str]) -> str | None:
    terms = value.lower().split()[1:]
    if not terms or terms[-1] != "-all":
        return "it does not end in -all, so receivers can't reject forged mail"
    needed = {t for t in expected.lower().split()[1:] if t != "-all"}
    allowed = set(terms) | {t.lstrip("+") for t in terms}
    ip_terms = {f"ip{ipaddress.ip_address(a).version}:{a}" for a in ours}
    if needed <= allowed or (ip_terms and ip_terms <= allowed):
        return None
    return f"it does not authorise this server ({' '.join(sorted(needed))} is missing)"


# --- reverse DNS ---------------------------------------------------------------------------------


def _check_ptr(record: Record, lookup: Lookup) -> Finding:
    """RFC 8314 / big receivers: the address names the host, and the host has the address."""
    answer = lookup(record.name, "PTR")
    if answer.error is not None:
        return Finding(record, Status.UNKNOWN, (), f"no answer for the reverse name "
                       f"({answer.error}); checked again later")
    wanted = _norm(record.value or "")
    if not answer.values:
        return Finding(record, Status.MISSING, (), _missing_hint(record))
    if wanted not in {_norm(v) for v in answer.values}:
        return Finding(record, Status.WRONG, answer.values,
                       f"the address names {', '.join(answer.values)}, not {wanted}. "
                       f"{_fix_hint(record)}")
    address = str(_address_of_reverse_name(record.name))
    forward = lookup(wanted, "A" if ":" not in address else "AAAA")
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

_CONSEQUENCE = {
    "MX": "other servers don't know where to deliver mail for the domain",
    "A": "mail can't reach this server, and no certificate can be issued for it",
    "AAAA": "clients and servers using IPv6 can't reach this server",
    "CNAME": "senders can't fetch the MTA-STS policy",
    "SRV": "mail clients can't configure themselves automatically",
    "PTR": "large receivers (Gmail, Microsoft) refuse or junk mail from this address",
}


def _consequence(record: Record) -> str:
    value = record.value or ""
    if value.startswith("v=spf1"):
        return "receivers can't tell our mail from forgeries; much of it lands in spam"
    if value.startswith("v=DKIM1"):
        return "our signatures can't be verified; DMARC then depends on SPF alone"
    if value.startswith("v=DMARC1") and "._report." in record.name:
        return "that domain's reports for us are dropped"
    if value.startswith("v=DMARC1"):
        return "receivers apply no policy to forged mail, and some treat ours as suspicious"
    if value.startswith("v=STSv1"):
        return "senders don't insist on TLS when delivering to us"
    if value.startswith("v=TLSRPTv1"):
        return "nobody tells us when TLS delivery to us fails"
    return _CONSEQUENCE.get(record.rtype, "mail may be affected")


def _where(record: Record) -> str:
    if record.where is Where.PROVIDER:
        return "at your hosting provider (reverse DNS / rDNS of the server's address)"
    return f"at the DNS provider of {record.zone}"


def _missing_hint(record: Record) -> str:
    return (f"Add {record.relative_name} {record.rtype} {record.value} {_where(record)}. "
            f"Without it, {_consequence(record)}; {PROPAGATION}.")


def _fix_hint(record: Record) -> str:
    return (f"Change it to {record.value} {_where(record)}; until then, {_consequence(record)}; "
            f"{PROPAGATION}.")
