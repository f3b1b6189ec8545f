"""The bench's outputs: the table, the targets, JSON, and the plot.

The table has a column per system measured: wire in the ``wire run`` shape
(one process, and ``wire run --workers 2`` beside it where there are two
cores) and in the split shape (publisher and gateway apart), the fast
path (:mod:`wire.bench.fastpath`) and the naive baseline
(:mod:`wire.bench.baseline`). The targets (issue 15) are data, :data:`TARGETS`:
each names the result it reads (system, result key, field), so a scenario
added elsewhere plugs in by the key it stores its result under.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wire.bench.scenarios import Config

#: Column order; results under other names (more shapes, workers) follow them.
SYSTEMS = ("wire", "wire-run", "wire-run-2w", "wire-split", "fastpath", "baseline")


def label(system: str, cfg: Config) -> str:
    """A system's column heading."""
    if system == "wire":
        return f"wire ({cfg.shapes[0]})" if cfg.shapes else "wire"
    workers = re.fullmatch(r"wire-run-(\d+)w", system)
    if workers:
        return f"wire (run, {workers[1]} workers)"
    if system.startswith("wire-"):
        return f"wire ({system.removeprefix('wire-')})"
    return {"fastpath": "fast path", "baseline": "naive"}.get(system, system)


def _get(results: dict[str, Any], system: str, key: str, field: str) -> float | None:
    value = results.get(system, {}).get(key, {}).get(field)
    return float(value) if isinstance(value, int | float) and not math.isnan(value) else None


# -- the table -----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One metric across the systems."""

    scenario: str
    metric: str
    unit: str
    higher_is_better: bool
    values: dict[str, float]

    def ratio(self, versus: str) -> float | None:
        """wire's figure against ``versus``'s, > 1 when wire is better."""
        ours, theirs = self.values.get("wire"), self.values.get(versus)
        if not ours or not theirs:
            return None
        return ours / theirs if self.higher_is_better else theirs / ours


def rows(cfg: Config, results: dict[str, Any]) -> list[Row]:
    """The table rows for whatever scenarios ran."""
    out: list[Row] = []

    def add(key: str, scenario: str, field: str, metric: str, unit: str, hib: bool) -> None:
        scale = 1 / 1024 if unit == "KiB" else 1.0
        values = {
            s: v * scale
            for s in systems(results)
            if (v := _get(results, s, key, field)) is not None
        }
        if values:
            out.append(Row(scenario, metric, unit, hib, values))

    burst = f"burst {cfg.conns:,} conns x {cfg.items} items"
    add("burst", burst, "deliveries_per_s", "deliveries/s", "/s", True)
    add("burst", burst, "items_per_write", "items per write", "", True)
    add("burst", burst, "entries_per_batch", "items per batch read", "", True)
    for n in sorted({*cfg.latency_conns}):
        for field, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
            scenario = f"latency {n:,} conns at {cfg.rate:g}/s"
            add(f"latency{n}", scenario, field, f"{name} publish->deliver", "ms", False)
    memory = f"memory {cfg.memory_conns:,} idle conns"
    add("memory", memory, "per_conn_bytes", "RSS per connection", "KiB", False)
    resume = f"resume storm {cfg.resume_conns:,} conns, {cfg.resume_back} back"
    add("resume", resume, "seconds", "time until all caught up", "s", False)
    publisher = f"publisher {cfg.publish_clients} clients, idempotency on"
    add("publisher", publisher, "items_per_s", "accepted items/s", "/s", True)
    batches = f"publisher batches of {cfg.batch_size}, {cfg.batch_clients} clients"
    add("publisher_batch", batches, "items_per_s", "accepted items/s", "/s", True)
    webhook = "webhook, one deliverer"
    for field, metric, unit, hib in WEBHOOK_FIGURES:
        add("webhook", webhook, field, metric, unit, hib)
    return out


#: The webhook scenario's figures (no target: the issue sets none).
WEBHOOK_FIGURES = (
    ("items_per_s", "delivered items/s (from first publish)", "/s", True),
    ("drain_items_per_s", "delivered items/s (backlog drain)", "/s", True),
    ("deliverer_cpu_us_per_item", "deliverer CPU per item (backlog)", "us", False),
    ("latency_p50_ms", "p50 publish->receiver", "ms", False),
    ("latency_p99_ms", "p99 publish->receiver", "ms", False),
)


def systems(results: dict[str, Any]) -> list[str]:
    """The systems in ``results``, in column order."""
    known = [s for s in SYSTEMS if s in results]
    return known + sorted(s for s in results if s not in SYSTEMS)


def _fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "/s":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "us":
        return f"{value:.0f} us"
    if unit == "KiB":
        return f"{value:.1f} KiB"
    if unit == "x":
        return f"{value:.2f}x"
    if not unit:
        return f"{value:.1f}"
    return f"{value:.2f} {unit}"


def _grid(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = []
    for k, line in enumerate(lines):
        text.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if k == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def table(cfg: Config, results: dict[str, Any]) -> str:
    """The plain-text report: a column per system, wire's ratios, then the targets."""
    names = systems(results)
    versus = [s for s in ("fastpath", "baseline") if s in results and "wire" in results]
    header = (
        "scenario",
        "metric",
        *(label(s, cfg) for s in names),
        *(f"wire / {label(s, cfg)}" for s in versus),
    )
    lines: list[tuple[str, ...]] = [header]
    for r in rows(cfg, results):
        ratios = [r.ratio(s) for s in versus]
        lines.append(
            (
                r.scenario,
                r.metric,
                *(_fmt(r.values.get(s), r.unit) for s in names),
                *(f"{x:.2f}x" if x is not None and r.unit else "-" for x in ratios),
            )
        )
    return _grid(lines) + "\n\n" + targets_table(targets(cfg, results))


# -- the targets ---------------------------------------------------------------


def _always(cfg: Config) -> bool:
    return True


def _burst_sized(cfg: Config) -> bool:
    """The burst targets are for ``wire run``, 1,000 x 200, 8 posters."""
    return (
        bool(cfg.shapes)
        and cfg.shapes[0] == "run"
        and ((cfg.conns, cfg.items, cfg.posters) == (1000, 200, 8))
    )


@dataclass(frozen=True)
class Target:
    """A goal for one figure of the results.

    The figure is ``field`` of ``results[system][key]``; where several
    systems or keys are listed (more shapes, worker counts), the best counts.
    With ``versus`` the figure is wire's divided by that system's (a ratio).
    """

    name: str
    scenario: str  # the --scenarios name that measures it
    keys: tuple[str, ...]
    field: str
    goal: float
    at_least: bool
    unit: str
    versus: str | None = None
    systems: tuple[str, ...] = ("wire",)
    scale: float = 1.0
    sized: Callable[[Config], bool] = _always

    def measure(self, results: dict[str, Any]) -> float | None:
        """The best figure found, or None."""
        found: list[float] = []
        for system in self.systems:
            for key in self.keys:
                value = _get(results, system, key, self.field)
                if value is None:
                    continue
                if self.versus is not None:
                    theirs = _get(results, self.versus, key, self.field)
                    if not theirs or not value:
                        continue
                    value = value / theirs if self.at_least else theirs / value
                found.append(value * self.scale)
        if not found:
            return None
        return max(found) if self.at_least or self.versus else min(found)

    def asked(self, cfg: Config) -> bool:
        """Whether this run was asked to measure it (then "not measured" is a miss)."""
        if self.scenario not in cfg.scenarios:
            return False
        if self.versus == "fastpath":
            return cfg.baseline and cfg.fastpath
        if self.versus == "baseline":
            return cfg.baseline and cfg.naive
        return True


#: Where a latency target may be met: any shape, any worker count of ``wire run``.
LATENCY_SYSTEMS = ("wire", "wire-run", "wire-split", "wire-run-1w", "wire-run-2w", "wire-run-3w")

#: Issue 15's targets. Results from scenarios kept elsewhere plug in by name:
#: the publisher scenario's ``results["wire"]["publisher_batch"]["items_per_s"]``,
#: latency under ``latency1000`` for any ``wire*`` system (workers, shapes).
TARGETS: tuple[Target, ...] = (
    Target(
        "burst, wire run shape, vs the fast path",
        "burst",
        ("burst",),
        "deliveries_per_s",
        1.5,
        True,
        "x",
        versus="fastpath",
        sized=_burst_sized,
    ),
    Target(
        "burst, wire run shape, vs the naive gateway",
        "burst",
        ("burst",),
        "deliveries_per_s",
        12.0,
        True,
        "x",
        versus="baseline",
        sized=_burst_sized,
    ),
    Target(
        "latency p99, 1,000 subscribers, 20 items/s",
        "latency",
        ("latency1000",),
        "p99_ms",
        15.0,
        False,
        "ms",
        systems=LATENCY_SYSTEMS,
        sized=lambda cfg: cfg.rate == 20,
    ),
    Target(
        "latency p99, 10,000 subscribers, 20 items/s",
        "latency",
        ("latency10000",),
        "p99_ms",
        120.0,
        False,
        "ms",
        systems=LATENCY_SYSTEMS,
        sized=lambda cfg: cfg.rate == 20,
    ),
    Target(
        "publisher, batch endpoint",
        "publisher",
        ("publisher_batch",),
        "items_per_s",
        10_000.0,
        True,
        "/s",
    ),
    Target(
        "memory per idle connection at 10,000",
        "memory",
        ("memory",),
        "per_conn_bytes",
        14.0,
        False,
        "KiB",
        scale=1 / 1024,
        sized=lambda cfg: cfg.memory_conns >= 10_000,
    ),
)


def targets(cfg: Config, results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value, goal and verdict.

    ``verdict`` is ``met``, ``missed`` or ``not measured`` (the scenario did
    not run, or ran at other sizes); ``counted`` says whether it makes
    ``--check-targets`` fail: a miss, or "not measured" when it was asked for.
    """
    out = []
    for t in TARGETS:
        value = t.measure(results) if t.sized(cfg) else None
        if value is None:
            verdict = "not measured"
        else:
            met = value >= t.goal if t.at_least else value <= t.goal
            verdict = "met" if met else "missed"
        out.append(
            {
                "name": t.name,
                "measured": value,
                "goal": t.goal,
                "unit": t.unit,
                "at_least": t.at_least,
                "verdict": verdict,
                "counted": verdict == "missed" or (verdict == "not measured" and t.asked(cfg)),
            }
        )
    return out


def targets_table(found: list[dict[str, Any]]) -> str:
    """The targets as text: measured, goal, verdict (``*`` marks what fails the check)."""
    lines: list[tuple[str, ...]] = [("target", "measured", "goal", "verdict")]
    for t in found:
        goal = (">= " if t["at_least"] else "<= ") + _fmt(t["goal"], t["unit"])
        verdict = t["verdict"] + (" *" if t["counted"] else "")
        lines.append((t["name"], _fmt(t["measured"], t["unit"]), goal, verdict))
    return _grid(lines) + "\n(* fails --check-targets)"


def missed(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets that make ``--check-targets`` fail."""
    return [t for t in found if t["counted"]]


# -- the plot ------------------------------------------------------------------

COLORS = {
    "wire": "#1f77b4",
    "wire-split": "#17becf",
    "wire-run": "#17becf",
    "wire-run-2w": "#9467bd",
    "fastpath": "#ff7f0e",
    "baseline": "#d62728",
}


def plot(path: Path, cfg: Config, results: dict[str, Any]) -> None:
    """Latency percentiles and burst throughput of every system (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = systems(results)
    groups = [f"latency{n}" for n in sorted(set(cfg.latency_conns))]
    stats = ("p50_ms", "p90_ms", "p99_ms", "max_ms")
    width = 0.8 / max(1, len(names) * len(groups))
    k = 0
    for system in names:
        for group in groups:
            data = results[system].get(group)
            if not data or "p50_ms" not in data:
                continue
            left.bar(
                [i + k * width for i in range(len(stats))],
                [data[s] for s in stats],
                width,
                color=COLORS.get(system, "#7f7f7f"),
                alpha=1.0 - 0.35 * groups.index(group),
                label=f"{label(system, cfg)}, {data['conns']:,} conns",
            )
            k += 1
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(stats))], ["p50", "p90", "p99", "max"])
    for n, limit in ((1000, 15), (10_000, 120)):
        if n in cfg.latency_conns:
            left.axhline(limit, color="gray", linestyle="--", linewidth=0.8)
            left.annotate(f"target p99, {n:,}", (3.5, limit), fontsize=7, color="gray", ha="right")
    left.set_yscale("log")
    left.set_ylabel("publish -> deliver (ms)")
    left.set_title(f"Latency at {cfg.rate:g} items/s")
    left.legend(fontsize=7)
    bars: list[tuple[str, float, str]] = []
    for system in names:
        burst = results[system].get("burst", {})
        if "deliveries_per_s" in burst:
            color = COLORS.get(system, "#7f7f7f")
            bars.append((f"{label(system, cfg)}\nburst", burst["deliveries_per_s"], color))
    pub = results.get("wire", {}).get("publisher", {})
    if "items_per_s" in pub:
        bars.append(("publisher\nitems/s", pub["items_per_s"], "#2ca02c"))
    right.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    for i, b in enumerate(bars):
        right.annotate(f"{b[1]:,.0f}", (i, b[1]), ha="center", va="bottom", fontsize=8)
    right.set_yscale("log")
    right.set_ylabel("per second")
    right.set_title(f"Burst: {cfg.conns:,} conns x {cfg.items} items, {cfg.posters} posters")
    right.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
