"""Alerts by mail, end to end (issue 29): BIND serves the records our container prints; the MX
record is taken out and put back, and the owner's mailbox gets exactly one alert, then one
recovery note, each signed by OpenDKIM; a further look mails nothing.

The DNS check asks BIND directly (DNS_RESOLVERS, as the zones' own name servers are asked in
production); a SIGUSR1 to the container is what users do to make the worker look now.
"""

from __future__ import annotations

import imaplib
import json
import time
from typing import Any

import pytest

from tests.container.clients import fetched_message
from tests.container.containers import Container, insecure_context
from tests.container.dockercli import docker
from tests.container.worlds import Scene
from tests.container.zoneserver import printed_zone, supporting_zones, without
from tests.polling import eventually

pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

OWNER, PASSWORD = "owner@example.com", "alert-test-password-1"
# Without its MX record the SPF record "v=spf1 a mx -all" no longer allows our address either:
# one mistake, one message, with the MX record first.
ALERT = ("[mailboot] mail.example.com: the MX record of example.com is missing (and 1 more)")
RECOVERY = ("[mailboot] mail.example.com: the MX record of example.com is in place again (and 1 "
            "more)")
ALERT_LINE = ("alerts: mailed an alert to postmaster@example.com: the MX record of example.com "
              "is missing; the TXT record of example.com is wrong")
RECOVERY_LINE = ("alerts: mailed a recovery note to postmaster@example.com: the MX record of "
                 "example.com is in place again; the TXT record of example.com is in place "
                 "again")


def memory(mail: Container) -> dict[str, Any]:
    """The alerts' memory in DATA_DIR; empty before the first check."""
    found = mail.exec("cat", "/data/alerts.json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else {}


def last_run(mail: Container) -> float:
    """When the worker's last finished run began (its state file), 0 before the first."""
    found = mail.exec("cat", "/run/mailboot/worker-state.json", check=False)
    return float(json.loads(found.stdout)["ran"]) if found.returncode == 0 else 0.0


def look_now(mail: Container) -> float:
    """SIGUSR1: the worker runs every task now (or right after the run in progress); returns
    the time it was asked."""
    asked = time.time()
    docker("kill", "--signal", "USR1", mail.name)
    return asked


def wait_for_run_after(mail: Container, asked: float) -> None:
    """Until a run that began after `asked` has finished (its state file says when it began;
    the container shares the host's clock)."""
    eventually(lambda: last_run(mail) > asked, 90,
               lambda: f"a worker run after {asked}:\n{mail.log_tail(3000)}", interval=0.5)


def subjects(mail: Container) -> list[str]:
    """The Subject of every alert mail in the owner's INBOX (postmaster@ goes there), unfolded."""
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context()) as imap:
        imap.login(OWNER, PASSWORD)
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "HEADER", "X-Mailboot-Alert", '""')
        numbers = found[0].split()
        return [" ".join(str(fetched_message(imap.fetch(n, "(BODY.PEEK[HEADER])")[1][0])[
            "Subject"]).split()) for n in numbers]


def fetch_alert(mail: Container, subject: str) -> bytes:
    def look() -> bytes | None:
        with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993],
                               ssl_context=insecure_context()) as imap:
            imap.login(OWNER, PASSWORD)
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "SUBJECT", f'"{subject}"')
            numbers = found[0].split()
            if not numbers:
                return None
            item = imap.fetch(numbers[0], "(BODY.PEEK[])")[1][0]
        assert isinstance(item, tuple)
        return item[1]

    return eventually(look, 60, lambda: f"{subject!r} in {OWNER}'s INBOX:\n"
                      f"{mail.log_tail(3000)}")


def test_removing_the_mx_mails_one_alert_restoring_it_one_recovery_then_nothing(
        scene: Scene) -> None:
    ip = scene.address()
    # The zone exists at the DNS provider; our records are put in once the container prints
    # them.
    dns = scene.zone_server({**supporting_zones(ip), "example.com": ""})
    mail = scene.mail("alerts", ip=ip, dns=dns, accounts={OWNER: PASSWORD}, env={
        "PUBLIC_ADDRESS_DISCOVERY": "off", "OUTBOUND_CHECK": "off"})
    zone = printed_zone(mail, "example.com")
    dns.serve({**supporting_zones(ip), "example.com": zone})

    # The records as published, seen in place: from now on their loss is an alert.
    asked = look_now(mail)
    eventually(lambda: any(key.startswith("dns:example.com MX ")
                           for key in memory(mail).get("seen_good", [])), 90,
               lambda: f"the MX record seen in place:\n{memory(mail)}\n{mail.log_tail(3000)}")
    wait_for_run_after(mail, asked)
    assert ALERT_LINE not in mail.logs()

    dns.serve({**supporting_zones(ip), "example.com": without(zone, "example.com.", "MX")})
    look_now(mail)
    mail.wait_for_log(ALERT_LINE, timeout=90)
    alert = fetch_alert(mail, ALERT)
    parsed = fetched_message((b"", alert))
    assert "d=example.com" in " ".join(str(parsed["DKIM-Signature"]).split())
    assert parsed["From"] == "mailboot <postmaster@example.com>"
    text = parsed.get_content()
    assert "What to do: Add @ MX 10 mail.example.com." in text and "ALERT_TO=off" in text

    dns.serve({**supporting_zones(ip), "example.com": zone})
    look_now(mail)
    mail.wait_for_log(RECOVERY_LINE, timeout=90)
    recovery = fetched_message((b"", fetch_alert(mail, RECOVERY)))
    assert recovery["DKIM-Signature"] is not None

    # A further look: nothing new to say.
    wait_for_run_after(mail, look_now(mail))
    logs = mail.logs()
    assert logs.count(ALERT_LINE) == 1 and logs.count(RECOVERY_LINE) == 1
    assert sorted(subjects(mail)) == sorted([ALERT, RECOVERY])
