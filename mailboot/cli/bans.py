"""`mailboot ban list|remove`: the addresses banned for failed logins (`logins.bans`).

The policy process counts and bans; these commands read its state on the volume and lift a ban
in it, under the same lock, as the policy process's user (so the file stays its own).
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from typing import Any, TextIO

from mailboot.base.errors import StateError, UsageError
from mailboot.base.formats import human_time, machine_time
from mailboot.base.paths import Paths
from mailboot.base.users import user_ids
from mailboot.daemons.postfix import POLICY_USER
from mailboot.logins.bans import (
    PROTOCOL_NAMES,
    Ban,
    BanState,
    BanStore,
    client_key,
    current_bans,
    lifted,
    protocol_names,
)
from mailboot.settings.table import Settings

log = logging.getLogger(__name__)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ban = commands.add_parser("ban", help="list or lift the bans of addresses that failed to "
                              "log in too often")
    actions = ban.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the banned addresses, soonest ending first")
    listing.add_argument("--json", action="store_true", help="a JSON array, one object per ban")
    listing.set_defaults(run=run_list)
    remove = actions.add_parser("remove", help="lift an address's ban now (and forget its "
                                "failed logins)")
    remove.add_argument("address", help="the address, as `ban list` shows it (or any address "
                        "of a banned IPv6 /64)")
    remove.set_defaults(run=run_remove)


def ban_json(address: str, ban: Ban) -> dict[str, Any]:
    """One ban as `status --json` and `ban list --json` show it."""
    return {"address": address, "since": machine_time(ban.since), "until": machine_time(ban.until),
            "failures": ban.failures, "protocols": [PROTOCOL_NAMES.get(p, p)
                                                    for p in ban.protocols]}


def ban_text(address: str, ban: Ban) -> str:
    """One ban as the screens show it."""
    return (f"{address} until {human_time(ban.until)} ({ban.failures} failed logins: "
            f"{protocol_names(ban.protocols)})")


def store(settings: Settings) -> BanStore:
    return BanStore(Paths(settings.data_dir).policy_state, owner=user_ids(POLICY_USER))


def run_list(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    bans = current_bans(store(settings).read(), datetime.now(UTC))
    if arguments.json:
        out.write(json.dumps([ban_json(address, ban) for address, ban in bans.items()],
                             indent=2) + "\n")
        return 0
    if settings.login_ban_failures == "off":
        out.write("login bans are off (LOGIN_BAN_FAILURES=off)\n")
    for address, ban in bans.items():
        out.write(ban_text(address, ban) + "\n")
    if not bans and settings.login_ban_failures != "off":
        out.write("no address is banned\n")
    return 0


def run_remove(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Lift a ban; raises UsageError for what isn't an address or an address not banned,
    StateError when the state can't be written."""
    key = client_key(arguments.address.split("/")[0])
    if key is None:
        raise UsageError(f"{arguments.address!r} is not an IP address; give one as "
                         "`mailboot ban list` shows it")
    now = datetime.now(UTC)
    found: list[bool] = []

    def edit(state: BanState) -> BanState:
        state, ban = lifted(state, key)
        found.append(ban is not None and ban.until > now)
        return state

    states = store(settings)
    try:
        states.change(edit)
    except OSError as error:
        reason = error.strerror or str(error)
        raise StateError(f"the bans in {states.path} can't be changed ({reason}); run this "
                         "inside the container, as root") from error
    if not found[0]:
        raise UsageError(f"{key} is not banned (`mailboot ban list` shows the bans); its "
                         "failed logins, if any, are forgotten")
    out.write(f"bans: the ban of {key} was lifted; it may log in again\n")
    return 0
