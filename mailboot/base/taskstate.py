"""What a worker task remembers between two runs, as JSON values.

The worker is a short process the supervisor starts when a task is due; each task gives its
memory as `state()` (JSON-ready) and takes it back with `restore()`. These helpers turn the
few kinds of values tasks keep into JSON and back. Restoring is lenient by design: a value
that can't be read raises StateUnreadable, and the worker then starts that task afresh (it
says again what it said before, which is harmless).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from mailboot.base.formats import machine_time

JsonObject = dict[str, Any]
Saved = Mapping[str, Any]  # a JsonObject as read back


class StateUnreadable(ValueError):
    """A saved task state that this version can't read."""


def time_value(moment: datetime | None) -> str | None:
    return None if moment is None else machine_time(moment)


def read_time(value: object) -> datetime | None:
    """An aware datetime from `time_value`'s text. Raises StateUnreadable."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise StateUnreadable(f"not a time: {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise StateUnreadable(str(error)) from None
    if moment.tzinfo is None:
        raise StateUnreadable(f"a time without a zone: {value!r}")
    return moment


def span_value(span: timedelta | None) -> float | None:
    return None if span is None else span.total_seconds()


def read_span(value: object) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise StateUnreadable(f"not a number of seconds: {value!r}")
    return timedelta(seconds=value)


def read_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise StateUnreadable(f"not a text: {value!r}")


def read_object(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise StateUnreadable(f"not an object: {value!r}")
    return value


def read_texts(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise StateUnreadable(f"not a list of texts: {value!r}")
    return list(value)
