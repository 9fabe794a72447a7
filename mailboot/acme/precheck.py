"""Before asking the CA: do the names point here, and does our challenge URL answer through them?

A failed validation costs the CA's rate limits (Let's Encrypt allows 5 failures per hour per
name). On a first start the user has usually not published the records yet, so we check what we
can locally and ask the CA only for names that are ready (as acme-tiny does).
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mailboot.dns.answer import Lookup
from mailboot.web.challenges import ChallengeStore
from mailboot.web.port80 import CHALLENGE_PREFIX

log = logging.getLogger(__name__)

Resolve = Callable[[str], set[str]]
Fetch = Callable[[str, str, str], str | None]  # (address, host, path) -> body


@dataclass(frozen=True)
class Readiness:
    """Names the CA can validate now, and why the others can't be."""

    ready: tuple[str, ...]
    problems: tuple[str, ...]


# CNAMEs followed at most this deep (a loop or a long chain is not a name that is ready).
MAX_CNAME_CHAIN = 8


def make_resolver(lookup: Lookup) -> Resolve:
    """A, AAAA (CNAMEs followed) through the DNS doctor's lookup: the zones' own name servers
    (or DNS_RESOLVERS), never a cache. A caching resolver keeps "no such record" for the zone's
    negative TTL (RFC 2308 §5, often an hour): the name would stay "not ready" that long after
    the user published it."""

    def resolve(name: str, depth: int = 0) -> set[str]:
        found: set[str] = set()
        for rtype in ("A", "AAAA"):
            answer = lookup(name, rtype)
            if answer.error is not None:
                log.info("tls: looking up %s %s failed: %s", name, rtype, answer.error)
            found |= set(answer.values)
        if found or depth >= MAX_CNAME_CHAIN:
            return found
        # An authoritative server answers a CNAME to another zone without its addresses.
        targets = lookup(name, "CNAME").values
        return set().union(*(resolve(t.rstrip("."), depth + 1) for t in targets))

    return resolve


def fetch_http(address: str, host: str, path: str) -> str | None:
    """GET http://host/path from `address` port 80; None when that fails."""
    connection = http.client.HTTPConnection(address, 80, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.read(1024).decode("ascii", "replace") if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def check_names(names: Iterable[str], our_addresses: set[str], resolve: Resolve, fetch: Fetch,
                store: ChallengeStore) -> Readiness:
    """Which names resolve to us and serve our challenge files."""
    ready, problems = [], []
    for name in names:
        problem = _check_one(name, our_addresses, resolve, fetch, store)
        if problem is None:
            ready.append(name)
        else:
            problems.append(problem)
    return Readiness(tuple(ready), tuple(problems))


def _check_one(name: str, ours: set[str], resolve: Resolve, fetch: Fetch,
               store: ChallengeStore) -> str | None:
    addresses = resolve(name)
    if not addresses:
        return f"{name} does not resolve yet (no A or AAAA record)"
    normalised = {str(ipaddress.ip_address(a)) for a in addresses}
    if ours and not normalised & ours:
        return (f"{name} points to {', '.join(sorted(normalised))}, not to this server "
                f"({', '.join(sorted(ours))})")
    token = secrets.token_urlsafe(24)
    answer = secrets.token_urlsafe(24)
    store.put(token, answer)
    try:
        reached = any(fetch(a, name, CHALLENGE_PREFIX + token) == answer
                      for a in sorted(normalised, key=lambda a: ":" in a))
    finally:
        store.remove(token)
    if reached:
        return None
    if ours:
        # The name points at our declared address: a router without hairpin NAT may stop us
        # from reaching ourselves, while the CA can. Trying is reasonable.
        log.info("tls: %s points here, but our own challenge URL can't be reached through it "
                 "from inside; asking the CA anyway", name)
        return None
    return (f"http://{name}{CHALLENGE_PREFIX}... does not reach this server (is port 80 "
            "forwarded to the container?)")
