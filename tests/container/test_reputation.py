"""Our own reputation, end to end: BIND on the test network serves our domain, a fake Spamhaus
ZEN and DBL, and the reverse zone of our IPv6 address; our container asks them through its own
resolver (Unbound, forwarding to BIND), as in production. The worker's run at start checks; a
SIGUSR1 to the container makes it check again after the zones change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.container.containers import Container
from tests.container.dockercli import docker
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import scene
from tests.container.zoneserver import ZoneServer, supporting_zones
from tests.polling import eventually

# The tests share the module's container: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

# Not 2001:db8::/32: Unbound answers its reverse zone itself (RFC 6303), as it does the private
# IPv4 ones. Every question goes to the test's BIND: nothing is asked of the internet.
IPV6 = "2001:db9::25"
# The reverse zone of 2001:db9::/32 (RFC 3596 §2.5) and our address's name in it.
IPV6_REVERSE_ZONE = "9.b.d.0.1.0.0.2.ip6.arpa"
IPV6_REVERSE_NAME = "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"
# Its name in ZEN (RFC 5782 §2.4): all 32 nibbles reversed.
ZEN_V6 = f"{IPV6_REVERSE_NAME}.{IPV6_REVERSE_ZONE.removesuffix('.ip6.arpa')}"
IPV4_ONLY = "-o inet_protocols=ipv4"
RELOADED = "reload -- version"  # postfix/master, on `postfix reload`


@dataclass(frozen=True)
class World:
    dns: ZoneServer
    mail: Container
    ip: str


def zones(ip: str, zen: str = "", zen_v6: str = "", dbl: str = "",
          ptr: bool = False) -> dict[str, str]:
    """Our domain; the lists, answering each code given for our IPv4 and IPv6 address and
    our domain (1 s TTLs: Unbound must not answer from its cache after a change); and the IPv6
    reverse zone, with or without our PTR."""
    listed = ((".".join(reversed(ip.split("."))), zen), (ZEN_V6, zen_v6))
    return {
        **supporting_zones(ip),
        "example.com": (f"@ 300 IN MX 10 mail.example.com.\nmail 300 IN A {ip}\n"
                        f"mail 300 IN AAAA {IPV6}\n"),
        "zen.spamhaus.org": "".join(f"{name} 1 IN A {code}\n" for name, code in listed if code),
        "dbl.spamhaus.org": f"example.com 1 IN A {dbl}\n" if dbl else "",
        IPV6_REVERSE_ZONE: f"{IPV6_REVERSE_NAME} 60 IN PTR mail.example.com.\n" if ptr else "",
    }


@pytest.fixture(scope="module")
def world(test_network: DockerNetwork, image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with scene(test_network, image, tmp_path_factory.mktemp("reputation")) as made:
        ip = made.address()
        dns = made.zone_server(zones(ip, zen="127.0.0.2", zen_v6="127.0.0.10", dbl="127.0.1.2"))
        # DNS_RESOLVERS unset (empty): the lists are asked through the container's Unbound.
        mail = made.mail("rep", ip=ip, dns=dns, env={
            "DNS_RESOLVERS": "", "PUBLIC_IPV6": IPV6, "PUBLIC_ADDRESS_DISCOVERY": "off",
            "OUTBOUND_CHECK": "off"})
        yield World(dns, mail, ip)


def status(mail: Container) -> tuple[int, dict[str, Any]]:
    result = mail.exec("mailboot", "status", "--json", check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def wait_for_reputation(mail: Container, done: Any, timeout: float = 90
                        ) -> tuple[int, dict[str, Any]]:
    """`status --json` until its reputation part satisfies `done`."""
    seen: list[dict[str, Any]] = [{}]

    def reported() -> tuple[int, dict[str, Any]] | None:
        code, document = status(mail)
        seen[0] = document
        found = document.get("reputation")
        return (code, document) if found is not None and done(found) else None

    return eventually(reported, timeout, lambda: "the reputation in the status: "
                      + json.dumps(seen[0].get("reputation"), indent=1) + "\n"
                      + mail.log_tail(3000), interval=1)


def verdicts(reputation: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(f["list"], f["subject"]): f["verdict"] for f in reputation["findings"]}


def check_again(mail: Container) -> None:
    """What `docker kill -s USR1` does for users: the worker runs every task now."""
    docker("kill", "--signal", "USR1", mail.name)


def test_a_zen_listing_of_our_address_makes_status_exit_1_naming_the_list(
        world: World) -> None:
    code, document = wait_for_reputation(world.mail, lambda r: r["listed"] >= 3)
    assert verdicts(document["reputation"]) == {
        ("zen.spamhaus.org", world.ip): "listed",
        ("zen.spamhaus.org", IPV6): "listed",
        ("dbl.spamhaus.org", "example.com"): "listed",
        ("dbl.spamhaus.org", "mail.example.com"): "clean"}
    assert code == 1 and document["ok"] is False
    page = f"https://check.spamhaus.org/results/?query={world.ip}"
    assert (f"reputation: {world.ip} is listed on zen.spamhaus.org (127.0.0.2: SBL: a known spam "
            f"source or spam operation); see {page}") in document["not_in_place"]
    world.mail.wait_for_log(f"reputation: {world.ip} is listed on zen.spamhaus.org (127.0.0.2: "
                            "SBL: a known spam source or spam operation): many receivers refuse "
                            f"or junk our mail; why, and how to ask for removal: {page}")
    screen = world.mail.exec("mailboot", "status", check=False).stdout
    assert f"  - reputation: {world.ip} is listed on zen.spamhaus.org" in screen


def test_a_dbl_listing_of_our_domain_is_reported(world: World) -> None:
    _, document = wait_for_reputation(world.mail, lambda r: r["listed"] >= 3)
    assert ("reputation: example.com is listed on dbl.spamhaus.org (127.0.1.2: a spam domain); "
            "see https://check.spamhaus.org/results/?query=example.com"
            in document["not_in_place"])
    world.mail.wait_for_log("reputation: example.com is listed on dbl.spamhaus.org (127.0.1.2: "
                            "a spam domain)")


def test_an_answer_of_query_refused_is_can_t_tell_and_no_listing(world: World) -> None:
    world.dns.serve(zones(world.ip, zen="127.255.255.254", zen_v6="127.0.0.10"))
    check_again(world.mail)
    code, document = wait_for_reputation(
        world.mail, lambda r: verdicts(r)[("zen.spamhaus.org", world.ip)] == "can't tell"
        and verdicts(r)[("dbl.spamhaus.org", "example.com")] == "clean")
    found = {f["subject"]: f for f in document["reputation"]["findings"]
             if f["list"] == "zen.spamhaus.org"}
    assert found[world.ip]["codes"] == ["127.255.255.254"]
    assert "\"query refused\"" in found[world.ip]["detail"]
    listed = [line for line in document["not_in_place"] if line.startswith("reputation:")]
    assert listed == [f"reputation: {IPV6} is listed on zen.spamhaus.org (127.0.0.10: PBL: its "
                      "ISP says this address should not send mail directly); see "
                      f"https://check.spamhaus.org/results/?query={IPV6}"]
    assert code == 1  # the IPv6 listing; "can't tell" adds no line
    world.mail.wait_for_log(f"reputation: can't tell whether {world.ip} is listed on "
                            "zen.spamhaus.org: the list answered 127.255.255.254 (\"query "
                            "refused\"")
    world.mail.wait_for_log("reputation: example.com is no longer listed on dbl.spamhaus.org")


def master_smtp(mail: Container) -> str:
    """The SMTP client's service as Postfix reads master.cf (postconf -M)."""
    return mail.exec("postconf", "-M", "-f", "smtp/unix").stdout


def test_ipv6_leaves_only_once_its_ptr_is_confirmed_without_a_restart(world: World) -> None:
    world.mail.wait_for_log("reputation: mail leaves over IPv4 only: the IPv6 address "
                            f"{IPV6} has no PTR naming mail.example.com")
    assert IPV4_ONLY in master_smtp(world.mail)
    _, document = status(world.mail)
    assert document["reputation"]["ipv6"]["sends"] is False

    reloads = world.mail.logs().count(RELOADED)
    world.dns.serve(zones(world.ip, ptr=True))
    check_again(world.mail)
    world.mail.wait_for_log(f"reputation: the PTR of {IPV6} names mail.example.com, which "
                            "resolves back to it: mail leaves over IPv6 too")
    eventually(lambda: IPV4_ONLY not in master_smtp(world.mail), 30,
               lambda: "master.cf without the override:\n" + master_smtp(world.mail))
    world.mail.wait_for_count(RELOADED, reloads, timeout=30)  # read without a restart
    _, document = wait_for_reputation(world.mail, lambda r: r["ipv6"]["sends"])
    assert document["reputation"]["ipv6"] == {"address": IPV6, "sends": True, "detail": ""}
    assert not [line for line in document["not_in_place"] if line.startswith("reputation:")]
