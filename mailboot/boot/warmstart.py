"""A restart with nothing changed goes straight to the daemons.

Every full boot (`mailboot run`) ends by writing a plan in the container's own filesystem, beside
the configuration it describes (a new container, from a new image or with new settings, has
none): the supervisor's command line, until when the certificate in use stays usable, the
settings' warnings, and a fingerprint of everything the boot read and made: the environment, the
DKIM keys, the accounts, the certificate in use and the TLS keys below DATA_DIR, the files the
settings name, the rendered configuration, and mailboot's own code and templates.

`docker start` or `docker restart` of that container finds the plan. When every part of the
fingerprint is the same and the certificate still usable, the boot would make exactly what is
there: only what every start needs runs (DATA_DIR's check, the daemons' preparation: stale pid
files, owners, the resolver) before the daemons start, about 0.2 s sooner (the boot's imports
and stages; BENCHMARKS.md, Bare daemons); this process starts them, then becomes the
supervisor, which takes them over (`handover.start_the_daemons`). The whole boot still runs,
beside them: it announces the records and, should it find anything to change after all, writes
it and has the daemons reload. Anything different, a plan that can't be read, DNS_CHECK=strict
(which must check before the daemons; no plan is written then): the full boot, as always, and
the log says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailboot.base.files import write_atomically
from mailboot.base.paths import WARM_START_PLAN, Paths

log = logging.getLogger(__name__)

# mailboot's code and templates: a plan made by other code describes other configuration.
PACKAGE = Path(__file__).resolve().parent.parent
CODE = (PACKAGE, PACKAGE.parent / "templates")
CODE_PART = "mailboot's code and templates"
ENVIRONMENT_PART = "the environment (settings)"


@dataclass(frozen=True)
class Plan:
    """How the last full boot ended, and what it depended on."""

    data_dir: str
    run_dir: str
    supervisor: tuple[str, ...]  # the supervisor's argv, after the interpreter
    usable_until: float  # seconds since the epoch: from then on the boot replaces the certificate
    warnings: tuple[str, ...]  # the settings' warnings, said again at every start
    watched: dict[str, tuple[str, ...]]  # part -> the paths it covers (files or trees)
    salt: str  # for the environment's digest: it holds secrets
    fingerprint: dict[str, str]  # part -> digest; ENVIRONMENT_PART and CODE_PART included


def make_plan(paths: Paths, supervisor: Sequence[str], usable_until: datetime,
              warnings: Sequence[str], watched: Mapping[str, Sequence[Path]],
              environ: Mapping[str, str]) -> Plan:
    """The plan of a boot that just made everything in `watched` (part -> paths)."""
    parts = {part: tuple(str(path) for path in paths_) for part, paths_ in watched.items()}
    parts[CODE_PART] = tuple(str(path) for path in CODE)
    import secrets  # here: a warm start never makes a plan

    salt = secrets.token_hex(16)
    return Plan(str(paths.data_dir), str(paths.run_dir), tuple(supervisor),
                usable_until.timestamp(), tuple(warnings), parts, salt,
                fingerprint(parts, environ, salt))


def fingerprint(watched: Mapping[str, Sequence[str]], environ: Mapping[str, str],
                salt: str) -> dict[str, str]:
    """One digest per part: of the environment (salted), and of each file and tree's metadata
    (a write changes the modification time or the inode; a rename, the listing)."""
    digests = {ENVIRONMENT_PART: _digest([salt, *(f"{name}={value}" for name, value
                                                  in sorted(environ.items()))])}
    for part, paths in watched.items():
        digests[part] = _digest(line for path in paths for line in _describe(Path(path)))
    return digests


def _digest(lines: Any) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def _describe(path: Path) -> list[str]:
    """A line per file, directory and symlink at and below `path`; a symlink is followed (the
    certificate's `live`, a mounted secret), and compiled bytecode is left out."""
    lines = [_line(path)]
    if path.is_dir():
        for directory, subdirectories, names in os.walk(path):
            subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
            lines += [_line(Path(directory) / name) for name in sorted(subdirectories + names)]
    return lines


def _line(path: Path) -> str:
    try:
        status = path.stat()
        link = str(path.readlink()) if path.is_symlink() else ""
    except OSError as error:
        return f"{path} {error.strerror}"
    return (f"{path} -> {link} {status.st_mode:o} {status.st_uid}:{status.st_gid} "
            f"{status.st_size} {status.st_mtime_ns} {status.st_ino}")


def write_plan(paths: Paths, plan: Plan) -> None:
    """Root's alone: the salted digest covers the environment's secrets. Never fails the boot:
    without a plan every start is a full boot."""
    try:
        write_atomically(paths.warm_start_plan,
                         (json.dumps(asdict(plan), indent=1) + "\n").encode(), mode=0o600)
    except OSError as error:
        log.warning("boot: can't keep the warm-start plan in %s (%s): every restart boots in full",
                    paths.warm_start_plan, error.strerror)


def forget_plan(paths: Paths) -> None:
    """A full boot begins: until it ends, nothing may start on the last one's plan."""
    paths.warm_start_plan.unlink(missing_ok=True)


def read_plan(config_root: Path) -> Plan | None:
    """The plan, or None when there is none or it can't be read (the log says so)."""
    path = config_root / WARM_START_PLAN
    try:
        saved = json.loads(path.read_text())
        return Plan(str(saved["data_dir"]), str(saved["run_dir"]),
                    tuple(map(str, saved["supervisor"])), float(saved["usable_until"]),
                    tuple(map(str, saved["warnings"])),
                    {str(part): tuple(map(str, paths)) for part, paths
                     in saved["watched"].items()},
                    str(saved["salt"]),
                    {str(part): str(digest) for part, digest in saved["fingerprint"].items()})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        log.warning("boot: the warm-start plan %s can't be read (%s): a full boot", path, error)
        return None


def what_changed(plan: Plan, environ: Mapping[str, str], now: datetime) -> list[str]:
    """What differs from when the plan was made; empty: the boot would change nothing."""
    changed = [part for part, digest in fingerprint(plan.watched, environ, plan.salt).items()
               if plan.fingerprint.get(part) != digest]
    if now.timestamp() >= plan.usable_until:
        changed.append("the certificate's time (it is due for replacement)")
    return changed


def plan_to_start_on(config_root: Path, environ: Mapping[str, str],
                     now: datetime) -> Plan | None:
    """The last full boot's plan when nothing changed since; None: boot in full (the log says
    why, unless this container never booted)."""
    plan = read_plan(config_root)
    if plan is None:
        return None
    changed = what_changed(plan, environ, now)
    if changed:
        log.info("boot: changed since the last start: %s; a full boot", ", ".join(changed))
        return None
    return plan
