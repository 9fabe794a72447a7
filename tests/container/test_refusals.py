"""What the container must refuse: relaying, AUTH before TLS, old TLS, wrong passwords."""

from __future__ import annotations

import contextlib
import imaplib
import smtplib
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailboot.tls.certificates import write_self_signed
from tests.conftest import NOW
from tests.container.clients import sieve_starttls, smtp_starttls
from tests.container.containers import Container, insecure_context, running

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

ALICE = "alice@example.com"
PASSWORD = "correct horse battery"
MESSAGE = b"From: x@example.net\r\nSubject: relay test\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def mail(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    with running(image, tmp_path_factory.mktemp("data"), {"MAIL_DOMAINS": "example.com"},
                 "mailboot-refuse", {ALICE: PASSWORD}) as container:
        yield container


def refused(smtp: smtplib.SMTP, sender: str, recipient: str) -> None:
    """The transaction must fail at MAIL or RCPT with a permanent or policy error."""
    with pytest.raises((smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)):
        smtp.sendmail(sender, [recipient], MESSAGE)


@pytest.mark.parametrize("sender", ["stranger@example.net", ALICE])
def test_no_relay_on_25_without_authentication(mail: Container, sender: str) -> None:
    with mail.smtp(25) as smtp:
        smtp.ehlo("mx.example.net")
        smtp.starttls(context=insecure_context())
        refused(smtp, sender, "victim@example.net")


def test_no_relay_on_465_without_authentication(mail: Container) -> None:
    with mail.smtp(465, implicit_tls=True) as smtp:
        refused(smtp, ALICE, "victim@example.net")
        refused(smtp, ALICE, ALICE)  # submission is for authenticated users only


def test_no_relay_on_587_without_authentication(mail: Container) -> None:
    with mail.smtp(587) as smtp:
        smtp.starttls(context=insecure_context())
        refused(smtp, ALICE, "victim@example.net")


def test_587_requires_tls_before_mail(mail: Container) -> None:
    with mail.smtp(587) as smtp:
        smtp.ehlo("client.example.net")
        code, _ = smtp.mail(ALICE)
        assert code == 530


@pytest.mark.parametrize("port", [25, 587])
def test_auth_is_not_offered_before_tls(mail: Container, port: int) -> None:
    with mail.smtp(port) as smtp:
        smtp.ehlo("client.example.net")
        assert "starttls" in smtp.esmtp_features
        assert "auth" not in smtp.esmtp_features
        smtp.starttls(context=insecure_context())
        smtp.ehlo("client.example.net")
        # Port 25 is for other servers: no logins there at all, even with TLS.
        assert ("auth" in smtp.esmtp_features) == (port == 587)


def test_authenticated_user_can_not_send_as_someone_else(mail: Container) -> None:
    with mail.smtp(587) as smtp:
        smtp.starttls(context=insecure_context())
        smtp.login(ALICE, PASSWORD)
        refused(smtp, "ceo@example.com", "victim@example.net")


def test_wrong_password_fails_on_smtp_and_imap(mail: Container) -> None:
    with mail.smtp(465, implicit_tls=True) as smtp, pytest.raises(
        smtplib.SMTPAuthenticationError
    ):
        smtp.login(ALICE, "wrong password")
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context()) as imap, \
            pytest.raises(imaplib.IMAP4.error):
        imap.login(ALICE, "wrong password")


# --- TLS versions --------------------------------------------------------------------------------

VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that speaks exactly one TLS version (old ones need OpenSSL's SECLEVEL=0)."""
    context = insecure_context()
    with warnings.catch_warnings():  # offering TLS 1.0/1.1 is the point of this client
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def handshake(port: int, version: ssl.TLSVersion, starttls: str | None) -> str:
    """Negotiate TLS on a port (STARTTLS first where `starttls` names the protocol)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if starttls == "smtp":
            assert smtp_starttls(raw)
        elif starttls == "sieve":
            assert sieve_starttls(raw)
        with client_context(version).wrap_socket(raw) as tls:
            return str(tls.version())


@pytest.fixture(scope="module")
def old_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A control: a server that does accept TLS 1.0, proving this client can still offer it."""
    directory = write_self_signed(tmp_path_factory.mktemp("tls"), ["control.test"], NOW)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(Path(directory) / "fullchain.pem", Path(directory) / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), connection, \
                    context.wrap_socket(connection, server_side=True):
                pass

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize("name", ["TLSv1", "TLSv1.1"])
def test_control_the_client_can_speak_old_tls(old_tls_server: int, name: str) -> None:
    assert handshake(old_tls_server, VERSIONS[name], None) == name


@pytest.mark.parametrize(("port", "starttls"), [(25, "smtp"), (465, None), (587, "smtp"),
                                                (993, None), (4190, "sieve")])
@pytest.mark.parametrize("name", list(VERSIONS))
def test_only_tls_12_and_13_are_accepted(
    mail: Container, port: int, starttls: str | None, name: str
) -> None:
    version = VERSIONS[name]
    if version >= ssl.TLSVersion.TLSv1_2:
        assert handshake(mail.ports[port], version, starttls) == name
    else:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(mail.ports[port], version, starttls)
