"""Times and sizes as text: one form for people, one for programs, so every log line, screen
and file says them alike.

- `human_time`: logs and terminal output, `2026-12-05 08:15:30 UTC` (always UTC, to the second:
  the log lines of the daemons and of `docker logs` are compared with it, and they are UTC too).
- `machine_time`: JSON output and state files, `2026-12-05T08:15:30Z` (RFC 3339 §5.6, UTC,
  which `datetime.fromisoformat` reads back from Python 3.11 on). Readers of state files keep
  accepting the forms older versions wrote (`+00:00`, fractions of a second).
- `format_size`: sizes in IEC binary units (B, KiB, MiB, GiB, TiB; IEC 80000-13), the units
  MAILBOX_QUOTA is given in (5G is 5 GiB).

Standard library only: the ground floor, imported by the light processes too.
"""

from __future__ import annotations

from datetime import UTC, datetime

HUMAN_TIME = "%Y-%m-%d %H:%M:%S UTC"
MACHINE_TIME = "%Y-%m-%dT%H:%M:%SZ"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_time(moment: datetime) -> str:
    """`2026-12-05 08:15:30 UTC`: the moment in UTC, to the second (a fraction is cut off)."""
    return moment.astimezone(UTC).strftime(HUMAN_TIME)


def machine_time(moment: datetime) -> str:
    """`2026-12-05T08:15:30Z`: RFC 3339 in UTC, to the second (a fraction is cut off)."""
    return moment.astimezone(UTC).strftime(MACHINE_TIME)


def format_size(size: int) -> str:
    """`512 B`, `1.5 KiB`, `5.0 MiB`: bytes below 1024, else one decimal in the largest binary
    unit that keeps the number under 1024 once rounded (1048575 bytes is `1.0 MiB`, never
    `1024.0 KiB`); TiB is the largest unit."""
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, 1
    while round(value, 1) >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {_UNITS[unit]}"
