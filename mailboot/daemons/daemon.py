"""What the boot and the supervisor know of a daemon: one frozen record per program."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailboot.paths import Paths

Action = Callable[[Paths], None]


def _nothing(_paths: Paths) -> None:
    return None


@dataclass(frozen=True)
class Daemon:
    """A program that stays in the foreground until it is asked to stop, and its duties."""

    name: str
    argv: tuple[str, ...]
    # How to stop it when SIGTERM is not enough: `postfix start-fg` is a script whose master
    # runs in a session of its own and outlives a signal to the script.
    stop_argv: tuple[str, ...] = ()
    # Our own worker needs the settings; the daemons get a minimal environment without them.
    inherit_environment: bool = False
    # Templates below templates/, rendered to the same path below /etc; secret ones are 0600.
    templates: tuple[str, ...] = ()
    secret_templates: frozenset[str] = frozenset()
    # The daemon's own parser judges the rendered files; raises MailbootError with what it said.
    check: Action = _nothing
    # State directories and ownership it insists on, made before it starts.
    prepare: Action = _nothing
    # Re-read the certificate (and tables) without dropping connections, if it is running.
    reload: Action = _nothing
