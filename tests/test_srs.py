"""SRS: the addresses (standards.srs), the secret and the lookups (outbound.srs), and the policy
process's srs socket. The third-party check: vectors recorded from Debian's postsrsd 1.10 (libsrs2's
format), both ways. PyPI's pysrs 1.0.3 can't serve here: it calls base64.encodestring, gone since
Python 3.9."""

from __future__ import annotations

import io
import logging
import re
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailboot import render
from mailboot.backup import restore, take
from mailboot.base.errors import StateError
from mailboot.base.paths import Paths
from mailboot.daemons import postfix
from mailboot.dkim.keys import DomainKeys
from mailboot.mailboxes import accounts
from mailboot.outbound import srs as outbound
from mailboot.policy import service
from mailboot.policy.socketmap import NOT_FOUND, Reply
from mailboot.settings.table import Settings
from mailboot.standards import srs
from mailboot.tls import certificates
from tests.conftest import NOW

# Recorded from `postsrsd -s secret -d example.com` (Debian trixie, 1.10-2.2) asked over its
# tcp_table ports, with "mailboot-test-secret" as the secret file's line, at this time.
POSTSRSD_SECRET = b"mailboot-test-secret"
POSTSRSD_NOW = 1796468936.0  # 2026-12-05: day stamp JY
POSTSRSD_FORWARD = {
    "alice@foreign.net": "SRS0=ytph=JY=foreign.net=alice@example.com",
    "Bob.Smith@Goodsender.NET": "SRS0=+yqs=JY=Goodsender.NET=Bob.Smith@example.com",
    "user+tag@x.example.org": "SRS0=EvuE=JY=x.example.org=user+tag@example.com",
    "SRS0=abcd=T5=other.org=carol@forwarder.net":
        "SRS1=gW1U=forwarder.net==abcd=T5=other.org=carol@example.com",
    "SRS1=XyZw=first.org==abcd=T5=orig.net=u@second.net":
        "SRS1=IG/U=first.org==abcd=T5=orig.net=u@example.com",
}
DAY = 86400.0
OURS = ("example.com", "example.org")


# --- the addresses -------------------------------------------------------------------------------

@pytest.mark.parametrize(("sender", "expected"), POSTSRSD_FORWARD.items())
def test_forward_makes_what_postsrsd_makes(sender: str, expected: str) -> None:
    assert srs.forward(sender, "example.com", POSTSRSD_SECRET, POSTSRSD_NOW) == expected


@pytest.mark.parametrize(("address", "original"), [
    ("SRS0=ytph=JY=foreign.net=alice@example.com", "alice@foreign.net"),
    # Case folded on the way (Postfix, another MTA): still ours, as postsrsd also answers.
    ("srs0=YTPH=jy=foreign.net=alice@example.com", "alice@foreign.net"),
    ("SRS1=gW1U=forwarder.net==abcd=T5=other.org=carol@example.com",
     "SRS0=abcd=T5=other.org=carol@forwarder.net"),
])
def test_reverse_takes_postsrsds_addresses_back(address: str, original: str) -> None:
    assert srs.reverse(address, POSTSRSD_SECRET, POSTSRSD_NOW) == original


@pytest.mark.parametrize(("address", "reason"), [
    ("SRS0=ytpx=JY=foreign.net=alice@example.com", "hash does not hold"),  # postsrsd: invalid
    ("SRS0=ytph=AA=foreign.net=alice@example.com", "hash does not hold"),  # stamp is hashed
    ("SRS0=ytph=JY=foreign.net@example.com", "not a well-formed SRS0"),
    ("SRS1=gW1U=forwarder.net@example.com", "not a well-formed SRS1"),
    ("alice@example.com", "not an SRS address"),
    ("SRS0@example.com", "not an SRS address"),
    ("SRS0=ytph=JY=foreign.net=alice", "not an address"),
])
def test_reverse_refuses_what_is_not_ours_or_not_srs(address: str, reason: str) -> None:
    with pytest.raises(srs.InvalidAddress, match=reason):
        srs.reverse(address, POSTSRSD_SECRET, POSTSRSD_NOW)


def test_an_address_lives_21_days() -> None:
    made = srs.forward("alice@foreign.net", "example.com", b"k", POSTSRSD_NOW)
    assert srs.reverse(made, b"k", POSTSRSD_NOW + 21 * DAY) == "alice@foreign.net"
    with pytest.raises(srs.InvalidAddress, match="more than 21 days ago"):
        srs.reverse(made, b"k", POSTSRSD_NOW + 22 * DAY)
    with pytest.raises(srs.InvalidAddress, match="more than 21 days ago"):  # from the future
        srs.reverse(made, b"k", POSTSRSD_NOW - DAY)


def test_the_day_stamp_wraps_after_1024_days() -> None:
    assert srs.timestamp(0) == "AA"
    assert srs.timestamp(1023 * DAY) == "77"
    assert srs.timestamp(1024 * DAY) == "AA"
    assert srs.timestamp_valid("77", 1024 * DAY + 5 * DAY)  # 6 days old across the wrap
    assert not srs.timestamp_valid("1A", POSTSRSD_NOW)  # "1" is not base32


def test_another_secret_does_not_reverse() -> None:
    made = srs.forward("alice@foreign.net", "example.com", b"ours", POSTSRSD_NOW)
    with pytest.raises(srs.InvalidAddress, match="hash does not hold"):
        srs.reverse(made, b"theirs", POSTSRSD_NOW)


def test_a_second_forwarder_chain_comes_back_hop_by_hop() -> None:
    """We make SRS0; another forwarder makes SRS1 of it; a third re-forwards that SRS1. Each
    bounce goes back one step to the forwarder whose hash it can check."""
    first = srs.forward("alice@foreign.net", "first.example", b"one", POSTSRSD_NOW)
    second = srs.forward(first, "second.example", b"two", POSTSRSD_NOW)
    third = srs.forward(second, "third.example", b"three", POSTSRSD_NOW)
    first_local = first.split("@")[0]  # SRS0=HHHH=TT=foreign.net=alice
    assert re.fullmatch(rf"SRS1=[^=]{{4}}=first\.example={re.escape(first_local[4:])}"
                        r"@third\.example", third), third
    assert srs.reverse(third, b"three", POSTSRSD_NOW) == first
    assert srs.reverse(second, b"two", POSTSRSD_NOW) == first
    assert srs.reverse(first, b"one", POSTSRSD_NOW) == "alice@foreign.net"


def test_is_srs_takes_libsrs2s_separators() -> None:
    assert all(srs.is_srs(f"{tag}{sep}x") for tag in ("SRS0", "srs1") for sep in "=+-")
    assert not srs.is_srs("SRS0") and not srs.is_srs("SRS2=x") and not srs.is_srs("srs0_x")


# --- the secret and the lookups ------------------------------------------------------------------

def test_the_secret_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = outbound.load_secret(tmp_path)
    path = tmp_path / outbound.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 40 and outbound.load_secret(tmp_path) == first
    path.write_bytes(b"mailboot-test-secret\n")  # one restored from a backup, or postsrsd's
    assert outbound.load_secret(tmp_path) == POSTSRSD_SECRET


def test_processes_making_the_secret_together_share_one(tmp_path: Path) -> None:
    found: list[bytes] = []
    threads = [threading.Thread(target=lambda: found.append(outbound.load_secret(tmp_path)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and len(found) == 8


def test_an_unusable_secret_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / outbound.SECRET_FILE).write_bytes(b"\n")
    with pytest.raises(StateError, match="is empty; remove the file and restart"):
        outbound.load_secret(tmp_path)
    with pytest.raises(StateError, match="can't read or make the SRS secret"):
        outbound.load_secret(tmp_path / "missing-directory")


def rewriting() -> outbound.Rewriting:
    return outbound.Rewriting(POSTSRSD_SECRET, "example.com", frozenset(OURS))


@pytest.mark.parametrize("sender", ["", "<>", "alice@example.com", "ALICE@Example.ORG",
                                    "SRS0=ytph=JY=foreign.net=alice@example.com", "no-domain@",
                                    "@foreign.net"])
def test_forward_keeps_our_own_and_the_empty_sender(sender: str) -> None:
    assert outbound.forward(rewriting(), sender, POSTSRSD_NOW) is None


def test_forward_rewrites_a_foreign_sender_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mailboot"):
        made = outbound.forward(rewriting(), "alice@foreign.net", POSTSRSD_NOW)
    assert made == POSTSRSD_FORWARD["alice@foreign.net"]
    assert caplog.messages == ["srs: a copy of mail from alice@foreign.net for another server "
                               f"has the return address {made}"]


def test_reverse_only_under_our_domains(caplog: pytest.LogCaptureFixture) -> None:
    ours = "SRS0=ytph=JY=foreign.net=alice@example.com"
    assert outbound.reverse(rewriting(), ours, POSTSRSD_NOW) == "alice@foreign.net"
    # The hash does not name the domain: under our other domain it holds too (MAIL_DOMAINS
    # reordered within 21 days), under anyone else's it is not ours to take.
    assert outbound.reverse(rewriting(), ours.replace(".com", ".org"),
                            POSTSRSD_NOW) == "alice@foreign.net"
    assert outbound.reverse(rewriting(), ours.replace("example.com", "elsewhere.net"),
                            POSTSRSD_NOW) is None
    assert outbound.reverse(rewriting(), "alice@example.com", POSTSRSD_NOW) is None
    assert not caplog.messages
    with caplog.at_level(logging.INFO, logger="mailboot"):
        assert outbound.reverse(rewriting(), ours, POSTSRSD_NOW + 30 * DAY) is None
    assert caplog.messages == [f"srs: refused a bounce address: {ours!r}: made more than 21 "
                               "days ago, or not by a clock like ours"]


# --- the policy process's srs socket -------------------------------------------------------------

def test_the_srs_lookup_answers_both_maps_and_makes_the_secret(tmp_path: Path) -> None:
    lookup = service.srs_lookup(tmp_path, "example.com", OURS, clock=lambda: POSTSRSD_NOW)
    made = lookup("forward", "alice@foreign.net")
    assert made.status == "OK" and made.text.startswith("SRS0=")
    assert (tmp_path / outbound.SECRET_FILE).exists()
    assert lookup("reverse", made.text) == Reply("OK", "alice@foreign.net")
    assert lookup("forward", "alice@example.com") == NOT_FOUND
    assert lookup("reverse", "alice@example.com") == NOT_FOUND
    assert lookup("other", "x").status == "PERM"


def test_without_its_secret_the_srs_lookup_keeps_mail_queued(tmp_path: Path) -> None:
    lookup = service.srs_lookup(tmp_path / "missing", "example.com", OURS)
    assert lookup("forward", "alice@foreign.net").status == "TEMP"


def ask(client: socket.socket, request: bytes) -> bytes:
    """One socketmap lookup (netstrings both ways): the answer's payload."""
    client.sendall(b"%d:%s," % (len(request), request))
    length, _, rest = client.recv(300).partition(b":")
    assert rest.endswith(b",") and len(rest) == int(length) + 1, rest
    return rest[:-1]


def test_the_policy_process_serves_the_srs_socket(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "srs"))
    listener.listen(8)
    (tmp_path / outbound.SECRET_FILE).write_bytes(b"mailboot-test-secret\n")
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "mailboot.policy.service", f"--srs-fd={listener.fileno()}",
         "--srs-domain=example.com", "--mail-domain=example.com", f"--state={tmp_path}",
         "--idle=1", f"--notes={tmp_path}"], pass_fds=[listener.fileno()])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect(str(tmp_path / "srs"))
        made = ask(client, b"forward alice@foreign.net")
        assert made.startswith(b"OK SRS0=")
        answer = ask(client, b"reverse " + made.removeprefix(b"OK "))  # on the same connection
        assert answer == b"OK alice@foreign.net"
    assert (tmp_path / outbound.SECRET_FILE).read_bytes() == b"mailboot-test-secret\n"
    listener.close()
    assert process.wait(timeout=30) == 0


# --- Postfix's configuration ---------------------------------------------------------------------

def rendered_postfix(settings: Settings, keys: tuple[DomainKeys, ...],
                     tmp_path: Path) -> dict[str, str]:
    """Postfix's rendered files for `settings`, by template name."""
    paths = Paths(settings.data_dir, config_root=tmp_path / "root")
    certificate = certificates.ensure_certificate(paths, ["mail.example.com"], NOW)
    values = render.context(settings, paths, keys, certificate,
                            accounts.postfix_maps(settings.domains, [], []))
    return {f.template: f.content.decode() for f in render.render_all(values, paths)
            if f.template.startswith("postfix/")}


def master_service(master: str, name: str) -> str:
    """One master.cf service: its line and its -o lines."""
    block = master.split(f"\n{name} ", 1)[1]
    lines = [f"{name} " + block.split("\n", 1)[0]]
    for line in block.split("\n")[1:]:
        if not line.startswith("  -o "):
            break
        lines.append(line.strip())
    return "\n".join(lines)


def test_only_senders_outside_our_domains_are_routed_through_srs(
    make_settings: Callable[..., Settings], make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
    tmp_path: Path,
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com,example.org")
    files = rendered_postfix(settings, make_keys(settings), tmp_path)
    senders = [line for line in files["postfix/srs_senders"].splitlines()
               if line and not line.startswith("#")]
    assert senders == [r"!/@(example\.com|example\.org)$/ srs-forward:[127.0.0.1]:10026"]
    # The same alternation in Python's re (Postfix's regexp is POSIX ERE, case-insensitive):
    ours = re.compile(r"@(example\.com|example\.org)$", re.IGNORECASE)
    assert ours.search("alice@Example.org") and not ours.search("a@example.com.evil.net")
    assert not ours.search("<>") and not ours.search("a@sub.example.com")
    main = files["postfix/main.cf"]
    socket_path = str(Paths(settings.data_dir).postfix_queue / postfix.SRS_SOCKET)
    bounces_table = tmp_path / "root/etc/postfix/srs_bounces"
    assert (f"\nrecipient_canonical_maps = pipemap:{{regexp:{bounces_table},"
            f"\n    socketmap:unix:{socket_path}:reverse}}\n") in main
    assert "\nrecipient_canonical_classes = envelope_recipient\n" in main
    bounces = files["postfix/srs_bounces"].splitlines()[-1]
    assert bounces == "/^(SRS[01][-+=].+)$/ ${1}"


def test_the_reinjection_rewrites_the_envelope_sender_alone(
    make_settings: Callable[..., Settings], make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
    tmp_path: Path,
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com")
    master = rendered_postfix(settings, make_keys(settings), tmp_path)["postfix/master.cf"]
    smtpd = master_service(master, "127.0.0.1:10026")
    for setting in ("cleanup_service_name=srs-cleanup", "content_filter=smtp:",
                    "smtpd_milters=", "smtpd_client_restrictions=permit_mynetworks,reject",
                    "local_header_rewrite_clients="):
        assert f"\n-o {setting}\n" in smtpd + "\n", smtpd
    cleanup = master_service(master, "srs-cleanup")
    for setting in ("sender_canonical_classes=envelope_sender", "virtual_alias_maps=",
                    "canonical_maps=", "recipient_canonical_maps=", "body_checks="):
        assert f"\n-o {setting}\n" in cleanup + "\n", cleanup
    assert ":forward\n" in cleanup + "\n"
    assert "\n-o smtp_tls_security_level=none" in master_service(master, "srs-forward")


def test_through_a_relay_a_rewritten_copy_leaves_by_the_relay(
    make_settings: Callable[..., Settings], make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
    tmp_path: Path,
) -> None:
    """A content filter without a next hop would go to the recipient's MX, not RELAY_HOST."""
    settings = make_settings(MAIL_DOMAINS="example.com", RELAY_HOST="smtp.relay.example.net")
    master = rendered_postfix(settings, make_keys(settings), tmp_path)["postfix/master.cf"]
    assert "\n  -o content_filter=smtp:[smtp.relay.example.net]:587\n" in master


def test_the_policy_process_is_told_our_domains_and_where_its_secret_is(
    make_settings: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.org,example.com")
    paths = Paths(settings.data_dir, config_root=tmp_path / "root")
    command = postfix.policy_command(settings, paths)
    srs = ["--srs-domain=example.org", f"--state={paths.policy_state}",
           "--mail-domain=example.org", "--mail-domain=example.com"]
    assert command[command.index(srs[0]):][:4] == srs
    assert postfix.policy_sockets(settings, paths)["srs"] == (
        paths.postfix_queue / "private/mailboot-srs")
    assert service.parser().parse_args(command[4:]).mail_domain == ["example.org", "example.com"]


def test_a_backup_keeps_the_secret_so_a_restore_still_reverses_bounces(tmp_path: Path) -> None:
    data = tmp_path / "data"
    state = Paths(data).policy_state
    state.mkdir(parents=True, mode=0o700)
    secret = outbound.load_secret(state)
    made = srs.forward("alice@foreign.net", "example.com", secret, POSTSRSD_NOW)
    archive = io.BytesIO()
    take.take_backup(data, archive, datetime.fromtimestamp(POSTSRSD_NOW, UTC))
    restored = tmp_path / "restored"
    restore.restore(io.BytesIO(archive.getvalue()), restored, force=False, proc=tmp_path)
    kept = Paths(restored).policy_state / outbound.SECRET_FILE
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert outbound.load_secret(kept.parent) == secret
    assert srs.reverse(made, secret, POSTSRSD_NOW) == "alice@foreign.net"
