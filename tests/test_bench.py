"""``wire bench`` checks what it measures: a gateway that loses or repeats an item fails.

Tiny sizes and no timing assertions: these runs prove the verification, not the speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import ROOT
from wire.bench.report import label
from wire.bench.runner import default_run_workers
from wire.bench.scenarios import Config

TINY = [
    "--conns", "12",
    "--items", "8",
    "--posters", "3",
    "--latency-conns", "12",
    "--latency-seconds", "0.5",
    "--memory-conns", "12",
    "--resume-conns", "6",
    "--resume-back", "5",
    "--resume-live", "2",
    "--publish-items", "40",
    "--publish-clients", "4",
    "--webhook-items", "20",
    "--batch-items", "60",
    "--batch-size", "25",
    "--batch-clients", "2",
    "--sample", "4",
    "--timeout", "3",
]  # fmt: skip


def bench(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "wire", "bench", "--json", *args],
        cwd=ROOT,
        capture_output=True,
        timeout=240,
    )
    report = orjson.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, report, proc.stderr.decode(errors="replace")


@pytest.mark.timeout(300)
def test_both_shapes_and_both_baselines_pass_verification(tmp_path: Path) -> None:
    """`wire run` (one process), the split shape, the fast path and the naive gateway."""
    plot = tmp_path / "bench.png"
    code, report, err = bench(*TINY, "--plot", str(plot))
    assert code == 0, err[-3000:]
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert report["verification"] == {"ok": True, "failures": []}
    assert report["config"]["shapes"] == ["run", "split"]
    # `wire run` with two workers beside one, where the box has a second core.
    workers = list(default_run_workers(os.cpu_count()))
    assert report["config"]["run_workers"] == workers
    more = {f"wire-run-{n}w" for n in workers[1:]}
    systems = {"wire", "wire-split", "fastpath", "baseline"} | more
    assert set(report["results"]) == systems
    for system in systems:
        results = report["results"][system]
        assert {"burst", "latency12", "memory", "resume"} <= set(results)
        assert results["burst"]["deliveries"] == 12 * 8
        # Three bursts on the same connections, each verified; the median reported.
        each = results["burst"]["each_deliveries_per_s"]
        assert len(each) == 3 and results["burst"]["deliveries_per_s"] == sorted(each)[1]
        assert all(r.get("verified", True) for r in results.values())
    assert report["results"]["wire"]["burst"]["items_per_write"] >= 1
    assert report["results"]["wire"]["publisher"]["accepted"] == 40
    assert report["results"]["wire"]["publisher_batch"]["accepted"] == 60
    assert {r["metric"] for r in report["table"]} >= {"deliveries/s", "RSS per connection"}


@pytest.mark.timeout(300)
def test_check_targets_fails_on_a_target_asked_for_and_not_met() -> None:
    """At tiny sizes the latency targets (at 1,000 and 10,000) cannot be measured:
    asked for, they count as missed."""
    args = (*TINY, "--scenarios", "burst,latency", "--shape", "run", "--no-naive")
    code, report, err = bench(*args, "--check-targets")
    assert code == 2, err[-3000:]
    assert report["verification"]["ok"]
    verdicts = {t["name"]: t for t in report["targets"]}
    latency = verdicts["latency p99, 1,000 subscribers, 20 items/s"]
    assert latency["verdict"] == "not measured" and latency["counted"]
    batch = verdicts["publisher, batch endpoint"]  # not asked for: reported, not counted
    assert batch["verdict"] == "not measured" and not batch["counted"]
    assert "target not measured: latency p99" in err


def test_check_targets_passes_when_no_target_was_asked_for() -> None:
    code, report, err = bench(
        *TINY, "--scenarios", "resume", "--shape", "split", "--no-baseline", "--check-targets"
    )
    assert code == 0, err[-3000:]
    assert not any(t["counted"] for t in report["targets"])


@pytest.mark.parametrize(
    ("fault", "complaint"), [("drop", "missed items"), ("dup", "received extra items")]
)
def test_a_gateway_that_drops_or_repeats_an_item_fails_verification(
    fault: str, complaint: str
) -> None:
    code, report, err = bench(*TINY, "--scenarios", "burst", "--no-baseline", "--sut", fault)
    assert code == 1
    failures = report["verification"]["failures"]
    assert not report["verification"]["ok"]
    assert any(complaint in f and "1 of 12 connections" in f for f in failures), failures
    assert "verification FAILED" in err


def test_language_filtered_subscribers_are_measured_and_filtered() -> None:
    """``--lang``: the items are in the default language, so ``en`` subscribers get
    every one; ``fr`` subscribers get none, which the verification calls lost."""
    base = (*TINY, "--scenarios", "burst", "--no-baseline", "--shape", "run")
    code, report, err = bench(*base, "--lang", "en")
    assert code == 0, err[-3000:]
    assert report["results"]["wire"]["burst"]["deliveries"] == 12 * 8
    code, report, _ = bench(*base, "--lang", "fr")
    assert code == 1 and any("missed items" in f for f in report["verification"]["failures"])


def test_the_webhook_scenario_delivers_every_item_once_in_order() -> None:
    code, report, err = bench(*TINY, "--scenarios", "webhook", "--no-baseline")
    assert code == 0, err[-3000:]
    assert report["verification"] == {"ok": True, "failures": []}
    found = report["results"]["wire"]["webhook"]
    assert found["verified"] and found["items"] == 20 and found["bad_signatures"] == 0
    assert {"items_per_s", "drain_items_per_s", "latency_p50_ms", "latency_p99_ms"} <= set(found)
    metrics = {r["metric"] for r in report["table"] if r["scenario"].startswith("webhook")}
    assert "delivered items/s (backlog drain)" in metrics


def test_the_table_names_each_scenario_and_the_verdict() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wire", "bench", *TINY, "--scenarios", "burst", "--sut", "drop"],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    out = proc.stdout.decode()
    assert proc.returncode == 1
    assert "burst 12 conns x 8 items" in out
    assert "verification: FAILED" in out


def test_run_workers_measures_each_worker_count() -> None:
    code, report, err = bench(
        *TINY, "--scenarios", "burst,latency", "--no-baseline", "--shape", "run",
        "--run-workers", "1,2",
    )
    assert code == 0, err[-3000:]
    assert report["verification"] == {"ok": True, "failures": []}
    assert set(report["results"]) == {"wire", "wire-run-2w"}
    for system in ("wire", "wire-run-2w"):
        results = report["results"][system]
        assert results["burst"]["deliveries"] == 12 * 8
        assert results["latency12"]["verified"]
    # How the bursts coalesced comes from /metrics, which answers for one process:
    # reported for one worker, not for two (one worker's counters minus another's).
    assert report["results"]["wire"]["burst"]["items_per_write"] >= 1
    assert "items_per_write" not in report["results"]["wire-run-2w"]["burst"]


def test_the_run_shape_is_measured_with_one_and_two_workers_where_two_cores_are() -> None:
    """Issue 15's latency goals hold for the best worker count of the box: both are run."""
    assert default_run_workers(1) == (1,)
    assert default_run_workers(None) == (1,)
    assert default_run_workers(2) == (1, 2)
    assert default_run_workers(16) == (1, 2)
    cfg = Config(shapes=("run", "split"))
    assert [label(s, cfg) for s in ("wire", "wire-run-2w", "wire-split")] == [
        "wire (run)",
        "wire (run, 2 workers)",
        "wire (split)",
    ]
