"""How much each login may send a day: messages, and recipients it never wrote to before.

A stolen password is the usual way a small server ends up on a blocklist: the spammer logs in
and sends as fast as the server lets them. mox limits each account to 1,000 messages and 200
first-time recipients a day by default; we do the same, per SASL login and per UTC day.

Postfix asks our policy process (`policy.service`) twice per message on the submission ports
(465/587), with the login in `sasl_username`:
- at each RCPT: refused with 451 4.7.1 when the login has sent its messages for the day, or
  when the recipient is new to it and it has written to its share of new recipients (a known
  recipient still gets mail). The refusal is temporary (4xx): a client keeps the message and
  retries, and it goes out once the day turns or the administrator releases the account.
- at the end of the data: the message counts (one per message, whatever its recipients), and
  its recipients become known. Counting only accepted messages means a refused or abandoned
  transaction costs nothing; sessions that run at the same moment can pass the limit by the
  messages they have in flight.

Each login's day is a small JSON file below the policy state (`/data/policy/sending/`), so the
counts survive a restart and go into backups: its UTC day, the two counts, which limits were
already logged that day, and the recipients it wrote to (short hashes, the most recent
`KNOWN_RECIPIENTS`). One file per login keeps each write small however many accounts there are.
The policy process's threads and `mailboot account release` (root) both change them, so every
read-modify-write holds the login's lock (flock on its `.lock` file beside); files are replaced
atomically.

A file that can't be read (corrupt, or from a future version) is logged and counted from zero:
a broken counter never refuses mail. The decisions are pure functions of the file's content and
`now`, so tests drive the day's rollover with a fixed clock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from mailboot.base.files import write_atomically

log = logging.getLogger(__name__)

DUNNO = "DUNNO"
# Recipients remembered per login, the most recent kept: enough for a person's correspondents
# (a forgotten one counts as new once more, nothing worse); 2,000 hashes are about 35 KB.
KNOWN_RECIPIENTS = 2000
# Bytes of BLAKE2b per recipient: 48 bits, so two of 2,000 addresses share one with a chance
# of about 1 in 100 million (and then one recipient counts as known too early).
HASH_BYTES = 6
# Messages whose recipients we hold between RCPT and the end of data, at most (a transaction
# abandoned after RCPT leaves its entry behind until it is pushed out).
PENDING_MESSAGES = 10_000
FORMAT = 1  # the files' version: a file of another version is counted from zero
DIRECTORY = "sending"


class Limit(StrEnum):
    MESSAGES = "messages"
    FIRST_TIME = "first-time recipients"


@dataclass(frozen=True)
class Limits:
    """The day's maximum per login; None: no limit of that kind."""

    messages: int | None
    first_time: int | None

    @property
    def off(self) -> bool:
        return self.messages is None and self.first_time is None

    def maximum(self, limit: Limit) -> int | None:
        return self.messages if limit is Limit.MESSAGES else self.first_time


@dataclass(frozen=True)
class Day:
    """One login's sending on one UTC day, and the recipients it ever wrote to."""

    login: str
    day: str  # YYYY-MM-DD, UTC
    messages: int = 0
    first_time: int = 0
    said: frozenset[Limit] = frozenset()  # limits already logged this day
    known: tuple[str, ...] = ()  # recipient hashes, the least recently used first

    def count(self, limit: Limit) -> int:
        return self.messages if limit is Limit.MESSAGES else self.first_time


@dataclass(frozen=True)
class Held:
    """A login that has reached a limit today: what it sent and until when it is held."""

    login: str
    limit: Limit
    count: int
    maximum: int
    until: datetime


# --- the decisions (pure) ------------------------------------------------------------------------


def utc_day(now: datetime) -> str:
    return now.astimezone(UTC).date().isoformat()


def next_midnight(now: datetime) -> datetime:
    """When the UTC day of `now` ends, and every count starts again."""
    start = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), UTC)
    return start + timedelta(days=1)


def today(day: Day, now: datetime) -> Day:
    """`day` as it stands on the UTC day of `now`: a new day starts from zero, keeping the
    known recipients."""
    if day.day == utc_day(now):
        return day
    return Day(day.login, utc_day(now), known=day.known)


def recipient_hash(recipient: str) -> str:
    """A short hash of an address (compared without case: the domain has none, and local parts
    that differ only in case are one mailbox nearly everywhere)."""
    digest = hashlib.blake2b(recipient.strip().lower().encode(), digest_size=HASH_BYTES)
    return digest.hexdigest()


def reached(day: Day, limits: Limits, now: datetime) -> list[Held]:
    """The limits `day` has reached on the UTC day of `now`."""
    current = today(day, now)
    found = []
    for limit in Limit:
        maximum = limits.maximum(limit)
        if maximum is not None and current.count(limit) >= maximum:
            found.append(Held(day.login, limit, current.count(limit), maximum,
                              next_midnight(now)))
    return found


def refusal(day: Day, limits: Limits, recipient: str, pending: Sequence[str],
            now: datetime) -> Held | None:
    """Why a recipient of the login's next message is refused, or None to let it through.

    `pending` holds the hashes of the recipients already accepted for this message: each new
    one counts towards the first-time limit before the message is committed."""
    current = today(day, now)
    if limits.messages is not None and current.messages >= limits.messages:
        return Held(day.login, Limit.MESSAGES, current.messages, limits.messages,
                    next_midnight(now))
    if limits.first_time is None or recipient in current.known or recipient in pending:
        return None
    new = len(set(pending) - set(current.known))
    if current.first_time + new >= limits.first_time:
        return Held(day.login, Limit.FIRST_TIME, current.first_time, limits.first_time,
                    next_midnight(now))
    return None


def committed(day: Day, recipients: Iterable[str], now: datetime) -> Day:
    """`day` after one more message to `recipients` (hashes): they become the most recently
    used known ones, the oldest beyond KNOWN_RECIPIENTS forgotten."""
    current = today(day, now)
    known = dict.fromkeys(current.known)
    new = 0
    for recipient in dict.fromkeys(recipients):
        if recipient in known:
            del known[recipient]
        else:
            new += 1
        known[recipient] = None
    kept = tuple(known)[-KNOWN_RECIPIENTS:]
    return replace(current, messages=current.messages + 1, first_time=current.first_time + new,
                   known=kept)


def released(day: Day, now: datetime) -> Day:
    """`day` with today's counts forgotten (the recipients stay known)."""
    return Day(day.login, utc_day(now), known=day.known)


def reply(held: Held) -> str:
    """The policy action: 451 4.7.1 (RFC 3463: delivery not authorized, temporary), with what
    the sender's client shows its user."""
    until = held.until.strftime("%H:%M UTC")
    if held.limit is Limit.MESSAGES:
        what = (f"{held.login} has sent its limit of {held.maximum} messages today; "
                f"more is refused until {until}")
    else:
        what = (f"{held.login} has written to its limit of {held.maximum} new recipients "
                f"today; mail to addresses it never wrote to before is refused until {until}")
    return f"451 4.7.1 {what}, or until the administrator releases the account"


def log_line(held: Held) -> str:
    release = f"`mailboot account release {held.login}`"
    if held.limit is Limit.MESSAGES:
        return (f"limits: {held.login} reached its limit of {held.maximum} messages today; "
                f"further mail is refused with 4xx until 00:00 UTC or {release}")
    return (f"limits: {held.login} reached its limit of {held.maximum} first-time recipients "
            f"today; mail to new recipients is refused with 4xx until 00:00 UTC or {release}")


# --- the files -----------------------------------------------------------------------------------


class UnreadableDay(ValueError):
    """A login's file that exists but can't be used (the message says which and why)."""


def state_directory(policy_state: Path) -> Path:
    return policy_state / DIRECTORY


def day_file(directory: Path, login: str) -> Path:
    """The login's file: a hash of the address as its name, so no address can make a path."""
    name = hashlib.blake2b(login.encode(), digest_size=8).hexdigest()
    return directory / f"{name}.json"


def parse_day(text: str, login: str | None = None) -> Day:
    """A login's file; raises UnreadableDay when it isn't one (of this version)."""
    try:
        saved = json.loads(text)
        if saved.get("format") != FORMAT:
            raise UnreadableDay(f"format {saved.get('format')!r}, not {FORMAT}")
        known = saved["known"]
        # Checked by C loops (map, set), not a Python loop: it runs at every RCPT, over up to
        # KNOWN_RECIPIENTS hashes.
        if not isinstance(known, list) or not set(map(type, known)) <= {str}:
            raise UnreadableDay("its known recipients are not a list of hashes")
        day = Day(str(saved["login"]), str(saved["day"]), int(saved["messages"]),
                  int(saved["first_time"]), frozenset(Limit(said) for said in saved["said"]),
                  tuple(known))
    except UnreadableDay:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UnreadableDay(f"not a sending-limits file ({type(error).__name__}: {error})") \
            from None
    if login is not None and day.login != login:
        raise UnreadableDay(f"it is {day.login}'s, not {login}'s")
    return day


def day_text(day: Day) -> bytes:
    return json.dumps({"format": FORMAT, "login": day.login, "day": day.day,
                       "messages": day.messages, "first_time": day.first_time,
                       "said": sorted(day.said), "known": list(day.known)},
                      separators=(",", ":")).encode() + b"\n"


def read_day(directory: Path, login: str, now: datetime) -> Day:
    """The login's day (a fresh one when it has no file); raises UnreadableDay, with the file's
    name, when its file can't be used."""
    path = day_file(directory, login)
    try:
        return parse_day(path.read_text(), login)
    except FileNotFoundError:
        return Day(login, utc_day(now))
    except (OSError, UnicodeDecodeError, UnreadableDay) as error:
        raise UnreadableDay(f"{path} can't be used: {error}") from None


def _owner(directory: Path) -> tuple[int, int] | None:
    """Who a file we make there must belong to: the directory's owner (the policy process's
    user) when we are root (`mailboot account release`); else ourselves."""
    if os.geteuid() != 0:
        return None
    status = directory.stat()
    return status.st_uid, status.st_gid


def _prepare(directory: Path) -> None:
    """The directory, made if needed, and owned like the policy state it is in (root may be
    the first to make it, and the policy process must write there)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = _owner(directory.parent)
    if owner is not None and _owner(directory) != owner:
        os.chown(directory, *owner)


@contextlib.contextmanager
def locked(directory: Path, login: str) -> Iterator[None]:
    """Hold the login's lock, which every read-modify-write of its file holds (flock: between
    processes and between the threads of one, each with its own open file). A lock file per
    login: logins don't wait for each other's writes (each is synced to disk)."""
    _prepare(directory)
    path = day_file(directory, login).with_suffix(".lock")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        owner = _owner(directory)
        if owner is not None:
            os.fchown(descriptor, *owner)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing lets go of the lock


def write_day(directory: Path, day: Day) -> None:
    """Replaced whole, without waiting for the disk: each message of a login rewrites its file
    under its lock, so a sync there makes the parallel sessions of one login wait in turn for
    the disk (Postfix's own syncs, outside any lock, are grouped by the journal). A power cut
    may lose the last counts; a crash leaves the old file or the new one."""
    write_atomically(day_file(directory, day.login), day_text(day), 0o600, _owner(directory),
                     sync=False)


def update_day(directory: Path, login: str, now: datetime,
               change: Callable[[Day], Day]) -> tuple[Day, Day]:
    """Change the login's file under the lock; return (before, after). A file that can't be
    read is logged and replaced: counting starts again from zero."""
    with locked(directory, login):
        try:
            before = read_day(directory, login, now)
        except UnreadableDay as error:
            log.warning("limits: %s; %s's counts start again from zero", error, login)
            before = Day(login, utc_day(now))
        after = change(before)
        write_day(directory, after)
    return before, after


def all_days(directory: Path) -> tuple[list[Day], list[str]]:
    """Every login's file, and a line for each that can't be read."""
    days, problems = [], []
    try:
        paths = sorted(directory.glob("*.json"))
    except OSError as error:
        return [], [f"{directory} can't be read: {error}"]
    for path in paths:
        try:
            days.append(parse_day(path.read_text()))
        except (OSError, UnicodeDecodeError, UnreadableDay) as error:
            problems.append(f"{path} can't be used: {error}")
    return days, problems


def held_logins(directory: Path, limits: Limits, now: datetime) -> tuple[list[Held], list[str]]:
    """Who is held now, by login, and the files that can't be read."""
    if not directory.exists():
        return [], []
    days, problems = all_days(directory)
    return [held for day in days for held in reached(day, limits, now)], problems


def release(directory: Path, login: str, now: datetime) -> Day:
    """Forget the login's counts for today; return what they were."""
    before, _ = update_day(directory, login, now, lambda day: released(day, now))
    return today(before, now)


# --- the policy process's side -------------------------------------------------------------------


class SendingLimits:
    """Answers Postfix's policy requests from the submission services (real state: the
    recipients each message in flight has had accepted, between RCPT and the end of data)."""

    def __init__(self, directory: Path, limits: Limits, clock: Callable[[], datetime]) -> None:
        self.directory = directory
        self.limits = limits
        self.clock = clock
        self.lock = threading.Lock()
        self.pending: OrderedDict[str, list[str]] = OrderedDict()

    def decide(self, request: Mapping[str, str]) -> str:
        """DUNNO or a 451 at RCPT; the count at the end of data (always DUNNO). A failure here
        lets the mail through, and says so."""
        login = request.get("sasl_username", "").strip().lower()
        if not login or self.limits.off:
            return DUNNO
        state = request.get("protocol_state", "").upper()
        try:
            if state == "RCPT":
                return self.recipient(login, request.get("instance", ""),
                                      request.get("recipient", ""))
            if state == "END-OF-MESSAGE":
                self.message(login, request.get("instance", ""))
        except OSError as error:
            log.error("limits: can't count %s's mail in %s (%s); it was let through",
                      login, self.directory, error)
        return DUNNO

    def recipient(self, login: str, instance: str, recipient: str) -> str:
        now = self.clock()
        hashed = recipient_hash(recipient)
        with self.lock:
            pending = list(self.pending.get(instance, ()))
        try:
            day = read_day(self.directory, login, now)
        except UnreadableDay as error:
            log.warning("limits: %s; %s is not limited until it is counted again", error, login)
            day = Day(login, utc_day(now))
        held = refusal(day, self.limits, hashed, pending, now)
        if held is not None:
            if held.limit not in today(day, now).said:
                self.say(held, now)
            return reply(held)
        with self.lock:
            self.pending.setdefault(instance, []).append(hashed)
            self.pending.move_to_end(instance)
            while len(self.pending) > PENDING_MESSAGES:
                self.pending.popitem(last=False)
        return DUNNO

    def message(self, login: str, instance: str) -> None:
        now = self.clock()
        with self.lock:
            recipients = self.pending.pop(instance, [])
        _, after = update_day(self.directory, login, now,
                              lambda day: committed(day, recipients, now))
        for held in reached(after, self.limits, now):
            if held.limit not in after.said:
                self.say(held, now)

    def say(self, held: Held, now: datetime) -> None:
        """The log line, once per login, limit and day (across processes: the file says)."""
        def mark(day: Day) -> Day:
            current = today(day, now)
            return replace(current, said=current.said | {held.limit})

        before, _ = update_day(self.directory, held.login, now, mark)
        if held.limit not in today(before, now).said:
            log.warning("%s", log_line(held))
