"""DKIM rotation, Ed25519 and import in the running container, against BIND serving the zone.

One server with DKIM_ALGORITHMS=rsa,ed25519 and a short check interval and grace period. Its
users' mail is submitted on 587, read back over IMAPS and verified on the host by dkimpy
against the records BIND serves. The tests run in file order, each starting from where the one
before left the server.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.container.clients import fetch_text
from tests.container.containers import Container, insecure_context
from tests.container.dockercli import docker
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import scene
from tests.container.zoneserver import ZoneServer, printed_zone, supporting_zones

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

ALICE = "alice@example.com"
PASSWORD = "correct horse battery"
GRACE_SECONDS = 20


@dataclass
class World:
    dns: ZoneServer
    mail: Container

    def publish(self) -> str:
        """Serve example.com exactly as `mailboot dns --zone` prints it now, TTLs cut to 1 s."""
        zone = re.sub(r"(?m)^(\S+\s+)\d+( IN )", r"\g<1>1\2", printed_zone(self.mail,
                                                                          "example.com"))
        self.dns.serve({"example.com": zone, **supporting_zones(self.mail.ip or "")})
        return zone

    def restart_hard(self) -> None:
        """Kill the container (no clean stop) and start it again on the same /data."""
        docker("kill", self.mail.name)
        docker("start", self.mail.name)
        self.mail.wait_ready()

    def listed(self) -> list[dict[str, object]]:
        listed = json.loads(self.mail.exec("mailboot", "dkim", "list", "--json").stdout)
        assert isinstance(listed, list)
        return listed

    def selectors(self, role: str, algorithm: str | None = None) -> set[str]:
        return {str(k["selector"]) for k in self.listed()
                if k["role"] == role and algorithm in (None, k["algorithm"])}


@pytest.fixture(scope="module")
def world(test_network: DockerNetwork, image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with scene(test_network, image, tmp_path_factory.mktemp("dkim")) as made:
        mail_ip = made.address()
        dns = made.zone_server(supporting_zones(mail_ip))
        mail = made.mail("dkim", {"DNS_CHECK_INTERVAL": "2s", "DKIM_ALGORITHMS": "rsa,ed25519",
                                  "DKIM_ROTATION_GRACE": f"{GRACE_SECONDS}s",
                                  "OUTBOUND_CHECK": "off"},
                         ip=mail_ip, dns=dns, accounts={ALICE: PASSWORD})
        world = World(dns, mail)
        world.publish()
        yield world


def submit(world: World) -> bytes:
    """A message from Alice to herself through port 587, as delivered to her INBOX."""
    token = secrets.token_hex(8)
    message = EmailMessage()
    message["From"], message["To"] = ALICE, ALICE
    message["Subject"] = f"dkim rotation {token}"
    message["Message-ID"] = f"<{token}@example.com>"
    message.set_content(f"token {token}\n")
    with world.mail.smtp(587) as smtp:
        smtp.starttls(context=insecure_context())
        smtp.login(ALICE, PASSWORD)
        smtp.send_message(message)
    return fetch_text(world.mail, ALICE, token, PASSWORD)


def signatures(world: World, raw: bytes) -> dict[str, tuple[str, bool]]:
    """selector -> (algorithm, whether dkimpy verifies it against what BIND serves)."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    found = {}
    for index, header in enumerate(parsed.get_all("DKIM-Signature", [])):
        flat = "".join(str(header).split())
        selector = re.search(r"(?:^|;)s=([^;]+)", flat)
        algorithm = re.search(r"(?:^|;)a=([^;]+)", flat)
        assert selector and algorithm, flat
        verified = dkim.DKIM(raw).verify(idx=index,
                                         dnsfunc=lambda name, timeout=5: world.dns.txt(name))
        found[selector.group(1)] = (algorithm.group(1), bool(verified))
    return found


def assert_signed_by(world: World, selectors: set[str]) -> None:
    found = signatures(world, submit(world))
    assert set(found) == selectors, found
    assert all(verified for _, verified in found.values()), found
    assert {algorithm for algorithm, _ in found.values()} == {"rsa-sha256", "ed25519-sha256"}


def test_ed25519_and_rsa_both_sign_and_verify(world: World) -> None:
    signing = world.selectors("signing")
    assert len(signing) == 2, world.listed()
    assert {k["algorithm"] for k in world.listed()} == {"rsa", "ed25519"}
    assert {k["record"] for k in world.listed()} == {"OK"}
    assert_signed_by(world, signing)


def test_rotation_switches_once_the_records_are_served_and_retires_after_grace(
        world: World) -> None:
    old = world.selectors("signing")
    rotate = world.mail.exec("mailboot", "dkim", "rotate")
    printed = [line for line in rotate.stdout.splitlines() if "._domainkey." in line]
    assert len(printed) == 2 and any("k=ed25519" in line for line in printed), rotate.stdout
    new = world.selectors("next")
    assert len(new) == 2 and not new & old
    assert_signed_by(world, old)  # the new records are not served: the old keys sign

    world.restart_hard()  # killed while the rotation waits: it still waits after the start
    assert world.selectors("next") == new
    assert_signed_by(world, old)

    applied = world.mail.logs().count("OpenDKIM has the new signing tables")
    zone = world.publish()
    for selector in new:
        assert f"{selector}._domainkey.example.com." in zone
    for selector in new:
        world.mail.wait_for_log(f"{selector} (", timeout=60)
    logs = world.mail.wait_for_log("signs now instead of", timeout=60)
    assert "Keep the old record" in logs
    world.mail.wait_for_count("OpenDKIM has the new signing tables", applied, timeout=30)
    assert_signed_by(world, new)

    world.restart_hard()  # killed in the grace period: the new keys keep signing
    assert_signed_by(world, new)
    for selector in old:
        logs = world.mail.wait_for_log(f"remove its record now: {selector}._domainkey.example.com "
                                       "TXT", timeout=GRACE_SECONDS + 60)
    assert world.selectors("retired") == old
    assert all(f"{s}._domainkey" not in printed_zone(world.mail, "example.com") for s in old)
    assert_signed_by(world, new)


def test_import_refuses_a_bad_key_and_signs_a_good_one_once_served(world: World) -> None:
    before = world.listed()
    refused = docker("exec", "-i", world.mail.name, "mailboot", "dkim", "import", "--domain",
                     "example.com", "--selector", "imported", stdin="not a key\n", check=False)
    assert refused.returncode == 65, refused.stderr
    assert world.listed() == before

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    world.mail.exec("mailboot", "dkim", "import", "--domain", "example.com", "--selector",
                    "imported", stdin=pem)
    assert "imported" in world.selectors("next")
    ed25519_signing = world.selectors("signing", "ed25519")
    applied = world.mail.logs().count("OpenDKIM has the new signing tables")
    world.publish()
    world.mail.wait_for_log("imported (rsa) signs now", timeout=60)
    world.mail.wait_for_count("OpenDKIM has the new signing tables", applied, timeout=30)
    assert_signed_by(world, {"imported", *ed25519_signing})


def test_a_rotation_whose_record_is_never_published_keeps_the_old_keys(world: World) -> None:
    signing = world.selectors("signing")
    seen = world.mail.logs().count("waits for its record")
    world.mail.exec("mailboot", "dkim", "rotate")
    world.mail.wait_for_count("waits for its record", seen, timeout=30)
    time.sleep(6)  # several check intervals: still not switched
    assert world.selectors("signing") == signing
    assert_signed_by(world, signing)
