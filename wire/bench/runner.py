"""``wire bench`` end to end: start everything, run the scenarios, report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from wire.bench import report, webhook
from wire.bench.poster import Poster
from wire.bench.procs import Child, Clients, free_port, start_baseline, start_redis, start_wire
from wire.bench.procs import wait_ready as ready
from wire.bench.scenarios import Bench, Config, Progress, System


def config(args: argparse.Namespace) -> Config:
    return Config(
        scenarios=tuple(args.scenarios),
        conns=args.conns,
        items=args.items,
        posters=args.posters,
        bursts=max(1, args.bursts),
        rate=args.rate,
        latency_seconds=args.latency_seconds,
        latency_conns=tuple(args.latency_conns),
        memory_conns=args.memory_conns,
        resume_conns=args.resume_conns,
        resume_back=args.resume_back,
        resume_live=args.resume_live,
        publish_items=args.publish_items,
        publish_clients=args.publish_clients,
        webhook_items=args.webhook_items,
        batch_items=args.batch_items,
        batch_size=args.batch_size,
        batch_clients=args.batch_clients,
        sample=args.sample,
        batch=args.frames == "batch",
        client_procs=max(1, args.client_procs),
        connect_concurrency=args.connect_concurrency,
        body=args.body,
        timeout=args.timeout,
        baseline=args.baseline,
        baseline_latency_max=args.baseline_latency_max,
        subscriber_token=args.subscriber_token or "",
        lang=args.lang or "",
        run_workers=(
            tuple(args.run_workers)
            if args.run_workers is not None
            else default_run_workers(os.cpu_count())
        ),
        shapes=() if args.url else shapes(args),
        fastpath=args.fastpath,
        naive=args.naive,
    )


def default_run_workers(cpus: int | None) -> tuple[int, ...]:
    """The worker counts the run shape is measured with by default: one, and two
    where there is a second core.

    Issue 15's latency goals hold for the best worker count of the box, and on
    two cores each count wins somewhere (docs/performance.md, Workers): two at
    1,000 subscribers, one at 10,000, where the clients need the other core.
    """
    return (1, 2) if (cpus or 1) >= 2 else (1,)


def run(args: argparse.Namespace) -> int:
    cfg = config(args)
    with contextlib.suppress(ImportError):
        import uvloop  # the publishing side must not be what limits the figures

        return uvloop.run(_main(args, cfg))
    return asyncio.run(_main(args, cfg))


@dataclass
class Setup:
    """What a run works against."""

    systems: list[System] = field(default_factory=list)
    publisher_url: str = ""
    token: str = ""
    #: For the webhook scenario (None: skip it).
    admin_token: str | None = None
    #: The process that runs the webhook deliverer (None: not ours to measure).
    publisher_pid: int | None = None
    #: The split shape's publisher (also where the baselines' items go).
    split_publisher_pid: int | None = None
    children: list[Child] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def retire(self, keep: System) -> None:
        """Stop every other system's process: each reads the stream too, and on
        two cores their reading would be billed to ``keep``'s publisher."""
        others = {s.pid for s in self.systems if s is not keep and s.pid != keep.pid}
        if keep.publisher_url and keep.publisher_url != self.publisher_url:
            # The split shape's publisher is not posted to: stopped, its
            # deliverer cannot take the webhook scenario's lease.
            others.add(self.split_publisher_pid)
        for child in self.children:
            if child.pid in others:
                child.stop()


def shapes(args: argparse.Namespace) -> tuple[str, ...]:
    """The shapes of wire to measure: ``run`` (one process), ``split`` (two), or both.

    A faulty ``--sut`` stands in for a gateway, so it runs in the split shape only.
    """
    if args.sut != "wire":
        return ("split",)
    return ("run", "split") if args.shape == "both" else (args.shape,)


def shape_name(shape: str, wanted: tuple[str, ...]) -> str:
    """``wire`` is the first shape measured (the run shape unless only split is)."""
    return "wire" if shape == wanted[0] else f"wire-{shape}"


async def start(args: argparse.Namespace, cfg: Config, workdir: Path) -> Setup:
    """Start redis, the publisher, wire in each shape and the baselines (or use --url)."""
    s = Setup()
    redis_url = args.redis
    if args.url:
        parts = urlsplit(args.url)
        s.systems.append(
            System("wire", parts.hostname or "127.0.0.1", parts.port or 80, args.gateway_pid)
        )
        s.publisher_url = args.publisher_url or args.url
        token = args.token or os.environ.get("WIRE_EDITOR_TOKENS", "").split(",")[0].strip()
        if not token:
            raise SystemExit("wire bench --url needs --token (an editor token)")
        s.token = token
        admin = args.admin_token or os.environ.get("WIRE_ADMIN_TOKENS", "").split(",")[0].strip()
        s.admin_token = admin or None
    else:
        redis, redis_url = start_redis(workdir)
        s.children.append(redis)
        s.token = secrets.token_urlsafe(18)
        s.admin_token = secrets.token_urlsafe(18)
        await start_wire_shapes(args, cfg, s, redis_url, workdir)
    if cfg.baseline:
        if redis_url is None:
            s.notes.append("baselines skipped: with --url, pass --redis to run them")
        else:
            for name, module in (("fastpath", "fastpath"), ("baseline", "baseline")):
                if not (args.fastpath if name == "fastpath" else args.naive):
                    continue
                port = free_port()
                child = start_baseline(redis_url, port, "", workdir, module)
                s.children.append(child)
                await ready(f"http://127.0.0.1:{port}", child)
                s.systems.append(System(name, "127.0.0.1", port, child.pid))
    return s


async def start_wire_shapes(
    args: argparse.Namespace, cfg: Config, s: Setup, redis_url: str, workdir: Path
) -> None:
    """A publisher process (the split shape's, and where the baselines' items go),
    a gateway process for the split shape, one ``wire run`` process for the run shape
    (one per ``--run-workers`` count)."""
    # The posters' keep-alive connections and a resume storm's handshakes all
    # count against the cap on plain HTTP connections (1,000 by default).
    env = {
        "WIRE_EDITOR_TOKENS": s.token,
        "WIRE_MAX_HTTP_CONNECTIONS": "8192",
        **webhook_env(s.admin_token),
        **dict(v.split("=", 1) for v in args.gateway_env),
    }
    if args.uvloop:
        env["WIRE_EVENT_LOOP"] = "uvloop"
    wanted = shapes(args)
    pub_port = free_port()
    publisher = start_wire("publisher", ["publisher", "--redis", redis_url], pub_port, env, workdir)
    s.children.append(publisher)
    s.publisher_url = f"http://127.0.0.1:{pub_port}"
    s.publisher_pid = s.split_publisher_pid = publisher.pid
    await ready(s.publisher_url, publisher)
    for shape in wanted:
        if shape == "run" and args.sut == "wire":
            await start_runs(s, cfg, env, redis_url, workdir, first=shape == wanted[0])
            continue
        port = free_port()
        if args.sut == "wire":
            argv = ["gateway", "--redis", redis_url]
            if args.workers > 1:
                argv += ["--workers", str(args.workers)]
            gw = start_wire("gateway", argv, port, env, workdir)
            processes = max(1, args.workers)
        else:
            fault = "" if args.sut == "baseline" else args.sut
            gw = start_baseline(redis_url, port, fault, workdir)
            processes = 1
        s.children.append(gw)
        await ready(f"http://127.0.0.1:{port}", gw)
        name = shape_name(shape, wanted)
        url = s.publisher_url
        s.systems.append(
            System(name, "127.0.0.1", port, gw.pid, publisher_url=url, processes=processes)
        )


async def start_runs(
    s: Setup, cfg: Config, env: dict[str, str], redis_url: str, workdir: Path, *, first: bool
) -> None:
    """One ``wire run --workers N`` per N (just ``wire run`` by default), each posted to
    on its own port; the first is ``wire`` when the run shape comes first."""
    for i, n in enumerate(cfg.run_workers or (1,)):
        port = free_port()
        argv = ["run", "--redis", redis_url, "--workers", str(n)]
        child = start_wire(f"run-{n}w", argv, port, env, workdir)
        s.children.append(child)
        url = f"http://127.0.0.1:{port}"
        await ready(url, child)
        name = "wire" if first and i == 0 else f"wire-run-{n}w"
        if name == "wire":
            s.publisher_pid = child.pid  # its deliverer runs the webhook scenario
        s.systems.append(
            System(name, "127.0.0.1", port, child.pid, publisher_url=url, processes=n)
        )


def webhook_env(admin_token: str | None) -> dict[str, str]:
    """What the webhook scenario needs of the wire it starts: admin API, a loopback receiver."""
    return {"WIRE_ADMIN_TOKENS": admin_token or "", "WIRE_WEBHOOK_ALLOW_PRIVATE": "1"}


class Plan:
    """The scenarios in order; each step runs on every system before the next one."""

    def __init__(self, bench: Bench, setup: Setup, cfg: Config) -> None:
        self.bench = bench
        self.systems = setup.systems
        self.cfg = cfg
        self.setup = setup
        self.admin_token = setup.admin_token
        self.publisher_pid = setup.publisher_pid
        self.want = set(cfg.scenarios)
        self.results: dict[str, dict[str, Any]] = {s.name: {} for s in setup.systems}
        self.latency_done: dict[str, set[int]] = {s.name: set() for s in setup.systems}
        self.default_url, self.token = setup.publisher_url, setup.token
        self.posters = {setup.publisher_url: bench.poster}

    async def run(self) -> dict[str, dict[str, Any]]:
        for system in self.systems:
            await self.use(system)
            await self.bench.warm_up()
        steps = [self.idle, self.resume]
        for step in steps:
            for system in self.systems:
                await self.use(system)
                await step(system)
                await self.close_groups(system)
        if "burst" in self.want:
            await self.bursts()
        if "latency" in self.want:
            await self.latencies()
        if self.want & {"publisher", "webhook"}:
            self.setup.retire(self.systems[0])
        if "publisher" in self.want:
            await self.use(self.systems[0])
            self.results.setdefault("wire", {})["publisher"] = await self.bench.publisher()
            self.results["wire"]["publisher_batch"] = await self.bench.publisher_batch()
        if "webhook" in self.want:
            await self.use(self.systems[0])
            self.results.setdefault("wire", {})["webhook"] = await webhook.scenario(
                self.bench, self.admin_token, self.publisher_pid
            )
        return self.results

    async def use(self, system: System) -> None:
        """Post the items of ``system``'s scenarios to its publisher."""
        url = system.publisher_url or self.default_url
        if url not in self.posters:
            # Idempotency keys are the run id and a sequence number, and all
            # publishers share one Redis: each poster numbers in its own range.
            self.posters[url] = Poster(url, self.token)
            self.posters[url].seq = len(self.posters) * 1_000_000_000
        self.bench.poster = self.posters[url]

    def close(self) -> None:
        for poster in self.posters.values():
            poster.close()

    async def latency(self, system: System, n: int) -> None:
        if system.name == "baseline" and n > self.cfg.baseline_latency_max:
            return
        self.results[system.name][f"latency{n}"] = await self.bench.latency(system, n)
        self.latency_done[system.name].add(n)

    async def idle(self, system: System) -> None:
        """Memory of N idle connections, then latency over those same connections."""
        if "memory" not in self.want:
            return
        self.results[system.name]["memory"] = await self.bench.memory(system)
        if "latency" in self.want and self.cfg.memory_conns in self.cfg.latency_conns:
            await self.latency(system, self.cfg.memory_conns)

    async def resume(self, system: System) -> None:
        if "resume" in self.want:
            self.results[system.name]["resume"] = await self.bench.resume(system)

    async def latencies(self) -> None:
        """Latency at every size not measured yet, system by system."""
        for system in self.systems:
            await self.use(system)
            for n in self.cfg.latency_conns:
                if n not in self.latency_done[system.name]:
                    await self.latency(system, n)
            await self.close_groups(system)

    async def close_groups(self, system: System) -> None:
        for group in list(system.groups):
            await self.bench.close(system, group)

    async def bursts(self) -> None:
        """Every system's bursts, the systems taking turns (burst 1 on each, then
        burst 2...): the box's speed drifts over a run, and measured one after
        the other the systems' figures would carry that drift into their ratios."""
        connected = {s.name: await self.bench.burst_connect(s) for s in self.systems}
        bursts: dict[str, list[dict[str, Any]]] = {s.name: [] for s in self.systems}
        counts: dict[str, list[float] | None] = {s.name: [0.0] * 4 for s in self.systems}
        for n in range(self.cfg.bursts):
            for system in self.systems:
                await self.use(system)
                before = await write_counts(system)
                bursts[system.name].append(await self.bench.one_burst(system, n))
                after = await write_counts(system)
                total = counts[system.name]
                if before is None or after is None or total is None:
                    counts[system.name] = None
                else:
                    counts[system.name] = [
                        t + b - a for t, a, b in zip(total, before, after, strict=True)
                    ]
        for system in self.systems:
            result = self.bench.burst_result(connected[system.name], bursts[system.name])
            result.update(coalescing(counts[system.name]))
            self.results[system.name]["burst"] = result
            await self.close_groups(system)


def coalescing(counts: list[float] | None) -> dict[str, float]:
    """How well a gateway coalesced its bursts (from its metrics; nothing for a
    baseline): batches read, items per batch read, items per write to a
    connection (the writes are what cost)."""
    if counts is None:
        return {}
    batches, entries, writes, deliveries = counts
    if not (batches and writes):
        return {}
    return {
        "reader_batches": batches,
        "entries_per_batch": entries / batches,
        "items_per_write": deliveries / writes,
    }


async def _main(args: argparse.Namespace, cfg: Config) -> int:
    progress = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="wire-bench-"))
    began = time.monotonic()
    setup = Setup()
    clients = Clients(cfg.client_procs, progress.counters)
    try:
        progress.step("starting redis-server, publisher, gateways and clients")
        setup, _ = await asyncio.gather(start(args, cfg, workdir), clients.start())
        poster = Poster(setup.publisher_url, setup.token)
        bench = Bench(cfg, clients, poster, secrets.token_hex(4), progress)
        plan = Plan(bench, setup, cfg)
        try:
            results = await plan.run()
        finally:
            plan.close()
        failures = bench.failures
    finally:
        await clients.stop()
        setup.stop()
        if args.keep:
            progress.done(f"process logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - began
    found = report.targets(cfg, results)
    doc = {
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "gateway": {
            "sut": args.sut,
            "shapes": [s.name for s in setup.systems if s.name.startswith("wire")],
            "workers": args.workers,
            "run_workers": list(cfg.run_workers),
            "uvloop": args.uvloop,
            "env": args.gateway_env,
            "url": args.url,
        },
        "machine": machine(),
        "results": results,
        "targets": found,
        "table": [
            {"scenario": r.scenario, "metric": r.metric, "unit": r.unit, "values": r.values}
            for r in report.rows(cfg, results)
        ],
        "verification": {"ok": not failures, "failures": failures},
        "notes": setup.notes,
        "seconds": elapsed,
    }
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(report.table(cfg, results))
        for note in setup.notes:
            print(f"note: {note}")
        print(f"\nverification: {'passed' if not failures else 'FAILED'} ({elapsed:.0f} s)")
        for f in failures:
            print(f"  - {f}")
    if args.plot:
        report.plot(Path(args.plot), cfg, results)
        progress.done(f"plot written to {args.plot}")
    if failures:
        progress.done("verification FAILED: " + "; ".join(failures[:3]))
        return 1
    if args.check_targets and report.missed(found):
        for t in report.missed(found):
            progress.done(f"target {t['verdict']}: {t['name']}")
        return 2
    return 0


#: The gateway counters :func:`write_counts` reads, in its answer's order.
WRITE_COUNTERS = (
    "wire_reader_batches_total",
    "wire_reader_entries_total",
    "wire_writes_total",
    "wire_deliveries_total",
)


async def write_counts(system: System) -> tuple[float, ...] | None:
    """The gateway's :data:`WRITE_COUNTERS` (None if not wire, or not one process).

    With several workers on its port, ``/metrics`` answers for whichever
    process took the request: differences between two of them are nonsense
    (negative batch counts were reported), so nothing is reported.
    """
    if not system.name.startswith("wire") or system.processes > 1:
        return None
    try:
        r, w = await asyncio.open_connection(system.host, system.port)
        w.write(
            f"GET /metrics HTTP/1.1\r\nHost: {system.host}\r\nConnection: close\r\n\r\n".encode()
        )
        text = (await r.read()).decode(errors="replace")
        w.close()
    except OSError:
        return None
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in WRITE_COUNTERS:
            found[name] = float(value)
    if len(found) < len(WRITE_COUNTERS):
        return None
    return tuple(found[name] for name in WRITE_COUNTERS)


def machine() -> dict[str, Any]:
    import aiohttp

    loop = "uvloop" if "uvloop" in sys.modules else "asyncio"
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "platform": platform.platform(),
        "bench_loop": loop,
    }
