"""A certificate key rollover that never leaves DANE senders without a matching TLSA record.

The order is RFC 7671 §8.1's "current + next", the same gated pattern as a DKIM rotation:
1. the next key's TLSA record is printed from the start, for the user to publish ahead of time;
2. `mailboot tls rollover` asks for the switch; the worker makes it only once the authoritative
   servers (or DNS_RESOLVERS) have served that record for its TTL (`rotation.gate`, as a DKIM
   rotation waits: a sender's resolver may hold the TLSA set without it until then, and would
   refuse a certificate with the new key); until then the certificate keeps its key. The time
   the record was first seen is kept in DATA_DIR/tls/keys, so a restart resumes the wait;
3. after the switch a certificate is ordered with the new key; once it is served, the log says
   that the old key's record may go (and a new next key's record is printed).

`KeyRollover` wraps the ACME keeper and steps it right after a switch, so the certificate with
the new key is ordered at once; a restart resumes from the files in DATA_DIR/tls/keys.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import assert_never

from mailboot.acme.keeper import Keeper, when
from mailboot.base.errors import MailbootError
from mailboot.base.paths import Paths
from mailboot.base.taskstate import JsonObject, Saved, read_object, read_text
from mailboot.dns.answer import Lookup
from mailboot.dns.lookup import DnsLookup
from mailboot.dns.names import hostname_zone, tlsa_name
from mailboot.rotation import gate
from mailboot.settings.table import Settings, TlsMode
from mailboot.tls import certificates, dane
from mailboot.tls import keys as tlskeys

log = logging.getLogger("mailboot.tls")

# How often to look again with no request pending: the supervisor runs the worker as soon as
# `mailboot tls rollover` writes its request file (the worker asks it to watch that file).
IDLE_POLL = timedelta(hours=12)


def _requested(what: str) -> str:
    return (f"tls: key rollover requested: waiting until {what}; the certificate keeps its key "
            "meanwhile")


def _sighting(kept: tuple[str, datetime] | None) -> gate.Sighting | None:
    return None if kept is None else gate.Sighting(*kept)


def for_keeper(settings: Settings, paths: Paths, keeper: Keeper) -> Keeper:
    """The keeper, wrapped with the rollover in TLS_MODE=acme (the only mode with kept keys)."""
    if settings.tls_mode is not TlsMode.ACME:
        return keeper
    return KeyRollover(settings, paths, keeper, DnsLookup(settings.dns_resolvers),
                       timedelta(seconds=settings.dns_check_interval))


class KeyRollover:
    """Real state (what was told, when the keeper is due), hence a class; `step` as a keeper."""

    def __init__(self, settings: Settings, paths: Paths, keeper: Keeper, lookup: Lookup,
                 poll: timedelta) -> None:
        self.settings, self.paths, self.keeper = settings, paths, keeper
        self.lookup, self.poll = lookup, poll
        self.told: str | None = None
        self.name = tlsa_name(settings.hostname)

    def state(self) -> JsonObject:
        return {"told": self.told, "keeper": self.keeper.state()}

    def restore(self, saved: Saved) -> None:
        """Raises StateUnreadable."""
        self.told = read_text(saved.get("told"))
        self.keeper.restore(read_object(saved.get("keeper", {})))

    def step(self, now: datetime) -> datetime:
        try:
            wake = self._rollover(now)
        except (MailbootError, OSError) as error:
            wake = now + self.poll
            log.warning("tls: key rollover: %s; trying again at %s", error, when(wake))
        # The keeper returns its own time unchanged when stepped early (the worker steps every
        # task early on a nudge), and orders at once when the live key is not the kept one.
        keeper_wake = self.keeper.step(now)
        self._announce_served()
        return min(wake, keeper_wake)

    def _rollover(self, now: datetime) -> datetime:
        target = tlskeys.requested(self.paths)
        if target is None:
            return now + IDLE_POLL
        waiting, wake = self._waiting_for(target, now)
        if waiting is not None:
            if waiting != self.told:
                log.info("%s", waiting)
            self.told = waiting
            return wake
        old = tlskeys.switch(self.paths, now)
        keys = tlskeys.ensure_keys(self.paths)
        log.info("tls: key rollover: switched to the key of %s TLSA %s; ordering a certificate "
                 "with it. Publish the record of the new next key now: %s TLSA %s. Keep %s TLSA "
                 "%s until the log says the new certificate is served", self.name, keys.current,
                 self.name, keys.next, self.name, old)
        self.told = None
        return now + IDLE_POLL

    def _waiting_for(self, target: str, now: datetime) -> tuple[str | None, datetime]:
        """What the switch waits for, as the log line to say, and when to look again; None when
        it may happen now."""
        zone = hostname_zone(self.settings.hostname, self.settings.domains)
        signing = dane.zone_signing(zone, self.lookup)
        if signing.state is dane.Signing.UNSIGNED:
            return None, now  # no sender can use a TLSA record there: nothing to wait for
        if signing.state is dane.Signing.UNKNOWN:
            return _requested(signing.why), now + self.poll
        answer = self.lookup(self.name, "TLSA")
        expected = tlskeys.normal_tlsa(target)
        verdict = gate.judge(answer, expected,
                             expected in {tlskeys.normal_tlsa(v) for v in answer.values},
                             _sighting(tlskeys.rollover_seen(self.paths)), now)
        tlskeys.note_rollover_seen(self.paths, None if verdict.sighting is None else (
            verdict.sighting.value, verdict.sighting.since))
        match verdict.stage:
            case gate.Stage.UNKNOWN:
                return (_requested(f"{self.name} TLSA can be looked up ({answer.error})"),
                        now + self.poll)
            case gate.Stage.NOT_SERVED:
                return (_requested(f"{self.name} TLSA {target} is served by the DNS: add it at "
                                   f"the DNS provider of {zone}")), now + self.poll
            case gate.Stage.WAITING:
                # Senders' resolvers may hold the TLSA set without it for its TTL, and would
                # refuse a certificate with the new key meanwhile (RFC 7671 §8.1).
                return (f"tls: key rollover: {self.name} TLSA {target} is served and matches "
                        f"the next key; the switch happens {verdict.waiting_text()}; the "
                        "certificate keeps its key meanwhile"), verdict.wake(now, self.poll)
            case gate.Stage.GO:
                return None, now
            case _:
                assert_never(verdict.stage)

    def _announce_served(self) -> None:
        """Once the certificate with the new key is served, the old key's record may go."""
        old = tlskeys.retiring(self.paths)
        if old is None:
            return
        live = certificates.read_live(self.paths)
        if live is None or live.source != "acme" or not tlskeys.is_current_key(
                self.paths, live.key_path.read_bytes()):
            return
        log.info("tls: key rollover done: the certificate with the new key is served; remove "
                 "%s TLSA %s now (keep the current and next keys' records)", self.name, old)
        tlskeys.retired_done(self.paths)
