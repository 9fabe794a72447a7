"""The Dockerfile passes hadolint; each exception is justified in a comment beside it."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import mailboot
from tests.conftest import require_tool

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def test_hadolint_is_clean() -> None:
    result = subprocess.run([require_tool("hadolint"), str(DOCKERFILE)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_exception_says_why() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"# hadolint ignore=(\S+)", line)
        if match:
            assert match.group(1) in lines[index - 1], f"explain {match.group(1)} at line {index}"


def test_every_exposed_port_has_a_comment() -> None:
    text = DOCKERFILE.read_text()
    (exposed,) = re.findall(r"^EXPOSE (.+)$", text, re.MULTILINE)
    for port in exposed.split():
        assert re.search(rf"^# {port}: \S", text, re.MULTILINE), f"port {port} lacks a comment"


def run_instructions() -> list[str]:
    """Each RUN instruction as one line: continuations joined, comment lines inside dropped."""
    instructions: list[str] = []
    current: list[str] | None = None
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if current is None:
            if not stripped.startswith("RUN "):
                continue
            current = []
        if stripped.startswith("#"):
            continue
        current.append(stripped.removesuffix("\\").strip())
        if not stripped.endswith("\\"):
            instructions.append(" ".join(current))
            current = None
    return instructions


def install_instruction() -> str:
    """The final stage's install (the stage before it builds ICU's trimmed data)."""
    (install,) = [run for run in run_instructions()
                  if "apt-get install" in run and " postfix " in run]
    return install


def test_dpkg_leaves_documentation_out_before_the_install() -> None:
    """The rule is written in the installing RUN, before apt-get: a later layer can't shrink it."""
    install = install_instruction()
    start = install.index("apt-get install")
    for path in ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*"):
        assert -1 < install.find(f"'path-exclude={path}'") < start, path
    assert -1 < install.find("> /etc/dpkg/dpkg.cfg.d/") < start
    assert "'path-include=/usr/share/doc/*/copyright'" in install
    # Without its manual pages, `postfix set-permissions` stops at the first one it misses.
    assert start < install.find("manpage_directory")


def test_the_trimmed_icu_data_is_in_place_before_dpkg_leaves_its_own_out() -> None:
    """A later layer could not shrink the install's: dpkg never unpacks Debian's ICU data (31.8
    MB), and the trimmed copy the icu-data stage built is there before the install."""
    text = DOCKERFILE.read_text()
    install = install_instruction()
    assert -1 < install.find("'path-exclude=/usr/lib/*/libicudata.so.76.1'") < install.index(
        "apt-get install")
    copy = text.index("COPY --from=icu-data /out/ /")
    assert text.rindex("FROM ") < copy < text.index("postfix libsasl2-modules")


def test_the_install_leaves_no_package_cache_in_its_layer() -> None:
    install = install_instruction()
    start = install.index("apt-get install")
    for cleanup in ("apt-get clean", "rm -rf /var/lib/apt/lists/*"):
        assert start < install.find(cleanup), cleanup


def instructions() -> list[tuple[str, str]]:
    """Every instruction as (keyword, arguments): continuations joined, comment lines dropped."""
    found: list[tuple[str, str]] = []
    current: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current.append(stripped.removesuffix("\\").strip())
        if not stripped.endswith("\\"):
            keyword, _, arguments = " ".join(current).partition(" ")
            found.append((keyword.upper(), arguments))
            current = []
    return found


def build_arguments() -> dict[str, str]:
    """ARG name -> its default."""
    return dict(arguments.split("=", 1) for keyword, arguments in instructions()
                if keyword == "ARG")


def labels() -> dict[str, str]:
    return dict(pair.split("=", 1) for keyword, arguments in instructions()
                if keyword == "LABEL" for pair in shlex.split(arguments))


def test_the_version_label_defaults_to_the_package_version() -> None:
    """The image says which mailboot it holds without a build argument; a release bumps
    mailboot.__version__, and this keeps the Dockerfile's copy of it in step."""
    assert build_arguments()["VERSION"] == mailboot.__version__
    assert labels()["org.opencontainers.image.version"] == "${VERSION}"


def test_the_labels_say_what_the_package_says() -> None:
    project = tomllib.loads((DOCKERFILE.parent / "pyproject.toml").read_text())["project"]
    assert labels() == {
        "org.opencontainers.image.title": project["name"],
        "org.opencontainers.image.description": project["description"],
        "org.opencontainers.image.version": "${VERSION}",
        "org.opencontainers.image.revision": "${REVISION}",
        "org.opencontainers.image.licenses": project["license"]["text"],
    }
    assert build_arguments()["REVISION"] == "unknown"


def test_the_build_arguments_come_after_every_layer() -> None:
    """A build argument is part of the cache key of every RUN after it: before the install, a
    new REVISION at each commit would download and install every package again."""
    keywords = [keyword for keyword, _ in instructions()]
    first_argument = keywords.index("ARG")
    assert not {"RUN", "COPY", "ADD"} & set(keywords[first_argument:]), keywords
    assert keywords[-1] == "LABEL"
