"""The DNS doctor in the running container, against BIND on the test network."""

from __future__ import annotations

import re

import pytest

from tests.container.containers import Container, unique_name
from tests.container.dockercli import docker
from tests.container.worlds import Scene
from tests.container.zoneserver import printed_zone

pytestmark = pytest.mark.container

READY = "dns: READY - every required DNS record is in place"


def reverse_zone(ip: str) -> str:
    octets = ip.split(".")
    return f"{octets[2]}.{octets[1]}.{octets[0]}.in-addr.arpa"


def test_log_shows_statuses_then_the_ready_line_once_dns_is_published(scene: Scene) -> None:
    mail_ip = scene.address()
    # The zones exist at the user's DNS provider; nothing is published in them yet.
    bind = scene.zone_server({"example.com": "", reverse_zone(mail_ip): ""})
    settings = {"DNS_CHECK_INTERVAL": "2s"}
    # DNS_CHECK=strict: nothing is published, so no daemon starts; the records are printed.
    strict = scene.mail("dns-strict", {**settings, "DNS_CHECK": "strict",
                                       "PUBLIC_IPV4": mail_ip, "DNS_RESOLVERS": bind.ip},
                        ready=False)
    assert strict.wait_exit() == 78
    logs = strict.logs()
    assert "DNS_CHECK=strict and these required records are not in place: example.com MX " \
        "(missing)" in logs
    assert "; MX: mail for example.com is delivered to mail.example.com [MISSING]" in logs
    assert "handing over to the supervisor" not in logs and "postfix/master" not in logs
    mail = scene.mail("dns", {**settings, "DNS_RESOLVERS": bind.ip}, ip=mail_ip)
    # The records are announced beside the daemons' start, and the worker checks again: the two
    # run side by side, so either may reach the log first.
    mail.wait_for_log("; MX: mail for example.com is delivered to mail.example.com [MISSING]")
    logs = mail.wait_for_log("dns: example.com MX is missing")
    assert "dns: 0 ok" not in logs and "missing (" in logs
    assert "dns: example.com MX is missing: Add @ MX 10 mail.example.com." in logs
    assert "READY" not in logs
    # The user's provider publishes the records.
    bind.serve({"example.com": printed_zone(mail, "example.com"),
                reverse_zone(mail_ip): f"{mail_ip.rsplit('.', 1)[1]} 3600 IN PTR "
                                       "mail.example.com.\n"})
    mail.wait_for_log(READY)
    assert "dns: example.com MX is now in place" in mail.logs()
    assert mail.restart_count() == 0
    check = mail.exec("mailboot", "dns", "--check", check=False)
    assert check.returncode == 0, check.stdout[-2000:]
    # Published: DNS_CHECK=strict lets the same data start, after checking every record.
    docker("stop", "-t", "10", mail.name)
    strict = Container(unique_name("mailboot-dns-strict"), mail.data,
                       {**mail.env, "DNS_CHECK": "strict"}, mail.image, network=mail.network,
                       ip=mail_ip)
    try:
        strict.start()
        strict.wait_ready()
        logs = strict.logs()
    finally:
        strict.remove()
    checked = re.search(r"dns: \d+ ok", logs)  # the records' check, before the daemons
    assert checked and checked.start() < logs.index("handing over to the supervisor"), logs
