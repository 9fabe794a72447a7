"""`mailboot reports [--json] [--days N]`: what the DMARC and TLS reports of the last days say
(`inbound.reports` keeps one summary per domain and UTC day).

Per domain and day: who sent mail as us, from which address (with its PTR), how many messages,
how many DKIM- and SPF-aligned, how many failed DMARC; a sender that failed DMARC as us from an
address that isn't ours (the server's public addresses) is called out. Then which sending
organisations reached us with TLS and which failed, why, and at which of our MX hosts.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any, TextIO

from mailboot.base.paths import Paths
from mailboot.inbound import reports
from mailboot.inbound.reports import printable
from mailboot.settings.table import Settings

DEFAULT_DAYS = 14


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("reports", help="what the DMARC and TLS reports receivers "
                                 "sent say: who sends as us, and who failed our TLS")
    parser.add_argument("--json", action="store_true", help="one JSON object per domain and day")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS,
                        help=f"how many UTC days back, today included (default {DEFAULT_DAYS})")
    parser.set_defaults(run=run_reports)


def our_addresses(settings: Settings, paths: Paths) -> set[str]:
    """The server's public addresses (configured, else found at the last boot)."""
    # Here, not at the top: it loads dnspython, which `mailboot run` (cli.main) must not wait for.
    from mailboot.network import found as found_addresses

    effective = found_addresses.effective_settings(settings, paths)
    return {str(address) for address in effective.public_addresses}


def run_reports(arguments: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    paths = Paths(settings.data_dir)
    directory = reports.reports_directory(paths.policy_state)
    days = max(1, arguments.days)
    summaries = reports.recent_summaries(directory, datetime.now(UTC).date(), days)
    addresses = our_addresses(settings, paths)
    if arguments.json:
        out.write(json.dumps([reports.summary_json(s, addresses) for s in summaries],
                             indent=2) + "\n")
        return 0
    out.write(reports_text(settings, summaries, addresses, days))
    return 0


def reports_text(settings: Settings, summaries: list[dict[str, Any]], addresses: set[str],
                 days: int) -> str:
    asked = [uri.removeprefix("mailto:") for uri in (*settings.dmarc_rua, *settings.tlsrpt_rua)]
    if not summaries:
        where = (f"they arrive at {', '.join(asked)}, usually once a day" if asked else
                 "DMARC_RUA and TLSRPT_RUA are off: no reports are asked for")
        return f"no DMARC or TLS reports in the last {days} days ({where})\n"
    lines: list[str] = []
    for summary in summaries:
        lines += day_lines(summary, addresses)
    return "\n".join(lines) + "\n"


def day_lines(summary: dict[str, Any], addresses: set[str]) -> list[str]:
    """One domain's day: its DMARC senders, then its TLS reporters."""
    lines = []
    dmarc = summary.get("dmarc_reports", [])
    if dmarc:
        orgs = ", ".join(dict.fromkeys(printable(str(r.get("org"))) for r in dmarc))
        lines.append(f"{summary['domain']} {summary['day']}: DMARC, {len(dmarc)} reports "
                     f"({orgs})")
        for source in reports.sources(summary, addresses):
            name = printable(source.ptr) if source.ptr else "no PTR"
            mark = ("  <- NOT OURS, FAILS DMARC" if source.called_out
                    else " (ours)" if source.ours else "")
            lines.append(f"  {source.address} ({name}){mark}: {source.messages} messages, "
                         f"DKIM aligned {source.dkim_aligned}, SPF aligned "
                         f"{source.spf_aligned}, failed DMARC {source.failed}")
    tls = summary.get("tls", {})
    if tls:
        lines.append(f"{summary['domain']} {summary['day']}: TLS, "
                     f"{len(summary.get('tls_reports', []))} reports")
        for organisation, entry in sorted(tls.items()):
            results = ", ".join(f"{printable(k)} {v}"
                                for k, v in sorted(entry.get("results", {}).items()))
            where = (f" at {', '.join(printable(mx) for mx in entry['mx'])}" if entry.get("mx")
                     else "")
            why = f" ({results}{where})" if results else ""
            lines.append(f"  {printable(organisation)}: {entry.get('successful', 0)} sessions "
                         f"with TLS, {entry.get('failed', 0)} failed{why}")
    return lines
