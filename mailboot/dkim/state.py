"""Which DKIM key of a domain signs, which one waits for its record, which ones were replaced.

The state of one domain lives in `DATA_DIR/dkim/<domain>/state.json`, one entry per algorithm
(`rsa`, `ed25519`):

    {"rsa": {"signing": "mb20261125", "next": "mb20261202", "next_seen": "2026-12-02T10:00:00Z",
             "previous": [{"selector": "mb20250101", "switched": "2026-11-25T09:00:00Z"}]}}

- `signing`: the key OpenDKIM signs with (one per algorithm; RFC 8463 §4: both sign);
- `next`: a key made by `mailboot dkim rotate` or `import`; it signs only once the worker has
  seen its record served, right, for at least the record's TTL (`next_seen`: since when);
- `previous`: keys a switch replaced, still published (mail signed with them is verified for a
  while after) until the grace period since `switched` ends and the worker retires them.

A domain without a state file (an install older than rotation, or one never rotated) follows the
earlier rule, so an upgrade signs with the same key: per algorithm, the newest key signs.
The file is written atomically, under a lock shared by the worker and the `dkim` commands.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from mailboot.base.errors import StateError
from mailboot.base.files import write_atomically
from mailboot.base.formats import machine_time

STATE_FILE = "state.json"
LOCK_FILE = ".lock"


class Role(StrEnum):
    SIGNING = "signing"
    NEXT = "next"  # waits for its record; never signs before it is served right
    PREVIOUS = "previous"  # replaced (or not chosen); published until retired


@dataclass(frozen=True)
class Replaced:
    selector: str
    switched: datetime | None  # None: not replaced by a switch (kept until removed by hand)


@dataclass(frozen=True)
class Slot:
    """One algorithm's keys of one domain, by selector."""

    signing: str | None = None
    next: str | None = None
    next_seen: datetime | None = None
    previous: tuple[Replaced, ...] = ()


@dataclass(frozen=True)
class DomainState:
    """Every algorithm's slot; `stored`: read from (or meant for) the state file."""

    slots: tuple[tuple[str, Slot], ...] = ()
    stored: bool = field(default=False, compare=False)

    def slot(self, algorithm: str) -> Slot:
        return dict(self.slots).get(algorithm, Slot())

    def with_slot(self, algorithm: str, slot: Slot) -> DomainState:
        slots = dict(self.slots)
        slots[algorithm] = slot
        return DomainState(tuple(sorted(slots.items())), stored=True)

    def role(self, algorithm: str, selector: str) -> Role:
        slot = self.slot(algorithm)
        if slot.signing == selector:
            return Role.SIGNING
        if slot.next == selector:
            return Role.NEXT
        return Role.PREVIOUS

    def switched(self, algorithm: str, selector: str) -> datetime | None:
        """When a switch replaced this key; None when it never signed or still signs."""
        return next((r.switched for r in self.slot(algorithm).previous
                     if r.selector == selector), None)


def state_path(directory: Path) -> Path:
    return directory / STATE_FILE


def read_state(directory: Path) -> DomainState | None:
    """The stored state, or None when the domain has none. Raises StateError if unreadable."""
    path = state_path(directory)
    try:
        data = json.loads(path.read_text())
        return DomainState(tuple(sorted((algorithm, _slot(value))
                                        for algorithm, value in data.items())), stored=True)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StateError(f"can't read {path}: {error.strerror}") from error
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise StateError(f"{path} is not a DKIM state file mailboot wrote ({error}). Restore it "
                         "from a backup, or move it away: the newest key of each algorithm "
                         "then signs") from None


def write_state(directory: Path, state: DomainState) -> None:
    data = {algorithm: _slot_data(slot) for algorithm, slot in state.slots}
    write_atomically(state_path(directory), (json.dumps(data, indent=2) + "\n").encode(),
                     mode=0o644)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the domain's lock: one reader-modifier-writer of the state at a time."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (directory / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def derived(keys: Mapping[str, list[str]]) -> DomainState:
    """The rule before state files: per algorithm the last key (newest own selector) signs and
    the others are published. `keys`: algorithm -> selectors, oldest first."""
    return DomainState(tuple(sorted(
        (algorithm, Slot(signing=selectors[-1],
                         previous=tuple(Replaced(s, None) for s in selectors[:-1])))
        for algorithm, selectors in keys.items() if selectors)))


def reconcile(state: DomainState, keys: Mapping[str, list[str]]) -> DomainState:
    """The stored state with selectors whose key file is gone left out, and keys it doesn't
    know added as previous (published, never signing by surprise)."""
    fallback = derived(keys)
    slots = []
    for algorithm in sorted(set(keys) | {a for a, _ in state.slots}):
        present = keys.get(algorithm, [])
        slot = state.slot(algorithm)
        signing = slot.signing if slot.signing in present else None
        following = slot.next if slot.next in present and slot.next != signing else None
        if signing is None and slot.signing is None and not state.stored:
            signing = fallback.slot(algorithm).signing
        known = {signing, following}
        previous = [r for r in slot.previous if r.selector in present and r.selector not in known]
        listed = {r.selector for r in previous} | known
        previous += [Replaced(s, None) for s in present if s not in listed]
        slots.append((algorithm, Slot(signing, following,
                                      slot.next_seen if following else None, tuple(previous))))
    return replace(state, slots=tuple(slots))


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text).astimezone(UTC)


def _time_text(moment: datetime | None) -> str | None:
    return None if moment is None else machine_time(moment)


def _slot(value: Mapping[str, object]) -> Slot:
    previous = value.get("previous") or []
    if not isinstance(previous, list):
        raise TypeError("previous is not a list")
    return Slot(
        signing=_optional_text(value.get("signing")),
        next=_optional_text(value.get("next")),
        next_seen=_time(_optional_text(value.get("next_seen"))),
        previous=tuple(Replaced(str(item["selector"]), _time(_optional_text(item.get("switched"))))
                       for item in previous),
    )


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not text")
    return value


def _slot_data(slot: Slot) -> dict[str, object]:
    return {
        "signing": slot.signing,
        "next": slot.next,
        "next_seen": _time_text(slot.next_seen),
        "previous": [{"selector": r.selector, "switched": _time_text(r.switched)}
                     for r in slot.previous],
    }
