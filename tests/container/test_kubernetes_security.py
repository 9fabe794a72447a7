"""The Kubernetes manifest's security context, proven on the image.

The container's securityContext is read from the rendered base (deploy/kubernetes) and
translated into the `docker run` flags that mean the same, so this runs what the manifest
allows and nothing more: only the listed capabilities, the runtime's default seccomp profile,
the memory limit, and Linux's default floor for privileged ports (Docker lowers it to 0 in its
containers, as some Kubernetes runtimes do and others don't; at 1024 a missing NET_BIND_SERVICE
shows). Then every daemon runs, mail submitted on 465 is delivered and read over IMAP, a Sieve
vacation reply (Postfix's set-group-ID postdrop) arrives, and the container stops cleanly
within terminationGracePeriodSeconds (signals to daemons of other users need KILL).
A second start with no-new-privileges shows why allowPrivilegeEscalation stays true.
"""

from __future__ import annotations

import contextlib
import imaplib
import secrets
import shutil
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.container.clients import sieve_client
from tests.container.containers import Container, insecure_context, running
from tests.container.dockercli import docker
from tests.kustomize import DEPLOY, Manifest, mail_container, only, render

pytestmark = pytest.mark.container

SENDER, AWAY = "alice@example.com", "bob@example.com"
PASSWORD = "kubernetes test password 4"
VACATION = 'require ["vacation"];\nvacation :days 1 :subject "Away" "I am away.";\n'
# What the test needs beyond the manifest's settings: no DNS, no CA and no internet here.
TEST_SETTINGS = {"TLS_MODE": "self-signed", "DNS_CHECK": "off", "DNSBL": "off",
                 "PUBLIC_ADDRESS_DISCOVERY": "off", "OUTBOUND_CHECK": "off"}
DAEMONS = ("master", "dovecot", "opendkim", "opendmarc", "unbound")
# The kernel's default floor for privileged ports, which not every Kubernetes runtime lowers.
PORT_FLOOR = ("--sysctl", "net.ipv4.ip_unprivileged_port_start=1024")


def docker_flags(pod: Manifest, container: Manifest) -> tuple[str, ...]:
    """`docker run` flags equivalent to the pod's and container's security settings and memory
    limit; a setting this doesn't know fails the test rather than being left out."""
    pod_context, context = pod.get("securityContext", {}), container["securityContext"]
    assert set(pod_context) <= {"seccompProfile"}, pod_context
    # RuntimeDefault is the runtime's own profile: Docker applies its default one unasked.
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    known = {"capabilities", "allowPrivilegeEscalation", "privileged", "readOnlyRootFilesystem"}
    assert set(context) <= known, set(context) - known
    assert context["capabilities"]["drop"] == ["ALL"]
    flags = ["--cap-drop", "ALL"]
    for capability in context["capabilities"]["add"]:
        flags += ["--cap-add", capability]
    if context.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if context.get("privileged"):
        flags.append("--privileged")
    if context.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    flags += ["--memory", _docker_size(container["resources"]["limits"]["memory"])]
    return (*flags, *PORT_FLOOR)


def _docker_size(quantity: str) -> str:
    """A Kubernetes binary quantity (512Mi) as Docker writes it (512m)."""
    assert quantity.endswith(("Mi", "Gi")), quantity
    return quantity[:-2] + quantity[-2].lower()


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    objects = render(DEPLOY / "base")
    pod = only(objects, "StatefulSet")["spec"]["template"]["spec"]
    settings = only(objects, "ConfigMap")["data"]
    return {"pod": pod, "container": mail_container(objects), "settings": settings}


@contextlib.contextmanager
def as_the_manifest_runs(image: str, manifest: dict[str, Any], tmp_path: Path,
                         extra: tuple[str, ...] = ()) -> Iterator[Container]:
    env = {**manifest["settings"], **TEST_SETTINGS}
    flags = docker_flags(manifest["pod"], manifest["container"]) + extra
    data = tmp_path / "data"
    data.mkdir()
    try:
        with running(image, data, env, "k8s-security", {SENDER: PASSWORD, AWAY: PASSWORD},
                     run_options=flags) as mail:
            yield mail
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_the_manifests_security_context_runs_every_daemon_and_delivers_mail(
    image: str, manifest: dict[str, Any], tmp_path: Path
) -> None:
    with as_the_manifest_runs(image, manifest, tmp_path) as mail:
        away_on_vacation(mail)
        subject = send(mail)
        assert wait_for_subject(mail, AWAY, subject), mail.logs()[-3000:]
        assert wait_for_subject(mail, SENDER, "Away"), mail.logs()[-3000:]
        running_programs = set(mail.exec("ps", "-eo", "comm=").stdout.split())
        assert set(DAEMONS) <= running_programs, running_programs
        grace = manifest["pod"]["terminationGracePeriodSeconds"]
        docker("stop", "-t", str(grace), mail.name, timeout=grace + 30)
        logs = mail.logs()
        assert mail.state()["ExitCode"] == 0, logs[-3000:]
        assert "all daemons stopped" in logs
        for refusal in ("Operation not permitted", "Permission denied"):
            assert refusal not in logs, logs[-3000:]


def test_no_new_privileges_would_hold_up_mail_to_a_user_on_vacation(
    image: str, manifest: dict[str, Any], tmp_path: Path
) -> None:
    """Why the manifest sets allowPrivilegeEscalation: true. If this starts failing, postdrop
    no longer needs its set-group-ID bit and the manifest can forbid escalation."""
    nnp = ("--security-opt", "no-new-privileges")
    with as_the_manifest_runs(image, manifest, tmp_path, nnp) as mail:
        away_on_vacation(mail)
        subject = send(mail)
        # postdrop runs without its group, can't write into the queue and keeps retrying
        # (for minutes when watched by hand), while the delivery to AWAY waits for it.
        mail.wait_for_log("postdrop: warning: mail_queue_enter: create file maildrop", 20)
        assert not wait_for_subject(mail, AWAY, subject, timeout=3)


def away_on_vacation(mail: Container) -> None:
    """AWAY's vacation script, uploaded and activated over ManageSieve (STARTTLS, 4190)."""
    with sieve_client(mail.ports[4190], starttls=True) as client:
        assert client.login("", AWAY, PASSWORD) == "OK"
        assert client.putscript("away", VACATION) == "OK"
        assert client.setactive("away") == "OK"


def send(mail: Container) -> str:
    """SENDER writes to AWAY through submission (465, logged in); returns the subject."""
    subject = f"hello {secrets.token_hex(4)}"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, AWAY, subject
    message.set_content("Hello.\n")
    with smtplib.SMTP_SSL("127.0.0.1", mail.ports[465], context=insecure_context(),
                          timeout=30) as smtp:
        smtp.login(SENDER, PASSWORD)
        smtp.send_message(message)
    return subject


def wait_for_subject(mail: Container, user: str, subject: str, timeout: float = 20) -> bool:
    """Whether a message with `subject` reaches `user`'s INBOX within `timeout`, over IMAP."""
    deadline = time.monotonic() + timeout
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports[993], ssl_context=insecure_context(),
                           timeout=30) as client:
        client.login(user, PASSWORD)
        while True:
            client.select("INBOX", readonly=True)
            if client.search(None, "SUBJECT", f'"{subject}"')[1][0].split():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
