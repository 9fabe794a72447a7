"""A third-party MTA-STS client (postfix-mta-sts-resolver) accepts our policy for every domain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import postfix_mta_sts_resolver
import pytest

from tests.container.acme_setup import mail_with_acme, wait_for_pebble_certificate
from tests.container.acme_setup import pebble_context as make_pebble_context
from tests.container.containers import ROOT, Container
from tests.container.dockercli import build, docker
from tests.container.pebble_harness import DockerNetwork, Pebble
from tests.container.worlds import Scene
from tests.container.zoneserver import printed_zone

pytestmark = pytest.mark.container

MakeContainer = Callable[..., Container]
DOMAINS = ("example.com", "example.org")
RESOLVE = """
import asyncio, json, sys
from postfix_mta_sts_resolver.resolver import STSResolver
async def main():
    resolver = STSResolver(loop=asyncio.get_running_loop(), timeout=15)
    answers = {}
    for domain in sys.argv[1:]:
        status, result = await resolver.resolve(domain)
        answers[domain] = [status.name, *(result or (None, None))]
    print(json.dumps(answers))
asyncio.run(main())
"""


def test_postfix_mta_sts_resolver_accepts_the_policy_of_every_domain(
    make_container: MakeContainer, pebble: Pebble, test_network: DockerNetwork, tmp_path: Path,
    scene: Scene,
) -> None:
    ip = test_network.allocate()
    for name in ["mail.example.com", *(f"mta-sts.{d}" for d in DOMAINS)]:
        pebble.set_a(name, ip)
    mail = mail_with_acme(make_container, pebble, ip, MAIL_DOMAINS=",".join(DOMAINS))
    mail.wait_ready()
    context = make_pebble_context(pebble, tmp_path)
    wait_for_pebble_certificate(mail, context)
    mail.wait_for_count("has a certificate from the CA now: publish", len(DOMAINS) - 1,
                        timeout=30)
    dns = scene.zone_server({domain: printed_zone(mail, domain) for domain in DOMAINS})
    roots = tmp_path / "roots.pem"
    roots.write_text(pebble.issuing_roots_pem())
    package = Path(postfix_mta_sts_resolver.__file__).parent
    client = build("mailboot-stsclient:test", ROOT / "tests/container/stsclient_image", 600)
    result = docker("run", "--rm", "--network", test_network.name, "--dns", dns.ip,
                    "-v", f"{package}:/pkgs/postfix_mta_sts_resolver:ro",
                    "-v", f"{roots}:/roots.pem:ro", "-e", "PYTHONPATH=/pkgs",
                    "-e", "SSL_CERT_FILE=/roots.pem", client, "-c", RESOLVE, *DOMAINS,
                    timeout=120)
    answers = json.loads(result.stdout)
    published = {r["name"]: r["value"] for r in json.loads(
        mail.exec("mailboot", "dns", "--json").stdout) if r["type"] == "TXT"}
    for domain in DOMAINS:
        status, policy_id, policy = answers[domain]
        assert status == "VALID", (answers, mail.logs()[-2000:])
        assert policy["mx"] == ["mail.example.com"]
        assert policy["mode"] == "enforce" and policy["max_age"] == 86400
        assert published[f"_mta-sts.{domain}."] == f"v=STSv1; id={policy_id}"
