"""Our own good name: are this server's addresses or domains on Spamhaus's blocklists, and may
mail leave over IPv6?

Receivers ask Spamhaus ZEN about the address a message comes from and the DBL about the domains
in it; a listing sends our mail to spam or gets it refused, and nothing else tells us. The
worker asks at start, when the DNS records become READY, and daily: the public addresses on ZEN
(RFC 5782 §2.1 and §2.4 query names) and every mail domain and MAIL_HOSTNAME on the DBL, through
SPAMHAUS_DQS_KEY's zones when set, through our own resolver (Spamhaus refuses queries from large
public resolvers: DNS_RESOLVERS, when set, must be one it answers).

An answer is one of three verdicts. `listed`: a return code Spamhaus documents as a listing,
said with its meaning and the page that explains it and how to ask for removal. `clean`: no
record (NXDOMAIN). `can't tell`: 127.255.255.x ("query refused": a public resolver, too many
queries, a mistyped zone or key), an answer that is no return code of the list (a resolver that
rewrites NXDOMAIN), or no answer at all. "Can't tell" is never a listing; it is said in the log
(as information: the check can't work, the mail is not harmed) and shown by `mailboot status`,
which a listing makes exit 1.

IPv6: big receivers refuse mail from an IPv6 address without forward-confirmed reverse DNS (its
PTR names MAIL_HOSTNAME, whose AAAA holds the address). With PUBLIC_IPV6, Postfix's SMTP client
is kept to IPv4 until the worker has confirmed the PTR (`Ipv6Sending`), and again as soon as it
no longer holds; the log says so, and why.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

from mailboot.base.files import read_json_object, write_atomically
from mailboot.base.formats import machine_time
from mailboot.base.taskstate import JsonObject, Saved, StateUnreadable, read_object, read_text
from mailboot.dns.answer import Answer, Lookup
from mailboot.settings.table import Settings

log = logging.getLogger("mailboot.reputation")

RECHECK = timedelta(days=1)
ZEN = "zen.spamhaus.org"
DBL = "dbl.spamhaus.org"
# Spamhaus's lookup page: why a listing was made and how to ask for its removal.
LOOKUP_PAGE = "https://check.spamhaus.org/results/?query="
# Lookups at once: a server with many domains is not checked one name after another.
PARALLEL = 8

# Spamhaus's documented return codes (spamhaus.org, "DNSBL return codes").
ZEN_CODES = {
    "127.0.0.2": "SBL: a known spam source or spam operation",
    "127.0.0.3": "SBL CSS: spam detected automatically (snowshoe)",
    "127.0.0.4": "XBL: an exploited or infected machine (bot, open proxy)",
    "127.0.0.5": "XBL: an exploited or infected machine (bot, open proxy)",
    "127.0.0.6": "XBL: an exploited or infected machine (bot, open proxy)",
    "127.0.0.7": "XBL: an exploited or infected machine (bot, open proxy)",
    "127.0.0.9": "SBL DROP: a hijacked or criminal network",
    "127.0.0.10": "PBL: its ISP says this address should not send mail directly",
    "127.0.0.11": "PBL: an end-user address that should not send mail directly",
}
DBL_CODES = {
    "127.0.1.2": "a spam domain",
    "127.0.1.4": "a phishing domain",
    "127.0.1.5": "a malware domain",
    "127.0.1.6": "a botnet command-and-control domain",
    "127.0.1.102": "an abused legitimate domain, seen in spam",
    "127.0.1.103": "an abused legitimate domain, a spammed redirector",
    "127.0.1.104": "an abused legitimate domain, seen in phishing",
    "127.0.1.105": "an abused legitimate domain, seen with malware",
    "127.0.1.106": "an abused legitimate domain, used by a botnet",
}
UNDOCUMENTED = "a listing code Spamhaus does not document"
# 127.255.255.x: the list would not answer us. Never a listing.
REFUSED = ipaddress.IPv4Network("127.255.255.0/24")
REFUSALS = {
    "127.255.255.252": "a mistyped list name (or SPAMHAUS_DQS_KEY)",
    "127.255.255.254": "it refuses queries that come through a public or open resolver",
    "127.255.255.255": "it refuses our resolver for sending too many queries",
}
REFUSAL_ADVICE = ("let the container's own resolver ask (DNS_FORWARDERS and DNS_RESOLVERS "
                  "unset, or set to a resolver of your own), or set SPAMHAUS_DQS_KEY (free, "
                  "from Spamhaus): this also means postscreen's blocklist protects nothing")


class Verdict(StrEnum):
    LISTED = "listed"
    CLEAN = "clean"
    CANT_TELL = "can't tell"


@dataclass(frozen=True)
class Blocklist:
    """One list: its public name, where it is asked (a DQS zone holds the key: never logged),
    the /24 its listings are in, and what each documented code means."""

    name: str
    query_zone: str
    listings: ipaddress.IPv4Network
    codes: dict[str, str]

    def query_name(self, subject: str) -> str:
        """RFC 5782 §2.1 (IPv4: octets reversed), §2.4 (IPv6: nibbles reversed), §2.3 (a
        domain as it is), then the list's zone."""
        try:
            address = ipaddress.ip_address(subject)
        except ValueError:
            return f"{subject.rstrip('.').lower()}.{self.query_zone}"
        suffix = ".in-addr.arpa" if address.version == 4 else ".ip6.arpa"
        return f"{address.reverse_pointer.removesuffix(suffix)}.{self.query_zone}"


def zen(settings: Settings) -> Blocklist:
    return Blocklist(ZEN, settings.blocklist_zone(ZEN), ipaddress.IPv4Network("127.0.0.0/24"),
                     ZEN_CODES)


def dbl(settings: Settings) -> Blocklist:
    return Blocklist(DBL, settings.blocklist_zone(DBL), ipaddress.IPv4Network("127.0.1.0/24"),
                     DBL_CODES)


@dataclass(frozen=True)
class Finding:
    """What one list says about one address or name."""

    blocklist: str  # its public name, zen.spamhaus.org
    subject: str  # the address or domain asked about
    verdict: Verdict
    codes: tuple[str, ...]  # the answer's addresses, as returned
    detail: str  # the codes' meaning, or why we can't tell; empty when clean

    @property
    def page(self) -> str:
        return LOOKUP_PAGE + quote(self.subject, safe=":")

    def text(self) -> str:
        """The finding in words, for the log and `mailboot status`."""
        if self.verdict is Verdict.LISTED:
            return (f"{self.subject} is listed on {self.blocklist} ({self.detail}): many "
                    f"receivers refuse or junk our mail; why, and how to ask for removal: "
                    f"{self.page}")
        if self.verdict is Verdict.CANT_TELL:
            return f"can't tell whether {self.subject} is listed on {self.blocklist}: {self.detail}"
        return f"{self.subject} is not listed on {self.blocklist}"


def classify(blocklist: Blocklist, subject: str, answer: Answer) -> Finding:
    """The verdict on one answer. Listing codes outweigh anything else in the answer; a
    refusal (127.255.255.x) or an answer outside the list's codes is "can't tell"."""
    if answer.error is not None:
        return Finding(blocklist.name, subject, Verdict.CANT_TELL, (), f"no answer: {answer.error}")
    if answer.nxdomain or not answer.values:
        return Finding(blocklist.name, subject, Verdict.CLEAN, (), "")
    codes = tuple(answer.values)
    listed = [code for code in codes if _is_listing(blocklist, code)]
    if listed:
        meanings = "; ".join(f"{code}: {blocklist.codes.get(code, UNDOCUMENTED)}"
                             for code in listed)
        return Finding(blocklist.name, subject, Verdict.LISTED, codes, meanings)
    refused = [code for code in codes if _in(code, REFUSED)]
    if refused:
        why = REFUSALS.get(refused[0], "it refuses to answer our resolver")
        return Finding(blocklist.name, subject, Verdict.CANT_TELL, codes,
                       f"the list answered {refused[0]} (\"query refused\": {why}); "
                       f"{REFUSAL_ADVICE}")
    return Finding(blocklist.name, subject, Verdict.CANT_TELL, codes,
                   f"the answer {', '.join(codes)} is no return code of this list: the resolver "
                   "may rewrite answers (some ISPs' resolvers do); use the container's own")


def _in(code: str, network: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.ip_address(code) in network
    except ValueError:
        return False


def _is_listing(blocklist: Blocklist, code: str) -> bool:
    """In the list's /24, but not .0, .1 (never listings) or .255 (the DBL's "you asked about
    an address")."""
    return _in(code, blocklist.listings) and code.rsplit(".", 1)[1] not in ("0", "1", "255")


def subjects(settings: Settings) -> list[tuple[Blocklist, str]]:
    """What to ask: each public address on ZEN, each mail domain and MAIL_HOSTNAME on the DBL.

    With RELAY_HOST our addresses send no mail to other servers (the relay's do), and a home
    connection's address is on the PBL by design: ZEN is not asked then."""
    domains = dict.fromkeys([*settings.domains, settings.hostname])
    addresses = () if settings.relay_host is not None else settings.public_addresses
    return ([(zen(settings), str(address)) for address in addresses]
            + [(dbl(settings), domain) for domain in domains])


def check(asked: Sequence[tuple[Blocklist, str]], lookup: Lookup,
          parallel: int = PARALLEL) -> tuple[Finding, ...]:
    """Ask each list about each subject, a few at once; in the order asked."""
    if not asked:
        return ()

    def one(item: tuple[Blocklist, str]) -> Finding:
        blocklist, subject = item
        return classify(blocklist, subject, lookup(blocklist.query_name(subject), "A"))

    with ThreadPoolExecutor(max_workers=min(parallel, len(asked)),
                            thread_name_prefix="reputation") as pool:
        return tuple(pool.map(one, asked))


# --- IPv6: forward-confirmed reverse DNS, or no IPv6 for outbound mail ---------------------------


@dataclass(frozen=True)
class PtrCheck:
    """Whether the IPv6 address's PTR names MAIL_HOSTNAME and MAIL_HOSTNAME's AAAA holds it."""

    confirmed: bool | None  # None: no answer now (the last decision stands)
    detail: str  # why not, in words (the DNS doctor's hint); empty when confirmed


@dataclass(frozen=True)
class Ipv6Sending:
    """The IPv6 address mail may leave from, how to check its PTR, and how to let Postfix's
    SMTP client use IPv6 or not (`apply(allowed)`: re-render and reload)."""

    address: ipaddress.IPv6Address
    hostname: str
    check_ptr: Callable[[], PtrCheck]
    apply: Callable[[bool], None]


def ipv6_confirmed(marker: Path, address: ipaddress.IPv6Address | None) -> bool:
    """Whether the worker confirmed the PTR of `address` (the marker holds the address)."""
    if address is None:
        return False
    try:
        return marker.read_text().strip() == str(address)
    except OSError:
        return False


# --- the worker task -----------------------------------------------------------------------------


class ReputationCheck:
    """The worker task: ask the lists at start, at READY (`nudge`) and daily; say what changed;
    keep the last findings where `mailboot status` reads them; keep IPv6 off outbound mail while
    the address's PTR is not confirmed. Real state (what was said), so a class."""

    def __init__(self, asked: Sequence[tuple[Blocklist, str]], lookup: Lookup,
                 state_file: Path, ipv6: Ipv6Sending | None = None) -> None:
        self.asked, self.lookup, self.state_file, self.ipv6 = list(asked), lookup, state_file, ipv6
        self.said: dict[str, str] = {}  # "list subject" -> the verdict and codes last said
        # The IPv6 decision last made and why (None: none yet, IPv4 only meanwhile).
        self.ipv6_sends: bool | None = None
        self.ipv6_detail = ""
        self.due: datetime | None = None

    def nudge(self) -> None:
        """Check again in this run (the DNS records just became READY)."""
        self.due = None

    def state(self) -> JsonObject:
        return {"said": dict(self.said), "ipv6_sends": self.ipv6_sends,
                "ipv6_detail": self.ipv6_detail}

    def restore(self, saved: Saved) -> None:
        """Raises StateUnreadable."""
        said = read_object(saved.get("said", {}))
        sends = saved.get("ipv6_sends")
        if not all(isinstance(value, str) for value in said.values()) \
                or not (sends is None or isinstance(sends, bool)):
            raise StateUnreadable(f"not what the task keeps: {said!r}, {sends!r}")
        self.said = {str(key): str(value) for key, value in said.items()}
        self.ipv6_sends, self.ipv6_detail = sends, read_text(saved.get("ipv6_detail")) or ""

    def step(self, now: datetime) -> datetime:
        if self.due is not None and now < self.due:
            return self.due  # stepped early (a nudge for another task): nothing new here
        findings = check(self.asked, self.lookup)
        self._log(findings)
        if self.ipv6 is not None:
            self._decide_ipv6(self.ipv6)
        self._save(findings, now)
        self.due = now + RECHECK
        return self.due

    def _log(self, findings: Sequence[Finding]) -> None:
        newly_clean: list[Finding] = []
        for finding in findings:
            key = f"{finding.blocklist} {finding.subject}"
            told = f"{finding.verdict} {' '.join(finding.codes)}".strip()
            before = self.said.get(key)
            self.said[key] = told
            if told == before:
                continue
            if finding.verdict is Verdict.LISTED:
                log.warning("reputation: %s", finding.text())
            elif finding.verdict is Verdict.CANT_TELL:
                # Information: the check can't work, but the mail is not harmed by it.
                log.info("reputation: %s", finding.text())
            elif before is not None and before.startswith(Verdict.LISTED):
                log.info("reputation: %s is no longer listed on %s", finding.subject,
                         finding.blocklist)
            else:
                newly_clean.append(finding)
        if newly_clean:
            lists = dict.fromkeys(f.blocklist for f in newly_clean)
            log.info("reputation: not listed: %s", "; ".join(
                f"{', '.join(f.subject for f in newly_clean if f.blocklist == name)} on {name}"
                for name in lists))

    def _decide_ipv6(self, ipv6: Ipv6Sending) -> None:
        """Confirm the IPv6 PTR; let Postfix send over IPv6 or not; say a change. Without an
        answer the last decision stands (at first: IPv4 only)."""
        ptr = ipv6.check_ptr()
        if ptr.confirmed is None:
            if self.ipv6_sends is None and not self.ipv6_detail:
                log.info("reputation: can't confirm the PTR of %s yet (%s); until it is, mail "
                         "leaves over IPv4 only", ipv6.address, ptr.detail)
                self.ipv6_detail = ptr.detail
            return
        ipv6.apply(ptr.confirmed)
        if ptr.confirmed is not self.ipv6_sends:
            if ptr.confirmed:
                log.info("reputation: the PTR of %s names %s, which resolves back to it: mail "
                         "leaves over IPv6 too", ipv6.address, ipv6.hostname)
            else:
                log.warning("reputation: mail leaves over IPv4 only: the IPv6 address %s has no "
                            "PTR naming %s that resolves back to it (%s); big receivers refuse "
                            "mail from such an address. The PTR (rDNS) is set at your hosting "
                            "provider; IPv6 is used again once it is in place", ipv6.address,
                            ipv6.hostname, ptr.detail)
        self.ipv6_sends, self.ipv6_detail = ptr.confirmed, ptr.detail

    def _save(self, findings: Sequence[Finding], now: datetime) -> None:
        ipv6 = None
        if self.ipv6 is not None:
            ipv6 = {"address": str(self.ipv6.address), "sends": self.ipv6_sends is True,
                    "detail": self.ipv6_detail}
        state = {"checked": machine_time(now),
                 "findings": [{**asdict(f), "verdict": f.verdict.value, "codes": list(f.codes),
                               "page": f.page} for f in findings],
                 "ipv6": ipv6}
        try:
            write_atomically(self.state_file, (json.dumps(state, indent=1) + "\n").encode())
        except OSError as error:  # only `mailboot status` misses it
            log.warning("reputation: can't write %s: %s", self.state_file, error.strerror)


def read_state(state_file: Path) -> dict[str, object] | None:
    """The last result the worker kept (for `mailboot status`), or None before the first."""
    return read_json_object(state_file)
