"""The "Beside mox" benchmark's reading of the yardstick's measure.py results (benchmarks/mox.py).

The sample is measure.py's --json output (../shared/yardsticks/mox/measure.py) of a trial run
with `--runs 2 --mem-rounds 1`, shortened to one process per memory sample and the keys it
writes kept as they are.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from benchmarks.mox import figures, parse_results, warm_starts


def banner_run(banner: float | None, own: float | None) -> dict[str, Any]:
    return {"stop_s": 1.134, "banner_s": banner, "exec_s": 0.158, "exec_to_banner_s": own,
            "docker_start_returned_s": 0.2, "attempts": 10, "banner": "220 mail.example.com",
            "poll": "overlap"}


def memory_sample(pss_kb: int, rss_kb: int, stats: str, stats_bytes: int | None,
                  nprocs: int) -> dict[str, Any]:
    return {"pid_source": "cgroup.procs", "nprocs": nprocs, "pss_kb": pss_kb, "rss_kb": rss_kb,
            "docker_stats": stats, "docker_stats_bytes": stats_bytes,
            "cgroup": {"cgroup_usage_bytes": 1}, "banner_s": None, "probe": "none",
            "sampled_after_s": 60.0,
            "procs": [{"pid": 1, "comm": "mox", "pss_kb": pss_kb, "rss_kb": rss_kb,
                       "pss_anon_kb": 1, "pss_file_kb": 1}]}


def image(ref: str, image_id: str, size: int) -> dict[str, Any]:
    return {"ref": ref, "id": image_id, "created": "2026-12-05T13:00:00Z", "size": size,
            "base": "debian:trixie-slim", "base_size": 209_901_046,
            "growth": size - 209_901_046}


SAMPLE: dict[str, Any] = {
    "date": "2026-12-05T14:08:05+00:00",
    "machine": {"kernel": "6.18.44", "cpu": "AMD EPYC", "ncpu": 2, "mem_total_kb": 24_000_000,
                "docker": "20.10.24+dfsg1", "cgroup": "v1"},
    "params": {"runs": 2, "mem_rounds": 1, "mem_delay": 60.0, "poll": "overlap",
               "settle": 10.0},
    "targets": [{"label": "mox", "name": "mox-yard", "port": 22625},
                {"label": "mailboot", "name": "mb-yard", "port": 22525}],
    "versions": {"mox": "(devel)-go1.24.4\nlinux/amd64"},
    "images": {"mox": image("mox-yardstick:latest", "sha256:8580d8959ee5aa", 253_578_230),
               "mailboot": image("mailboot:main", "sha256:2d84dc669e59bb", 350_200_000)},
    "banner": {"mox": [banner_run(0.202, 0.044), banner_run(0.233, 0.044)],
               "mailboot": [banner_run(0.567, 0.389), banner_run(0.612, 0.425)]},
    "memory": {"mox": [memory_sample(37_376, 55_603, "16.19MiB", 16_976_445, 2)],
               "mailboot": [memory_sample(45_056, 190_362, "40.63MiB", 42_603_773, 23)]},
}


def rows(results: dict[str, Any], warm: str = "") -> dict[str, tuple[str, str, str]]:
    """figure name -> (value, target, runs), from the results as they come from a file."""
    measured = parse_results(json.loads(json.dumps(results)))
    return {f.name: (f.value, f.target, f.runs) for f in figures(measured, warm)}


BANNER = "warm `docker start` → SMTP 220 banner"
OWN = "container exec → SMTP 220 banner (the server's own share)"
PSS = "idle memory 60 s after a warm start, sum of PSS"
GROWTH = "image growth over debian:trixie-slim"


def test_parse_results_reads_each_side_in_run_order() -> None:
    measured = parse_results(SAMPLE)
    assert measured.mox.banner == (0.202, 0.233)
    assert measured.mailboot.own_share == (0.389, 0.425)
    assert measured.mailboot.pss_mib == (44.0,)
    assert measured.mox.processes == (2,)
    assert measured.mox.stats_mib[0] == pytest.approx(16.19, abs=0.01)
    assert measured.mox.growth_mb == pytest.approx(43.677184)
    assert measured.mailboot.reference == "mailboot:main"
    assert measured.mox_version == "(devel)-go1.24.4 linux/amd64"  # one line, for the notes
    assert (measured.mem_delay, measured.poll, measured.docker) == (
        60.0, "overlap", "20.10.24+dfsg1")


def test_figures_give_mox_mailboot_and_the_ratio_against_the_issue_targets() -> None:
    found = rows(SAMPLE, "3 of 3")
    assert found[f"{BANNER}: mox"] == ("0.218 s", "", "0.202, 0.233 s")
    assert found[f"{BANNER}: mailboot"] == ("0.589 s", "", "0.567, 0.612 s")
    assert found[f"{BANNER}: ratio mailboot / mox"] == ("2.71", "≤ 1.5", "")
    assert found[f"{OWN}: ratio mailboot / mox"] == ("9.25", "", "")
    assert found[f"{PSS}: mox"] == ("36.5 MiB", "", "36.5 MiB (2 processes)")
    assert found[f"{PSS}: mailboot"] == ("44.0 MiB", "≤ 55 MiB", "44.0 MiB (23 processes)")
    assert found[f"{PSS}: ratio mailboot / mox"] == ("1.21", "≤ 1.5", "")
    assert found[f"{GROWTH}: mox"] == ("43.7 MB", "", "image 253.6 MB")
    assert found[f"{GROWTH}: mailboot"] == ("140.3 MB", "≤ 100 MB", "image 350.2 MB")
    assert found[f"{GROWTH}: ratio mailboot / mox"] == ("3.21", "", "")
    assert found["mailboot: starts that were warm (the last full boot's plan found)"][0] == (
        "3 of 3")
    # RSS and docker stats are listed for both, without a ratio: PSS is the figure with a bar.
    assert "idle memory 60 s after a warm start, sum of RSS: ratio mailboot / mox" not in found
    assert found["idle memory 60 s after a warm start, cgroup (`docker stats`): mailboot"][0] \
        == "40.6 MiB"


def test_a_run_without_a_banner_is_listed_and_left_out_of_the_median() -> None:
    results = copy.deepcopy(SAMPLE)
    results["banner"]["mailboot"].append(banner_run(None, None))
    found = rows(results)
    assert found[f"{BANNER}: mailboot"] == ("0.589 s", "", "0.567, 0.612, none s")
    results["banner"]["mailboot"] = [banner_run(None, None)]
    found = rows(results)
    assert found[f"{BANNER}: mailboot"][0] == "none"
    assert found[f"{BANNER}: ratio mailboot / mox"][0] == "n/a"


def test_skipped_parts_leave_their_rows_out() -> None:
    results = copy.deepcopy(SAMPLE)
    results["memory"] = {"mox": [], "mailboot": []}  # measure.py --skip-memory
    found = rows(results)
    assert not [name for name in found if name.startswith("idle memory")]
    assert f"{BANNER}: ratio mailboot / mox" in found


@pytest.mark.parametrize("missing", ["mailboot", "mox"])
def test_results_without_a_target_say_what_is_missing(missing: str) -> None:
    results = copy.deepcopy(SAMPLE)
    del results["banner"][missing]
    with pytest.raises(ValueError, match=f"lack '{missing}'.*--target mox=.*--target mailboot="):
        parse_results(results)


def test_warm_starts_counts_the_restarts_that_found_the_plan() -> None:
    handover = "mailboot: boot: handing over to the supervisor, {} s after the entrypoint started\n"
    warm = ("mailboot: boot: nothing changed since this container last started (settings, "
            "keys, accounts, certificate, configuration): the daemons start now\n")
    log = (handover.format("0.816") + warm + handover.format("0.120")
           + warm + "mailboot: boot: the warm start failed (OSError: x); a full boot\n"
           + handover.format("0.900") + handover.format("0.800"))
    assert warm_starts(log) == (1, 3)  # the cold boot, a warm start, a failed one, a full one
    assert warm_starts("") == (0, 0)
