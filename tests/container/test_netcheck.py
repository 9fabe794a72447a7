"""The network self-checks, end to end: a helper container on the test network accepts on port
25, silently drops connections on another port, and answers DNS questions with the asker's own
address (as Google's o-o.myaddr.l.google.com does); mail containers are pointed at it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.container.containers import Container
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import scene
from tests.polling import eventually

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

SMTP_PORT, DROP_PORT = 25, 2526
# Runs in the helper (the image's Python and dnspython). The drop port's accept queue is kept
# full (backlog 0, one connection held, never accepted): Linux then drops further SYNs, exactly
# what a provider's firewall does to port 25.
HELPER = r"""
import socket, threading
import dns.flags, dns.message, dns.rdatatype, dns.rrset

def smtp():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 25))
    listener.listen(16)
    while True:
        connection, _ = listener.accept()
        try:
            connection.sendall(b"220 helper.test ESMTP\r\n")
        except OSError:
            pass
        connection.close()

dropping = socket.socket()
dropping.bind(("0.0.0.0", 2526))
dropping.listen(0)
held = []
for _ in range(2):
    filler = socket.socket()
    filler.settimeout(1)
    try:
        filler.connect(("127.0.0.1", 2526))
    except OSError:
        pass
    held.append(filler)
threading.Thread(target=smtp, daemon=True).start()

echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
echo.bind(("0.0.0.0", 53))
print("helper ready", flush=True)
while True:
    data, (address, port) = echo.recvfrom(4096)
    try:
        query = dns.message.from_wire(data)
    except Exception:
        continue
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    question = query.question[0]
    if question.rdtype == dns.rdatatype.TXT:
        response.answer.append(dns.rrset.from_text(question.name, 0, "IN", "TXT",
                                                   '"%s"' % address))
    elif question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, 0, "IN", "A", address))
    echo.sendto(response.to_wire(), (address, port))
"""
OPEN = "outbound: port 25 to other mail servers is open"
BLOCKED = "outbound: port 25 to other mail servers is blocked here"
RELAY_HINT = "set RELAY_HOST"


@dataclass
class Checks:
    helper_ip: str
    found: Container  # port 25 open; the address found by asking the helper
    blocked: Container  # port 25 dropped; discovery off
    relayed: Container  # port 25 dropped, but a relay that answers


@pytest.fixture(scope="module")
def checks(test_network: DockerNetwork, image: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checks]:
    with scene(test_network, image, tmp_path_factory.mktemp("netcheck")) as made:
        helper = made.server("netcheck-helper", "-u", "-c", HELPER,
                             options=("--entrypoint", "python3"))
        eventually(lambda: "helper ready" in helper.logs(), 30,
                   lambda: f"the helper to listen: {helper.logs()}", interval=0.2)
        drop = f"{helper.ip}:{DROP_PORT}"
        cases = {
            "found": {"OUTBOUND_CHECK": f"{helper.ip}:{SMTP_PORT}",
                      "PUBLIC_ADDRESS_DISCOVERY": f"whoami.test@{helper.ip}"},
            "blocked": {"OUTBOUND_CHECK": drop, "PUBLIC_ADDRESS_DISCOVERY": "off"},
            "relayed": {"OUTBOUND_CHECK": drop, "PUBLIC_ADDRESS_DISCOVERY": "off",
                        "RELAY_HOST": f"{helper.ip}:{SMTP_PORT}"},
        }
        # All at once, without a public address to start from: each test waits for its lines.
        yield Checks(helper.ip, **{case: made.mail(f"net-{case}", env, public=False, ready=False)
                                   for case, env in cases.items()})


def test_a_host_that_accepts_on_25_is_ok_and_kept_for_status(checks: Checks) -> None:
    logs = checks.found.wait_for_log(OPEN, timeout=90)
    assert f"connected to {checks.helper_ip} port 25" in logs
    assert BLOCKED not in logs
    state = json.loads(checks.found.exec("cat", "/run/mailboot/outbound-port25.json").stdout)
    assert state["status"] == "ok" and state["via_relay"] is None


def test_the_found_address_fills_the_records_and_the_log_says_how(checks: Checks,
                                                                   tmp_path: Path) -> None:
    mail = checks.found
    ip = mail.ip or ""
    logs = mail.wait_for_log("boot: dns records done", timeout=90)
    assert (f"address: found the public IPv4 address {ip} (asked {checks.helper_ip} over IPv4 "
            "for whoami.test TXT, which answers with the asker's address)") in logs
    assert f"{ip} is not a public address" in logs  # a test network's address: said, and used
    reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    assert re.search(rf"^mail\.example\.com\.\s+\d+ IN A\s+{re.escape(ip)}$", logs, re.M), logs
    assert reverse in logs and "set PUBLIC_IPV4 (and PUBLIC_IPV6) and restart" not in logs
    # `mailboot dns` (and the worker) use the same address, kept in DATA_DIR.
    printed = mail.exec("mailboot", "dns", "--zone").stdout
    assert ip in printed
    assert json.loads((mail.data / "found-addresses.json").read_text())["ipv4"]["address"] == ip


def test_a_dropped_port_25_is_blocked_with_the_relay_hint(checks: Checks) -> None:
    logs = checks.blocked.wait_for_log(BLOCKED, timeout=90)
    line = next(line for line in logs.splitlines() if BLOCKED in line)
    assert "mail will queue" in line and RELAY_HINT in line and "RELAY_SPF_INCLUDE" in line
    assert "no answer within 5 s" in line
    state = json.loads(checks.blocked.exec("cat", "/run/mailboot/outbound-port25.json").stdout)
    assert state["status"] == "blocked"


def test_with_discovery_off_the_records_keep_their_placeholders(checks: Checks) -> None:
    logs = checks.blocked.wait_for_log("boot: dns records done", timeout=90)
    assert "PUBLIC_ADDRESS_DISCOVERY=off and no PUBLIC_IPV4/PUBLIC_IPV6" in logs
    assert "set PUBLIC_IPV4 (and PUBLIC_IPV6) and restart" in logs
    assert "address: found" not in logs


def test_with_a_relay_a_blocked_port_25_is_no_alarm(checks: Checks) -> None:
    logs = checks.relayed.wait_for_log("outbound: the relay", timeout=90)
    assert (f"outbound: the relay {checks.helper_ip}:25 answers ({checks.helper_ip} port 25); "
            "port 25 outward is not needed with RELAY_HOST") in logs
    assert BLOCKED not in logs
