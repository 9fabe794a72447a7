"""Run every benchmark and rewrite BENCHMARKS.md: `scripts/benchmark` (see the README).

Figures are medians over several runs, measured the same way each time, on the image built from
this checkout. Nothing here asserts a time: the targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchmarks import accounts, acme, boots, footprint, imap, mox, ready, throughput, yardstick
from benchmarks.common import ROOT, Report, build_image, machine_lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/benchmark", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--messages", type=int, default=10_000,
                        help="messages per throughput run")
    parser.add_argument("--max-domains", type=int, default=1000,
                        help="largest domain count for the boot figures")
    parser.add_argument("--idle", type=int, default=60,
                        help="seconds a container idles before its memory is read")
    parser.add_argument("--ready-wait", type=int, default=600,
                        help="seconds a first start waits for its DNS records (ready section)")
    parser.add_argument("--imap-mailboxes", type=int, default=imap.MAILBOXES,
                        help="mailboxes for the IMAP section (two IDLE connections each)")
    parser.add_argument("--imap-hold", type=float, default=60,
                        help="seconds the IMAP section holds its connections")
    parser.add_argument("--only", choices=("boot", "footprint", "acme", "ready", "throughput",
                                           "import", "imap", "yardstick", "beside-mox"),
                        action="append", help="run only these sections (repeatable)")
    parser.add_argument("--mox-yardstick", type=Path,
                        default=Path(os.environ.get("MAILBOOT_MOX_YARDSTICK",
                                                    mox.DEFAULT_YARDSTICK)),
                        help="the mox yardstick's directory (default ../shared/yardsticks/mox; "
                        "MAILBOOT_MOX_YARDSTICK)")
    parser.add_argument("--mox-git-dir", default=os.environ.get("MOX_GIT_DIR"),
                        help="a bare git mirror of github.com/mjl-/mox, to build the mox image "
                        "when it is missing (default: MOX_GIT_DIR)")
    parser.add_argument("--mox-measure-args", default="",
                        help="more arguments for the yardstick's measure.py, e.g. "
                        "'--runs 2 --mem-rounds 1' for a quick trial (default: its own, ~11 min)")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    arguments = parser.parse_args()
    started = time.monotonic()
    report = Report()
    if not arguments.only or "beside-mox" in arguments.only:
        mox.prepare(arguments)
    build_image()
    sections = {"boot": boots.run, "yardstick": yardstick.run, "beside-mox": mox.run,
                "footprint": footprint.run,
                "acme": acme.run, "ready": ready.run, "throughput": throughput.run,
                "import": accounts.run, "imap": imap.run}
    for name, section in sections.items():
        if arguments.only and name not in arguments.only:
            continue
        section(report, arguments)
        print(report.last_section(), file=sys.stderr, flush=True)
    minutes = (time.monotonic() - started) / 60
    previous = arguments.output.read_text() if arguments.output.exists() else ""
    arguments.output.write_text(report.markdown(machine_lines(), minutes, previous))
    print(f"benchmark: wrote {arguments.output} in {minutes:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
