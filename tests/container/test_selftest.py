"""`mailboot selftest` in the running container, against BIND serving the zones it printed.

Each zone state (as printed; the DKIM record left out; SPF naming another address; both) is
judged three ways, which must agree: by `mailboot selftest`; by dkimpy on the host, verifying
the very message the self-test signs; and by our own inbound checks (OpenDKIM, OpenDMARC) when
that message arrives on port 25 from the server's public address with the HELO MAIL_HOSTNAME.
"""

from __future__ import annotations

import base64
import imaplib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import dkim
import pytest

from tests.container.clients import fetched_message, our_verdicts
from tests.container.containers import Container, insecure_context
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import scene
from tests.container.zoneserver import ZoneServer, printed_zone, supporting_zones, without
from tests.polling import eventually

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

ALICE = "alice@example.com"
PASSWORD = "correct horse battery"
ELSEWHERE = "192.0.2.1"

# Runs inside the mail container: the message the self-test signs (same code, live key), sent
# from the server's public address to its own port 25, as another server would receive it.
SIGN_AND_SEND = r"""
import base64, json, os, smtplib, sys
from datetime import UTC, datetime
from mailboot.dkim import keys as dkim
from mailboot.diagnose import selftest
from mailboot.base.paths import Paths
from mailboot.settings.table import load_settings
settings = load_settings(os.environ)
now = datetime.now(UTC)
(keys,) = dkim.ensure_keys(Paths(settings.data_dir), settings.domains, now)
sender = sys.argv[1]
message = selftest.sign(selftest.build_message(sender, sender, now), keys.signing)
reply = [250, "sent"]
try:
    with smtplib.SMTP(str(settings.public_ipv4), 25, local_hostname=settings.hostname,
                      timeout=60) as smtp:
        smtp.sendmail(sender, [sender], message)
except smtplib.SMTPRecipientsRefused as error:
    code, text = next(iter(error.recipients.values()))
    reply = [code, text.decode(errors="replace")]
except smtplib.SMTPResponseException as error:
    reply = [error.smtp_code, error.smtp_error.decode(errors="replace")]
print(json.dumps({"message": base64.b64encode(message).decode(), "reply": reply}))
"""


@dataclass
class World:
    dns: ZoneServer
    mail: Container
    zone: str  # example.com as `mailboot dns --zone` printed it

    @property
    def dkim_name(self) -> str:
        found = re.search(r"^(\S+\._domainkey\.example\.com\.)\s", self.zone, re.MULTILINE)
        assert found, self.zone
        return found.group(1)

    def publish(self, zone: str) -> None:
        """Serve `zone` as example.com, so that the inbound checks see what the self-test sees
        (it asks BIND itself): TTLs cut to 1 s and our Unbound flushed. OpenDKIM has a cache of
        its own (libunbound) that no command empties, and the zone's negative TTL (its SOA's,
        60 s) can't be cut: the cases that remove the DKIM record run last."""
        zone = re.sub(r"(?m)^(\S+\s+)\d+( IN )", r"\g<1>1\2", zone)
        self.dns.serve({"example.com": zone, **supporting_zones(self.mail.ip or "")})
        self.mail.exec("unbound-control", "-c", "/etc/unbound/unbound.conf", "flush_zone",
                       "example.com")


@pytest.fixture(scope="module")
def world(test_network: DockerNetwork, image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with scene(test_network, image, tmp_path_factory.mktemp("selftest")) as made:
        mail_ip = made.address()
        dns = made.zone_server(supporting_zones(mail_ip))
        mail = made.mail("selftest", ip=mail_ip, dns=dns, accounts={ALICE: PASSWORD})
        yield World(dns, mail, printed_zone(mail, "example.com"))


def spf_elsewhere(zone: str) -> str:
    assert '"v=spf1 a mx -all"' in zone
    return zone.replace('"v=spf1 a mx -all"', f'"v=spf1 ip4:{ELSEWHERE} -all"')


@dataclass(frozen=True)
class Case:
    edit: Callable[[World], str]
    expected: dict[str, str]  # the self-test's results


CASES = {  # in this order: see World.publish
    "as printed": Case(lambda w: w.zone, {"DKIM": "pass", "SPF": "pass", "DMARC": "pass"}),
    "SPF elsewhere": Case(lambda w: spf_elsewhere(w.zone),
                          {"DKIM": "pass", "SPF": "fail", "DMARC": "pass"}),
    "no DKIM record": Case(lambda w: without(w.zone, w.dkim_name, "TXT"),
                           {"DKIM": "fail", "SPF": "pass", "DMARC": "pass"}),
    "both": Case(lambda w: spf_elsewhere(without(w.zone, w.dkim_name, "TXT")),
                 {"DKIM": "fail", "SPF": "fail", "DMARC": "fail"}),
}


def selftest_results(text: str) -> dict[str, str]:
    """method -> result from the block of example.com (one address: one block)."""
    return dict(re.findall(r"^  (DKIM|SPF|DMARC)\s+(\w+)", text, re.MULTILINE))


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_selftest_judges_the_published_zone_as_receivers_do(world: World, case: str) -> None:
    world.publish(CASES[case].edit(world))
    run = world.mail.exec("mailboot", "selftest", check=False)
    text = run.stdout
    results = selftest_results(text)
    assert results == CASES[case].expected, text + run.stderr
    assert run.returncode == (0 if case == "as printed" else 1), text + run.stderr
    if results["DKIM"] == "fail":
        assert f"no key record at {world.dkim_name.rstrip('.')}" in text
        assert f"fix: publish {world.dkim_name}" in text
    if results["SPF"] == "fail":
        assert f'("v=spf1 ip4:{ELSEWHERE} -all") does not allow {world.mail.ip}' in text
        assert 'fix: publish example.com.' in text and '"v=spf1 a mx -all"' in text
    if results["DMARC"] == "fail":
        assert "neither SPF nor DKIM passes for example.com" in text
    assert ("selftest: PASS" in text) == (case == "as printed")
    agree_with_dkimpy_and_our_inbound_checks(world, results)


def agree_with_dkimpy_and_our_inbound_checks(world: World, results: dict[str, str]) -> None:
    sent = json.loads(world.mail.exec("python3", "-c", SIGN_AND_SEND, ALICE).stdout)
    message = base64.b64decode(sent["message"])
    # dkimpy on the host, the key record read from BIND as published.
    assert dkim.verify(message, dnsfunc=lambda name, timeout=5: world.dns.txt(name)) == (
        results["DKIM"] == "pass")
    code, reply = sent["reply"]
    if results["DMARC"] == "fail":  # DMARC_POLICY reject: refused at the end of DATA
        assert code // 100 == 5 and "DMARC" in reply, sent["reply"]
        return
    assert code == 250, sent["reply"]
    token = re.search(rb"^Message-ID: <([^>]+)>", message, re.MULTILINE | re.IGNORECASE)
    assert token, message
    delivered = find(world.mail, token.group(1).decode())
    ours = our_verdicts(delivered)
    assert {m.upper(): r == "pass" for m, r in ours.items()} == {
        m: r == "pass" for m, r in results.items()}, (ours, results)


def look(mail: Container, message_id: str) -> EmailMessage | None:
    """The message with `message_id` in Alice's INBOX or Junk now, read over IMAPS."""
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context(),
                           timeout=30) as imap:
        imap.login(ALICE, PASSWORD)
        for mailbox in ("INBOX", "Junk"):
            if imap.select(f'"{mailbox}"', readonly=True)[0] != "OK":
                continue
            _, found = imap.search(None, "HEADER", "Message-ID", f'"{message_id}"')
            if found[0]:
                _, data = imap.fetch(found[0].split()[0], "(BODY.PEEK[])")
                return fetched_message(data[0])
    return None


def find(mail: Container, message_id: str, timeout: float = 30) -> EmailMessage:
    """The message with `message_id` in Alice's INBOX or Junk, once it has arrived."""
    return eventually(lambda: look(mail, message_id), timeout,
                      lambda: f"{message_id} in INBOX or Junk:\n{mail.log_tail(3000)}")


def test_to_sends_the_message_for_real_signed_once_by_opendkim(world: World) -> None:
    world.publish(world.zone)
    before = selftest_messages(world.mail)
    run = world.mail.exec("mailboot", "selftest", "--to", ALICE, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"sent a test message from {ALICE} to {ALICE}" in run.stdout
    new = eventually(lambda: selftest_messages(world.mail) - before, 30,
                     lambda: f"the self-test's message:\n{world.mail.log_tail(3000)}")
    with imaplib.IMAP4_SSL("127.0.0.1", world.mail.ports[993], ssl_context=insecure_context(),
                           timeout=30) as imap:
        imap.login(ALICE, PASSWORD)
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("FETCH", new.pop(), "(BODY.PEEK[HEADER])")
    headers = fetched_message(data[0])
    signatures = headers.get_all("DKIM-Signature", [])
    assert len(signatures) == 1 and "d=example.com" in " ".join(str(signatures[0]).split())


def selftest_messages(mail: Container) -> set[str]:
    """UIDs of the self-test's messages in Alice's INBOX."""
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context(),
                           timeout=30) as imap:
        imap.login(ALICE, PASSWORD)
        imap.select("INBOX", readonly=True)
        _, found = imap.uid("SEARCH", "SUBJECT", '"mailboot self-test for example.com"')
        return {uid.decode() for uid in found[0].split()}


def test_usage_errors(world: World) -> None:
    run = world.mail.exec("mailboot", "selftest", "--to", "not an address", check=False)
    assert run.returncode != 0 and "--to:" in run.stderr
