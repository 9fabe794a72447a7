"""Our log lines: `mailboot: ` first, and the level from warning up, so what asks for a look can
be found in `docker logs` (tests/container/test_upgrade.py reads a whole log that way)."""

from __future__ import annotations

import logging

import pytest

from mailboot.base import logs


def test_information_is_plain_and_warnings_and_errors_say_their_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("mailboot.test_logs")
    logger.handlers[:] = [logs.stderr_handler()]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.debug("left out")
        logger.info("boot: %s done", "render")
        logger.warning("tls: keeping the current certificate: %s", "the CA is down")
        logger.error("https: can't serve port 443")
        logger.critical("everything is on fire")
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("boot: %s failed", "announce")
    finally:
        logger.handlers[:] = []
    lines = capsys.readouterr().err.splitlines()
    assert lines[:5] == [
        "mailboot: boot: render done",
        "mailboot: warning: tls: keeping the current certificate: the CA is down",
        "mailboot: error: https: can't serve port 443",
        "mailboot: critical: everything is on fire",
        "mailboot: error: boot: announce failed",
    ]
    assert lines[5] == "Traceback (most recent call last):" and lines[-1] == "ValueError: bad"
