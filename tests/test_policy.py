"""The policy process: its protocols (socketmap_table(5)) and the sockets handed to it."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mailboot.daemons.supervisor import named
from mailboot.policy import socketmap
from mailboot.policy.socketmap import NOT_FOUND, Reply


def netstring(text: str) -> bytes:
    return b"%d:%s," % (len(text.encode()), text.encode())


def test_socketmap_answers_each_lookup_on_one_stream_and_a_crash_is_temp() -> None:
    def lookup(name: str, key: str) -> Reply:
        if key == "crash":
            raise RuntimeError("bug")
        return Reply("OK", key.upper()) if name == "upper" else NOT_FOUND

    asked = netstring("upper a@example.net") + netstring("other x") + netstring("upper crash")
    answers = io.BytesIO()
    assert socketmap.serve(io.BytesIO(asked), answers, lookup) == 3
    assert answers.getvalue() == (netstring("OK A@EXAMPLE.NET") + netstring("NOTFOUND ")
                                  + netstring("TEMP mailboot's lookup failed; see its log"))


@pytest.mark.parametrize("broken", [b"", b"5:abc", b"x:abc,", b"3:abc;", b"99999999:a,",
                                    b"11000:" + b"a" * 11000 + b","])
def test_a_broken_or_oversized_netstring_ends_the_stream(broken: bytes) -> None:
    answers = io.BytesIO()
    assert socketmap.serve(io.BytesIO(broken), answers, lambda n, k: NOT_FOUND) == 0
    assert answers.getvalue() == b""


def test_the_supervisor_reads_named_sockets() -> None:
    assert named("srs=/var/spool/postfix/private/x") == ("srs", "/var/spool/postfix/private/x")
    for bad in ("srs", "=x", "srs="):
        with pytest.raises(ValueError, match="not name=value"):
            named(bad)


def test_the_policy_process_without_sockets_ends_when_idle(tmp_path: Path) -> None:
    """Nothing handed over, nothing to serve: it ends after --idle, with exit 0."""
    result = subprocess.run([sys.executable, "-P", "-m", "mailboot.policy.service", "--idle=0.2",
                             f"--notes={tmp_path}"], capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_every_socket_is_served_by_its_own_protocol(tmp_path: Path) -> None:
    """The policy socket speaks policy delegation; two connections at once are both answered."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "policy"))
    listener.listen(8)
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "mailboot.policy.service", f"--policy-fd={listener.fileno()}",
         "--idle=1", f"--notes={tmp_path}"], pass_fds=[listener.fileno()])
    asked = b"request=smtpd_access_policy\nclient_address=127.0.0.1\nsender=a@example.net\n\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect(str(tmp_path / "policy"))
        client.sendall(asked)
        assert client.recv(100) == b"action=DUNNO\n\n"
    listener.close()
    assert process.wait(timeout=30) == 0
