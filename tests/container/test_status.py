"""`mailboot status` in a running container, over `docker exec` as users run it: every field is
reported, a deferred message shows in the queue fields, and the exit code follows the parts (a
self-signed certificate and a DNS that can't be asked are not in place)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.container.acme_setup import pebble_context, wait_for_pebble_certificate
from tests.container.clients import hold_local_delivery
from tests.container.containers import Container
from tests.container.dockercli import docker
from tests.container.pebble_harness import DockerNetwork, start_pebble
from tests.container.worlds import Scene
from tests.container.zoneserver import ZoneServer
from tests.polling import eventually

pytestmark = pytest.mark.container

ALICE, PASSWORD = "alice@example.com", "correct horse battery"
ENV = {
    "MAIL_DOMAINS": "example.com",
    "TLS_MODE": "self-signed",
    "PUBLIC_ADDRESS_DISCOVERY": "off",
    # Nothing listens there: every DNS check fails at once, and the worker says so.
    "DNS_RESOLVERS": "127.0.0.1:5399",
    "OUTBOUND_CHECK": "127.0.0.1:25",  # our own Postfix: a port 25 that answers
}
MakeContainer = Callable[..., Container]
FIELDS = {"ok", "not_in_place", "checked", "hostname", "certificate", "dns", "dkim", "queue",
          "mailboxes", "disk", "outbound", "reputation", "bans", "worker", "worker_problems",
          "sending_limits", "reports"}


def status(mail: Container, *flags: str) -> tuple[int, str]:
    result = mail.exec("mailboot", "status", *flags, check=False)
    assert not result.stderr.count("Traceback"), result.stderr
    return result.returncode, result.stdout


def wait_for_status(mail: Container, done: Callable[[dict[str, Any]], bool],
                    timeout: float = 90) -> tuple[int, dict[str, Any]]:
    """`status --json` until `done(document)` holds; returns the exit code and the document."""
    seen: list[dict[str, Any]] = []

    def reported() -> tuple[int, dict[str, Any]] | None:
        code, output = status(mail, "--json")
        seen.append(json.loads(output))
        return (code, seen[-1]) if done(seen[-1]) else None

    return eventually(reported, timeout, lambda: "the status: " + json.dumps(seen[-1], indent=1),
                      interval=1)


def test_status_reports_every_part_and_follows_the_state(make_container: MakeContainer) -> None:
    mail = make_container(env=ENV)
    mail.wait_ready()
    mail.add_account(ALICE, PASSWORD)
    hold_local_delivery(mail)  # the message waits as deferred
    mail.exec("sendmail", "-f", "postmaster@example.com", ALICE,
              stdin="Subject: waiting\n\nheld back\n")

    code, document = wait_for_status(mail, lambda d: (
        d["queue"].get("deferred") == 1 and d["outbound"] is not None
        and d["worker"] is not None and any("dns: can't check the DNS records" in p["message"]
                for p in d["worker_problems"]["last"])))
    assert set(document) == FIELDS
    assert code == 1 and document["ok"] is False

    certificate = document["certificate"]
    assert certificate["source"] == "self-signed" and certificate["self_signed"] is True
    assert "mail.example.com" in certificate["names"] and certificate["not_after"]
    assert certificate["renewal"] and certificate["issuer"] == "CN=mail.example.com"
    assert ("certificate: self-signed, TLS_MODE=self-signed; mail clients can't verify it"
            in document["not_in_place"])

    zones = {zone["zone"]: zone for zone in document["dns"]}
    assert zones["example.com"]["ready"] is False
    assert any(record["status"] == "unknown" for record in zones["example.com"]["not_ok"])
    assert any(line.startswith("dns: example.com:") for line in document["not_in_place"])
    [dkim] = document["dkim"]
    assert dkim["domain"] == "example.com" and dkim["signing"][0]["selector"].startswith("mb")

    queue = document["queue"]
    assert queue["deferred"] == 1 and queue["hold"] == 0
    oldest = queue["oldest_deferred"]
    assert oldest["recipient"] == ALICE and "dovecot-lmtp]: Permission denied" in oldest["reason"]
    assert oldest["queue_id"] and oldest["arrival"]

    assert document["mailboxes"]["count"] == 1
    disk = document["disk"]
    assert disk["path"] == "/data" and 0 < disk["free_bytes"] <= disk["total_bytes"]
    assert document["outbound"]["status"] in ("ok", "refused")  # Postfix may start after it
    problems = document["worker_problems"]
    assert problems["recent"] >= 1 and problems["recent_seconds"] == 7200
    assert any("dns: can't check the DNS records" in p["message"] for p in problems["last"])
    assert all(p["time"] and p["level"] in ("WARNING", "ERROR") for p in problems["last"])
    # The worker is a short run the supervisor repeats: its last run and the next are shown.
    assert document["worker"]["ran"] and document["worker"]["next_run"]

    code, screen = status(mail)
    assert code == 1
    assert screen.startswith("mailboot status of mail.example.com at ")
    assert "NOT IN PLACE" in screen and "oldest deferred:" in screen
    assert "1 mailbox(es)" in screen

    # The message delivered: the queue fields follow.
    hold_local_delivery(mail, hold=False)
    mail.exec("postqueue", "-f")
    code, document = wait_for_status(mail, lambda d: d["queue"].get("deferred") == 0
                                     and d["queue"].get("active") == 0)
    assert document["queue"]["oldest_deferred"] is None and code == 1


# --- everything in place: a certificate from Pebble, the records served by BIND ------------------


@pytest.fixture
def bind(scene: Scene) -> ZoneServer:
    return scene.zone_server({"example.com": ""})


def reverse_zone(network: DockerNetwork) -> str:
    first, second, third = network.prefix.rstrip(".").split(".")
    return f"{third}.{second}.{first}.in-addr.arpa"


def test_with_everything_in_place_status_exits_0(
    make_container: MakeContainer, test_network: DockerNetwork, bind: ZoneServer,
    tmp_path: Path,
) -> None:
    pebble = start_pebble(test_network, tmp_path / "pebble", validity=90 * 86400,
                          dns=f"{bind.ip}:53")
    try:
        ip = test_network.allocate()
        env = {"MAIL_DOMAINS": "example.com", "PUBLIC_IPV4": ip,
               "PUBLIC_ADDRESS_DISCOVERY": "off", "ACME_DIRECTORY": pebble.directory_url,
               "ACME_CA_BUNDLE": "/acme/ca.pem", "DNS_RESOLVERS": bind.ip, "CAA_ISSUER": "off",
               "OUTBOUND_CHECK": f"{bind.ip}:53"}  # a TCP port that answers, as port 25 would
        mail = make_container(env=env, volumes={str(pebble.directory): "/acme"},
                              network=test_network.name, ip=ip, dns=bind.ip, start=False)
        # The user publishes the records first (the DKIM key is made by `mailboot dns`).
        zone = docker("run", "--rm", "--hostname", "mail.example.com", "--network",
                      test_network.name, "-v", f"{mail.data}:/data",
                      *[f"-e{key}={value}" for key, value in env.items()], mail.image,
                      "dns", "--zone", "--domain", "example.com").stdout
        bind.serve({"example.com": zone,
                    reverse_zone(test_network): f"{ip.rsplit('.', 1)[1]} IN PTR "
                                                "mail.example.com.\n"})
        mail.start()
        mail.wait_ready()
        mail.add_account(ALICE, PASSWORD)
        wait_for_pebble_certificate(mail, pebble_context(pebble, tmp_path), timeout=90)
        code, document = wait_for_status(mail, lambda d: bool(d["ok"]), timeout=60)
        assert code == 0 and document["not_in_place"] == []
        certificate = document["certificate"]
        assert certificate["source"] == "acme" and not certificate["self_signed"]
        assert "Pebble" in certificate["issuer"] and certificate["renewal"]
        assert all(zone["ready"] for zone in document["dns"])
        assert [key["record"] for key in document["dkim"][0]["signing"]] == ["ok"]
        assert document["outbound"]["status"] == "ok"
        assert document["worker_problems"]["recent"] == 0
        code, screen = status(mail)
        assert code == 0 and ": everything is in place\n" in screen
    finally:
        pebble.remove()
