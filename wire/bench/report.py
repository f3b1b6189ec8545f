"""The bench's outputs: the targets table, JSON, and the plot."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wire.bench.scenarios import Config


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric for ours and the baseline, and its target."""

    scenario: str
    metric: str
    ours: float | None
    base: float | None
    unit: str
    target: str
    met: bool | None
    higher_is_better: bool

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.base is None or not self.ours or not self.base:
            return None
        if math.isnan(self.ours) or math.isnan(self.base):
            return None
        return self.ours / self.base if self.higher_is_better else self.base / self.ours


def _get(results: dict[str, Any], system: str, key: str, field: str) -> float | None:
    value = results.get(system, {}).get(key, {}).get(field)
    return float(value) if isinstance(value, int | float) else None


def rows(cfg: Config, results: dict[str, Any]) -> list[Row]:
    """The table rows for whatever scenarios ran, with each target where it applies."""
    out: list[Row] = []
    default = Config()

    def add(
        key: str,
        scenario: str,
        field: str,
        metric: str,
        unit: str,
        hib: bool,
        target: str,
        check: Any,
        sized: bool,
        scale: float = 1.0,
    ) -> None:
        ours = _get(results, "wire", key, field)
        base = _get(results, "baseline", key, field)
        if ours is None and base is None:
            return
        ours = ours * scale if ours is not None else None
        base = base * scale if base is not None else None
        met = check(ours, base) if sized and ours is not None else None
        out.append(Row(scenario, metric, ours, base, unit, target if sized else "-", met, hib))

    burst_sized = (cfg.conns, cfg.items, cfg.posters) == (default.conns, default.items, 8)
    add(
        "burst",
        f"burst {cfg.conns:,} conns x {cfg.items} items",
        "deliveries_per_s",
        "deliveries/s",
        "/s",
        True,
        ">= 1,000,000 and >= 10x baseline",
        lambda o, b: o >= 1_000_000 and (b is None or o >= 10 * b),
        burst_sized,
    )
    for n in sorted({*cfg.latency_conns}):
        limit = {1000: 12.0, 10_000: 120.0}.get(n)
        sized = limit is not None and cfg.rate == 20
        for field, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
            is_p99 = field == "p99_ms"
            add(
                f"latency{n}",
                f"latency {n:,} conns at {cfg.rate:g}/s",
                field,
                f"{name} publish->deliver",
                "ms",
                False,
                f"<= {limit:g} ms" if is_p99 and limit else "-",
                lambda o, b, lim=limit: o <= (lim or 0),
                sized and is_p99,
            )
    add(
        "memory",
        f"memory {cfg.memory_conns:,} idle conns",
        "per_conn_bytes",
        "RSS per connection",
        "KiB",
        False,
        "<= 14 KiB",
        lambda o, b: o <= 14,
        cfg.memory_conns >= default.memory_conns,
        scale=1 / 1024,
    )
    add(
        "resume",
        f"resume storm {cfg.resume_conns:,} conns, {cfg.resume_back} back",
        "seconds",
        "time until all caught up",
        "s",
        False,
        "< 5 s",
        lambda o, b: o < 5,
        (cfg.resume_conns, cfg.resume_back) == (default.resume_conns, default.resume_back),
    )
    add(
        "publisher",
        f"publisher {cfg.publish_clients} clients, idempotency on",
        "items_per_s",
        "accepted items/s",
        "/s",
        True,
        ">= 5,000",
        lambda o, b: o >= 5000,
        cfg.publish_clients == default.publish_clients,
    )
    out.extend(webhook_rows(results))
    add(
        "publisher_batch",
        f"publisher batches of {cfg.batch_size}, {cfg.batch_clients} clients",
        "items_per_s",
        "accepted items/s",
        "/s",
        True,
        ">= 10,000",
        lambda o, b: o >= 10_000,
        (cfg.batch_size, cfg.batch_clients) == (default.batch_size, default.batch_clients),
    )
    return out


def webhook_rows(results: dict[str, Any]) -> list[Row]:
    """The webhook scenario's figures (no target: the issue sets none)."""
    found = results.get("wire", {}).get("webhook", {})
    shown = [
        ("items_per_s", "delivered items/s (from first publish)", "/s", True),
        ("drain_items_per_s", "delivered items/s (backlog drain)", "/s", True),
        ("deliverer_cpu_us_per_item", "deliverer CPU per item (backlog)", "us", False),
        ("latency_p50_ms", "p50 publish->receiver", "ms", False),
        ("latency_p99_ms", "p99 publish->receiver", "ms", False),
    ]
    scenario = "webhook, one deliverer"
    return [
        Row(scenario, metric, float(found[key]), None, unit, "-", None, hib)
        for key, metric, unit, hib in shown
        if isinstance(found.get(key), int | float)
    ]


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
    return f"{value:.2f} {unit}"


def table(cfg: Config, results: dict[str, Any]) -> str:
    """A plain-text table: scenario, metric, ours, baseline, ratio, target, met."""
    header = ("scenario", "metric", "wire", "baseline", "ratio", "target", "met")
    lines = [header]
    for r in rows(cfg, results):
        ratio = f"{r.ratio:.1f}x" if r.ratio is not None else "-"
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        lines.append(
            (r.scenario, r.metric, _fmt(r.ours, r.unit), _fmt(r.base, r.unit), ratio, r.target, met)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for k, line in enumerate(lines):
        text.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if k == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def targets(cfg: Config, results: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "scenario": r.scenario,
            "metric": r.metric,
            "wire": r.ours,
            "baseline": r.base,
            "ratio": r.ratio,
            "target": r.target,
            "met": r.met,
        }
        for r in rows(cfg, results)
    ]


def plot(path: Path, cfg: Config, results: dict[str, Any]) -> None:
    """Latency percentiles and throughput, ours against the baseline (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    systems = [s for s in ("wire", "baseline") if s in results]
    colors = {"wire": "#1f77b4", "baseline": "#d62728"}
    groups = [f"latency{n}" for n in sorted(set(cfg.latency_conns))]
    stats = ("p50_ms", "p90_ms", "p99_ms", "max_ms")
    width = 0.8 / max(1, len(systems) * len(groups))
    k = 0
    for system in systems:
        for group in groups:
            data = results[system].get(group)
            if not data or "p50_ms" not in data:
                continue
            xs = [i + k * width for i in range(len(stats))]
            left.bar(
                xs,
                [data[s] for s in stats],
                width,
                color=colors[system],
                alpha=1.0 - 0.35 * groups.index(group),
                label=f"{system}, {data['conns']:,} conns",
            )
            k += 1
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(stats))], ["p50", "p90", "p99", "max"])
    for n, limit in ((1000, 12), (10_000, 120)):
        if n in cfg.latency_conns:
            left.axhline(limit, color="gray", linestyle="--", linewidth=0.8)
            left.annotate(
                f"target p99, {n:,}",
                (3.5, limit),
                fontsize=7,
                color="gray",
                ha="right",
                va="bottom",
            )
    left.set_yscale("log")
    left.set_ylabel("publish -> deliver (ms)")
    left.set_title(f"Latency at {cfg.rate:g} items/s")
    left.legend(fontsize=8)
    bars: list[tuple[str, float, str]] = []
    for system in systems:
        burst = results[system].get("burst", {})
        if "deliveries_per_s" in burst:
            bars.append((f"{system}\nburst", burst["deliveries_per_s"], colors[system]))
    pub = results.get("wire", {}).get("publisher", {})
    if "items_per_s" in pub:
        bars.append(("publisher\nitems/s", pub["items_per_s"], "#2ca02c"))
    right.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    for i, b in enumerate(bars):
        right.annotate(f"{b[1]:,.0f}", (i, b[1]), ha="center", va="bottom", fontsize=8)
    right.set_yscale("log")
    right.set_ylabel("per second")
    right.set_title(f"Burst: {cfg.conns:,} conns x {cfg.items} items; publisher")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def systems_table(results: dict[str, Any]) -> str:
    """Latency and burst per system under test (``--run-workers``: one per worker count)."""
    lines = [("system", "scenario", "p50", "p99", "max", "deliveries/s", "gateway CPU/delivery")]
    for system, res in results.items():
        for key, data in sorted(res.items()):
            if key.startswith("latency") and "p99_ms" in data:
                lines.append(
                    (
                        system,
                        f"latency {data['conns']:,} conns at {data['rate']:g}/s",
                        _fmt(data["p50_ms"], "ms"),
                        _fmt(data["p99_ms"], "ms"),
                        _fmt(data["max_ms"], "ms"),
                        "-",
                        f"{data['gateway_cpu_us_per_delivery']:.1f} us",
                    )
                )
            elif key == "burst" and "deliveries_per_s" in data:
                lines.append(
                    (
                        system,
                        f"burst {data['conns']:,} x {data['items']}",
                        "-",
                        "-",
                        "-",
                        _fmt(data["deliveries_per_s"], "/s"),
                        f"{data['gateway_cpu_us_per_delivery']:.1f} us",
                    )
                )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(line)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)
