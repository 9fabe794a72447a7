"""Times and sizes as text (base/formats) and the one logging set-up (base/logs)."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailboot.base.formats import format_size, human_time, machine_time
from mailboot.base.taskstate import read_time, time_value

PACKAGE = Path(__file__).resolve().parent.parent / "mailboot"
MOMENT = datetime(2026, 12, 5, 8, 15, 30, 987654, tzinfo=UTC)


@pytest.mark.parametrize(("size", "text"), [
    (0, "0 B"),
    (1, "1 B"),
    (1023, "1023 B"),
    (1024, "1.0 KiB"),
    (1536, "1.5 KiB"),
    (1075, "1.0 KiB"),  # 1.0498: rounds down
    (1076, "1.1 KiB"),  # 1.0508: rounds up
    ((1 << 20) - 1, "1.0 MiB"),  # 1023.999 KiB would show as 1024.0 KiB
    ((1 << 20) - 52, "1023.9 KiB"),
    (5 << 20, "5.0 MiB"),
    (5 << 30, "5.0 GiB"),
    ((1 << 40) - 1, "1.0 TiB"),
    (3 << 40, "3.0 TiB"),
    (2048 << 40, "2048.0 TiB"),  # the largest unit
])
def test_sizes_are_in_binary_units(size: int, text: str) -> None:
    assert format_size(size) == text


def test_times_for_people_and_for_programs_are_utc_to_the_second() -> None:
    assert human_time(MOMENT) == "2026-12-05 08:15:30 UTC"
    assert machine_time(MOMENT) == "2026-12-05T08:15:30Z"
    elsewhere = MOMENT.astimezone(timezone(timedelta(hours=-5)))
    assert human_time(elsewhere) == "2026-12-05 08:15:30 UTC"
    assert machine_time(elsewhere) == "2026-12-05T08:15:30Z"


def test_the_machine_form_reads_back_and_old_state_files_still_read() -> None:
    assert datetime.fromisoformat(machine_time(MOMENT)) == MOMENT.replace(microsecond=0)
    saved = time_value(MOMENT)
    assert saved == "2026-12-05T08:15:30Z"
    assert read_time(saved) == MOMENT.replace(microsecond=0)
    assert read_time(MOMENT.isoformat()) == MOMENT  # as versions before this one wrote it


LOGGING_PROBE = """
import logging, sys
from mailboot.base.logs import configure_logging
logging.getLogger("mailboot").addHandler(logging.StreamHandler(sys.stdout))  # replaced below
configure_logging()
configure_logging()  # again: still one handler
logging.getLogger("mailboot.worker").info("one line %s", "only")
logging.getLogger("mailboot.worker").debug("not shown")
logging.getLogger("elsewhere").info("another library's info: not shown")
logging.getLogger("elsewhere").warning("another library's warning")
"""


def test_every_process_logs_the_same_lines_once() -> None:
    """In a fresh process, as each of ours is: the boot and the command line, the worker, the
    web child and the policy service all call it."""
    result = subprocess.run([sys.executable, "-c", LOGGING_PROBE], capture_output=True,
                            text=True, check=True)
    assert result.stderr == "mailboot: one line only\nanother library's warning\n"
    assert result.stdout == ""


def test_the_ground_floor_helpers_import_the_standard_library_only() -> None:
    """The policy service and the supervisor's children have import budgets."""
    allowed = {"logs.py": {"__future__", "logging", "sys"},
               "formats.py": {"__future__", "datetime"}}
    for name, modules in allowed.items():
        tree = ast.parse((PACKAGE / "base" / name).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert imported == modules, name
