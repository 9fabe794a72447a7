"""Lookups against DNS servers on loopback: the zones' servers remembered for their TTL, and
failures told in plain words that are the same for every name when DNS is unreachable."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import dns.nameserver
import dns.resolver
import pytest

from mailboot.dkim.keys import DomainKeys
from mailboot.dns.lookup import (
    NS_TTL_CEILING,
    NS_TTL_FLOOR,
    OWN_RESOLVER,
    DnsLookup,
    local_lookup,
    system_failure,
)
from mailboot.network.address import ask_directly
from mailboot.network.outbound import outbound_task
from mailboot.records.build import all_records, build_record_groups
from mailboot.records.doctor import SHARED_FAILURE_HINT, Status, check_records, shared_failure
from mailboot.settings.table import Settings
from mailboot.settings.values import OutboundTarget
from tests.conftest import NOW, FakeDns, closed_port

StartDns = Callable[..., FakeDns]


def resolver_at(port: int, address: str = "127.0.0.1") -> dns.resolver.Resolver:
    """A system resolver that asks only `address`:`port`, and gives up fast."""
    system = dns.resolver.Resolver(configure=False)
    system.nameservers = [dns.nameserver.Do53Nameserver(address, port)]
    system.lifetime, system.timeout = 0.3, 0.1
    return system


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def provider(server: FakeDns, dmarc: str, ns_ttl: int) -> None:
    """`server` serves example.com as a DNS provider: its own address as ns1.example.com."""
    server.zones.add("example.com.")
    server.add("example.com", "NS", "ns1.example.com.", ttl=ns_ttl)
    server.add("ns1.example.com", "A", server.address, ttl=NS_TTL_CEILING * 2)
    server.add("_dmarc.example.com", "TXT", f'"{dmarc}"')


@pytest.mark.parametrize(("ns_ttl", "still_old_after", "new_after"), [
    (300, 299, 300),
    (5, NS_TTL_FLOOR - 1, NS_TTL_FLOOR),  # a tiny TTL: not asked again before every record
    (7 * 86400, NS_TTL_CEILING - 1, NS_TTL_CEILING),  # a week: still looked at daily
])
def test_a_domain_moved_to_another_dns_provider_is_asked_there_after_the_ns_ttl(
    fake_dns: StartDns, ns_ttl: int, still_old_after: int, new_after: int
) -> None:
    old = fake_dns()  # the old provider, which is also the system resolver here
    new = fake_dns("127.0.0.2", old.port)
    provider(old, "old", ns_ttl)
    provider(new, "new", ns_ttl)
    clock = Clock()
    lookup = DnsLookup(system=resolver_at(old.port), authority_port=old.port, clock=clock)
    assert lookup("_dmarc.example.com", "TXT").values == ("old",)
    # The user moves the domain: the parent now names the new provider's server. The old
    # provider still serves its stale copy of the zone.
    old.add("example.com", "NS", "ns2.example.net.", ttl=ns_ttl)
    old.zones.add("example.net.")
    old.add("ns2.example.net", "A", new.address, ttl=ns_ttl)
    clock.now += still_old_after
    assert lookup("_dmarc.example.com", "TXT").values == ("old",)
    clock.now += new_after - still_old_after
    assert lookup("_dmarc.example.com", "TXT").values == ("new",)
    assert ("_dmarc.example.com.", "TXT") in new.asked


def test_name_servers_without_an_address_are_asked_for_again_soon(fake_dns: StartDns) -> None:
    system = fake_dns()
    system.zones.add("example.com.")
    system.add("example.com", "NS", "ns1.example.net.", ttl=NS_TTL_CEILING)
    clock = Clock()
    lookup = DnsLookup(system=resolver_at(system.port), authority_port=system.port, clock=clock)
    answer = lookup("example.com", "MX")
    assert answer.error == "the name servers of example.com (ns1.example.net) have no address: " \
                           "no server to ask"
    system.zones.add("example.net.")
    system.add("ns1.example.net", "A", "127.0.0.1")
    system.add("example.com", "MX", "10 mail.example.com.")
    clock.now += NS_TTL_FLOOR
    assert lookup("example.com", "MX").values == ("10 mail.example.com.",)


def test_no_dns_server_reachable_is_said_in_plain_words_the_same_for_every_name(
    fake_dns: StartDns
) -> None:
    silent = fake_dns()
    silent.mode = "silent"
    for port in (closed_port(), silent.port):
        lookup = DnsLookup(system=resolver_at(port))
        first, second = lookup("example.com", "MX"), lookup("_dmarc.example.org", "TXT")
        assert first.error is not None and first.error == second.error
        assert first.error == (
            f"no DNS server answered (127.0.0.1@{port}: timed out): can this container reach a "
            "DNS server at all? check /etc/resolv.conf of the container, the host's firewall, "
            "or set DNS_RESOLVERS")


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
def test_a_resolver_that_fails_every_question(fake_dns: StartDns, rcode: str) -> None:
    broken = fake_dns()
    broken.mode = rcode
    lookup = DnsLookup(system=resolver_at(broken.port))
    answer = lookup("example.com", "MX")
    assert answer.error is not None and answer.error == lookup("example.org", "TXT").error
    assert answer.error.startswith(
        f"the container's DNS server failed the question (127.0.0.1@{broken.port}: {rcode}): "
        "it may not reach the internet itself")


def test_dns_resolvers_that_do_not_answer(fake_dns: StartDns) -> None:
    port = closed_port()
    lookup = DnsLookup([("127.0.0.1", port)], timeout=0.2)
    answer = lookup("example.com", "MX")
    assert answer.error == lookup("example.org", "TXT").error == (
        f"no answer from the DNS servers in DNS_RESOLVERS (127.0.0.1:{port}; 127.0.0.1: timed out "
        "after 0.2 s): can this container reach them? check the host's firewall, or unset "
        "DNS_RESOLVERS to use the container's own resolver")
    refusing = fake_dns()
    refusing.mode = "REFUSED"
    refused = DnsLookup([("127.0.0.1", refusing.port)], timeout=0.2)("example.com", "MX")
    assert refused.error is not None
    assert refused.error.startswith("the DNS servers in DNS_RESOLVERS failed the question "
                                    "(127.0.0.1: REFUSED)")


def test_a_zones_name_servers_that_do_not_answer(fake_dns: StartDns) -> None:
    system = fake_dns()
    system.zones.add("example.com.")
    system.add("example.com", "NS", "ns1.example.com.")
    system.add("ns1.example.com", "A", "127.0.0.1")
    lookup = DnsLookup(system=resolver_at(system.port), authority_port=closed_port(),
                       timeout=0.2)
    assert lookup("example.com", "MX").error == (
        "the name servers of example.com (ns1.example.com) did not answer (127.0.0.1: timed out "
        "after 0.2 s); if the host's firewall lets DNS out only to its own resolver, set "
        "DNS_RESOLVERS to that resolver")


@pytest.mark.parametrize(("error", "words"), [
    (dns.resolver.NoResolverConfiguration(),  # type: ignore[no-untyped-call]
     "no DNS server is configured (/etc/resolv.conf"),
    (dns.resolver.NoRootSOA(),  # type: ignore[no-untyped-call]
     "says no name exists, not even the DNS root"),
    (dns.resolver.NoNameservers(request=dns.message.make_query("example.com", "SOA"), errors=[
        ("Do53:10.0.0.2@53", False, 53, OSError(101, "Network is unreachable"), None)]),  # type: ignore[no-untyped-call]
     "no DNS server answered (10.0.0.2: network is unreachable): can this container reach"),
])
def test_the_resolvers_errors_in_plain_words(
    error: dns.exception.DNSException, words: str
) -> None:
    assert words in system_failure(error)
    assert "This should never happen" not in system_failure(error)


def test_when_dns_is_unreachable_the_reason_is_given_once_and_each_hint_is_short(
    make_settings: Callable[..., Settings],
    make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com,example.org", PUBLIC_IPV4="203.0.113.25")
    records = all_records(build_record_groups(settings, make_keys(settings)))
    findings = check_records(records, DnsLookup(system=resolver_at(closed_port())),
                             ["203.0.113.25"])
    reason = shared_failure(findings)
    assert reason is not None and reason.startswith("no DNS server answered")
    assert {f.status for f in findings} == {Status.UNKNOWN}
    assert {f.hint for f in findings} == {SHARED_FAILURE_HINT}


def test_a_lost_datagram_is_asked_again_within_the_timeout(fake_dns: StartDns) -> None:
    """RFC 1035 §4.2.1: UDP may lose a question or its answer; one retransmission keeps a single
    lost packet from making a record "unknown"."""
    server = fake_dns()
    server.zones.add("example.com.")
    server.add("example.com", "MX", "10 mail.example.com.")
    server.drop_next = 1
    answer = DnsLookup([("127.0.0.1", server.port)], timeout=1.0)("example.com", "MX")
    assert answer.error is None and answer.values == ("10 mail.example.com.",)
    assert server.drop_next == 0


def test_a_resolvers_dnssec_validation_is_passed_on(fake_dns: StartDns) -> None:
    """The question asks for the AD bit (RFC 6840 §5.7) and the answer says whether the
    resolver validated it: DANE before MTA-STS (outbound.mtasts) depends on it."""
    server = fake_dns()
    server.zones.add("example.com.")
    server.add("_25._tcp.mx.example.com", "TLSA", "3 1 1 " + "ab" * 32)
    server.add("example.com", "MX", "10 mx.example.com.")
    server.validated.add("_25._tcp.mx.example.com")
    lookup = DnsLookup([("127.0.0.1", server.port)], timeout=1.0)
    assert lookup("_25._tcp.mx.example.com", "TLSA").authenticated
    assert not lookup("example.com", "MX").authenticated


def test_txt_character_strings_are_joined_alike_by_every_lookup(fake_dns: StartDns) -> None:
    """RFC 7208 §3.3: the strings of one TXT record are joined without spaces; a byte that is
    not UTF-8 becomes U+FFFD. The doctor's lookups and the address discovery share the rule."""
    server = fake_dns()
    server.zones.add("example.com.")
    server.add("example.com", "TXT", '"v=spf1 ip4:192.0.2.1" " -all"', '"caf\\233"')
    expected = ("v=spf1 ip4:192.0.2.1 -all", "caf\ufffd")
    through_lookup = DnsLookup([("127.0.0.1", server.port)], timeout=1.0)("example.com", "TXT")
    assert sorted(through_lookup.values) == sorted(expected)
    directly = ask_directly("example.com", "TXT", "127.0.0.1", server.port, 1.0)
    assert sorted(directly) == sorted(expected)


@pytest.mark.parametrize("configured", [True, False])
def test_a_failure_names_the_resolver_really_asked(
        fake_dns: StartDns, caplog: pytest.LogCaptureFixture, tmp_path: Path,
        configured: bool) -> None:
    """Without DNS_RESOLVERS the outbound check asks the container's own resolver: its failure
    used to be blamed on "the DNS servers in DNS_RESOLVERS"."""
    broken = fake_dns()
    broken.mode = "SERVFAIL"
    servers = [("127.0.0.1", broken.port)]
    lookup = (DnsLookup(servers, timeout=0.5) if configured else
              DnsLookup(servers, timeout=0.5, source=OWN_RESOLVER))
    task = outbound_task(OutboundTarget("gmail.com", 25, by_mx=True), None, lookup,
                         tmp_path / "outbound.json")
    with caplog.at_level(logging.WARNING, logger="mailboot.outbound"):
        task.step(NOW)
    (record,) = caplog.records
    if configured:
        assert ("the DNS servers in DNS_RESOLVERS failed the question (127.0.0.1: SERVFAIL): "
                "they must answer") in record.getMessage()
    else:
        assert ("the container's own resolver (Unbound, which /etc/resolv.conf names) failed "
                "the question (127.0.0.1: SERVFAIL): it asks the internet's DNS servers itself"
                ) in record.getMessage()
        assert "DNS_RESOLVERS" not in record.getMessage()


def test_a_silent_own_resolver_is_not_blamed_on_dns_resolvers() -> None:
    port = closed_port()
    answer = DnsLookup([("127.0.0.1", port)], timeout=0.2, source=OWN_RESOLVER)("a.example", "A")
    assert answer.error == (
        f"no answer from the container's own resolver (Unbound, which /etc/resolv.conf names) "
        f"(127.0.0.1:{port}; 127.0.0.1: timed out after 0.2 s): is it running? the supervisor "
        "starts it with the mail daemons, and its lines in the log say what went wrong")


def test_the_policy_service_and_the_outbound_check_ask_the_own_resolver() -> None:
    own = local_lookup()
    assert own.servers == [("127.0.0.1", 53)] and own.source is OWN_RESOLVER
