"""DKIM key rotation for DNS providers without an API, gated by the DNS doctor.

1. `mailboot dkim rotate` (or `import`) makes the next key of each algorithm and prints its
   record; the current key keeps signing (`start_rotation`, `import_key`).
2. The worker (`DkimRotation.step`) asks the domain's authoritative servers (or DNS_RESOLVERS)
   for the next key's record. Once it is served and matches the key, and has been for at least
   its TTL (`rotation.gate`: resolvers that cached its absence have let go, RFC 2308), the next
   key signs: OpenDKIM's tables are rendered again and OpenDKIM reloads them. The log says so,
   and which old record to keep for now.
3. DKIM_ROTATION_GRACE after the switch (mail signed with the old key is still being verified
   meanwhile) the old key moves to `retired/`, and the log says which record to remove.

Every step is written to the domain's state file before it is announced, so a restart resumes
the step it was at. A key never signs while its record is missing or wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from mailboot.base.errors import KeyImportError, MailbootError, UsageError
from mailboot.base.paths import Paths
from mailboot.base.taskstate import JsonObject, Saved, read_object, read_time, time_value
from mailboot.dkim import keys as dkim
from mailboot.dkim import state as dkimstate
from mailboot.dkim.keys import DkimKey
from mailboot.dkim.state import DomainState, Replaced, Role, Slot
from mailboot.dns.answer import Answer, Lookup
from mailboot.records import doctor
from mailboot.records.build import dkim_record
from mailboot.records.doctor import Status
from mailboot.rotation import gate
from mailboot.rotation.gate import when

log = logging.getLogger("mailboot.dkim")

# How often the state files are read while nothing is pending (a rotation is noticed soon).
# With nothing waiting, look again this late: the supervisor runs the worker as soon as
# `mailboot dkim rotate` or `import` changes a domain's key directory (the worker asks it to
# watch them).
IDLE_POLL = timedelta(hours=12)


@dataclass(frozen=True)
class Loaded:
    keys: tuple[DkimKey, ...]
    state: DomainState  # as stored, or what would be stored (the rule before state files)

    def key(self, algorithm: str, selector: str | None) -> DkimKey | None:
        return next((k for k in self.keys
                     if k.algorithm == algorithm and k.selector == selector), None)


def _load(domain: str, directory: Path) -> Loaded:
    """The domain's keys and state; call with the domain's lock held."""
    keys = dkim.load_keys(domain, directory)
    by_algorithm: dict[str, list[str]] = {}
    for key in keys:
        by_algorithm.setdefault(key.algorithm, []).append(key.selector)
    stored = dkimstate.read_state(directory)
    if stored is None:
        stored = DomainState(dkimstate.derived(by_algorithm).slots, stored=True)
    return Loaded(keys, dkimstate.reconcile(stored, by_algorithm))


# --- the commands ---------------------------------------------------------------------------


def start_rotation(paths: Paths, domain: str, algorithms: Sequence[str],
                   now: datetime) -> tuple[DkimKey, ...]:
    """Make the next key of each algorithm (unless one is already waiting); return the keys
    waiting for their records. The current keys keep signing. Raises StateError."""
    directory = paths.dkim_domain_dir(domain)
    with dkimstate.locked(directory):
        loaded = _load(domain, directory)
        state = loaded.state
        for algorithm in algorithms:
            slot = state.slot(algorithm)
            if slot.next is not None:
                continue
            selector = dkim.selector_for(now, algorithm, dkim.taken_selectors(directory))
            dkim.create_key_file(directory, selector, dkim.generate_private_key_pem(algorithm))
            state = state.with_slot(algorithm, replace(slot, next=selector, next_seen=None))
            log.info("dkim: %s: made the next %s key %s; it signs once its record is served",
                     domain, dkim.describe(algorithm), selector)
        dkimstate.write_state(directory, state)
        loaded = _load(domain, directory)
    waiting = [loaded.key(a, loaded.state.slot(a).next) for a in algorithms]
    return tuple(k for k in waiting if k is not None)


def parse_import(pem: bytes) -> tuple[bytes, str]:
    """The key as PKCS#8 PEM and its algorithm; raises KeyImportError when it can't sign."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyImportError("standard input holds no readable, unencrypted PEM private key; "
                             "give the key file as it is (-----BEGIN ... PRIVATE KEY-----); "
                             "nothing was changed") from None
    problem = dkim.key_problem(key)
    if problem is not None:
        raise KeyImportError(f"the key is {problem}; nothing was changed")
    algorithm, _bits, _public = dkim.public_half(key)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()), algorithm


def import_key(paths: Paths, domain: str, selector: str, pem: bytes,
               algorithms: Sequence[str]) -> DkimKey:
    """Store a key from another server as the domain's next key of its algorithm; it signs
    once its record is served. Raises KeyImportError (nothing changed) or UsageError."""
    if not dkim.is_selector(selector):
        raise UsageError(f"--selector: {selector!r} can't be a DKIM selector (lower-case "
                         "letters, digits, inner hyphens, dots)")
    content, algorithm = parse_import(pem)
    if algorithm not in algorithms:
        raise KeyImportError(f"the key is an {algorithm} key, but DKIM_ALGORITHMS is "
                             f"{','.join(algorithms)}; set DKIM_ALGORITHMS=rsa,{algorithm} "
                             "first; nothing was changed")
    directory = paths.dkim_domain_dir(domain)
    with dkimstate.locked(directory):
        if selector in dkim.taken_selectors(directory):
            raise KeyImportError(f"{domain} already has (or had) a key with the selector "
                                 f"{selector}; choose another; nothing was changed")
        loaded = _load(domain, directory)
        slot = loaded.state.slot(algorithm)
        if slot.next is not None:
            raise KeyImportError(f"{domain}'s {algorithm} key {slot.next} is waiting for its "
                                 "record already; import after it signs; nothing was changed")
        dkim.create_key_file(directory, selector, content)
        dkimstate.write_state(directory, loaded.state.with_slot(
            algorithm, replace(slot, next=selector, next_seen=None)))
        key = _load(domain, directory).key(algorithm, selector)
    if key is None:  # made just now, under the lock
        raise MailbootError(f"the imported key {selector} of {domain} vanished")
    return key


# --- the worker's task ----------------------------------------------------------------------


class DkimRotation:
    """Switches to next keys once their records are served; retires replaced keys after the
    grace period. Real state (when it is due, what it last said), hence a class.

    `apply` renders OpenDKIM's tables from the keys' state and has OpenDKIM reload them.
    """

    def __init__(self, paths: Paths, domains: Sequence[str], algorithms: Sequence[str],
                 lookup: Lookup, poll: timedelta, grace: timedelta,
                 apply: Callable[[], None]) -> None:
        self.paths, self.domains, self.algorithms = paths, tuple(domains), tuple(algorithms)
        self.lookup, self.poll, self.grace, self.apply = lookup, poll, grace, apply
        self.due: datetime | None = None
        self.told: dict[str, str] = {}  # record name -> what the log said last about it
        self.next_check: dict[str, datetime] = {}  # record name -> when to ask for it again

    def state(self) -> JsonObject:
        return {"told": dict(self.told),
                "next_check": {name: time_value(when) for name, when in self.next_check.items()}}

    def restore(self, saved: Saved) -> None:
        """Raises StateUnreadable."""
        self.told = {str(name): str(text) for name, text in read_object(
            saved.get("told", {})).items()}
        checks = read_object(saved.get("next_check", {}))
        self.next_check = {str(name): when for name, value in checks.items()
                           if (when := read_time(value)) is not None}

    def step(self, now: datetime) -> datetime:
        if self.due is not None and now < self.due:
            return self.due  # stepped early (a nudge for another task)
        wake, switched = now + IDLE_POLL, False
        for domain in self.domains:
            try:
                domain_wake, changed = self._domain(domain, now)
            except (MailbootError, OSError) as error:
                log.warning("dkim: %s: rotation step failed: %s; trying again at %s", domain,
                            error, when(now + self.poll))
                domain_wake, changed = now + self.poll, False
            wake, switched = min(wake, domain_wake), switched or changed
        if switched:
            self.apply()
            # Said after the tables are written and OpenDKIM was told, not before.
            log.info("dkim: OpenDKIM has the new signing tables; messages from now on are "
                     "signed as said above")
        self.due = wake
        return wake

    def _domain(self, domain: str, now: datetime) -> tuple[datetime, bool]:
        """One domain's pending switches and retirements; (next wake, whether signing changed)."""
        directory = self.paths.dkim_domain_dir(domain)
        if dkimstate.read_state(directory) is None:
            return now + IDLE_POLL, False  # never rotated: nothing waits
        wake, changed = now + IDLE_POLL, False
        with dkimstate.locked(directory):
            loaded = _load(domain, directory)
            state = loaded.state
            for algorithm, slot in loaded.state.slots:
                new_slot, slot_wake, switched = self._slot(loaded, algorithm, slot, now)
                state = state.with_slot(algorithm, new_slot)
                wake, changed = min(wake, slot_wake), changed or switched
            if state != loaded.state:
                dkimstate.write_state(directory, state)
        return wake, changed

    def _slot(self, loaded: Loaded, algorithm: str, slot: Slot,
              now: datetime) -> tuple[Slot, datetime, bool]:
        wake, switched = now + IDLE_POLL, False
        following = loaded.key(algorithm, slot.next)
        if following is not None and algorithm in self.algorithms:
            slot, wake, switched = self._check_next(loaded, following, slot, now)
        kept = []
        for replaced in slot.previous:
            key = loaded.key(algorithm, replaced.selector)
            if replaced.switched is None or key is None:
                kept.append(replaced)
                continue
            retire_at = replaced.switched + self.grace
            if now < retire_at:
                kept.append(replaced)
                wake = min(wake, retire_at)
                continue
            dkim.retire_key(key)
            log.info("dkim: %s: retired the old key %s (moved to %s/); remove its record now: "
                     "%s TXT at the DNS provider of %s", key.domain, key.selector, dkim.RETIRED,
                     key.record_name, key.domain)
        return replace(slot, previous=tuple(kept)), wake, switched

    def _check_next(self, loaded: Loaded, key: DkimKey, slot: Slot,
                    now: datetime) -> tuple[Slot, datetime, bool]:
        record = dkim_record(key, signing=False, role=Role.NEXT)
        due = self.next_check.get(record.name)
        if due is not None and now < due:
            return slot, due, False  # asked recently: every DNS_CHECK_INTERVAL at most
        slot, wake, switched = self._judge_next(loaded, key, slot, now)
        self.next_check[record.name] = wake
        return slot, wake, switched

    def _judge_next(self, loaded: Loaded, key: DkimKey, slot: Slot,
                    now: datetime) -> tuple[Slot, datetime, bool]:
        record = dkim_record(key, signing=False, role=Role.NEXT)
        answer = self.lookup(record.name, "TXT")
        finding = doctor.check_record(record, _answering(record.name, answer, self.lookup))
        if finding.status is Status.UNKNOWN:
            return slot, now + self.poll, False  # no answer: what was seen stays seen
        expected = record.value or ""
        seen = None if slot.next_seen is None else gate.Sighting(expected, slot.next_seen)
        verdict = gate.judge(answer, expected, finding.status is Status.OK, seen, now)
        slot = replace(slot, next_seen=verdict.since)
        if verdict.stage is gate.Stage.UNKNOWN:
            return slot, now + self.poll, False
        if verdict.stage is gate.Stage.NOT_SERVED:
            self._tell(record.name, f"dkim: {key.domain}: the next key {key.selector} waits for "
                       f"its record; the current key keeps signing. {finding.hint}")
            return slot, now + self.poll, False
        if verdict.stage is gate.Stage.WAITING:
            self._tell(record.name, f"dkim: {key.domain}: {record.name} TXT is served and "
                       f"matches the next key; it signs {verdict.waiting_text()}")
            return slot, verdict.wake(now, self.poll), False
        old = loaded.key(key.algorithm, slot.signing)
        previous = slot.previous + ((Replaced(old.selector, now),) if old is not None else ())
        if old is None:
            log.info("dkim: %s: %s (%s) signs now: its record %s TXT is served", key.domain,
                     key.selector, key.algorithm, record.name)
        else:
            log.info("dkim: %s: %s (%s) signs now instead of %s: its record %s TXT is served. "
                     "Keep the old record %s TXT published until %s; the log says when to "
                     "remove it", key.domain, key.selector, key.algorithm, old.selector,
                     record.name, old.record_name, when(now + self.grace))
        self.told.pop(record.name, None)
        return Slot(key.selector, None, None, previous), now + IDLE_POLL, True

    def _tell(self, name: str, text: str) -> None:
        if self.told.get(name) != text:
            log.info("%s", text)
        self.told[name] = text


def _answering(name: str, answer: Answer, lookup: Lookup) -> Lookup:
    """The lookup, with the answer already got for `name` TXT (one question, one TTL)."""

    def ask(qname: str, rtype: str) -> Answer:
        if qname.rstrip(".").lower() == name.lower() and rtype.upper() == "TXT":
            return answer
        return lookup(qname, rtype)

    return ask
