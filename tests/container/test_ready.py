"""Ready the minute DNS propagates: a server that waited a long time for its records gets the
real certificate and the READY line within a DNS check interval of their publication (issue 15).

Pebble validates through the test BIND, as Let's Encrypt validates through the internet's DNS:
the records the user publishes are the ones both the CA and the DNS doctor see.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest

from tests.container.acme_setup import (
    MakeContainer,
    pebble_context,
    san,
    wait_for_pebble_certificate,
)
from tests.container.pebble_harness import DockerNetwork, Pebble, start_pebble
from tests.container.worlds import Scene
from tests.container.zoneserver import ZoneServer, printed_zone

pytestmark = pytest.mark.container

# The DNS check interval, scaled down from the default minute so the test takes a minute and
# not five; the benchmark (`scripts/benchmark --only ready`) measures the default.
POLL = 10
# The old backoff, started at ACME_RETRY_INTERVAL=1s and doubling (1, 2, 4, ... 32 s), had grown
# to a wait of 64 s, six polls, once the records had been missing this long.
WAIT_BEFORE_PUBLISHING = 70
READY = "dns: READY - every required DNS record is in place"
# Seconds from the records being answered to the certificate and the READY line: a poll, the
# issuance, and room for a busy machine; the old backoff would still be waiting.
PROMISE = 45


def reverse_zone(network: DockerNetwork) -> str:
    first, second, third = network.prefix.rstrip(".").split(".")
    return f"{third}.{second}.{first}.in-addr.arpa"


@pytest.fixture
def bind(scene: Scene, test_network: DockerNetwork) -> ZoneServer:
    # The zones exist at the DNS and hosting providers; none of our records are in them yet.
    return scene.zone_server({"example.com": "", reverse_zone(test_network): ""})


@pytest.fixture
def pebble_via_bind(test_network: DockerNetwork, bind: ZoneServer,
                    tmp_path: Path) -> Iterator[Pebble]:
    pebble = start_pebble(test_network, tmp_path / "pebble", validity=90 * 86400,
                          dns=f"{bind.ip}:53")
    yield pebble
    pebble.remove()


def test_records_published_late_bring_the_certificate_and_ready_within_a_poll(
    make_container: MakeContainer, pebble_via_bind: Pebble, bind: ZoneServer,
    test_network: DockerNetwork, tmp_path: Path,
) -> None:
    pebble = pebble_via_bind
    ip = test_network.allocate()
    mail = make_container(
        env={"MAIL_DOMAINS": "example.com", "PUBLIC_IPV4": ip,
             "ACME_DIRECTORY": pebble.directory_url, "ACME_CA_BUNDLE": "/acme/ca.pem",
             "DNS_RESOLVERS": bind.ip, "ACME_RETRY_INTERVAL": "1s",
             "DNS_CHECK_INTERVAL": f"{POLL}s",
             "CAA_ISSUER": "pebble.test"},
        volumes={str(pebble.directory): "/acme"}, network=pebble.network.name, ip=ip,
        dns=bind.ip)
    mail.wait_ready()
    mail.wait_for_log("mail.example.com does not resolve yet")
    time.sleep(WAIT_BEFORE_PUBLISHING - 5)
    logs = mail.logs()
    assert pebble.new_order_count() == 0 and READY not in logs
    assert f"looking again every {POLL} s, and as soon as the DNS records change" in logs
    # Polls, not a growing backoff: the reason was said once, and the CA was never asked.
    assert logs.count("mail.example.com does not resolve yet") == 1

    bind.serve({"example.com": printed_zone(mail, "example.com"),
                reverse_zone(test_network): f"{ip.rsplit('.', 1)[1]} IN PTR mail.example.com.\n"})
    published = time.monotonic()
    certificate = wait_for_pebble_certificate(mail, pebble_context(pebble, tmp_path),
                                              timeout=PROMISE)
    # Every name the printed zone points here, the optional client-configuration ones too.
    assert san(certificate) == {"mail.example.com", "mta-sts.example.com",
                                "autoconfig.example.com", "autodiscover.example.com"}
    mail.wait_for_log(READY, timeout=max(1.0, PROMISE - (time.monotonic() - published)))
    took = time.monotonic() - published
    assert took <= PROMISE, f"{took:.0f} s from publication to certificate and READY"
    assert mail.restart_count() == 0

    # CAA (RFC 8659/8657): now bound to the account the certificate was ordered with.
    [account] = (mail.data / "acme").glob("*/account.json")
    account_uri = json.loads(account.read_text())["uri"]
    zone = dns.zone.from_text(printed_zone(mail, "example.com"), origin="example.com",
                              relativize=False, check_origin=False)
    [caa] = list(zone.find_rdataset("mail.example.com.", dns.rdatatype.CAA))
    assert caa.tag == b"issue"
    assert caa.value.decode() == (f"pebble.test; accounturi={account_uri}; "
                                  "validationmethods=http-01")
