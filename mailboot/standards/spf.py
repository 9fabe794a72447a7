"""SPF evaluated as a receiver evaluates it (RFC 7208 §4), over the DNS doctor's lookup.

pyspf does the evaluation: mechanisms and modifiers (a, mx, ip4, ip6, include, redirect=, exists,
ptr, all), macros, the limit of 10 lookups and of 2 void lookups (RFC 7208 §4.6.4), and syntax
errors. Only its access to DNS is replaced, so every question goes through the injected lookup
(the zones' own name servers in production, DNS as data in tests).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

with warnings.catch_warnings():
    # pyspf 2.0.14's docstrings hold invalid escape sequences: Python warns when it compiles the
    # module without a cached .pyc, and the tests turn warnings into errors.
    warnings.simplefilter("ignore")
    import spf

if TYPE_CHECKING:  # dnscheck imports this module
    from mailboot.dns.answer import Lookup

# The types SPF evaluation asks for (RFC 7208 §5); type SPF (99) only in pyspf's harsh mode.
_ASKED = ("A", "AAAA", "MX", "PTR", "TXT")


@dataclass(frozen=True)
class SpfResult:
    """The outcome for one client address (RFC 7208 §2.6)."""

    result: str  # pass, fail, softfail, neutral, none, permerror, temperror
    reason: str  # for permerror the error ("Void lookup limit of 2 exceeded"); pyspf's words
    mechanism: str | None = None  # the top-level term that decided, e.g. "-all", "include:x"
    lookup_error: str | None = None  # temperror: what the failed lookup said


def evaluate(record: str, domain: str, address: str, lookup: Lookup) -> SpfResult:
    """Evaluate the SPF `record` published at `domain` for mail from `address` (as the
    check_host() function of RFC 7208 §4 with sender postmaster@domain). A broken record or a
    failed lookup is a result (permerror, temperror), not an exception."""
    query = _Query(lookup, address, f"postmaster@{domain}", domain)
    return query.outcome(*query.check(spf=record))


def check_sender(address: str, sender: str, helo: str, lookup: Lookup) -> SpfResult:
    """What a receiver concludes for mail from `sender` (MAIL FROM) arriving from `address`
    after HELO `helo`: RFC 7208 §2.4 checks the MAIL FROM identity, or postmaster@HELO for the
    null sender. The record is looked up through `lookup`."""
    query = _Query(lookup, address, sender or f"postmaster@{helo}", helo)
    return query.outcome(*query.check())


class _Query(spf.query):  # type: ignore[misc]  # pyspf has no type hints
    """pyspf's query with its DNS method answered by our lookup; one per evaluation."""

    def __init__(self, lookup: Lookup, address: str, sender: str, helo: str) -> None:
        super().__init__(i=address, s=sender, h=helo)
        self._lookup = lookup
        self.lookup_error: str | None = None

    def outcome(self, result: str, _code: int, explanation: str) -> SpfResult:
        """pyspf's (result, code, explanation) as an SpfResult, without pyspf's prefixes."""
        for prefix in ("SPF Permanent Error: ", "SPF Temporary Error: "):
            explanation = explanation.removeprefix(prefix)
        return SpfResult(result, explanation, self.mechanism, self.lookup_error)

    def dns(self, name: str, qtype: str, cnames: object = None,
            ignore_void: bool = False) -> list[object]:
        """What pyspf's `dns` returns: addresses as text, MX as (preference, host), PTR as host
        names, TXT as lists of byte strings (one per record); void lookups counted."""
        name = str(name).rstrip(".").lower()
        if qtype not in _ASKED or not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # an invalid name has no records (pyspf does the same)
        answer = self._lookup(name, qtype)
        if answer.error is not None:
            self.lookup_error = answer.error
            raise spf.TempError(f"no answer for {name} {qtype}")
        values = [_pyspf_value(qtype, value) for value in answer.values]
        if not values and not ignore_void:
            self.void_lookups += 1  # RFC 7208 §4.6.4: NXDOMAIN or no records
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return values


def _pyspf_value(qtype: str, value: str) -> object:
    if qtype == "MX":
        preference, host = value.split()
        return (int(preference), host.rstrip("."))
    if qtype == "TXT":
        return [value.encode("utf-8")]
    if qtype == "PTR":
        return value.rstrip(".")
    return value
