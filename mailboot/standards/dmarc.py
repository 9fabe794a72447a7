"""DMARC (RFC 7489): what a record says, and which record applies to a domain, decided here once.

The port-25 policy service (is there a DMARC policy, or may SPF's fail refuse the mail?), the
self-test (what receivers conclude about our mail) and the DNS doctor (is our record right?) all
read DMARC through this module, so they never disagree about whether a domain has a policy.

- `parse_record`: a TXT value is a DMARC record when its first tag is `v=DMARC1` (RFC 7489 §6.3);
  it is a valid one when its p= (and sp=, if any) is none, quarantine or reject (§6.3, §6.4).
- `at_name`: what one name's TXT answer holds (discovery's steps at one name, §6.6.3).
- `discover`: RFC 7489 §6.6.3 policy discovery, after mox's `dmarc.Lookup`: the record at
  `_dmarc.<From domain>`; when that name holds no DMARC record, the one at
  `_dmarc.<organizational domain>` (the public suffix list, as OpenDMARC reads it). Several
  DMARC records at the name discovery stops at, or one without a valid p=, mean NO policy; a
  failed lookup is a temperror, never "none". Unlike mox, several records at the From domain do
  not send discovery on to the organizational domain: step 3 looks further only when the set
  left by step 2 is empty.

RFC 7489 §6.6.3 step 6.1 asks receivers to read a record without a valid p= but with a rua= as
`p=none`; OpenDMARC does not (it reports permerror and applies nothing), nor does this module:
it judges as this container's own DMARC verifier does.

Deliberately light (no settings table, no dnspython): the port-25 policy process imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from mailboot.dns.answer import Answer, Lookup
from mailboot.standards.publicsuffix import SuffixRules
from mailboot.standards.taglist import first_tag, parse_tags

VERSION = "DMARC1"
# RFC 7489 §6.3 p= and sp=: what the domain asks receivers to do with mail failing DMARC.
DISPOSITIONS = frozenset({"none", "quarantine", "reject"})
# RFC 7489 §6.3 adkim= and aspf=: relaxed (the default) or strict identifier alignment.
ALIGNMENTS = frozenset({"r", "s"})


@dataclass(frozen=True)
class DmarcRecord:
    """One DMARC record as published: a TXT value whose first tag is v=DMARC1."""

    text: str
    tags: Mapping[str, str] = field(hash=False)  # names in lower case (`taglist.parse_tags`)

    @property
    def problem(self) -> str | None:
        """Why receivers apply no policy from this record (RFC 7489 §6.6.3 step 6); None when
        it is a valid policy record."""
        disposition = self.tags.get("p")
        if disposition is None:
            return "has no p= tag"
        if disposition.lower() not in DISPOSITIONS:
            return f"has p={disposition}, which is none of none, quarantine or reject"
        subdomains = self.tags.get("sp")
        if subdomains is not None and subdomains.lower() not in DISPOSITIONS:
            return f"has sp={subdomains}, which is none of none, quarantine or reject"
        return None

    @property
    def disposition(self) -> str:
        """The p= value in lower case (of a valid record: see `problem`)."""
        return self.tags.get("p", "").lower()

    def alignment(self, method: Literal["dkim", "spf"]) -> str:
        """`s` (strict) or `r` (relaxed) for DKIM's d= or SPF's MAIL FROM domain; relaxed when
        the tag is absent or invalid (RFC 7489 §6.3: errors fall back to the default)."""
        mode = self.tags.get("adkim" if method == "dkim" else "aspf", "r").lower()
        return mode if mode in ALIGNMENTS else "r"


def parse_record(text: str) -> DmarcRecord | None:
    """The record in a TXT value; None unless its first tag is v=DMARC1 (RFC 7489 §6.3: the
    version tag comes first, and a TXT value without it is not a DMARC record at all). Names and
    DMARC1 are read without regard to case, as OpenDMARC reads them."""
    first = first_tag(text)
    if first is None or first[0] != "v" or first[1].upper() != VERSION:
        return None
    return DmarcRecord(text, parse_tags(text))


def is_dmarc_record(text: str) -> bool:
    """Whether a TXT value counts as a DMARC record (valid or not) in discovery's step 2."""
    return parse_record(text) is not None


class Outcome(StrEnum):
    """What discovery concluded, in RFC 8601's result words where there is no policy."""

    POLICY = "policy"  # one valid record applies
    NONE = "none"  # no DMARC record, or several (RFC 7489 §6.6.3 step 5)
    PERMERROR = "permerror"  # one record, without a valid p= or sp= (step 6)
    TEMPERROR = "temperror"  # a lookup failed: nothing can be concluded yet


@dataclass(frozen=True)
class DmarcDiscovery:
    """Which DMARC record applies to a domain, or why none does."""

    name: str  # where the record was found, or where discovery stopped
    outcome: Outcome
    record: DmarcRecord | None = None  # exactly when the outcome is POLICY
    reason: str = ""  # without a policy: why, naming the record or the name
    records: int = 0  # how many DMARC records `name` holds (valid or not)

    @property
    def has_policy(self) -> bool:
        return self.record is not None


def at_name(name: str, answer: Answer) -> DmarcDiscovery | None:
    """What the TXT `answer` for `name` holds (RFC 7489 §6.6.3 steps 2, 5 and 6 at one name);
    None when it holds no DMARC record, where discovery goes on to the organizational domain."""
    if answer.error is not None:
        return DmarcDiscovery(name, Outcome.TEMPERROR, reason=f"no answer for {name} TXT: "
                              f"{answer.error}")
    records = [record for record in map(parse_record, answer.values) if record is not None]
    if not records:
        return None
    if len(records) > 1:
        return DmarcDiscovery(name, Outcome.NONE, reason=(
            f"{name} has {len(records)} DMARC records; receivers apply none of them "
            "(RFC 7489 §6.6.3)"), records=len(records))
    (record,) = records
    problem = record.problem
    if problem is not None:
        return DmarcDiscovery(name, Outcome.PERMERROR, reason=(
            f'the DMARC record at {name} ("{record.text}") {problem}, so receivers apply no '
            "DMARC policy (RFC 7489 §6.6.3)"), records=1)
    return DmarcDiscovery(name, Outcome.POLICY, record, records=1)


def discover(domain: str, lookup: Lookup, suffixes: SuffixRules) -> DmarcDiscovery:
    """RFC 7489 §6.6.3: the record that applies to mail from `domain` (its From: domain), at
    the domain or else at its organizational domain."""
    domain = domain.lower().rstrip(".")
    names = [f"_dmarc.{domain}"]
    organizational = suffixes.organizational_domain(domain)
    if organizational != domain:
        names.append(f"_dmarc.{organizational}")
    for name in names:
        found = at_name(name, lookup(name, "TXT"))
        if found is not None:
            return found
    where = " nor at ".join(names)
    return DmarcDiscovery(names[0], Outcome.NONE, reason=f"no DMARC record at {where}")
