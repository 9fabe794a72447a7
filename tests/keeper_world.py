"""The world a certificate keeper sees in unit tests: DNS answers and what our challenge URL
returns, as data (tests/test_worker.py and tests/test_tlsa.py drive keepers in it)."""

from __future__ import annotations

from collections.abc import Callable

from mailboot.web.challenges import ChallengeStore

HOST = "203.0.113.25"
# Every name the certificate is for (`certificates.tls_names`), with MAIL_DOMAINS=example.com.
NAMES = ["mail.example.com", "mta-sts.example.com", "autoconfig.example.com",
         "autodiscover.example.com"]


def all_ready() -> dict[str, set[str]]:
    return {name: {HOST} for name in NAMES}


class World:
    """DNS answers and what our challenge URL returns, as data."""

    def __init__(self) -> None:
        self.dns: dict[str, set[str]] = {}
        self.reloads = 0
        self.issuers_made = 0

    def resolve(self, name: str) -> set[str]:
        return self.dns.get(name, set())

    def fetch_through(self, store: ChallengeStore) -> Callable[[str, str, str], str | None]:
        def fetch(address: str, host: str, path: str) -> str | None:
            if address != HOST:
                return None
            return store.get(path.rsplit("/", 1)[1])
        return fetch
