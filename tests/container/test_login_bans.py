"""Login bans, end to end: clients at their own addresses on the test network fail to log in,
and the real Dovecot and Postfix refuse them (mailboot.logins.bans).

After LOGIN_BAN_FAILURES failed IMAP logins from one address, its next connection is refused on
465 and 587 (421 before the greeting) and its next login on 993 and 4190 (with the right
password); an allowlisted address never is; the Docker gateway, through which every connection
of the published ports comes, is never banned and the log says why; a ban ends by itself, and
`mailboot ban list|remove` and `mailboot status` show and lift them.
"""

from __future__ import annotations

import imaplib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.container.containers import Container, insecure_context
from tests.container.dockercli import docker
from tests.container.pebble_harness import DockerNetwork
from tests.container.worlds import Server, scene
from tests.polling import eventually

pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

ALICE, PASSWORD = "alice@example.com", "correct horse battery"
FAILURES = 3
BAN_SECONDS = 40

# One login attempt from a client container (our image, for its Python): prints one JSON line,
# {"ok": true} or {"ok": false, "said": <what the server said>}.
CLIENT = r"""
import base64, imaplib, json, smtplib, socket, ssl, sys
kind, host, user, password = sys.argv[1:5]
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
def sieve(raw):
    reader = raw.makefile("rb")
    def answer():
        while True:
            line = reader.readline()
            if not line or line[:2] in (b"OK", b"NO") or line[:3] == b"BYE":
                return line.decode().strip()
    answer()
    raw.sendall(b"STARTTLS\r\n")
    answer()
    tls = context.wrap_socket(raw)
    reader = tls.makefile("rb")
    answer()
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    tls.sendall(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())
    said = answer()
    return said.startswith("OK"), said
try:
    if kind == "imap":
        with imaplib.IMAP4_SSL(host, 993, ssl_context=context, timeout=60) as imap:
            imap.login(user, password)
        ok, said = True, ""
    elif kind == "sieve":
        ok, said = sieve(socket.create_connection((host, 4190), timeout=60))
    else:
        client = (smtplib.SMTP_SSL(host, 465, context=context, timeout=60) if kind == "465"
                  else smtplib.SMTP(host, 587, timeout=60))
        if kind == "587":
            client.starttls(context=context)
        client.login(user, password)
        ok, said = True, ""
except (imaplib.IMAP4.error, smtplib.SMTPException, OSError) as error:
    ok, said = False, str(error)
print(json.dumps({"ok": ok, "said": said}))
"""


@dataclass(frozen=True)
class World:
    mail: Container
    attacker: Server  # fails to log in, is banned, and is lifted with `ban remove`
    expiring: Server  # fails to log in, is banned, and waits for the ban to end
    allowed: Server  # in LOGIN_BAN_ALLOWLIST
    network: DockerNetwork


def attempt(client: Server, mail: Container, kind: str, password: str) -> dict[str, object]:
    printed = client.exec("python3", "-c", CLIENT, kind, str(mail.ip), ALICE, password)
    return dict(json.loads(printed.strip().splitlines()[-1]))


def fail(client: Server, mail: Container, times: int) -> None:
    for _ in range(times):
        assert attempt(client, mail, "imap", "wrong password")["ok"] is False


@pytest.fixture(scope="module")
def world(test_network: DockerNetwork, image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with scene(test_network, image, tmp_path_factory.mktemp("bans")) as made:
        clients = {role: made.server(f"client-{role}", "infinity",
                                     options=("--entrypoint", "sleep"))
                   for role in ("attacker", "expiring", "allowed")}
        env = {"LOGIN_BAN_FAILURES": str(FAILURES), "LOGIN_BAN_DURATION": f"{BAN_SECONDS}s",
               "LOGIN_BAN_ALLOWLIST": f"{clients['allowed'].ip}/32"}
        mail = made.mail("bans", env, accounts={ALICE: PASSWORD})
        yield World(mail, clients["attacker"], clients["expiring"], clients["allowed"],
                    test_network)


def test_the_gateway_standing_for_every_client_is_never_banned(world: World) -> None:
    """Through the published port every client comes from the gateway (Docker's userland
    proxy); before any other address has logged in, it can't be told from everyone."""
    gateway = world.network.prefix + "1"
    for _ in range(FAILURES):
        with imaplib.IMAP4_SSL("127.0.0.1", world.mail.ports[993],
                               ssl_context=insecure_context(), timeout=60) as imap, \
                pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login(ALICE, "wrong password")
    world.mail.wait_for_log(f"bans: {gateway} made {FAILURES} failed logins in 10 min but "
                            "can't be banned: it is this container's gateway")
    with imaplib.IMAP4_SSL("127.0.0.1", world.mail.ports[993], ssl_context=insecure_context(),
                           timeout=60) as imap:
        assert imap.login(ALICE, PASSWORD)[0] == "OK"


def test_a_banned_address_is_refused_on_every_port_even_with_the_right_password(
        world: World) -> None:
    mail, attacker, allowed = world.mail, world.attacker, world.allowed
    assert attempt(attacker, mail, "imap", PASSWORD)["ok"] is True  # not banned yet
    with ThreadPoolExecutor(2) as pool:  # each waits out Dovecot's growing per-address delay
        done = [pool.submit(fail, attacker, mail, FAILURES),
                pool.submit(fail, allowed, mail, FAILURES + 2)]
        for future in done:
            future.result()
    mail.wait_for_log(f"bans: {attacker.ip} banned until ")
    refusal = f"Too many failed logins from {attacker.ip}: refused until "
    for kind in ("imap", "sieve", "465", "587"):
        found = attempt(attacker, mail, kind, PASSWORD)
        assert found["ok"] is False and refusal in str(found["said"]), (kind, found)
        if kind in ("465", "587"):  # refused at the connection, before any greeting
            assert "421" in str(found["said"]), (kind, found)
    assert "NOQUEUE: reject: CONNECT from" in mail.logs()
    # The allowlisted address failed more often and still logs in.
    assert attempt(allowed, mail, "imap", PASSWORD)["ok"] is True
    assert attempt(allowed, mail, "587", PASSWORD)["ok"] is True


def test_a_ban_is_kept_across_a_restart(world: World) -> None:
    docker("restart", world.mail.name, timeout=60)
    world.mail.wait_ready()
    found = attempt(world.attacker, world.mail, "imap", PASSWORD)
    assert found["ok"] is False and "Too many failed logins" in str(found["said"]), found


def test_bans_are_listed_and_lifted(world: World) -> None:
    mail, attacker = world.mail, world.attacker
    listed = json.loads(mail.exec("mailboot", "ban", "list", "--json").stdout)
    assert [ban["address"] for ban in listed] == [attacker.ip]
    assert listed[0]["failures"] == FAILURES and listed[0]["protocols"] == ["imap"]
    status = mail.exec("mailboot", "status", check=False).stdout
    assert f"login bans   {attacker.ip} until " in status
    document = json.loads(mail.exec("mailboot", "status", "--json", check=False).stdout)
    assert [ban["address"] for ban in document["bans"]] == [attacker.ip]
    assert "was lifted" in mail.exec("mailboot", "ban", "remove", attacker.ip).stdout
    assert json.loads(mail.exec("mailboot", "ban", "list", "--json").stdout) == []
    assert attempt(attacker, mail, "465", PASSWORD)["ok"] is True
    assert attempt(attacker, mail, "imap", PASSWORD)["ok"] is True
    # The state stays the policy process's own after the command (run as root) changed it.
    owners = mail.exec("stat", "-c", "%U %n", "/data/policy/bans.json",
                       "/data/policy/bans.lock").stdout
    assert owners.split() == ["mailpolicy", "/data/policy/bans.json",
                              "mailpolicy", "/data/policy/bans.lock"]


def test_a_ban_ends_by_itself(world: World) -> None:
    mail, expiring = world.mail, world.expiring
    fail(expiring, mail, FAILURES)
    mail.wait_for_log(f"bans: {expiring.ip} banned until ")
    assert attempt(expiring, mail, "imap", PASSWORD)["ok"] is False
    eventually(lambda: attempt(expiring, mail, "imap", PASSWORD)["ok"], BAN_SECONDS + 60,
               f"the ban of {expiring.ip} to end", interval=3)
    mail.wait_for_log(f"bans: the ban of {expiring.ip} ended at ")
