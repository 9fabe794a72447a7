"""Metrics, as a Prometheus on the same network scrapes them: with METRICS_PORT set, the page at
the container's address is one `promtool check metrics` accepts and holds Dovecot's families,
Postfix's queues and delivery counts, the certificate's expiry and the worker's run; Postfix's
log still reaches `docker logs`. With metrics off (the default), the port is closed and nothing
of them runs: no metrics child, no Dovecot stats listener, no log pass-through."""

from __future__ import annotations

import http.client
import imaplib
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import require_tool
from tests.container.containers import Container, insecure_context
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import scene
from tests.container.zoneserver import supporting_zones
from tests.polling import eventually

pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

PORT = 9166
STATS_PORT = 8896  # Dovecot's stats listener on loopback (daemons.dovecot.STATS_PORT)


@dataclass(frozen=True)
class World:
    on: Container
    off: Container


@pytest.fixture(scope="module")
def world(test_network: DockerNetwork, image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with scene(test_network, image, tmp_path_factory.mktemp("metrics")) as made:
        on_ip, off_ip = made.address(), made.address()
        zones = {**supporting_zones(on_ip),
                 "example.com": f"@ 300 IN MX 10 mail.example.com.\nmail 300 IN A {on_ip}\n"}
        dns = made.zone_server(zones)
        common = {"PUBLIC_ADDRESS_DISCOVERY": "off", "OUTBOUND_CHECK": "off",
                  "REPUTATION_CHECK": "off"}
        on = made.mail("metrics-on", ip=on_ip, dns=dns, env={**common, "METRICS_PORT": "9166"},
                       accounts={"alice@example.com": "correct horse battery"})
        off = made.mail("metrics-off", ip=off_ip, dns=dns, env=common)
        yield World(on, off)


def scrape(mail: Container) -> str:
    """GET /metrics at the container's own address, as a Prometheus beside it would."""
    assert mail.ip is not None
    client = http.client.HTTPConnection(mail.ip, PORT, timeout=30)
    try:
        client.request("GET", "/metrics")
        answer = client.getresponse()
        body = answer.read().decode()
        assert answer.status == 200, body
        assert answer.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        return body
    finally:
        client.close()


def sample(page: str, series: str) -> float | None:
    """The value of one series (`name{labels}` exactly as printed), or None when absent."""
    for line in page.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_promtool_accepts_the_page_and_it_holds_every_source(world: World) -> None:
    # An IMAP session first, so Dovecot's page has a login and commands grouped by name.
    assert world.on.ip is not None
    with imaplib.IMAP4_SSL(world.on.ip, 993, ssl_context=insecure_context(),
                           timeout=30) as imap:
        imap.login("alice@example.com", "correct horse battery")
        imap.select("INBOX")
        imap.logout()

    def complete() -> str | None:
        page = scrape(world.on)
        # The worker's first run (a few seconds after the start) writes its state.
        return page if "mailboot_worker_last_run_timestamp_seconds " in page else None

    page = eventually(complete, 90, lambda: "the worker's last run on the page",
                      interval=2)
    result = subprocess.run([require_tool("promtool"), "check", "metrics"], input=page,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr + page
    for family in ("dovecot_auth_success_total", "dovecot_mail_delivery_total",
                   "mailboot_postfix_queue_messages", "mailboot_postfix_recipients_total",
                   "mailboot_certificate_expiry_timestamp_seconds",
                   "mailboot_certificate_expires_in_seconds",
                   "mailboot_worker_last_run_timestamp_seconds", "mailboot_dns_record_status"):
        assert f"\n# TYPE {family} " in page, family
    for source in ("dovecot", "postfix_queue", "postfix_log", "certificates", "worker"):
        assert sample(page, f'mailboot_source_up{{source="{source}"}}') == 1, source
    assert sample(page, 'mailboot_postfix_queue_messages{queue="deferred"}') == 0
    assert (sample(page, "dovecot_auth_success_total") or 0) >= 1
    assert 'dovecot_imap_command_total{cmd_name="SELECT"}' in page
    assert (sample(page, 'mailboot_certificate_expires_in_seconds{slot="live",source='
                         '"self-signed"}') or 0) > 300 * 86400


def test_a_delivery_and_a_refusal_are_counted_and_the_log_still_shows(world: World) -> None:
    before = scrape(world.on)
    delivered = sample(before, 'mailboot_postfix_recipients_total{result="delivered"}') or 0
    refused = sample(before, 'mailboot_postfix_recipients_total{result="refused"}') or 0
    world.on.exec("sendmail", "-f", "alice@example.com", "alice@example.com",
                  stdin="Subject: counted\n\nOne delivery to count.\n")
    with world.on.smtp(25) as smtp:  # from the test host: not ours to relay
        smtp.ehlo("client.example.net")
        smtp.mail("someone@example.net")
        code, _ = smtp.rcpt("someone@elsewhere.example.org")
        assert code >= 400  # 554 Relay access denied

    def counted() -> str | None:
        page = scrape(world.on)
        done = (sample(page, 'mailboot_postfix_recipients_total{result="delivered"}') or 0) \
            > delivered and (sample(page, 'mailboot_postfix_recipients_total{result="refused"}')
                             or 0) > refused
        return page if done else None

    page = eventually(counted, 60, lambda: "the delivery and the refusal counted:\n"
                      + scrape(world.on), interval=1)
    assert (sample(page, "dovecot_mail_delivery_total") or 0) >= 1
    logs = world.on.logs()
    assert "status=sent" in logs and "NOQUEUE: reject: RCPT from" in logs  # still in the log


def listening_inside(mail: Container, port: int) -> bool:
    """Whether anything in the container listens on TCP `port` (proc(5): /proc/net/tcp and
    tcp6, state 0A is LISTEN, the local port in hex)."""
    tables = mail.exec("cat", "/proc/net/tcp", "/proc/net/tcp6").stdout
    wanted = f":{port:04X}"
    return any(fields[1].endswith(wanted) and fields[3] == "0A"
               for fields in (line.split() for line in tables.splitlines()[1:])
               if len(fields) > 3)


# Every process's command line, one a line (the image has no ps).
COMMAND_LINES = ("import pathlib\n"
                 "for p in pathlib.Path('/proc').glob('[0-9]*/cmdline'):\n"
                 "    try: print(p.read_bytes().replace(b'\\0', b' ').decode())\n"
                 "    except OSError: pass\n")


def command_lines(mail: Container) -> str:
    return mail.exec("python3", "-c", COMMAND_LINES).stdout


def test_with_metrics_off_the_port_is_closed_and_nothing_of_them_runs(world: World) -> None:
    assert world.off.ip is not None
    with pytest.raises(ConnectionRefusedError), \
            socket.create_connection((world.off.ip, PORT), timeout=10):
        pass
    assert not listening_inside(world.off, PORT)
    assert not listening_inside(world.off, STATS_PORT)  # Dovecot's stats: no HTTP listener
    processes = command_lines(world.off)
    assert "mailboot.daemons.supervisor" in processes  # the listing works
    assert "metrics_child" not in processes
    assert "--metrics-port" not in processes and "--postfix-log-counts" not in processes
    # And with metrics on, Dovecot's listener is on loopback only.
    assert listening_inside(world.on, STATS_PORT)
    tables = world.on.exec("cat", "/proc/net/tcp").stdout
    assert f"0100007F:{STATS_PORT:04X}" in tables
