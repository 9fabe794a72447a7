"""Outbound MTA-STS: receivers' policies parsed (standards.mtasts), the cache's decisions with a
fixed clock, and Postfix's answers (outbound.mtasts) from a fake resolver and fetcher; the
socketmap the policy process serves them on."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from mailboot.dns.answer import Answer
from mailboot.outbound import mtasts_fetch
from mailboot.outbound.mtasts import (
    Cached,
    FetchError,
    MtaSts,
    PolicyCache,
    Sources,
    Step,
    next_step,
    tls_policy,
)
from mailboot.policy import service
from mailboot.standards.mtasts import (
    PolicyError,
    ReceiverPolicy,
    mx_matches,
    parse_policy,
    postfix_match,
    record_id,
)

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.net\r\nmx: *.example.org\r\n" \
         "max_age: 86400\r\n"
ENFORCE = ReceiverPolicy("enforce", ("mx1.example.net", "*.example.org"), 86400)
DAY = 86400.0


# --- standards.mtasts: the policy file and the TXT record ---------------------------------------
def test_a_policy_is_parsed_with_crlf_or_lf_unknown_keys_ignored() -> None:
    assert parse_policy(POLICY) == ENFORCE
    lf = POLICY.replace("\r\n", "\n") + "extension: ignored\n"
    assert parse_policy(lf) == ENFORCE
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\n") == ReceiverPolicy(
        "none", (), 0)
    assert parse_policy("version: STSv1\nmode: testing\nmode: enforce\nmx: MX.Example.NET.\n"
                        "max_age: 60\n") == ReceiverPolicy("testing", ("mx.example.net",), 60)


@pytest.mark.parametrize(("text", "why"), [
    ("mode: enforce\nmx: a.example\nmax_age: 1\n", "version is None"),
    ("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", "version is 'STSv2'"),
    ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "mode is 'strict'"),
    ("version: STSv1\nmode: enforce\nmx: a.example\n", "max_age is ''"),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", "max_age is '-1'"),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", "up to 31557600"),
    ("version: STSv1\nmode: enforce\nmax_age: 60\n", "names no mx"),
    ("version: STSv1\nmode: enforce\nmx: *\nmax_age: 60\n", "neither a host name"),
    ("version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 60\n", "neither a host name"),
    ("<html>Not here</html>\n", "is not `key: value`"),
])
def test_a_bad_policy_says_why(text: str, why: str) -> None:
    with pytest.raises(PolicyError, match=why.replace("*", r"\*").replace("(", r"\(")):
        parse_policy(text)


def test_the_txt_record_gives_the_id_or_none() -> None:
    assert record_id(("v=STSv1; id=20240101T000000",)) == "20240101T000000"
    assert record_id(("v=spf1 -all", "v=STSv1;id=abc;")) == "abc"
    assert record_id(("v=spf1 -all",)) is None
    assert record_id(()) is None
    with pytest.raises(PolicyError, match="2 `v=STSv1` TXT records"):
        record_id(("v=STSv1; id=a", "v=STSv1; id=b"))
    for bad in ("v=STSv1;", "v=STSv1; id=", "v=STSv1; id=with-dash", "v=STSv1; id=" + "a" * 33):
        with pytest.raises(PolicyError, match="no valid id"):
            record_id((bad,))


def test_mx_patterns_match_as_rfc_8461_says() -> None:
    assert mx_matches("mx1.example.net", "MX1.example.net.")
    assert mx_matches("*.example.org", "mx.example.org")
    assert not mx_matches("*.example.org", "a.b.example.org")  # one label only (§4.1)
    assert not mx_matches("*.example.org", "example.org")
    assert not mx_matches("mx1.example.net", "mx2.example.net")
    assert ENFORCE.matches("anything.example.org") and not ENFORCE.matches("mx.example.com")


def test_postfix_gets_the_patterns_in_its_own_form() -> None:
    assert postfix_match(ENFORCE) == "mx1.example.net:.example.org"
    assert tls_policy("example.net", ENFORCE) == (
        "secure match=mx1.example.net:.example.org servername=hostname")
    for mode in ("testing", "none"):
        assert tls_policy("example.net", ReceiverPolicy(mode, ("mx.example.net",), 60)) is None


# --- the cache's decisions ------------------------------------------------------------------------
def cached(policy_id: str = "one", fetched: float = 0.0, max_age: int = 86400) -> Cached:
    return Cached("example.net", policy_id, ReceiverPolicy("enforce", ("mx.example.net",),
                                                           max_age), fetched)


@pytest.mark.parametrize(("kept", "announced", "failed", "now", "step"), [
    (None, None, False, 0.0, Step.NO_POLICY),  # no record, nothing cached
    (None, None, True, 0.0, Step.NO_POLICY),  # DNS down, nothing cached: as without MTA-STS
    (None, "one", False, 0.0, Step.FETCH),
    (cached(), "one", False, DAY - 1, Step.USE_CACHED),  # same id, unexpired
    (cached(), "two", False, 10.0, Step.FETCH),  # a new id: fetch again (§5)
    (cached(), "one", False, DAY, Step.FETCH),  # expired: fetch again
    (cached(), None, True, 10.0, Step.USE_CACHED),  # DNS down: the cached policy holds
    (cached(), None, False, 10.0, Step.USE_CACHED),  # record gone: it holds till max_age
    (cached(), None, True, DAY + 1, Step.NO_POLICY),  # expired and DNS down
])
def test_what_the_txt_lookup_leads_to(kept: Cached | None, announced: str | None, failed: bool,
                                      now: float, step: Step) -> None:
    assert next_step(kept, announced, failed, now) is step


def test_the_cache_keeps_a_policy_across_processes_and_drops_it_expired(tmp_path: Path) -> None:
    directory = tmp_path / "mta-sts"
    PolicyCache(directory).store(cached(fetched=1000.0))
    assert (directory / "example.net.json").stat().st_mode & 0o777 == 0o600
    again = PolicyCache(directory)  # a new process
    assert again.load("example.net", 1000.0 + DAY - 1) == cached(fetched=1000.0)
    assert again.load("example.net", 1000.0 + DAY) is None
    assert not (directory / "example.net.json").exists()


def test_a_broken_cache_file_is_dropped_and_said(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "example.net.json").write_text("{not json")
    assert PolicyCache(tmp_path).load("example.net", 0.0) is None
    assert "the cached policy" in caplog.text and "fetching it again" in caplog.text
    assert not (tmp_path / "example.net.json").exists()


# --- the answers ----------------------------------------------------------------------------------
class World:
    """DNS as data, a policy server as a dict, a clock as a number; counts what was fetched."""

    def __init__(self, tmp_path: Path) -> None:
        self.now = 1_000_000.0
        self.dns: dict[tuple[str, str], Answer] = {
            ("example.net", "MX"): Answer(("10 mx.example.net.",)),
            ("_mta-sts.example.net", "TXT"): Answer(("v=STSv1; id=one",)),
        }
        self.policies: dict[str, str | FetchError] = {
            "example.net": POLICY.replace("mx1.example.net", "mx.example.net")}
        self.probes: dict[str, str | FetchError | None] = {}
        self.fetched: list[str] = []
        self.later: list[Callable[[], None]] = []
        self.cache = PolicyCache(tmp_path / "mta-sts")

    def lookup(self, name: str, rtype: str) -> Answer:
        return self.dns.get((name, rtype), Answer(nxdomain=True))

    def fetch(self, domain: str) -> str:
        self.fetched.append(domain)
        found = self.policies.get(domain, FetchError("404"))
        if isinstance(found, FetchError):
            raise found
        return found

    def probe(self, host: str) -> str | None:
        found = self.probes.get(host)
        if isinstance(found, FetchError):
            raise found
        return found

    def resolver(self) -> MtaSts:
        """A new policy process (nothing said yet, the cache on disk)."""
        return MtaSts(self.cache, Sources(self.lookup, self.fetch, self.probe, lambda: self.now),
                      background=self.later.append)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


SECURE = "secure match=mx.example.net:.example.org servername=hostname"


def test_enforce_is_secure_fetched_once_and_said_once(world: World,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    resolver = world.resolver()
    assert resolver.answer("example.net") == SECURE
    assert resolver.answer("EXAMPLE.net.") == SECURE
    assert world.fetched == ["example.net"]
    assert caplog.text.count("mta-sts: example.net: mode enforce, mx mx.example.net "
                             "*.example.org, max_age 86400 (id one, fetched)") == 1
    assert caplog.text.count("mta-sts: example.net: enforcing its MTA-STS policy (id one): "
                             "delivery only over TLS with a CA-verified certificate of an MX "
                             "matching mx.example.net *.example.org, else the mail waits in "
                             "the queue") == 1
    # A restart: the cached policy answers, nothing is fetched.
    assert world.resolver().answer("example.net") == SECURE
    assert world.fetched == ["example.net"]


def test_a_new_id_fetches_again_and_says_what_changed(world: World,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    resolver = world.resolver()
    resolver.answer("example.net")
    world.dns[("_mta-sts.example.net", "TXT")] = Answer(("v=STSv1; id=two",))
    world.policies["example.net"] = POLICY.replace("enforce", "none")
    assert resolver.answer("example.net") is None
    assert "mode none, mx mx1.example.net *.example.org, max_age 86400 (id two, changed)" \
        in caplog.text
    assert world.fetched == ["example.net", "example.net"]


def test_a_failing_fetch_keeps_the_cached_policy_until_it_expires(
    world: World, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    world.resolver().answer("example.net")
    world.dns[("_mta-sts.example.net", "TXT")] = Answer(("v=STSv1; id=two",))
    world.policies["example.net"] = FetchError("https://mta-sts.example.net/...: timed out")
    world.now += DAY - 10
    assert world.resolver().answer("example.net") is not None
    assert ("the policy (id two) can't be fetched: https://mta-sts.example.net/...: timed out; "
            "keeping the cached one (id one, mode enforce)") in caplog.text
    world.now += 10  # expired now: as if the domain had no policy (RFC 8461 §5)
    assert world.resolver().answer("example.net") is None
    assert "delivering as without MTA-STS (RFC 8461 §5)" in caplog.text


def test_dns_down_with_nothing_cached_delivers_as_without_mta_sts(
    world: World, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    world.dns[("_mta-sts.example.net", "TXT")] = Answer(error="SERVFAIL")
    assert world.resolver().answer("example.net") is None
    assert world.fetched == []
    assert ("mta-sts: example.net: no policy: the _mta-sts TXT record can't be used (SERVFAIL); "
            "delivering as without MTA-STS (RFC 8461 §5)") in caplog.text


def test_no_record_no_policy_and_other_keys_are_not_ours(world: World) -> None:
    del world.dns[("_mta-sts.example.net", "TXT")]
    resolver = world.resolver()
    assert resolver.answer("example.net") is None
    for key in (".example.net", "[mx.example.net]:25", "localhost", "../etc", "a b.example"):
        assert resolver.answer(key) is None
    assert world.fetched == []


def test_dane_comes_first_and_nothing_is_fetched(world: World,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    world.dns[("example.net", "MX")] = Answer(("10 mx.example.net.",), authenticated=True)
    world.dns[("_25._tcp.mx.example.net", "TLSA")] = Answer(("3 1 1 ab",), authenticated=True)
    assert world.resolver().answer("example.net") is None
    assert world.fetched == []
    assert "mta-sts: example.net: DANE applies" in caplog.text


@pytest.mark.parametrize(("mx_secure", "tlsa"), [
    (False, Answer(("3 1 1 ab",), authenticated=True)),  # MX not validated: Postfix won't DANE
    (True, Answer(("3 1 1 ab",))),  # TLSA not validated
    (True, Answer(error="SERVFAIL")),  # can't tell: MTA-STS decides, never weaker
    (True, Answer(nxdomain=True)),
])
def test_without_validated_tlsa_mta_sts_decides(world: World, mx_secure: bool,
                                                tlsa: Answer) -> None:
    world.dns[("example.net", "MX")] = Answer(("10 mx.example.net.",), authenticated=mx_secure)
    world.dns[("_25._tcp.mx.example.net", "TLSA")] = tlsa
    assert world.resolver().answer("example.net") is not None


def test_testing_delivers_and_checks_the_mx_once_a_day(world: World,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    world.policies["example.net"] = POLICY.replace("enforce", "testing")
    world.dns[("example.net", "MX")] = Answer(("10 mx.example.net.", "20 backup.example.com."))
    world.probes["mx.example.net"] = "its certificate is not verified (self-signed certificate)"
    resolver = world.resolver()
    assert resolver.answer("example.net") is None
    assert resolver.answer("example.net") is None
    assert len(world.later) == 1  # one check, however many messages
    world.later.pop()()
    assert ("mta-sts: testing: example.net: under mode enforce the mail would have been "
            "deferred: no MX passes (policy id one, mx mx1.example.net *.example.org): "
            "mx.example.net is not an mx of the policy; backup.example.com is not an mx of the "
            "policy") in caplog.text
    world.now += DAY - 1
    assert world.resolver().answer("example.net") is None
    assert world.later == []  # the check's time is kept across processes
    world.now += 1
    world.policies["example.net"] = POLICY.replace("enforce", "testing").replace(
        "mx1.example.net", "mx.example.net")
    world.dns[("_mta-sts.example.net", "TXT")] = Answer(("v=STSv1; id=two",))
    world.probes["backup.example.org"] = FetchError("connection refused")
    world.dns[("example.net", "MX")] = Answer(("10 mx.example.net.", "20 backup.example.org."))
    assert world.resolver().answer("example.net") is None
    world.later.pop()()
    assert ("would have been deferred: no MX passes (policy id two, mx mx.example.net "
            "*.example.org): mx.example.net: its certificate is not verified (self-signed "
            "certificate); backup.example.org could not be checked (connection refused)"
            ) in caplog.text


def test_testing_with_a_passing_mx_says_enforce_would_deliver(
    world: World, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    world.policies["example.net"] = POLICY.replace("enforce", "testing").replace(
        "mx1.example.net", "mx.example.net")
    world.resolver().answer("example.net")
    world.later.pop()()
    assert ("mta-sts: testing: example.net: every MX passes the policy (id one): "
            "mx.example.net; mode enforce would deliver as now") in caplog.text


# --- the socketmap in the policy process ----------------------------------------------------------
def netstring(text: str) -> bytes:
    return b"%d:%s," % (len(text.encode()), text.encode())


def test_the_policy_process_answers_smtp_tls_policy_maps(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The `mtasts` socketmap: OK with the policy, NOTFOUND otherwise, PERM for another map."""
    world = World(tmp_path)
    monkeypatch.setattr(service, "local_lookup", lambda: world.lookup)
    monkeypatch.setattr(mtasts_fetch, "fetch_policy", lambda domain, trust: POLICY)
    arguments = service.parser().parse_args([f"--state={tmp_path}"])
    serve = service.socketmap_server(service.mtasts_lookup(arguments))
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(netstring("mtasts example.net") + netstring("mtasts example.org")
                       + netstring("srs x"))
        theirs.shutdown(1)
        with ours:
            serve(ours)
        answers = theirs.makefile("rb").read()
    assert answers == (netstring("OK secure match=mx1.example.net:.example.org "
                                 "servername=hostname")
                       + netstring("NOTFOUND ")
                       + netstring("PERM no map named 'srs' here (only mtasts)"))
    kept = json.loads((tmp_path / "mta-sts" / "example.net.json").read_text())
    assert kept["id"] == "one" and kept["mode"] == "enforce"

