"""Behind a web server that already owns ports 80 and 443: Debian's nginx on the host, set up
with the README's example (deploy/nginx), passes the mail names to the container, HTTP by Host
and HTTPS by SNI without terminating TLS, and keeps everything else for the website.

The names resolve (through Pebble's challenge DNS) to the host's address on the test network,
where nginx listens; the container's 80 and 443 are published on other ports of 127.0.0.1, as
the README tells. So Pebble validates the HTTP-01 challenges through nginx, and the MTA-STS
policy is fetched through nginx with the certificate Pebble issued.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import require_tool
from tests.container.acme_setup import (
    mail_with_acme,
    pebble_context,
    san,
    wait_for_pebble_certificate,
)
from tests.container.clients import served_certificate
from tests.container.containers import Container
from tests.container.pebble_harness import DockerNetwork, Pebble
from tests.polling import eventually

pytestmark = pytest.mark.container

MakeContainer = Callable[..., Container]
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
MAIL_NAMES = ["mail.example.com", "mta-sts.example.com", "autoconfig.example.com",
              "autodiscover.example.com"]
WEBSITE = "www.example.com"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"  # Debian's libnginx-mod-stream


def adapted(text: str, replacements: dict[str, str]) -> str:
    """The example with the test's addresses and ports; each one must be in it, so an example
    that changes shape fails here instead of going untested."""
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in the nginx example"
        text = text.replace(old, new)
    return text


def website_certificate(directory: Path) -> tuple[Path, Path]:
    """The website's own self-signed certificate (for www.example.com), as files for nginx."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, WEBSITE)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(WEBSITE)]), critical=False)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "website.pem", directory / "website.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def nginx_config(directory: Path, front: str, mail: Container, website_port: int) -> Path:
    """A whole nginx.conf: the website (port 80 for any other Host, its TLS on 127.0.0.1) and
    the two examples, listening on `front` and passing to the container's published ports."""
    http_part = adapted((EXAMPLES / "mail-http.conf").read_text(),
                        {"listen 80;": f"listen {front}:80;", "listen [::]:80;": "",
                         "127.0.0.1:8080": f"127.0.0.1:{mail.ports[80]}"})
    stream_part = adapted((EXAMPLES / "mail-stream.conf").read_text(),
                          {"listen 443;": f"listen {front}:443;", "listen [::]:443;": "",
                           "127.0.0.1:8443": f"127.0.0.1:{mail.ports[443]}",
                           "127.0.0.1:4443": f"127.0.0.1:{website_port}"})
    (directory / "mail-http.conf").write_text(http_part)
    (directory / "mail-stream.conf").write_text(stream_part)
    cert, key = website_certificate(directory)
    temp = " ".join(f"{kind}_temp_path {directory}/{kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = directory / "nginx.conf"
    config.write_text(f"""
load_module {STREAM_MODULE};
daemon off;
user root;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    {temp}
    server {{
        listen {front}:80 default_server;
        return 200 "the website\\n";
    }}
    server {{
        listen 127.0.0.1:{website_port} ssl default_server;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        return 200 "the website over TLS\\n";
    }}
    include {directory}/mail-http.conf;
}}
include {directory}/mail-stream.conf;
""")
    return config


@pytest.fixture
def nginx_in_front(tmp_path: Path) -> Iterator[Callable[[str, Container], Path]]:
    """Start Debian's nginx on the host for a container; yields the starter, stops it after."""
    nginx = require_tool("nginx")
    started: list[subprocess.Popen[bytes]] = []

    def start(front: str, mail: Container) -> Path:
        directory = tmp_path / "nginx"
        directory.mkdir()
        config = nginx_config(directory, front, mail, free_port())
        subprocess.run([nginx, "-t", "-c", str(config), "-p", str(directory)], check=True,
                       capture_output=True, timeout=30)
        started.append(subprocess.Popen([nginx, "-c", str(config), "-p", str(directory)],
                                        stderr=subprocess.PIPE))
        def listening() -> bool:
            assert started[0].poll() is None, (directory / "error.log").read_text()
            return _accepts(front, 80) and _accepts(front, 443)

        eventually(listening, 20, lambda: f"nginx on {front}:80 and :443: "
                   + (directory / "error.log").read_text(), interval=0.2)
        return directory

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=20)
        assert process.stderr is not None
        process.stderr.close()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def https_get(front: str, name: str, path: str,
              context: ssl.SSLContext) -> tuple[int, bytes, bytes]:
    """(status, body, DER certificate) of https://name/path through nginx at `front`."""
    raw = socket.create_connection((front, 443), timeout=10)
    tls = context.wrap_socket(raw, server_hostname=name)
    certificate = tls.getpeercert(binary_form=True) or b""
    connection = http.client.HTTPSConnection(name, 443, context=context, timeout=10)
    connection.sock = tls
    try:
        connection.request("GET", path, headers={"Host": name})
        response = connection.getresponse()
        return response.status, response.read(), certificate
    finally:
        connection.close()


def http_get(front: str, name: str, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(front, 80, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": name})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_behind_nginx_the_certificate_and_the_policy_pass_through_by_host_and_sni(
    make_container: MakeContainer, pebble: Pebble, test_network: DockerNetwork, tmp_path: Path,
    nginx_in_front: Callable[[str, Container], Path],
) -> None:
    front = f"{test_network.prefix}1"  # the host on the test network: where nginx listens
    mail = mail_with_acme(make_container, pebble, test_network.allocate(), PUBLIC_IPV4=front)
    mail.wait_ready()
    logs = nginx_in_front(front, mail)
    for name in MAIL_NAMES:  # the user's A records point at the web server's host
        pebble.set_a(name, front)
    context = pebble_context(pebble, tmp_path)

    certificate = wait_for_pebble_certificate(mail, context, timeout=90)
    assert set(MAIL_NAMES) <= san(certificate)
    challenges = re.findall(r'"GET /\.well-known/acme-challenge/\S+ HTTP/1\.1" 200',
                            (logs / "access.log").read_text())
    assert len(challenges) >= len(MAIL_NAMES), "Pebble's challenges did not pass through nginx"

    status, body, served = https_get(front, "mta-sts.example.com",
                                     "/.well-known/mta-sts.txt", context)
    assert status == 200
    assert body.startswith(b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n")
    # Passed through, not terminated: the very certificate the mail ports serve.
    assert served == served_certificate(mail, 993, context)
    assert https_get(front, "autoconfig.example.com", "/mail/config-v1.1.xml", context)[0] == 200

    # The website keeps every other name, on both ports.
    website = ssl.create_default_context(cafile=str(logs / "website.pem"))
    assert https_get(front, WEBSITE, "/", website)[:2] == (200, b"the website over TLS\n")
    assert http_get(front, WEBSITE, "/") == (200, b"the website\n")
    status, _ = http_get(front, "mail.example.com", "/")  # ours: off to HTTPS
    assert status in (301, 308)
