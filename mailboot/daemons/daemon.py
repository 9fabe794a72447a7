"""What the boot and the supervisor know of a daemon: one frozen record per program."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailboot.base.paths import Paths

if TYPE_CHECKING:  # the supervisor imports the daemons' modules, and never needs the settings
    from mailboot.settings.table import Settings

Action = Callable[[Paths], None]
# The values a daemon's templates use, computed from the settings (templates hold no logic).
Context = Callable[["Settings", Paths], Mapping[str, Any]]


def _nothing(_paths: Paths) -> None:
    return None


def _no_values(_settings: Settings, _paths: Paths) -> Mapping[str, Any]:
    return {}


def _always(_settings: Settings) -> bool:
    return True


@dataclass(frozen=True)
class Daemon:
    """A program that stays in the foreground until it is asked to stop, and its duties."""

    name: str
    argv: tuple[str, ...]
    # How to stop it when SIGTERM is not enough (a script whose daemon runs in a session of its
    # own and outlives a signal to the script, as `postfix start-fg`'s master would).
    stop_argv: tuple[str, ...] = ()
    # Templates below templates/, rendered to the same path below /etc; secret ones are 0600.
    templates: tuple[str, ...] = ()
    secret_templates: frozenset[str] = frozenset()
    # Programs the daemon runs (0755), such as the Sieve scripts' helpers.
    executable_templates: frozenset[str] = frozenset()
    # Its own values for the templates; every daemon's are offered to every template (Postfix's
    # main.cf names OpenDKIM's milter socket), and no two daemons may give the same name.
    context: Context = _no_values
    # The daemon's own parser judges the rendered files; raises MailbootError with what it said.
    check: Action = _nothing
    # State directories and ownership it insists on, made before it starts.
    prepare: Action = _nothing
    # Re-read the certificate (and tables) without dropping connections, if it is running.
    reload: Action = _nothing
    # Whether the settings call for it at all: one that isn't wanted is not started (its files
    # are still rendered and checked, so turning it on later changes nothing else).
    wanted: Callable[[Settings], bool] = _always
