"""The organizational domain of a name (RFC 7489 §3.2), from the Public Suffix List.

DMARC looks for a policy at the domain itself and then at its organizational domain: the public
suffix (com, co.uk, github.io...) plus one label. The list comes from Debian's `publicsuffix`
package, the copy OpenDMARC reads too, so both judge a domain alike. Its rules (publicsuffix.org
"Formal algorithm"): a plain rule names a suffix, `*.` matches any one label there, `!` makes an
exception to a wildcard; the longest match wins, and an unlisted top-level label counts as a
suffix of its own (the implicit `*` rule).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEBIAN_LIST = Path("/usr/share/publicsuffix/public_suffix_list.dat")


@dataclass(frozen=True)
class SuffixRules:
    plain: frozenset[str]
    wildcards: frozenset[str]  # the part after "*."
    exceptions: frozenset[str]  # the part after "!"

    def suffix_length(self, labels: list[str]) -> int:
        """How many of the trailing `labels` form the public suffix (at least one)."""
        longest = 1
        for count in range(1, len(labels) + 1):
            candidate = ".".join(labels[-count:])
            if candidate in self.exceptions:
                return count - 1  # an exception's suffix is its parent
            if candidate in self.plain:
                longest = count
            parent = ".".join(labels[-count + 1:]) if count > 1 else None
            if parent is not None and parent in self.wildcards:
                longest = count
        return longest

    def organizational_domain(self, domain: str) -> str:
        """The public suffix and one more label; a public suffix itself is its own."""
        labels = domain.lower().rstrip(".").split(".")
        length = self.suffix_length(labels)
        return ".".join(labels[-min(length + 1, len(labels)):])


def parse_rules(lines: Iterable[str]) -> SuffixRules:
    plain, wildcards, exceptions = set(), set(), set()
    for raw in lines:
        rule = raw.split()[0] if raw.split() else ""
        if not rule or rule.startswith("//"):
            continue
        rule = rule.lower()
        if rule.startswith("!"):
            exceptions.add(rule[1:])
        elif rule.startswith("*."):
            wildcards.add(rule[2:])
        else:
            plain.add(rule)
    return SuffixRules(frozenset(plain), frozenset(wildcards), frozenset(exceptions))


def load_rules(path: Path = DEBIAN_LIST) -> SuffixRules:
    """The list's rules; without the file, only the implicit rule (each TLD is a suffix)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return parse_rules(())
    return parse_rules(text.splitlines())
