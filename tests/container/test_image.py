"""The slim image: nothing a server never reads, and nothing the daemons or our Python need lost.

dpkg leaves out documentation, manuals, info pages and translations (the rule the Dockerfile
writes before the install). In one booted container, on the configuration mailboot rendered:
every daemon passes its own configuration check, Postfix can still set its permissions (it walks
a list of its own files, manual pages included until the Dockerfile drops them), Sieve scripts
compile, passwords hash, our Python imports come from compiled bytecode (a start without it
takes about a second longer), and the image adds no such files to its base. Its labels say which
version and which commit it holds.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator

import pytest

import mailboot
from tests.container.containers import ROOT, Container, running
from tests.container.dockercli import docker, git_commit

# The tests share the module's containers: pytest-xdist runs them in one process, in order.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

ENV = {"MAIL_DOMAINS": "example.com", "TLS_MODE": "self-signed", "DNS_CHECK": "off",
       "PUBLIC_ADDRESS_DISCOVERY": "off"}

# Each daemon's own check of the files mailboot rendered, as an administrator would run it.
CHECKS = {
    "postfix": ["postfix", "check"],
    "postfix permissions": ["postfix", "set-permissions"],
    "dovecot": ["doveconf", "-n"],
    "opendkim": ["opendkim", "-n", "-x", "/etc/opendkim.conf"],
    "opendmarc": ["opendmarc", "-n", "-c", "/etc/opendmarc/opendmarc.conf"],
    "unbound": ["unbound-checkconf"],
    "dovecot passwords": ["doveadm", "pw", "-s", "BLF-CRYPT", "-p", "a password"],
    "bogofilter": ["bogofilter", "-V"],
}
SIEVE = ('require ["fileinto", "vacation"];\n'
         'if header :contains "subject" "x" { fileinto "Junk"; }\n')
# What mailboot and its worker import: DKIM, SPF, DNS, ACME, keys and templates.
MODULES = ("dkim", "spf", "dns.resolver", "acme.client", "josepy", "cryptography.x509",
           "jinja2", "mailboot.cli.main")
LEFT_OUT = ("/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/locale")
KEPT = ("copyright", "locale.alias")


@pytest.fixture(scope="module")
def mail(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    data = tmp_path_factory.mktemp("image")
    with running(image, data, dict(ENV), "mailboot-image") as container:
        yield container
    shutil.rmtree(data, ignore_errors=True)


@pytest.mark.parametrize("name", CHECKS)
def test_each_daemon_passes_its_own_check(mail: Container, name: str) -> None:
    result = mail.exec(*CHECKS[name], check=False)
    assert result.returncode == 0, f"{name}: {result.stderr}{result.stdout}"
    assert "warning" not in result.stderr.lower(), f"{name}: {result.stderr}"


def test_sieve_scripts_compile(mail: Container) -> None:
    result = mail.exec("sh", "-c", "cat > /tmp/check.sieve && sievec /tmp/check.sieve",
                       stdin=SIEVE, check=False)
    assert result.returncode == 0, result.stderr
    mail.exec("test", "-s", "/tmp/check.svbin")


def test_our_python_imports_from_compiled_bytecode(mail: Container) -> None:
    program = (
        "import importlib, importlib.util, os\n"
        f"for name in {MODULES!r}:\n"
        "    source = importlib.import_module(name).__file__\n"
        "    print(name, os.path.exists(importlib.util.cache_from_source(source)))\n"
    )
    result = mail.exec("python3", "-P", "-c", program, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [word for name in MODULES for word in (name, "True")]


def test_the_image_adds_no_documentation_manuals_or_translations(image: str) -> None:
    """Files, compared with the base (one built without Debian's slim rules has its own). dpkg
    still makes the symbolic links packages ship there: they weigh nothing."""
    (base,) = re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    added = sorted(set(_documentation(image)) - set(_documentation(base)))
    assert not added, f"{len(added)} files, e.g. {added[:10]}"


def _documentation(image: str) -> list[str]:
    names = " -o ".join(f"-name {name}" for name in KEPT)
    script = (f"find {' '.join(LEFT_OUT)} -type f ! \\( {names} \\) "
              "2>/dev/null; true")
    result = docker("run", "--rm", "--entrypoint", "sh", image, "-c", script)
    return result.stdout.splitlines()


def test_the_labels_say_which_mailboot_and_which_commit(image: str) -> None:
    """OCI annotations (image-spec annotations.md), as registries and `docker image inspect` show
    them: the version the code inside says, the commit the image fixture built."""
    labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}",
                               image).stdout)
    said = docker("run", "--rm", image, "--version").stdout
    assert said == f"mailboot {mailboot.__version__}\n"
    assert labels["org.opencontainers.image.version"] == mailboot.__version__
    assert labels["org.opencontainers.image.revision"] == (git_commit(ROOT) or "unknown")
    assert labels["org.opencontainers.image.title"] == "mailboot"
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.description"].startswith("One container")
