"""The worker's last problems: its latest warnings and errors, kept where `mailboot status` reads.

The worker and `mailboot status` are different processes (status runs over `docker exec`), so a
log handler in the worker keeps the last `KEEP` WARNING and ERROR records of the `mailboot`
loggers in a small JSON file in the run directory, rewritten atomically at each new record.
They are rare: the worker says a lasting problem again at most hourly, and only on change
otherwise. A restarted worker starts from what the file holds.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mailboot.base.files import write_atomically
from mailboot.base.formats import machine_time

KEEP = 20
LOGGER = "mailboot"  # every module's logger is below it


@dataclass(frozen=True)
class Problem:
    """One warning or error the worker logged."""

    time: datetime
    level: str  # WARNING, ERROR, CRITICAL
    source: str  # the logger: mailboot.tls, mailboot.dns, ...
    message: str


class ProblemLog(logging.Handler):
    """Keeps the last `keep` records of WARNING and above in `path` (real state: the records)."""

    def __init__(self, path: Path, keep: int = KEEP) -> None:
        super().__init__(logging.WARNING)
        self.path = path
        self.kept: deque[Problem] = deque(read_problems(path), maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.kept.append(Problem(datetime.fromtimestamp(record.created, UTC),
                                     record.levelname, record.name, record.getMessage()))
            write_atomically(self.path, problems_json(self.kept).encode(), mode=0o600)
        except Exception:  # a log handler must never raise into the code that logged
            self.handleError(record)


def keep_problems(path: Path) -> ProblemLog:
    """Attach a ProblemLog for `path` to the `mailboot` loggers; return it."""
    handler = ProblemLog(path)
    logging.getLogger(LOGGER).addHandler(handler)
    return handler


def problems_json(problems: Iterable[Problem]) -> str:
    return json.dumps([{"time": machine_time(p.time), "level": p.level,
                        "source": p.source, "message": p.message} for p in problems],
                      indent=1) + "\n"


def read_problems(path: Path) -> tuple[Problem, ...]:
    """What the worker kept, oldest first; empty when there is nothing (yet) or it can't be
    read (entries that can't be read are left out)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return ()
    problems = []
    for entry in saved if isinstance(saved, list) else ():
        try:
            time = datetime.fromisoformat(entry["time"])
            problem = Problem(time, str(entry["level"]), str(entry["source"]),
                              str(entry["message"]))
        except (TypeError, KeyError, ValueError):
            continue
        if time.tzinfo is not None:
            problems.append(problem)
    return tuple(problems)
