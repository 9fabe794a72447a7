"""Beside mox: mailboot measured side by side with mox, one Go binary that is also a mail server.

mox (github.com/mjl-/mox) v0.0.15 is built from its source, offline, by the yardstick in
`../shared/yardsticks/mox` (its README, `build.sh`: vendored modules, Debian trixie's Go, the
same `debian:trixie-slim` base as ours; never a downloaded binary) and configured by its
`setup-mox.sh`: `mox quickstart` for example.com, a self-signed certificate instead of ACME. Both
run as the yardstick's README runs them: mox with `--dns 127.0.0.1`, mailboot with its defaults
(the full inbound defence on: postscreen, Unbound, OpenDKIM, OpenDMARC) and the README's
environment (example.com, self-signed TLS, no DNS, address or outbound checks), each on a fixed
loopback port published to its port 25. mailboot's first, cold boot is waited out (its SMTP
banner, the boot's last stage in the log, no worker run in progress), so every start measured is
warm; the log says how many were.

The yardstick's `measure.py` then measures, all in one run, the targets taking turns: warm
restarts (`docker stop`, then `docker start` timed to the first line starting with 220 on port
25), then idle memory a fixed time after a warm start with no connection made (the sum of PSS
and RSS over the container's processes from /proc/PID/smaps_rollup, and `docker stats`), and
each image's growth over `debian:trixie-slim`. The banner is polled with a fresh connection
every 20 ms while the older ones stay open: with Docker's userland proxy a poller that waits on
one connection at a time measures TCP's 1 s SYN retry for any server (the yardstick's README).
The container exec → banner figure leaves out Docker's share (`docker start` → the container's
process exec'd, State.StartedAt). PSS splits each shared page among every process on the host
that maps it, so another running container of either image (or of an image sharing its
layers) lowers the figure: none may run (the section looks and says). MB are 10^6 bytes, MiB 2^20.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BASE_IMAGE,
    HANDOVER,
    IMAGE,
    ROOT,
    Figure,
    Report,
    docker,
    median,
    seconds,
)
from benchmarks.footprint import WORKER_RUN
from benchmarks.yardstick import WARM_START
from tests.container.dockercli import build
from tests.polling import eventually

TITLE = "Beside mox"
MOX_IMAGE = "mox-yardstick:latest"  # build.sh's default tag
MOX_TAG = "v0.0.15"  # build.sh's default: the newest whose go.mod Debian trixie's Go 1.24 builds
HELPER_IMAGE = "mailboot-bench-mox-helper:latest"
HELPER_CONTEXT = Path(__file__).resolve().parent / "mox_helper"
DEFAULT_YARDSTICK = ROOT.parent / "shared" / "yardsticks" / "mox"
# The yardstick README's mailboot: its defaults, so the whole inbound defence is on.
MAILBOOT_ENV = {"MAIL_DOMAINS": "example.com", "TLS_MODE": "self-signed", "DNS_CHECK": "off",
                "PUBLIC_IPV4": "192.0.2.10", "PUBLIC_ADDRESS_DISCOVERY": "off",
                "OUTBOUND_CHECK": "off"}
# measure.py polls a fixed host port across restarts, so the ports are fixed (a `-p 127.0.0.1::25`
# port changes at every start). The README's, below Linux's ephemeral range (32768-60999),
# where no outgoing connection takes one while a container is stopped; the next free one else.
MOX_PORT, MAILBOOT_PORT = 22625, 22525
BOOT_DONE = "boot: dns records done"  # the boot's last stage, cold or warm
WARM_FAILED = "the warm start failed"
# The bar (issue 30): within 1.5x of mox, idle PSS at most 55 MiB, image growth 100 MB.
RATIO_TARGET = "≤ 1.5"
PSS_TARGET = "≤ 55 MiB"
GROWTH_TARGET = "≤ 100 MB"


@dataclass(frozen=True)
class Side:
    """One target's raw values from measure.py, in run order."""

    banner: tuple[float | None, ...]  # s from `docker start`; None: no banner by the deadline
    own_share: tuple[float | None, ...]  # s from the container's exec to the banner
    pss_mib: tuple[float, ...]
    rss_mib: tuple[float, ...]
    stats_mib: tuple[float | None, ...]  # `docker stats`
    processes: tuple[int, ...]
    growth_mb: float  # image size less the base image's, 10^6 bytes
    size_mb: float
    image: str  # the image's id
    reference: str  # the name the container was made from


@dataclass(frozen=True)
class Measured:
    """What one measure.py run found (its --json output)."""

    date: str
    mox: Side
    mailboot: Side
    mox_version: str  # `mox version` in the container
    mem_delay: float  # s after `docker start` the memory is read
    poll: str  # overlap or serial
    docker: str  # the engine's version


def parse_results(data: Mapping[str, Any]) -> Measured:
    """measure.py's --json output with targets labelled `mox` and `mailboot`.

    Raises ValueError naming what is missing when the file is not such an output.
    """
    try:
        return Measured(data["date"], _side(data, "mox"), _side(data, "mailboot"),
                        " ".join(str(data.get("versions", {}).get("mox", "")).split()),
                        float(data["params"]["mem_delay"]), str(data["params"]["poll"]),
                        str(data["machine"]["docker"]))
    except (KeyError, TypeError) as error:
        raise ValueError(f"measure.py's results lack {error}: not the output of a run with "
                         "--target mox=... --target mailboot=... --json") from error


def _side(data: Mapping[str, Any], label: str) -> Side:
    banner = data["banner"][label]
    memory = data["memory"][label]
    image = data["images"][label]
    return Side(tuple(run["banner_s"] for run in banner),
                tuple(run["exec_to_banner_s"] for run in banner),
                tuple(sample["pss_kb"] / 1024 for sample in memory),
                tuple(sample["rss_kb"] / 1024 for sample in memory),
                tuple(None if sample["docker_stats_bytes"] is None
                      else sample["docker_stats_bytes"] / 2**20 for sample in memory),
                tuple(sample["nprocs"] for sample in memory),
                image["growth"] / 1e6, image["size"] / 1e6, image["id"], image["ref"])


def figures(measured: Measured, warm: str = "") -> list[Figure]:
    """The section's rows: each figure for mox, for mailboot, and their ratio with its target;
    `warm`: how many of mailboot's starts were warm ("7 of 10"), when known."""
    mox, ours = measured.mox, measured.mailboot
    after = f"{measured.mem_delay:g} s after a warm start"
    rows = _compared("warm `docker start` → SMTP 220 banner", mox.banner, ours.banner,
                     seconds, " s", RATIO_TARGET)
    rows += _compared("container exec → SMTP 220 banner (the server's own share)",
                      mox.own_share, ours.own_share, seconds, " s", "")
    rows += _compared(f"idle memory {after}, sum of PSS", mox.pss_mib, ours.pss_mib,
                      _mib, " MiB", RATIO_TARGET, PSS_TARGET,
                      (mox.processes, ours.processes))
    rows += _compared(f"idle memory {after}, sum of RSS", mox.rss_mib, ours.rss_mib,
                      _mib, " MiB", None)
    rows += _compared(f"idle memory {after}, cgroup (`docker stats`)", mox.stats_mib,
                      ours.stats_mib, _mib, " MiB", None)
    growth = "image growth over debian:trixie-slim"
    rows += [Figure(f"{growth}: mox", _mb(mox.growth_mb), "", f"image {_mb(mox.size_mb)}"),
             Figure(f"{growth}: mailboot", _mb(ours.growth_mb), GROWTH_TARGET,
                    f"image {_mb(ours.size_mb)}"),
             Figure(f"{growth}: ratio mailboot / mox", f"{ours.growth_mb / mox.growth_mb:.2f}",
                    "", "")]
    if warm:
        rows.append(Figure("mailboot: starts that were warm (the last full boot's plan found)",
                           warm, "", ""))
    return rows


def _compared(name: str, mox: Sequence[float | None], ours: Sequence[float | None],
              shown: Callable[[float], str], unit: str, ratio_target: str | None,
              our_target: str = "",
              processes: tuple[Sequence[int], Sequence[int]] | None = None) -> list[Figure]:
    """mox's row, mailboot's, and (unless `ratio_target` is None) the ratio's; no row for a
    figure measure.py skipped (--skip-banner, --skip-memory). A run with no value (no banner
    by measure.py's deadline) is listed as "none"; the median is of the others."""
    if not mox or not ours:
        return []
    rows = []
    counts = processes or ((), ())
    for label, values, target, count in (("mox", mox, "", counts[0]),
                                         ("mailboot", ours, our_target, counts[1])):
        runs = _listed(values, unit)
        if count:
            runs += f" ({'/'.join(str(n) for n in sorted(set(count)))} processes)"
        found = _present(values)
        rows.append(Figure(f"{name}: {label}", shown(median(found)) if found else "none",
                           target, runs))
    if ratio_target is not None:
        theirs, mine = _present(mox), _present(ours)
        ratio = f"{median(mine) / median(theirs):.2f}" if theirs and mine else "n/a"
        rows.append(Figure(f"{name}: ratio mailboot / mox", ratio, ratio_target, ""))
    return rows


def _present(values: Sequence[float | None]) -> list[float]:
    return [value for value in values if value is not None]


def _listed(values: Sequence[float | None], unit: str) -> str:
    shown = ["none" if v is None else f"{v:.3f}" if unit == " s" else f"{v:.1f}" for v in values]
    return ", ".join(shown) + unit


def _mib(value: float) -> str:
    return f"{value:.1f} MiB"


def _mb(value: float) -> str:
    return f"{value:.1f} MB"


def warm_starts(log: str) -> tuple[int, int]:
    """(warm starts, restarts) in a mailboot container's log: every start hands over to the
    supervisor once; the first, on an empty /data, is the cold boot."""
    starts = len(HANDOVER.findall(log))
    warm = log.count(WARM_START) - log.count(WARM_FAILED)
    return warm, max(starts - 1, 0)


def prepare(arguments: argparse.Namespace) -> str:
    """The yardstick found and the mox image there (built if missing), before any section runs,
    so that a missing prerequisite ends a whole benchmark run at once; says how mox was had."""
    yardstick = Path(arguments.mox_yardstick)
    if not (yardstick / "measure.py").is_file():
        raise RuntimeError(f"no measure.py in {yardstick}: the mox yardstick lives in "
                           "../shared/yardsticks/mox beside this checkout; give its directory "
                           "with --mox-yardstick or MAILBOOT_MOX_YARDSTICK")
    return ensure_mox_image(yardstick, arguments.mox_git_dir)


def run(report: Report, arguments: argparse.Namespace) -> None:
    mox_built = prepare(arguments)
    yardstick = Path(arguments.mox_yardstick)
    measure_py = yardstick / "measure.py"
    build(HELPER_IMAGE, HELPER_CONTEXT)
    suffix = secrets.token_hex(4)
    mox_name, ours_name = f"mailboot-bench-mox-{suffix}", f"mailboot-bench-beside-mox-{suffix}"
    volumes = (mox_name, ours_name)
    try:
        subprocess.run([str(yardstick / "setup-mox.sh")], check=True, timeout=600,
                       env={**os.environ, "IMAGE": MOX_IMAGE, "VOLUME": mox_name,
                            "HELPER_IMAGE": HELPER_IMAGE})
        mox_port = free_port(MOX_PORT)
        docker("run", "-d", "--name", mox_name, "--dns", "127.0.0.1", "-v", f"{mox_name}:/mox",
               "-p", f"127.0.0.1:{mox_port}:25", MOX_IMAGE)
        ours_port = free_port(MAILBOOT_PORT, avoid=mox_port)
        docker("run", "-d", "--name", ours_name,
               *(f"--env={key}={value}" for key, value in MAILBOOT_ENV.items()),
               "-v", f"{ours_name}:/data", "-p", f"127.0.0.1:{ours_port}:25", IMAGE)
        wait_for_banner(mox_name, mox_port)
        wait_for_first_boot(ours_name, ours_port)
        others = other_containers((MOX_IMAGE, IMAGE), (mox_name, ours_name))
        measured = measure(measure_py, f"mox={mox_name}:{mox_port}",
                           f"mailboot={ours_name}:{ours_port}", arguments)
        others += [name for name in other_containers((MOX_IMAGE, IMAGE), (mox_name, ours_name))
                   if name not in others]
        warm, restarts = warm_starts(_logs(ours_name))
    finally:
        docker("rm", "-f", mox_name, ours_name, check=False)
        docker("volume", "rm", *volumes, check=False)
    method = (__doc__ or "").strip() + "\n\n" + notes(measured, mox_built, others)
    report.section(TITLE, method).extend(figures(measured, f"{warm} of {restarts}"))


def ensure_mox_image(yardstick: Path, git_dir: str | None) -> str:
    """Build MOX_IMAGE with the yardstick's build.sh unless it exists; says how it was had."""
    if docker("image", "inspect", MOX_IMAGE, check=False).returncode == 0:
        return f"`{MOX_IMAGE}` as found (built earlier by build.sh)"
    if not git_dir or not Path(git_dir).is_dir():
        raise RuntimeError(
            f"the mox image {MOX_IMAGE} is missing and there is no mox source to build it from "
            f"(--mox-git-dir / MOX_GIT_DIR: {git_dir or 'unset'}): point MOX_GIT_DIR at a bare "
            "git mirror of github.com/mjl-/mox holding the tag "
            f"{os.environ.get('MOX_TAG', MOX_TAG)} (`git clone --mirror "
            "https://github.com/mjl-/mox`), or build the image with "
            f"{yardstick / 'build.sh'} first; never a downloaded mox binary")
    tag = os.environ.get("MOX_TAG", MOX_TAG)
    found = subprocess.run(["git", "--git-dir", git_dir, "rev-parse", "--verify", "--quiet",
                            f"{tag}^{{commit}}"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise RuntimeError(f"the mox mirror {git_dir} has no tag {tag}: fetch its tags "
                           f"(`git --git-dir {git_dir} fetch --tags`)")
    print(f"benchmark: building {MOX_IMAGE} from mox {tag} (offline, a few minutes)",
          file=sys.stderr, flush=True)
    subprocess.run([str(yardstick / "build.sh")], check=True, timeout=3600,
                   env={**os.environ, "MOX_GIT_DIR": git_dir, "MOX_TAG": tag,
                        "IMAGE": MOX_IMAGE}, stdout=sys.stderr)
    return f"`{MOX_IMAGE}` built by build.sh from mox {tag} (commit {found.stdout.strip()[:12]})"


def free_port(preferred: int, avoid: int = 0) -> int:
    """`preferred`, or the next port up that nothing on 127.0.0.1 listens on."""
    for port in range(preferred, preferred + 100):
        if port == avoid:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {preferred}-{preferred + 99}")


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            return connection.recv(100).startswith(b"220")
    except OSError:
        return False


def _logs(name: str) -> str:
    result = docker("logs", name, check=False, timeout=60)
    return result.stdout + result.stderr


def _running(name: str) -> bool:
    state = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
    if state != "true":
        raise RuntimeError(f"{name} stopped:\n{_logs(name)[-3000:]}")
    return True


def wait_for_banner(name: str, port: int, timeout: float = 120) -> None:
    eventually(lambda: _running(name) and _banner(port), timeout,
               lambda: f"{name}'s SMTP banner on 127.0.0.1:{port}:\n{_logs(name)[-3000:]}",
               interval=0.2)


def wait_for_first_boot(name: str, port: int, timeout: float = 600) -> None:
    """mailboot's cold boot done: its banner, its last stage logged, no worker run going (a
    stop amid one might leave a change that makes the next start a full boot)."""
    wait_for_banner(name, port, timeout)
    eventually(lambda: BOOT_DONE in _logs(name), timeout,
               lambda: f"'{BOOT_DONE}' in {name}'s log:\n{_logs(name)[-3000:]}", interval=0.5)
    eventually(lambda: _running(name) and WORKER_RUN not in docker(
        "top", name, "-eo", "pid,args").stdout, timeout, f"{name}'s worker run to end",
        interval=0.5)


def other_containers(images: Sequence[str], ours: Sequence[str]) -> list[str]:
    """Running containers besides `ours` whose image shares a layer above debian:trixie-slim
    with one of `images` (another tag built from the same Dockerfile shares the packages'
    layers): the same files, mapped by both, so they would share, and so lower, PSS."""
    layers = set().union(*(_layers(image) for image in images)) - _layers(BASE_IMAGE)
    found = []
    listed = docker("ps", "--format", "{{.Names}} {{.Image}}").stdout.splitlines()
    for name, image in (line.split(" ", 1) for line in listed if line.strip()):
        if name not in ours and layers & _layers(image):
            found.append(f"{name} ({image})")
    return found


def _layers(image: str) -> set[str]:
    result = docker("image", "inspect", "-f", "{{range .RootFS.Layers}}{{println .}}{{end}}",
                    image, check=False)
    return set(result.stdout.split())


def measure(measure_py: Path, mox: str, mailboot: str,
            arguments: argparse.Namespace) -> Measured:
    """measure.py's run (as root: it reads other users' /proc/PID/smaps_rollup), its results."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    with tempfile.TemporaryDirectory(prefix="mailboot-bench-mox-") as directory:
        results = Path(directory) / "results.json"
        argv = [*sudo, sys.executable, str(measure_py), "--target", mox, "--target", mailboot,
                "--ratio", "mailboot/mox", "--version-exec", "mox=mox version",
                "--mem-delay", str(arguments.idle), "--json", str(results),
                "--md", str(Path(directory) / "results.md"),
                *shlex.split(arguments.mox_measure_args)]
        print("benchmark: " + shlex.join(argv), file=sys.stderr, flush=True)
        # Its progress goes to stderr as it runs (about 11 min with its defaults); its table
        # (stdout) too, for the record.
        subprocess.run(argv, check=True, stdout=sys.stderr, timeout=4 * 3600)
        return parse_results(json.loads(results.read_text()))


def notes(measured: Measured, mox_built: str, others: Sequence[str]) -> str:
    """The run's own facts, below the method: versions, date, what else was running."""
    ours = json.loads(docker("image", "inspect", IMAGE).stdout)[0]
    labels = ours.get("Config", {}).get("Labels") or {}
    revision = labels.get("org.opencontainers.image.revision", "unknown")
    version = labels.get("org.opencontainers.image.version", "unknown")
    date = datetime.datetime.fromisoformat(measured.date).strftime("%Y-%m-%d %H:%M UTC")
    others_text = ", ".join(others) + ": the PSS figures are too low" if others else "none"
    return "\n".join([
        f"This run: {date}, Docker {measured.docker}, banner polling `{measured.poll}`.",
        f"- mox: {mox_built}; `mox version` says `{measured.mox_version}` (built from "
        "`git archive`, so no VCS stamp); image "
        f"{measured.mox.image.removeprefix('sha256:')[:12]}.",
        f"- mailboot: `{measured.mailboot.reference}`, image "
        f"{measured.mailboot.image.removeprefix('sha256:')[:12]}, version {version}, "
        f"revision {revision[:12]}.",
        f"- Other running containers sharing either image's layers, at the start or the end: "
        f"{others_text}.",
    ])
