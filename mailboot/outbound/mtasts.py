"""Receivers' MTA-STS policies (RFC 8461) for the mail we send, as Postfix's TLS policy.

Postfix asks, for each destination domain it delivers to by MX, our socketmap
(`smtp_tls_policy_maps`, answered by the policy process); `MtaSts.answer` says:
- DANE first (RFC 8461 §2): when the domain's MX records and an MX host's TLSA records are
  DNSSEC-validated, nothing (NOTFOUND), so main.cf's `dane` level verifies by TLSA, and no policy
  is fetched;
- `enforce`: `secure match=<the policy's mx> servername=hostname`: verified TLS to a matching MX,
  or Postfix defers the message ("Server certificate not verified") and our line before it says
  MTA-STS;
- `testing`, `none`, no policy, or a policy that can't be had: nothing (delivery as without
  MTA-STS). For `testing` the MX hosts are checked once a day per policy, in the background, and
  the log says what `enforce` would have done.

Policies are cached in files (one per domain, `policy_state/mta-sts`), kept across restarts for
their max_age (RFC 8461 §5): a new id in DNS fetches again; a fetch that fails keeps the cached
policy while it is unexpired. With no usable policy and a lookup or fetch failing, the domain is
treated as having none (RFC 8461 §5: "continue with delivery as though the domain has not
implemented MTA-STS"), not as TEMP: a TEMP would hold the mail of every domain while the DNS or a
web server is down, for no protection (without a cached policy there is nothing to enforce).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path

from mailboot.base.files import write_atomically
from mailboot.dns.answer import Lookup
from mailboot.standards.mtasts import (
    PolicyError,
    ReceiverPolicy,
    parse_policy,
    postfix_match,
    record_id,
)

log = logging.getLogger(__name__)

# A testing policy's MX hosts are checked again after this long (and at once for a new id).
PROBE_INTERVAL = 86400.0
# Fetch (domain -> the policy file's text; raises FetchError) and probe (MX host -> why
# `enforce` would refuse it, or None when it passes; raises FetchError when it can't tell).
Fetch = Callable[[str], str]
Probe = Callable[[str], str | None]
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9-]{2,63}$")


class FetchError(Exception):
    """A policy that could not be fetched, or an MX that could not be checked: the text says
    what failed and why."""


@dataclass(frozen=True)
class Cached:
    """A policy as kept in its file: the id it was fetched for and when (epoch seconds)."""

    domain: str
    id: str
    policy: ReceiverPolicy
    fetched: float
    probed: float | None = None  # when a testing policy's MX hosts were last checked

    def fresh(self, now: float) -> bool:
        """RFC 8461 §5: a policy may be used for max_age seconds after it was fetched."""
        return now < self.fetched + self.policy.max_age


class Step(StrEnum):
    USE_CACHED = "use the cached policy"
    FETCH = "fetch the policy"
    NO_POLICY = "no policy"


def next_step(cached: Cached | None, announced: str | None, lookup_failed: bool,
              now: float) -> Step:
    """What to do after the `_mta-sts` TXT lookup (RFC 8461 §3.1, §5): an unexpired policy
    holds whatever DNS says or fails to say, unless DNS announces another id."""
    usable = cached is not None and cached.fresh(now)
    if lookup_failed or announced is None:
        return Step.USE_CACHED if usable else Step.NO_POLICY
    if usable and cached is not None and cached.id == announced:
        return Step.USE_CACHED
    return Step.FETCH


def tls_policy(domain: str, policy: ReceiverPolicy) -> str | None:
    """Postfix's smtp_tls_policy_maps value for a policy, or None (main.cf's default level)."""
    if policy.mode != "enforce":
        return None
    # secure: a CA-verified certificate whose names match; servername=hostname sends SNI for
    # the MX host (RFC 8461 §4.2: the certificate must be valid for the MX host name).
    return f"secure match={postfix_match(policy)} servername=hostname"


class PolicyCache:
    """One JSON file per domain in `directory`; files are replaced atomically. The policy
    process is their only writer, and `MtaSts` serialises each domain's lookups."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self, domain: str, now: float) -> Cached | None:
        """The domain's policy, or None; an expired one is dropped (RFC 8461 §5)."""
        path = self._path(domain)
        try:
            kept = json.loads(path.read_text())
            policy = ReceiverPolicy(kept["mode"], tuple(kept["mx"]), int(kept["max_age"]))
            cached = Cached(domain, str(kept["id"]), policy, float(kept["fetched"]),
                            None if kept.get("probed") is None else float(kept["probed"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("mta-sts: %s: the cached policy %s can't be read (%s); fetching it "
                        "again", domain, path, error)
            path.unlink(missing_ok=True)
            return None
        if not cached.fresh(now):
            path.unlink(missing_ok=True)
            return None
        return cached

    def store(self, cached: Cached) -> None:
        record = {"domain": cached.domain, "id": cached.id, **asdict(cached.policy),
                  "fetched": cached.fetched, "probed": cached.probed}
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            write_atomically(self._path(cached.domain), json.dumps(record).encode(), mode=0o600)
        except OSError as error:  # the policy still applies now; it is fetched again later
            log.warning("mta-sts: can't keep %s's policy in %s (%s); it will be fetched again",
                        cached.domain, self.directory, error)

    def _path(self, domain: str) -> Path:
        return self.directory / f"{domain}.json"


@dataclass(frozen=True)
class Sources:
    """Where the answers come from: the container's validating resolver, the HTTPS fetch and
    the MX check (`outbound.mtasts_fetch` in production, fakes in tests), and the clock."""

    lookup: Lookup
    fetch: Fetch
    probe: Probe
    clock: Callable[[], float]


class MtaSts:
    """Answers smtp_tls_policy_maps lookups. Real state: the cache, a lock per domain (Postfix
    asks for one domain from several deliveries at once; one fetch serves them), and what was
    said already (a line per policy and process, not per message)."""

    def __init__(self, cache: PolicyCache, sources: Sources,
                 background: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.cache, self.sources = cache, sources
        self.background = background or _in_thread
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._said: set[tuple[str, str]] = set()

    def answer(self, key: str) -> str | None:
        """The TLS policy for the next-hop `key` (a domain), or None for main.cf's default.

        Postfix also asks `.parent` keys and `[host]:port` next hops (RELAY_HOST, transports):
        those, and anything that isn't a domain name, get None.
        """
        domain = key.lower().rstrip(".")
        if not _DOMAIN.match(domain):
            return None
        with self._lock(domain):
            return self._answer(domain)

    def _answer(self, domain: str) -> str | None:
        mx_hosts, dane = self._dane(domain)
        if dane:
            self._say_once(domain, "dane", "mta-sts: %s: DANE applies (DNSSEC-validated TLSA "
                           "records for its MX hosts), so no MTA-STS policy is asked for (RFC "
                           "8461 §2)", domain)
            return None
        cached = self._policy(domain)
        if cached is None:
            return None
        policy = cached.policy
        if policy.mode == "testing":
            self._maybe_probe(cached, mx_hosts)
            return None
        answer = tls_policy(domain, policy)
        if answer is not None:
            self._say_once(domain, f"enforce {cached.id}", "mta-sts: %s: enforcing its MTA-STS "
                           "policy (id %s): delivery only over TLS with a CA-verified "
                           "certificate of an MX matching %s, else the mail waits in the queue",
                           domain, cached.id, " ".join(policy.mx))
        return answer

    def _dane(self, domain: str) -> tuple[tuple[str, ...], bool]:
        """The domain's MX hosts, and whether DANE applies: its MX records and some MX host's
        TLSA records are DNSSEC-validated (RFC 7672 §2.2.1); Postfix's `dane` level then
        verifies. A lookup that fails counts as no DANE: MTA-STS then decides, never weaker."""
        lookup = self.sources.lookup
        mx = lookup(domain, "MX")
        if mx.error is not None:
            return (), False
        hosts = tuple(value.split()[-1].rstrip(".").lower() for value in mx.values
                      if value.split()[-1] != ".") or (domain,)  # no MX: the domain itself
        if not (mx.authenticated or not mx.values):
            return hosts, False
        for host in hosts:
            tlsa = lookup(f"_25._tcp.{host}", "TLSA")
            if tlsa.error is None and tlsa.authenticated and tlsa.values:
                return hosts, True
        return hosts, False

    def _policy(self, domain: str) -> Cached | None:
        """The policy that applies now: cached, fetched, or None (RFC 8461 §3, §5)."""
        now = self.sources.clock()
        cached = self.cache.load(domain, now)
        txt = self.sources.lookup(f"_mta-sts.{domain}", "TXT")
        announced: str | None = None
        failure = txt.error
        if failure is None:
            try:
                announced = record_id(txt.values)
            except PolicyError as error:
                failure = str(error)
        step = next_step(cached, announced, failure is not None, now)
        if step is Step.USE_CACHED:
            return cached
        if step is Step.FETCH and announced is not None:
            return self._fetch(domain, announced, cached, now)
        if failure is not None:
            self._say_once(domain, f"txt {failure}", "mta-sts: %s: no policy: the _mta-sts TXT "
                           "record can't be used (%s); delivering as without MTA-STS (RFC 8461 "
                           "§5)", domain, failure)
        return None

    def _fetch(self, domain: str, announced: str, cached: Cached | None,
               now: float) -> Cached | None:
        try:
            policy = parse_policy(self.sources.fetch(domain))
        except (FetchError, PolicyError) as error:
            usable = cached is not None and cached.fresh(now)
            self._say_once(domain, f"fetch {announced} {error}", "mta-sts: %s: the policy "
                           "(id %s) can't be fetched: %s; %s", domain, announced, error,
                           f"keeping the cached one (id {cached.id}, mode {cached.policy.mode})"
                           if usable and cached is not None else
                           "delivering as without MTA-STS (RFC 8461 §5)")
            return cached if usable else None
        fetched = Cached(domain, announced, policy, now)
        self.cache.store(fetched)
        verb = "fetched" if cached is None else "changed"
        log.info("mta-sts: %s: mode %s, mx %s, max_age %d (id %s, %s)", domain, policy.mode,
                 " ".join(policy.mx) or "-", policy.max_age, announced, verb)
        return fetched

    def _maybe_probe(self, cached: Cached, mx_hosts: Sequence[str]) -> None:
        now = self.sources.clock()
        if cached.probed is not None and now - cached.probed < PROBE_INTERVAL:
            return
        self.cache.store(replace(cached, probed=now))  # once, even while the check runs
        self.background(lambda: self._probe(cached, mx_hosts))

    def _probe(self, cached: Cached, mx_hosts: Sequence[str]) -> None:
        """What `enforce` would have done with each MX host, in one log line."""
        domain, policy = cached.domain, cached.policy
        failures: list[str] = []
        passed: list[str] = []
        for host in mx_hosts:
            if not policy.matches(host):
                failures.append(f"{host} is not an mx of the policy")
                continue
            try:
                why = self.sources.probe(host)
            except FetchError as error:
                failures.append(f"{host} could not be checked ({error})")
                continue
            if why is None:
                passed.append(host)
            else:
                failures.append(f"{host}: {why}")
        if not failures:
            log.info("mta-sts: testing: %s: every MX passes the policy (id %s): %s; mode "
                     "enforce would deliver as now", domain, cached.id, " ".join(passed))
            return
        outcome = (f"delivered only to {' '.join(passed)}" if passed
                   else "deferred: no MX passes")
        log.warning("mta-sts: testing: %s: under mode enforce the mail would have been %s "
                    "(policy id %s, mx %s): %s", domain, outcome, cached.id,
                    " ".join(policy.mx), "; ".join(failures))

    def _lock(self, domain: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(domain, threading.Lock())

    def _say_once(self, domain: str, what: str, message: str, *args: object) -> None:
        if (domain, what) in self._said:
            return
        self._said.add((domain, what))
        log.info(message, *args)


def _in_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, daemon=True).start()
