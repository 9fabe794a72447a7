"""Waiting in tests: ask again until a condition holds, instead of sleeping a fixed time.

A fixed sleep is too short on a busy CI machine and too long everywhere else; a hand-written
deadline loop repeats itself in every module and words its failure differently each time.
`eventually` asks, returns the first true answer, and fails naming what it waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(condition: Callable[[], T | None], timeout: float, what: str | Callable[[], str],
               *, interval: float = 0.5,
               ignoring: tuple[type[BaseException], ...] = ()) -> T:
    """Call `condition` every `interval` seconds until it returns a true value, and return
    that value. An exception of a type in `ignoring` counts as "not yet" (a port that does not
    answer yet); any other exception ends the wait at once (the container stopped, say).

    Raises AssertionError after `timeout` seconds, saying `what` was awaited (a function is
    called only then, so it can show the log as it is at the end), and the last exception.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = condition()
        except ignoring as error:
            last: BaseException | None = error
        else:
            if answer:
                return answer
            last = None
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"waited {timeout:g} s for {said}"
                                 + (f" (last: {last!r})" if last is not None else "")) from last
        time.sleep(interval)
