"""Every error mailboot explains to the user, each with the exit code the command line gives it.

Every message says what failed, why, and what to do about it; `cli.py` is the only place that
turns these into text on stderr and an exit code.
"""

from __future__ import annotations

from datetime import datetime

# sysexits.h: EX_USAGE, "the command was used incorrectly".
EXIT_USAGE = 64
# sysexits.h: EX_CONFIG, "something was found in an unconfigured or misconfigured state".
EXIT_CONFIG = 78
# sysexits.h: EX_DATAERR, "the input data was incorrect".
EXIT_DATAERR = 65
EXIT_FAILURE = 1


class MailbootError(Exception):
    """A failure that mailboot explains to the user; the message is shown as it is."""

    exit_code = EXIT_FAILURE


class UsageError(MailbootError):
    """A command-line argument that can't be honoured (the settings themselves are fine)."""

    exit_code = EXIT_USAGE


class ConfigError(MailbootError):
    """One or more settings are wrong; carries every problem so all are reported at once."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(problems))


class DnsNotReady(MailbootError):
    """DNS_CHECK=strict and required records are missing or wrong."""

    exit_code = EXIT_CONFIG


class StateError(MailbootError):
    """Something below DATA_DIR can't be used as it is (unreadable, corrupt, not writable).

    It is a configuration problem of the installation: the user must fix the file or directory,
    so it exits like a bad setting. mailboot never "repairs" state by deleting it.
    """

    exit_code = EXIT_CONFIG


class AccountError(MailbootError):
    """A mailbox or alias change that can't be made as asked (unknown address, taken name...)."""

    exit_code = EXIT_DATAERR


class KeyImportError(MailbootError):
    """A DKIM key offered to `mailboot dkim import` that can't be used (nothing was changed)."""

    exit_code = EXIT_DATAERR


class CommandError(MailbootError):
    """A program we ran failed; the message carries what it said."""


class IssueError(MailbootError):
    """An attempt to get a certificate failed; `retry_at` is set when the CA said when to retry.

    Never fatal: the worker logs it and tries again later, serving the current certificate.
    """

    def __init__(self, message: str, retry_at: datetime | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class ArchiveError(MailbootError):
    """A backup archive that can't be restored as it is (truncated, damaged, not ours)."""

    exit_code = EXIT_DATAERR
