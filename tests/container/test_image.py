"""The slim image: nothing a server never reads, and nothing the daemons or our Python need lost.

dpkg leaves out documentation, manuals, info pages and translations (the rule the Dockerfile
writes before the install). In one booted container, on the configuration mailboot rendered:
every daemon passes its own configuration check, Postfix can still set its permissions (it walks
a list of its own files, manual pages included until the Dockerfile drops them), Sieve scripts
compile, passwords hash, our Python imports come from compiled bytecode (a start without it
takes about a second longer), and the image adds no such files to its base. Its labels say which
version and which commit it holds.

What the Dockerfile leaves out because nothing loads it (ICU's data but for the few items kept,
Lua, Python's tests and tools, pytz, chardet, bcrypt) stays out, and nothing misses it: every
module of mailboot imports, every command answers, and the Unicode paths that reach ICU work:
Postfix's IDNA conversion and case folding, Dovecot's case mapping, a message with a Unicode
subject delivered, searched for with other letter cases and filtered by Sieve's
i;unicode-casemap comparator.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from collections.abc import Iterator

import pytest

import mailboot
from tests.container.containers import ROOT, Container, running
from tests.container.dockercli import docker, git_commit
from tests.polling import eventually

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
# Left out by the Dockerfile because nothing here loads them (its comments say why, one by one).
PYTHON = "/usr/lib/python3.13"
PACKAGES = "/usr/lib/python3/dist-packages"
UNUSED = (f"{PYTHON}/test", f"{PYTHON}/pydoc_data", f"{PYTHON}/unittest", f"{PYTHON}/venv",
          f"{PYTHON}/wsgiref", f"{PYTHON}/curses", f"{PYTHON}/dbm", f"{PYTHON}/doctest.py",
          f"{PYTHON}/turtle.py", f"{PYTHON}/_pydecimal.py", f"{PYTHON}/_pyio.py",
          f"{PYTHON}/_pydatetime.py", "/usr/bin/tini-static", f"{PACKAGES}/pytz",
          f"{PACKAGES}/chardet", f"{PACKAGES}/bcrypt",
          f"{PACKAGES}/acme/_internal/tests", "/usr/share/libexttextcat",
          "/usr/lib/dovecot/libdovecot-lua.so.0",
          "/usr/lib/dovecot/modules/lib01_mail_lua_plugin.so")
UNUSED_PATTERNS = (f"{PYTHON}/lib-dynload/_test*.so", f"{PYTHON}/lib-dynload/_curses*.so",
                   "/usr/lib/*/liblua5.4.so*", "/usr/lib/*/libicuio.so*",
                   "/usr/lib/*/libicutu.so*", "/usr/lib/*/libicutest.so*")
# ICU's data keeps 17 of its 4,136 items (0.5 MB instead of 31.8 MB): a full copy would be back.
ICU_DATA_LIMIT = 1_000_000
# Every other command mailboot, its daemons' helpers or an administrator runs in the container.
COMMANDS = {
    "postconf": ["postconf", "-h", "mail_version"],
    "opendkim": ["opendkim", "-V"],
    "opendmarc": ["opendmarc", "-V"],
    "unbound": ["unbound", "-V"],
    "unbound-control": ["unbound-control", "-c", "/etc/unbound/unbound.conf", "status"],
    "dovecot": ["dovecot", "--version"],
    "doveadm": ["doveadm", "who"],
    "openssl": ["openssl", "version"],
    "tini": ["tini", "--version"],
    "bogofilter": ["bogofilter-sqlite", "-V"],
    "sqlite3 from Python": ["python3", "-P", "-c", "import sqlite3; sqlite3.connect(':memory:')"],
    "decimal, datetime and io in C": ["python3", "-P", "-c", "import decimal, datetime, io"],
    "requests": ["python3", "-P", "-W", "error", "-c", "import requests"],
}
# Postfix's calls into ICU (midna_domain.c, casefold.c) and Dovecot's (ucasemap_utf8ToLower),
# made the same way through ctypes: each reads ICU's data (uts46.nrm) or its built-in tables.
ICU_CALLS = textwrap.dedent("""\
    import ctypes, ctypes.util
    icu = ctypes.CDLL("libicuuc.so.76")
    error = ctypes.c_int(0)
    def check():
        assert error.value <= 0, icu.u_errorName_76(error.value)
    icu.u_errorName_76.restype = ctypes.c_char_p
    icu.uidna_openUTS46_76.restype = ctypes.c_void_p
    icu.ucasemap_open_76.restype = ctypes.c_void_p
    idna = ctypes.c_void_p(icu.uidna_openUTS46_76(0x30, ctypes.byref(error))); check()
    for name, call in (("Bücher.Example", icu.uidna_nameToASCII_UTF8_76),
                       ("xn--bcher-kva.example", icu.uidna_nameToUnicodeUTF8_76)):
        info = (ctypes.c_int * 4)(16, 0, 0, 0)
        out = ctypes.create_string_buffer(256)
        data = name.encode()
        n = call(idna, data, len(data), out, 256, info, ctypes.byref(error)); check()
        print(out.raw[:n].decode(), info[1])
    casemap = ctypes.c_void_p(icu.ucasemap_open_76(b"", 0, ctypes.byref(error))); check()
    for call in (icu.ucasemap_utf8FoldCase_76, icu.ucasemap_utf8ToLower_76):
        out = ctypes.create_string_buffer(256)
        data = "GRÜSSE ΣΊΣΥΦΟΣ".encode()
        n = call(casemap, out, 256, data, len(data), ctypes.byref(error)); check()
        print(out.raw[:n].decode())
""")
# A message with a Unicode subject and body, as another server sends it (8BITMIME).
MESSAGE = ("From: José <jose@example.net>\r\nTo: anna@example.com\r\n"
           "Subject: Grüße aus Köln\r\nMessage-ID: <unicode@example.net>\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
           "\r\nΣΊΣΥΦΟΣ wälzt den Stein.\r\n")
# Then a recipient at a Unicode domain (RFC 6531): Postfix converts it to its A-label with ICU
# (UTS #46) before it looks it up, and refuses it as a domain it doesn't serve.
SEND = textwrap.dedent("""\
    import smtplib, sys
    with smtplib.SMTP("127.0.0.1", 25) as smtp:
        smtp.sendmail("jose@example.net", ["anna@example.com"], sys.stdin.buffer.read(),
                      mail_options=["BODY=8BITMIME"])
        smtp.mail("jose@example.net", ["SMTPUTF8"])
        print(*smtp.rcpt("anna@bücher.example"))
""")
UNICODE_SIEVE = ('require ["fileinto"];\n'
                 'if header :comparator "i;unicode-casemap" :contains "subject" "AUS KÖLN"\n'
                 '{ fileinto "Greetings"; }\n')


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
    # The final stage's base (a stage before it builds ICU's trimmed data).
    base = re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)[-1]
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


def test_what_nothing_loads_stays_out(mail: Container) -> None:
    # Files and links: dpkg still makes the directories of the files it leaves out.
    present = mail.exec("sh", "-c", "find " + " ".join(UNUSED + UNUSED_PATTERNS)
                        + " ! -type d 2>/dev/null; true").stdout.split()
    assert not present, f"left out by the Dockerfile, but present: {present}"
    size = mail.exec("sh", "-c", "stat -L -c %s /usr/lib/*/libicudata.so.76").stdout
    assert int(size) < ICU_DATA_LIMIT, f"ICU's data is {size.strip()} bytes: the full copy?"


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_we_run_still_works(mail: Container, name: str) -> None:
    result = mail.exec(*COMMANDS[name], check=False)
    assert result.returncode == 0, f"{name}: {result.stderr}{result.stdout}"


def test_every_module_of_mailboot_imports(mail: Container) -> None:
    """All of them, also those only a rare path loads (a restore, the reports' reader)."""
    program = (
        "import importlib, pkgutil, mailboot\n"
        "names = [m.name for m in pkgutil.walk_packages(mailboot.__path__, 'mailboot.')\n"
        "         if not m.name.endswith('.__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    result = mail.exec("python3", "-P", "-W", "error", "-c", program, check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 50


def test_every_mailboot_command_answers(mail: Container) -> None:
    usage = mail.exec("mailboot", "--help").stdout
    commands = re.findall(r"^    (\w+) ", usage, re.MULTILINE)
    assert "run" in commands and "account" in commands, usage
    for command in commands:
        result = mail.exec("mailboot", command, "--help", check=False)
        assert result.returncode == 0, f"mailboot {command} --help: {result.stderr}"


def test_icu_converts_names_and_maps_case(mail: Container) -> None:
    result = mail.exec("python3", "-P", "-c", ICU_CALLS, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "xn--bcher-kva.example 0", "bücher.example 0", "grüsse σίσυφοσ", "grüsse σίσυφος"]


def test_unicode_mail_is_delivered_found_and_filtered(mail: Container) -> None:
    mail.exec("mailboot", "account", "add", "--password-stdin", "anna@example.com",
              stdin="unicode-test-password\n")
    sent = mail.exec("python3", "-P", "-c", SEND, stdin=MESSAGE).stdout
    assert sent.startswith("554 ") and "Relay access denied" in sent, sent

    def found(*query: str) -> str:
        return mail.exec("doveadm", "search", "-u", "anna@example.com", "mailbox", "INBOX",
                         *query).stdout
    # Not "GRÜSSE": once a search has put the Subject into Dovecot's cache, ß no longer matches
    # SS (Dovecot 2.4.1, with Debian's ICU data as well).
    first = eventually(lambda: found("subject", "KÖLN"), 30,
                       lambda: "the message in anna's INBOX: "
                       + docker("logs", "--tail", "30", mail.name).stderr)
    assert found("subject", "grüße aus") == first
    assert found("body", "σίσυφος") == first
    mail.exec("sh", "-c", "cat > /tmp/unicode.sieve && sievec /tmp/unicode.sieve",
              stdin=UNICODE_SIEVE)
    message = mail.exec("sh", "-c", "cat > /tmp/unicode.eml && sieve-test /tmp/unicode.sieve "
                        "/tmp/unicode.eml", stdin=MESSAGE, check=False)
    assert message.returncode == 0, message.stderr
    assert "store message in folder: Greetings" in message.stdout, message.stdout
    logs = docker("logs", mail.name)
    logs_text = logs.stdout + logs.stderr
    assert not re.search(r"U_[A-Z_]+_ERROR|midna", logs_text), logs_text[-3000:]
