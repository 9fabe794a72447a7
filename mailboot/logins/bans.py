"""Login bans: an address that keeps failing to log in is refused for a while.

Every login goes through Dovecot's auth: IMAP (993), ManageSieve (4190), and SMTP AUTH on 465
and 587, which Postfix asks Dovecot about with the client's address. Dovecot asks the policy
process before each login and reports each result after it (its auth policy, `policy.authpolicy`);
Postfix's submission services ask it again when a client connects (`policy.delegation`). Here:

- Counting: the failed logins of each address within LOGIN_BAN_WINDOW; the one that reaches
  LOGIN_BAN_FAILURES bans the address for LOGIN_BAN_DURATION. A banned address is refused before
  its password is checked (a right password too), and its failures are no longer counted: the
  ban ends when it was said to, however long the address keeps trying. IPv6 counts per /64, the
  block one subscriber gets (RFC 6177 §2): an attacker has all of it.
- Never banned, and never counted: loopback (the container itself, webmail beside it), the
  addresses of LOGIN_BAN_ALLOWLIST, and the container's gateway when it stands for every client
  (Docker's userland proxy: every connection then comes from the gateway, and a ban of it would
  lock everyone out). The gateway stands for every client when port 25's check noticed the
  proxy (`inbound.decide`), or when no login has yet come from any other remote address; then
  the log says why no ban is possible, once per LOGIN_BAN_FAILURES failures.
- State: `bans.json` in the policy process's directory on the volume (kept across restarts and
  by `mailboot backup`), replaced whole at each change under a lock, since the policy process's
  threads and `mailboot ban remove` (as root) both change it. Decisions are pure functions of
  the state and `now`; `BanStore` reads and writes, `LoginBans` is what the policy process asks.

What the log says (one line each): a ban (`bans: 192.0.2.7 banned until ... after 10 failed
logins in 10 min (imap, submission); ...`), its end (said at the first login question after it
ended), its removal, and the gateway that can't be banned.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailboot.base.files import write_atomically
from mailboot.base.formats import human_time, machine_time

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
STATE_FILE = "bans.json"
STATE_VERSION = 1
# Addresses whose failures are remembered at once: past it the quietest are forgotten, so a
# spray from many addresses can't grow the file (and each rewrite of it) without bound.
MAX_TRACKED = 5000
# Dovecot's protocol names, as the log and `mailboot ban list` show them.
PROTOCOL_NAMES = {"smtp": "submission", "sieve": "managesieve", "imap": "imap"}


@dataclass(frozen=True)
class BanRules:
    """LOGIN_BAN_FAILURES failed logins within LOGIN_BAN_WINDOW seconds ban an address for
    LOGIN_BAN_DURATION seconds; LOGIN_BAN_ALLOWLIST is never banned."""

    failures: int
    window: int
    duration: int
    allowlist: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class Ban:
    since: datetime
    until: datetime
    failures: int
    protocols: tuple[str, ...]


@dataclass(frozen=True)
class BanState:
    """The failed logins still inside the window (per address: when, over which protocol), the
    bans, and whether a login has come from a remote address other than the gateway."""

    failures: Mapping[str, tuple[tuple[datetime, str], ...]] = field(default_factory=dict)
    bans: Mapping[str, Ban] = field(default_factory=dict)
    others_seen: bool = False


@dataclass(frozen=True)
class Counted:
    """What one failed login did: the new state, the ban it earned, or why it earned none
    though it reached the count (`spared`: the gateway that stands for every client)."""

    state: BanState
    ban: Ban | None = None
    spared: bool = False


# --- who is counted, and as what -------------------------------------------------------------

def client_key(address: str) -> str | None:
    """What an address is counted and banned as: an IPv4 address, or an IPv6 /64 (an IPv4
    address in IPv6 form counts as the IPv4 one); None for what isn't an address (Postfix's
    `unknown`)."""
    try:
        parsed = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False))
    return str(parsed)


def exempt(address: str, rules: BanRules) -> bool:
    """Loopback and the allowlist are never counted nor banned."""
    try:
        parsed = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return True
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if parsed.is_loopback:
        return True
    return any(parsed.version == network.version and parsed in network
               for network in rules.allowlist)


# --- decisions (pure: the state and now in, the new state out) --------------------------------

def ban_of(state: BanState, key: str, now: datetime) -> Ban | None:
    """The ban `key` is under at `now`, if any."""
    ban = state.bans.get(key)
    return ban if ban is not None and ban.until > now else None


def without_expired(state: BanState, now: datetime) -> tuple[BanState, dict[str, Ban]]:
    """The state without the bans that ended by `now`, and those bans."""
    ended = {key: ban for key, ban in state.bans.items() if ban.until <= now}
    if not ended:
        return state, {}
    kept = {key: ban for key, ban in state.bans.items() if key not in ended}
    return replace(state, bans=kept), ended


def seen(state: BanState, key: str, gateway: str | None) -> BanState:
    """Note a login (failed or not) from a remote address: one from another address than the
    gateway shows the gateway doesn't stand for every client."""
    if state.others_seen or key == gateway:
        return state
    return replace(state, others_seen=True)


def count_failure(state: BanState, rules: BanRules, key: str, protocol: str, now: datetime,
                  *, gateway: str | None = None, proxy_noticed: bool = False) -> Counted:
    """Count one failed login of `key` (not exempt, not banned). The one that makes
    `rules.failures` within the window bans it, unless it is the gateway standing for every
    client (Docker's proxy noticed on port 25, or no login from another address yet)."""
    start = now - timedelta(seconds=rules.window)
    recent = tuple(entry for entry in state.failures.get(key, ()) if start < entry[0] <= now)
    recent += ((now, protocol),)
    failures = {k: v for k, v in state.failures.items() if k != key}
    if len(recent) < rules.failures:
        failures[key] = recent
        return Counted(replace(state, failures=_bounded(failures, start)))
    failures = _bounded(failures, start)
    if key == gateway and (proxy_noticed or not state.others_seen):
        return Counted(replace(state, failures=failures), spared=True)
    ban = Ban(since=now, until=now + timedelta(seconds=rules.duration), failures=len(recent),
              protocols=tuple(dict.fromkeys(sorted(p for _, p in recent))))
    return Counted(replace(state, failures=failures, bans={**state.bans, key: ban}), ban=ban)


def _bounded(failures: dict[str, tuple[tuple[datetime, str], ...]],
             start: datetime) -> dict[str, tuple[tuple[datetime, str], ...]]:
    """Failures still inside the window, for at most MAX_TRACKED addresses (the most recent)."""
    kept = {key: entries for key, entries in failures.items() if entries[-1][0] > start}
    if len(kept) <= MAX_TRACKED:
        return kept
    latest = sorted(kept, key=lambda key: kept[key][-1][0], reverse=True)[:MAX_TRACKED]
    return {key: kept[key] for key in latest}


def lifted(state: BanState, key: str) -> tuple[BanState, Ban | None]:
    """The state without `key`'s ban and failures, and the ban it was under (None: none)."""
    ban = state.bans.get(key)
    bans = {k: v for k, v in state.bans.items() if k != key}
    failures = {k: v for k, v in state.failures.items() if k != key}
    return replace(state, bans=bans, failures=failures), ban


def current_bans(state: BanState, now: datetime) -> dict[str, Ban]:
    """The bans in force at `now`, soonest ending first."""
    return dict(sorted(((key, ban) for key, ban in state.bans.items() if ban.until > now),
                       key=lambda item: item[1].until))


# --- what people are told -------------------------------------------------------------------

def protocol_names(protocols: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys(PROTOCOL_NAMES.get(p, p) for p in protocols))


def span(seconds: int) -> str:
    """`45 s`, `10 min`, `1 h`, `2 d` (the largest unit that divides it)."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def ban_line(key: str, ban: Ban, rules: BanRules) -> str:
    return (f"bans: {key} banned until {human_time(ban.until)} after {ban.failures} failed "
            f"logins in {span(rules.window)} ({protocol_names(ban.protocols)}); "
            f"`mailboot ban remove {key}` lifts it")


def refusal(key: str, ban: Ban) -> str:
    """What a banned client is told (IMAP's NO, SMTP's 535 or 421, ManageSieve's NO)."""
    return (f"Too many failed logins from {key}: refused until {human_time(ban.until)}")


def gateway_line(key: str, failures: int, rules: BanRules, proxy_noticed: bool) -> str:
    why = ("port 25 sees every sender at this address too" if proxy_noticed else
           "no login has come from any other address yet")
    return (f"bans: {key} made {failures} failed logins in {span(rules.window)} but can't be "
            f"banned: it is this container's gateway, and {why}, so Docker's userland proxy "
            "makes every client connect from it and a ban would lock everyone out. Publish "
            "the ports without the proxy (\"userland-proxy\": false in /etc/docker/daemon.json "
            "and restart Docker, or run the container with --network host) so bans see each "
            "client's own address")


# --- the state file ---------------------------------------------------------------------------

def state_json(state: BanState) -> bytes:
    document = {
        "version": STATE_VERSION,
        "bans": {key: {"since": machine_time(ban.since), "until": machine_time(ban.until),
                       "failures": ban.failures, "protocols": list(ban.protocols)}
                 for key, ban in state.bans.items()},
        "failures": {key: [[machine_time(when), protocol] for when, protocol in entries]
                     for key, entries in state.failures.items()},
        "others_seen": state.others_seen,
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def parse_state(text: str) -> BanState:
    """A state file's contents. Raises ValueError (KeyError, TypeError as ValueError) for
    anything that isn't one."""
    try:
        document = json.loads(text)
        if document.get("version") != STATE_VERSION:
            raise ValueError(f"version {document.get('version')!r}, not {STATE_VERSION}")
        bans = {str(key): Ban(since=_time(value["since"]), until=_time(value["until"]),
                              failures=int(value["failures"]),
                              protocols=tuple(str(p) for p in value["protocols"]))
                for key, value in document["bans"].items()}
        failures = {str(key): tuple((_time(when), str(protocol)) for when, protocol in entries)
                    for key, entries in document["failures"].items() if entries}
        return BanState(failures, bans, bool(document["others_seen"]))
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from error


def _time(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a time")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.astimezone(UTC)


class BanStore:
    """bans.json and its lock (real state: a file two kinds of process change). Reads need no
    lock (the file is replaced whole); a change reads, changes and writes under an exclusive
    flock on `bans.lock`, which a process of any user can take (it is opened read-only)."""

    def __init__(self, directory: Path, owner: tuple[int, int] | None = None) -> None:
        self.path = directory / STATE_FILE
        self.lock_path = directory / "bans.lock"
        self.owner = owner  # who the file must belong to (the policy process's user)
        self._thread_lock = threading.Lock()  # flock is per open file: threads take this too
        self._damage_said = False

    def read(self) -> BanState:
        """The state; an empty one when there is no file, or one that can't be read (said once,
        and the damaged file is kept beside as bans.json.damaged at the next change)."""
        try:
            return parse_state(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return BanState()
        except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
            if not self._damage_said:
                self._damage_said = True
                log.warning("bans: %s can't be read (%s); counting starts afresh with no bans. "
                            "The damaged file is kept as %s.damaged", self.path, error,
                            self.path.name)
            return BanState()

    def change(self, edit: Callable[[BanState], BanState]) -> BanState:
        """Apply `edit` to the current state under the lock; write the result if it differs.
        Returns the new state. Raises OSError when the directory can't be written."""
        with self._locked():
            before = self.read()
            after = edit(before)
            damaged = self._damaged()
            if after != before or damaged:
                if damaged:  # kept for a look, never parsed again
                    self.path.replace(self.path.with_name(self.path.name + ".damaged"))
                write_atomically(self.path, state_json(after), mode=0o600, owner=self.owner)
            return after

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            descriptor = os.open(self.lock_path, os.O_RDONLY | os.O_CREAT, 0o644)
            try:
                if self.owner is not None and os.fstat(descriptor).st_uid != self.owner[0]:
                    os.fchown(descriptor, *self.owner)
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                yield
            finally:
                os.close(descriptor)  # closing releases the flock

    def _damaged(self) -> bool:
        try:
            parse_state(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            return True
        return False


# --- what the policy process asks -------------------------------------------------------------

class LoginBans:
    """The policy process's questions about logins (real state: the store and what was said).

    `gateway` is the container's default gateway; `proxy_noticed` says whether port 25's check
    noticed Docker's proxy (read at each question: it may notice it later than we start).
    """

    def __init__(self, store: BanStore, rules: BanRules, gateway: str | None = None,
                 proxy_noticed: Callable[[], bool] = lambda: False,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.rules, self.gateway = store, rules, gateway
        self.proxy_noticed, self.clock = proxy_noticed, clock

    def banned(self, address: str) -> tuple[str, Ban] | None:
        """The ban `address` is under now (its key and the ban), or None. Bans that ended are
        said and dropped here, as the first question after their end."""
        if exempt(address, self.rules):
            return None
        key = client_key(address)
        if key is None:
            return None
        now = self.clock()
        state = self.store.read()
        if any(ban.until <= now for ban in state.bans.values()):
            state = self._drop_ended(now)
        ban = ban_of(state, key, now)
        return None if ban is None else (key, ban)

    def report(self, address: str, protocol: str, *, success: bool) -> None:
        """A login's result, as Dovecot reports it after the password check (a login refused
        because of a ban is not reported here: see `policy.authpolicy`)."""
        key = client_key(address)
        if key is None or exempt(address, self.rules):
            return
        if success:
            if not self.store.read().others_seen and key != self.gateway:
                self.store.change(lambda state: seen(state, key, self.gateway))
            return
        now, noticed = self.clock(), self.proxy_noticed()
        said: list[str] = []

        def edit(state: BanState) -> BanState:
            state = seen(state, key, self.gateway)
            if ban_of(state, key, now) is not None:
                return state  # a login already under way when the ban began
            counted = count_failure(state, self.rules, key, protocol, now,
                                    gateway=self.gateway, proxy_noticed=noticed)
            if counted.ban is not None:
                said.append(ban_line(key, counted.ban, self.rules))
            elif counted.spared:
                said.append(gateway_line(key, self.rules.failures, self.rules, noticed))
            return counted.state

        self.store.change(edit)
        for line in said:  # a ban is the bans at work; the gateway is for the operator to fix
            log.log(logging.INFO if line.endswith("lifts it") else logging.WARNING, "%s", line)

    def _drop_ended(self, now: datetime) -> BanState:
        ended: dict[str, Ban] = {}

        def edit(state: BanState) -> BanState:
            state, gone = without_expired(state, now)
            ended.update(gone)
            return state

        try:
            state = self.store.change(edit)
        except OSError as error:
            log.warning("bans: can't write %s (%s); bans that ended stay in the file until it "
                        "can be written", self.store.path, error)
            return without_expired(self.store.read(), now)[0]
        for key, ban in ended.items():
            log.info("bans: the ban of %s ended at %s", key, human_time(ban.until))
        return state
