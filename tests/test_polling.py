"""tests/polling.py: the one way the tests wait for a condition."""

from __future__ import annotations

import pytest

from tests.polling import eventually


def test_eventually_returns_the_first_true_answer() -> None:
    answers = iter([None, 0, "", "found", "later"])
    assert eventually(lambda: next(answers), 5, "an answer", interval=0) == "found"


def test_eventually_waits_through_the_exceptions_it_is_told_to_ignore() -> None:
    calls: list[int] = []

    def listening() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("not listening yet")
        return len(calls)

    assert eventually(listening, 5, "a listener", interval=0, ignoring=(OSError,)) == 3


def test_eventually_stops_at_an_exception_it_was_not_told_to_ignore() -> None:
    calls: list[int] = []

    def stopped() -> bool:
        calls.append(1)
        raise AssertionError("the container stopped")

    with pytest.raises(AssertionError, match="the container stopped"):
        eventually(stopped, 5, "a banner", interval=0)
    assert calls == [1]


def test_eventually_fails_naming_what_it_waited_for_described_once_at_the_end() -> None:
    described: list[str] = []

    def what() -> str:
        described.append("x")
        return "the READY line; the log ends: ..."

    with pytest.raises(AssertionError,
                       match=r"^waited 0\.05 s for the READY line; the log ends: \.\.\.$"):
        eventually(lambda: False, 0.05, what, interval=0.01)
    assert described == ["x"]


def test_eventually_names_the_last_ignored_exception() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("refused")

    with pytest.raises(AssertionError, match=r"waited 0\.05 s for port 25 \(last: "
                                             r"ConnectionRefusedError\('refused'\)\)"):
        eventually(refused, 0.05, "port 25", interval=0.01, ignoring=(OSError,))
