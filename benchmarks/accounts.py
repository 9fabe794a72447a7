"""Bulk import: `mailboot account import` of 10,000 mailboxes into a running server.

Each run starts a fresh container and pipes it 10,000 lines of `address<TAB>{SSHA512}hash`
(hashes as another server's database would hand them over), timed from `docker exec` to its
exit: every line checked, one write of the passwd-file, Postfix's tables rendered and reloaded,
and Dovecot seeing the new file. Then 20 lines with plain passwords, which are hashed with
bcrypt (cost 12) on every core, and `account list` over the 10,020 mailboxes (with each one's
use, from Dovecot).
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import Figure, Report, create_mail, median, runs_text
from tests.container.clients import ssha512

BULK = 10_000
PLAIN = 20


def one_run() -> tuple[float, float, float]:
    """Seconds for the hashed import, per plain password, and for the listing."""
    mail = create_mail({"MAIL_DOMAINS": "example.com"})
    try:
        mail.start_and_wait()
        hashed = "".join(f"user{n}@example.com\t{ssha512(f'password {n}')}\n"
                         for n in range(BULK))
        started = time.monotonic()
        mail.exec("mailboot", "account", "import", stdin=hashed)
        bulk = time.monotonic() - started
        plain = "".join(f"plain{n}@example.com\tplain password {n}\n" for n in range(PLAIN))
        started = time.monotonic()
        mail.exec("mailboot", "account", "import", stdin=plain)
        per_plain = (time.monotonic() - started) / PLAIN
        started = time.monotonic()
        mail.exec("mailboot", "account", "list", "--json")
        listing = time.monotonic() - started
        return bulk, per_plain, listing
    finally:
        mail.remove()


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("Bulk import", __doc__ or "")
    runs = [one_run() for _ in range(arguments.runs)]
    bulk, plain, listing = ([r[i] for r in runs] for i in range(3))
    figures += [
        Figure(f"import of {BULK:,} accounts with hashes", f"{median(bulk):.1f} s", "< 60 s",
               runs_text(bulk)),
        Figure("import of plain passwords, per password (bcrypt on every core)",
               f"{median(plain):.2f} s", "", runs_text(plain)),
        Figure(f"`account list --json` over {BULK + PLAIN:,} mailboxes", f"{median(listing):.1f} s",
               "", runs_text(listing)),
    ]
