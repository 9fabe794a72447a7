"""An upgrade as users make one: the server runs 0.1.0, and the image of this checkout replaces it.

The image of commit cbdbf5b (0.1.0, the last commit before the package was reshaped) runs a
server set up as the README says, DNS published, mid-way through its life: two accounts, mail
in their mailboxes (from outside on 25, submitted on 587), a DKIM rotation that waits for its
records, a certificate from Pebble, and a message queued for a mail server that is down. It is
stopped as `docker compose up -d` stops it for a new image, and this checkout's image starts on
the same /data with the same settings. The new server must carry on where the old one stopped:
the same DNS records and rotation state, the same logins, every message with its UID, the queued
message delivered once its destination is back (signed, as new mail is, by the same key), no
new certificate ordered, and nothing in its log that says something is wrong.

The tests run in file order on one upgrade (the module's fixture), so the log test reads what
all the others made the new server do. The whole module takes about 40 s here once both images
are built; the image of 0.1.0 is built once and kept (a few minutes from nothing, seconds when
Docker has this checkout's package layer, which is the same).
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import json
import re
import secrets
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import dkim
import pytest
from cryptography import x509

from tests.conftest import require_tool
from tests.container.acme_setup import acme_env, pebble_context, san, wait_for_pebble_certificate
from tests.container.clients import fetch_text
from tests.container.containers import ROOT, Container, insecure_context
from tests.container.dockercli import docker
from tests.container.pebble_harness import DockerNetwork, Pebble, start_pebble
from tests.container.zoneserver import ZoneServer, printed_zone, start_zone_server, supporting_zones
from tests.polling import eventually

# The tests share the module's upgraded server: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

PREVIOUS = "cbdbf5b"  # 0.1.0 (CHANGELOG.md)
PREVIOUS_IMAGE = f"mailboot:upgrade-from-{PREVIOUS}"
REVISION_LABEL = "org.opencontainers.image.revision"
ALICE, BOB = "alice@example.com", "bob@example.com"
PASSWORDS = {ALICE: "correct horse battery", BOB: "a different long passphrase"}
CAROL = "carol@example.net"  # at a mail server that is down during the upgrade
DAVE = "dave@example.net"  # writes to Alice from outside, on port 25
SINK_DIR = "/tmp/sink"
CERTIFIED = ("mail.example.com", "mta-sts.example.com", "autoconfig.example.com",
             "autodiscover.example.com")
KEEPER_DECIDED = f"tls: the certificate for {', '.join(CERTIFIED)} is current"
# What says something is wrong in the log, in each writer's own words for its levels:
WRONG = re.compile("|".join((
    # ours (mailboot/base/logs.py)
    r"^mailboot: (warning|error|critical): ",
    # the supervisor, in a running container, speaks of nothing but a daemon's start unless a
    # daemon or a child of ours ended, failed or hung
    r"^mailboot: supervisor: (?!started [\w-]+ \(pid \d+\)$)",
    # an exception that no handler of ours logged
    r"^Traceback \(most recent call last\):",
    # Postfix's programs (msg(3): warning, error, fatal, panic)
    r"(^|\s)(post[\w-]*|sendmail)(/[\w/-]+)?(\[\d+\])?: "
    r"(warning|error|fatal|panic): ",
    # Dovecot's processes ("master: Warning: ...", "imap(user)<...>: Error: ...")
    r"^[\w-]+(\([^)]*\))?(<[^>]*>)*: (Warning|Error|Fatal|Panic): ",
    # Unbound ("unbound[18:0] warning: ...")
    r"unbound\[\d+:\d+\] (warning|error|fatal error): ",
    # OpenDKIM and OpenDMARC log through syslog, whose priority the supervisor's relay leaves
    # out: their lines carry no level here (a key they can't use shows in the signatures that
    # test_the_queued_message_leaves_once_its_destination_is_back verifies).
)))
# What the test's world makes expected: a private test network without DNSSEC.
EXPECTED = (
    # PUBLIC_IPV4 is an address of the Docker test network (the line says it is fine for tests).
    re.compile(r"^mailboot: warning: PUBLIC_IPV4: [\d.]+ is not a public address"),
    # BIND serves the test zones unsigned, so the container's resolver runs with
    # DNSSEC_VALIDATION=off and Postfix's DANE probe (smtp_dns_support_level = dnssec) says so.
    re.compile(r"postfix/smtp\[\d+\]: warning: (DNSSEC validation may be unavailable$|reason: "
               r"dnssec_probe 'ns:\.' received a response that is not DNSSEC validated$)"),
)


@pytest.fixture(scope="module")
def previous_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image of 0.1.0, built from its commit under a tag that names it, and reused while the
    tag's revision label says it holds that commit (a build takes minutes without Debian's
    packages in Docker's cache, seconds with them)."""
    found = subprocess.run([require_tool("git"), "-C", str(ROOT), "rev-parse", "--verify",
                            f"{PREVIOUS}^{{commit}}"], capture_output=True, text=True,
                           timeout=30, check=False)
    if found.returncode != 0:
        pytest.fail(f"commit {PREVIOUS} (0.1.0, the release this test upgrades from, whose image "
                    f"it builds) can't be read from {ROOT}: {found.stderr.strip()}. Run the test "
                    "in a git clone with the whole history (`git fetch --unshallow` in a shallow "
                    "one)")
    commit = found.stdout.strip()
    label = docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{REVISION_LABEL}"}}}}',
                   PREVIOUS_IMAGE, check=False)
    if label.returncode == 0 and label.stdout.strip() == commit:
        return PREVIOUS_IMAGE
    archive = tmp_path_factory.mktemp("previous") / f"{PREVIOUS}.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--output", str(archive), commit],
                   check=True, capture_output=True, timeout=120)
    # 0.1.0's Dockerfile has no labels: the build adds the one this fixture reads back.
    with archive.open("rb") as context:
        built = subprocess.run(["docker", "build", "--quiet", "--tag", PREVIOUS_IMAGE,
                                "--label", f"{REVISION_LABEL}={commit}", "-"], stdin=context,
                               capture_output=True, timeout=1200, check=False)
    assert built.returncode == 0, f"the image of {PREVIOUS} did not build:\n{built.stderr!r}"
    return PREVIOUS_IMAGE


@dataclass(frozen=True)
class Folder:
    uidvalidity: str
    messages: tuple[tuple[int, str], ...]  # (UID, Message-ID), in UID order


@dataclass(frozen=True)
class State:
    """What a user and their correspondents depend on, as the server shows it from outside."""

    records: list[dict[str, object]]  # `mailboot dns --json`
    dkim_keys: list[dict[str, object]]  # `mailboot dkim list --json`: roles, the rotation
    mailboxes: dict[str, dict[str, Folder]]  # account -> folder -> its messages
    queue: list[tuple[str, str, tuple[str, ...]]]  # id, sender, recipients
    certificate: x509.Certificate  # the one every mail port serves
    orders: int  # new orders Pebble has received


@dataclass(frozen=True)
class Upgrade:
    network: DockerNetwork
    dns: ZoneServer
    pebble: Pebble
    sink: str  # carol's mail server: the host is up, its SMTP service comes up later
    old: Container
    new: Container
    before: State
    queued: str  # the token of the message that waited in the queue
    context: ssl.SSLContext  # trusts Pebble's root


def message(sender: str, recipient: str) -> tuple[EmailMessage, str]:
    token = secrets.token_hex(8)
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, recipient, f"upgrade {token}"
    mail["Message-ID"] = f"<{token}@{sender.split('@')[1]}>"
    mail.set_content(f"Message {token}, from {sender}.\n")
    return mail, token


def submit(mail: Container, sender: str, recipient: str) -> str:
    """As a mail client sends: port 587, STARTTLS, login. Returns the message's token."""
    composed, token = message(sender, recipient)
    with mail.smtp(587) as client:
        client.starttls(context=insecure_context())
        client.login(sender, PASSWORDS[sender])
        client.send_message(composed)
    return token


def deliver_from_outside(mail: Container, recipient: str) -> str:
    """As another mail server delivers: port 25, no login."""
    composed, token = message(DAVE, recipient)
    with smtplib.SMTP("127.0.0.1", mail.ports[25], local_hostname="mx.example.net",
                      timeout=60) as client:
        client.send_message(composed)
    return token


def listed_json(mail: Container, *command: str) -> list[dict[str, object]]:
    listed = json.loads(mail.exec("mailboot", *command, "--json").stdout)
    assert isinstance(listed, list)
    return listed


def mailboxes(mail: Container) -> dict[str, dict[str, Folder]]:
    return {user: folders(mail, user) for user in PASSWORDS}


def folders(mail: Container, user: str) -> dict[str, Folder]:
    """Every folder of the account with its UIDVALIDITY and messages: a client that finds both
    unchanged keeps its copy (RFC 9051 §2.3.1.1), so the upgrade must not renumber anything."""
    found = {}
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context(),
                           timeout=30) as imap:
        imap.login(user, PASSWORDS[user])
        _, listing = imap.list()
        for line in listing:
            assert isinstance(line, bytes)
            name = line.decode().rsplit(" ", 1)[1].strip('"')
            _, count = imap.select(f'"{name}"', readonly=True)
            _, validity = imap.response("UIDVALIDITY")
            messages: list[tuple[int, str]] = []
            if int(count[0] or 0):
                _, data = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                for item in data:
                    if isinstance(item, tuple):
                        uid = re.search(rb"UID (\d+)", item[0])
                        header = email.message_from_bytes(item[1])
                        assert uid, item
                        messages.append((int(uid.group(1)), str(header["Message-ID"])))
            found[name] = Folder(str(validity[0]), tuple(sorted(messages)))
    return found


def queue(mail: Container) -> list[tuple[str, str, tuple[str, ...]]]:
    """`postqueue -j`: each message's id, sender and recipients (not which of Postfix's queues
    holds it: a retry moves it from deferred to active and back)."""
    entries = [json.loads(line) for line in mail.exec("postqueue", "-j").stdout.splitlines()]
    return sorted((e["queue_id"], e["sender"], tuple(r["address"] for r in e["recipients"]))
                  for e in entries)


def wait_until_deferred(mail: Container, recipient: str, timeout: float = 90) -> None:
    """Until Postfix tried the recipient's server, failed and keeps the message for later."""
    def deferred() -> bool:
        entries = [json.loads(line) for line in mail.exec("postqueue", "-j").stdout.splitlines()]
        return any(e["queue_name"] == "deferred" and r["address"] == recipient
                   and "delay_reason" in r for e in entries for r in e["recipients"])

    eventually(deferred, timeout, lambda: f"{recipient} deferred:\n{mail.logs()[-3000:]}")


def state(mail: Container, pebble: Pebble, context: ssl.SSLContext) -> State:
    return State(listed_json(mail, "dns"), listed_json(mail, "dkim", "list"), mailboxes(mail),
                 queue(mail), wait_for_pebble_certificate(mail, context),
                 pebble.new_order_count())


def start_sink_host(network: DockerNetwork, ip: str, image: str) -> str:
    """mx.example.net: a host that is up with nothing listening on port 25 (Postfix's connection
    is refused at once instead of waiting out a timeout). Its tools come from our image."""
    name = f"mailboot-upgrade-mx-{secrets.token_hex(3)}"
    docker("run", "-d", "--name", name, "--network", network.name, "--ip", ip,
           "--entrypoint", "sleep", image, "infinity")
    docker("exec", name, "install", "-d", "-o", "postfix", SINK_DIR)
    return name


def start_sink_smtp(sink: str) -> None:
    """Port 25 comes up: Postfix's smtp-sink(1) accepts every message, one file each."""
    docker("exec", "-d", sink, "smtp-sink", "-u", "postfix", "-d", f"{SINK_DIR}/%H%M%S.",
           "0.0.0.0:25", "16")


def sunk(sink: str, token: str, timeout: float = 60) -> bytes:
    """The message with `token`, as carol's server received it (smtp-sink's envelope lines
    before it left out), once it has arrived."""
    def arrived() -> str:
        return docker("exec", sink, "sh", "-c", f"grep -l -r -F {token} {SINK_DIR} | head -1 "
                      "| xargs -r cat", check=False).stdout

    lines = eventually(arrived, timeout, f"message {token} at {CAROL}").splitlines()
    while lines and re.match(r"X-(Client-Addr|Client-Proto|Helo-Args|Mail-Args|"
                             r"Rcpt-Args): ", lines[0]):
        lines.pop(0)
    return "\r\n".join([*lines, ""]).encode()


def signatures(dns: ZoneServer, raw: bytes) -> dict[str, bool]:
    """selector -> whether dkimpy verifies its signature against the records BIND serves."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    found = {}
    for index, header in enumerate(parsed.get_all("DKIM-Signature", [])):
        selector = re.search(r"(?:^|;)s=([^;]+)", "".join(str(header).split()))
        assert selector, header
        verified = dkim.DKIM(raw).verify(idx=index,
                                         dnsfunc=lambda name, timeout=5: dns.txt(name))
        found[selector.group(1)] = bool(verified)
    return found


def publish(dns: ZoneServer, mail_ip: str, sink_ip: str, example_com: str) -> None:
    dns.serve({**supporting_zones(mail_ip), "example.com": example_com,
               # Carol's provider: one MX, the sink's host.
               "example.net": f"@ 3600 IN MX 10 mx.example.net.\nmx 3600 IN A {sink_ip}\n"})


def run_the_old_server(old: Container, dns: ZoneServer, pebble: Pebble,
                       context: ssl.SSLContext, sink_ip: str) -> tuple[State, str]:
    """0.1.0 set up and used: returns what it showed just before its stop, and the token of the
    message it had queued."""
    mail_ip = old.ip or ""
    old.start()
    old.wait_ready()
    for user, password in PASSWORDS.items():
        old.add_account(user, password)
    assert san(wait_for_pebble_certificate(old, context, timeout=90)) == set(CERTIFIED)
    # The certificate is real: the records are final (the MTA-STS policy's among them).
    publish(dns, mail_ip, sink_ip, printed_zone(old, "example.com"))
    tokens = [deliver_from_outside(old, ALICE), submit(old, ALICE, BOB), submit(old, BOB, ALICE)]
    for user, token in zip((ALICE, BOB, ALICE), tokens, strict=True):
        fetch_text(old, user, token, PASSWORDS[user], timeout=60)
    rotate = old.exec("mailboot", "dkim", "rotate")
    assert rotate.stdout.count("._domainkey.example.com.") == 2, rotate.stdout  # rsa, ed25519
    queued = submit(old, ALICE, CAROL)
    wait_until_deferred(old, CAROL)
    before = state(old, pebble, context)
    assert {str(k["role"]) for k in before.dkim_keys} == {"signing", "next"}, before.dkim_keys
    assert [recipients for _, _, recipients in before.queue] == [(CAROL,)], before.queue
    assert before.orders == 1
    # `docker compose up -d` with a new image: stop (compose.yaml's stop_grace_period), remove.
    docker("stop", "-t", "10", old.name, timeout=60)
    assert old.wait_exit() == 0, old.logs()[-3000:]
    return before, queued


@pytest.fixture(scope="module")
def upgrade(previous_image: str, image: str, test_network: DockerNetwork,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upgrade]:
    mail_ip, sink_ip = test_network.allocate(), test_network.allocate()
    base = tmp_path_factory.mktemp("upgrade")
    data = base / "data"
    data.mkdir()
    dns = start_zone_server(test_network, base / "zones", {"example.net": ""})
    pebble = start_pebble(test_network, base / "pebble", validity=90 * 86400)
    sink = start_sink_host(test_network, sink_ip, image)
    # What a user publishes first, the names that point at the server (the certificate covers
    # them all from its first order); the rest once the server prints it.
    publish(dns, mail_ip, sink_ip, f"mail 300 IN A {mail_ip}\nmta-sts 300 IN A {mail_ip}\n"
            "autoconfig 300 IN CNAME mail\nautodiscover 300 IN CNAME mail\n")
    for name in CERTIFIED:
        pebble.set_a(name, mail_ip)  # what the CA resolves
    # DNS as the world sees it is BIND's (DNS_RESOLVERS, and the container's Unbound forwards
    # to it); the outbound check would ask the internet.
    env = acme_env(pebble, mail_ip, DNS_RESOLVERS=dns.ip, DKIM_ALGORITHMS="rsa,ed25519",
                   OUTBOUND_CHECK="off", PUBLIC_ADDRESS_DISCOVERY="off")
    suffix = secrets.token_hex(3)

    def server(version: str, image_name: str) -> Container:
        return Container(f"mailboot-upgrade-{version}-{suffix}", data, env, image_name,
                         volumes={str(pebble.directory): "/acme"}, network=test_network.name,
                         ip=mail_ip, dns=dns.ip)

    old, new = server("old", previous_image), server("new", image)
    context = pebble_context(pebble, base)
    try:
        before, queued = run_the_old_server(old, dns, pebble, context, sink_ip)
        new.start()
        new.wait_ready()
        yield Upgrade(test_network, dns, pebble, sink, old, new, before, queued, context)
    finally:
        for container in (new, old):
            container.remove()
        docker("rm", "-f", sink, check=False)
        pebble.remove()
        dns.remove()
        shutil.rmtree(data, ignore_errors=True)


# What the upgrade changes on purpose: DMARC asks for aggregate reports and TLS-RPT sends its
# reports to an address the server reads (issue 29); the old records stay OK meanwhile.
CHANGED_VALUES = {
    "v=DMARC1; p=reject; adkim=s; aspf=s":
        "v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc-reports@example.com",
    "v=TLSRPTv1; rua=mailto:postmaster@example.com":
        "v=TLSRPTv1; rua=mailto:tls-reports@example.com",
}


def test_the_dns_records_and_the_dkim_rotation_are_unchanged(upgrade: Upgrade) -> None:
    expected = [{**record, "value": CHANGED_VALUES.get(str(record.get("value")),
                                                        record.get("value"))}
                for record in upgrade.before.records]
    assert listed_json(upgrade.new, "dns") == expected
    assert listed_json(upgrade.new, "dkim", "list") == upgrade.before.dkim_keys


def test_both_accounts_log_in_with_their_passwords(upgrade: Upgrade) -> None:
    for user, password in PASSWORDS.items():
        with imaplib.IMAP4_SSL("127.0.0.1", upgrade.new.ports[993],
                               ssl_context=insecure_context(), timeout=30) as imap:
            assert imap.login(user, password)[0] == "OK"


def test_every_message_is_there_with_its_uid(upgrade: Upgrade) -> None:
    before = upgrade.before.mailboxes
    assert sum(len(f.messages) for folders in before.values() for f in folders.values()) == 3
    assert mailboxes(upgrade.new) == before


def test_no_certificate_is_ordered_and_the_same_one_is_served(upgrade: Upgrade) -> None:
    # The keeper's decision about the certificate it found on /data: had it ordered one,
    # Pebble would have counted the order by now.
    upgrade.new.wait_for_log(KEEPER_DECIDED, timeout=60)
    assert upgrade.pebble.new_order_count() == upgrade.before.orders
    served = wait_for_pebble_certificate(upgrade.new, upgrade.context, timeout=10)
    assert served == upgrade.before.certificate


def test_the_queued_message_leaves_once_its_destination_is_back(upgrade: Upgrade) -> None:
    new, before = upgrade.new, upgrade.before
    assert queue(new) == before.queue  # the same message (queue id) waits, still undelivered
    start_sink_smtp(upgrade.sink)
    new.exec("postqueue", "-f")  # what an admin runs; Postfix would retry within minutes anyway
    queued = sunk(upgrade.sink, upgrade.queued)
    eventually(lambda: not queue(new), 30, lambda: f"an empty queue: {queue(new)}")
    # New mail is signed by the key that signed before the upgrade, and both verify against
    # the records in DNS; the rotation's next keys still wait for theirs.
    fresh = sunk(upgrade.sink, submit(new, BOB, CAROL))
    signing = {str(k["selector"]) for k in before.dkim_keys if k["role"] == "signing"}
    assert signatures(upgrade.dns, queued) == dict.fromkeys(signing, True)
    assert signatures(upgrade.dns, fresh) == dict.fromkeys(signing, True)


def test_the_log_of_the_new_server_says_nothing_is_wrong(upgrade: Upgrade) -> None:
    """Every line of the new server's log so far (its start, and all the tests above made it
    do) that its writer marked warning or worse, or that reports a process ending or failing,
    less what this test's world makes expected (EXPECTED, each with its reason)."""
    lines = upgrade.new.logs().splitlines()
    assert any(line.startswith("mailboot: boot: handing over to the supervisor") for line in lines)
    wrong = [line for line in lines if WRONG.search(line)
             and not any(expected.search(line) for expected in EXPECTED)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("line", "wrong"), [
    ("Dec 05 08:23:41 mail postfix/submission/smtpd[213]: fatal: no SASL service", True),
    ("Dec 05 08:23:41 mail postfix/smtp[213]: 26B1D20C25A: to=<carol@example.net>, relay=mx."
     "example.net[172.30.80.12]:25, dsn=2.0.0, status=sent (250 2.0.0 Ok)", False),
    ("postdrop: warning: mail_queue_enter: create file maildrop/1234: Permission denied", True),
    ("master: Warning: SIGHUP received - reloading configuration", True),
    ("imap(alice@example.com)<180><8YSvtd5h/uSsHlAB>: Error: Mailbox INBOX: Broken file", True),
    ("imap(alice@example.com)<180><8YSvtd5h/uSsHlAB>: Info: Disconnected: Logged out", False),
    ("Dec 05 08:23:37 unbound[18:0] error: could not open autotrust file", True),
    ("Dec 05 08:23:37 unbound[18:0] info: start of service (unbound 1.26.2).", False),
    ("mailboot: supervisor: started opendkim-ed25519 (pid 20)", False),
    ("mailboot: supervisor: postfix exited with code 1; stopping the container", True),
    ("mailboot: error: boot: announce failed", True),
    ("mailboot: warning: tls: keeping the current certificate: the CA is down", True),
    ("mailboot: dns: READY - every required DNS record is in place", False),
    ("Traceback (most recent call last):", True),
    # Expected in this test's world only:
    ("mailboot: warning: PUBLIC_IPV4: 172.30.80.11 is not a public address, so ...", False),
    ("Dec 05 08:23:41 mail postfix/smtp[213]: warning: DNSSEC validation may be unavailable",
     False),
])
def test_the_log_is_read_by_each_writer_s_levels(line: str, wrong: bool) -> None:
    """The reading of the log above, on lines each writer writes (no container needed)."""
    found = bool(WRONG.search(line)) and not any(e.search(line) for e in EXPECTED)
    assert found == wrong
