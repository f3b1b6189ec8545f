"""``wire run --workers N``: several whole-app processes on one port, as a user runs it.

Real child processes and the embedded redis-server. Which process a
connection landed on is read from the kernel (/proc: the sockets each pid
holds), not guessed: SO_REUSEPORT spreads connections by a hash of their
addresses, so the tests open connections until both workers hold some.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import EDITOR_TOKEN, get_json, publish, wait_for
from tests.test_cli_run import Run, process_gone, runs, wait_gone
from tests.test_gateway import Sub, fence, subscriber
from wire.cli.workers import auto_workers, worker_count
from wire.web import groupmetrics

__all__ = ["runs"]  # the fixture, shared with test_cli_run
Http = aiohttp.ClientSession
PUBLISHED = "wire_items_published_total"
MAX_CONNS = 40  # 2**-39 odds that the kernel puts them all on one of two workers


def children(pid: int) -> set[int]:
    """The direct children of ``pid`` (the workers and the redis-server)."""
    out: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        out.update(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
    return out


def tree(pid: int) -> set[int]:
    """``pid`` and every descendant."""
    found = {pid}
    for child in children(pid):
        found |= tree(child)
    return found


def workers_of(run: Run) -> set[int]:
    """The worker processes of a run (its children but the redis-server)."""
    assert run.proc is not None
    return {p for p in children(run.proc.pid) if "wire.cli.workers" in cmdline(p)}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ws_url(run: Run, query: str) -> str:
    return f"ws://127.0.0.1:{run.port}/v1/ws?{query}"


def peers_of(pid: int, port: int) -> set[int]:
    """Client ports of the established TCP connections ``pid`` holds on ``port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            local, remote, state, inode = f[1], f[2], f[3], f[9]
            if state == "01" and inode in inodes and int(local.rsplit(":", 1)[1], 16) == port:
                peers.add(int(remote.rsplit(":", 1)[1], 16))
    return peers


async def start_two(runs: Callable[..., Run], http: Http, **env: str) -> tuple[Run, set[int]]:
    """``wire run --workers 2``, ready; the pids serving its port (main and worker)."""
    run = runs(WIRE_EDITOR_TOKENS=EDITOR_TOKEN, WIRE_LOG_LEVEL="WARNING", **env)
    await run.start("--workers", "2")
    await run.ready(http)
    await wait_for(lambda: len(workers_of(run)) == 1, "the worker to start")
    assert run.proc is not None
    return run, {run.proc.pid, *workers_of(run)}


async def spread(stack: AsyncExitStack, url: str, run: Run, pids: set[int]) -> list[Sub]:
    """WebSocket subscribers to ``url``, opened until every pid serves one of them."""
    subs: list[Sub] = []
    while len(subs) < MAX_CONNS:
        sub = await stack.enter_async_context(subscriber(url))
        await sub.expect("subscribed")
        subs.append(sub)
        if len(subs) >= 4 and all(peers_of(p, run.port) for p in pids):
            return subs
    raise AssertionError(f"{MAX_CONNS} connections and a worker served none")


async def test_two_workers_publish_and_fan_out_from_either_and_resume_across(
    runs: Callable[..., Run], http: Http
) -> None:
    run, pids = await start_two(runs, http)
    # /readyz answers from each process, with its pid (a fresh connection each time).
    seen: set[int] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        while seen != pids:
            status, body = await get_json(fresh, run.base + "/readyz")
            assert status == 200 and body["pid"] in pids, body
            seen.add(body["pid"])
        async with AsyncExitStack() as stack:
            subs = await spread(stack, ws_url(run, "tags=world"), run, pids)
            # Posts on fresh connections land on either process: every one publishes.
            ids = [(await publish(fresh, run.base, f"w{i}", ["world"]))["id"] for i in range(6)]
            for sub in subs:
                assert await sub.items_until("w5") == ids  # each item once, in order
            resumed = await spread(stack, ws_url(run, f"tags=world&since={ids[1]}"), run, pids)
            end = await fence(fresh, run.base, ["world"])
            for sub in resumed:
                assert await sub.items_until("fence") == [*ids[2:], end]
            for sub in subs:
                assert await sub.items_until("fence") == [end]
    everything = tree(run.proc.pid) if run.proc else set()
    assert len(everything) == 3  # main, worker, redis-server
    assert await run.stop() == 0
    for pid in everything:
        await wait_gone(pid)


async def scrape(fresh: Http, run: Run) -> dict[tuple[str, str], float]:
    """``GET /metrics`` on a fresh connection: (sample name, worker) -> value."""
    async with fresh.get(run.base + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {
        (s.name, s.labels.get("worker", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("kind", "item") == "item"
    }


async def test_metrics_answer_for_every_worker_whichever_takes_the_scrape(
    runs: Callable[..., Run], http: Http
) -> None:
    """Before, each scrape answered for one process at random: the count of
    items published went up and down between scrapes."""
    run, pids = await start_two(runs, http)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        answered: set[int] = set()
        while answered != pids:  # both serve the port
            status, body = await get_json(fresh, run.base + "/readyz")
            assert status == 200, body
            answered.add(body["pid"])
        for i in range(8):  # on fresh connections: on either process
            await publish(fresh, run.base, f"m{i}", ["world"])
        for _ in range(8):  # 2**-7 odds that one process takes them all
            found = await scrape(fresh, run)
            assert {w for name, w in found if name == "wire_connections"} == {"0", "1"}, found
            published = [v for (name, _), v in found.items() if name == PUBLISHED]
            assert sum(published) == 8, found
        # A storm of scrapes (the /metrics of a wire without a metrics token is
        # anyone's): every answer still covers both (one round of asking per
        # process, not one each; a full socket backlog dropped a worker).
        unlimited = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=unlimited) as many:
            storm = await asyncio.gather(*(scrape(many, run) for _ in range(400)))
        assert all({w for n, w in f if n == "wire_connections"} == {"0", "1"} for f in storm)
        # Redis hung: each process gives up on it in time to answer the others.
        (redis,) = children(pids_main(run)) - pids
        os.kill(redis, signal.SIGSTOP)
        try:
            found = await scrape(fresh, run)
        finally:
            os.kill(redis, signal.SIGCONT)
        assert {w for name, w in found if name == "wire_connections"} == {"0", "1"}, found
    assert await run.stop() == 0


async def test_sigint_stops_the_workers_then_redis(runs: Callable[..., Run], http: Http) -> None:
    run, _ = await start_two(runs, http)
    assert run.proc is not None
    everything = tree(run.proc.pid)
    assert await run.stop(signal.SIGINT) == 0
    assert all(process_gone(pid) for pid in everything)


async def test_a_worker_that_dies_is_restarted(runs: Callable[..., Run], http: Http) -> None:
    run, _ = await start_two(runs, http, WIRE_WORKER_RESTART_AFTER="0")
    (old,) = workers_of(run)
    os.kill(old, signal.SIGKILL)
    await wait_for(lambda: workers_of(run) - {old} != set(), "a new worker", within=30)
    (new,) = workers_of(run)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        served: set[int] = set()
        while new not in served:
            status, body = await get_json(fresh, run.base + "/readyz")
            if status == 200:
                served.add(body["pid"])
        await publish(fresh, run.base, "after the restart", ["world"])
        # The new worker took its predecessor's slot: a scrape still covers both.
        found = await scrape(fresh, run)
        assert {w for name, w in found if name == "wire_connections"} == {"0", "1"}
    assert run.proc is not None and run.proc.returncode is None
    everything = tree(run.proc.pid)
    assert await run.stop() == 0
    assert all(process_gone(pid) for pid in everything)


async def test_a_worker_that_dies_soon_after_start_stops_the_run(
    runs: Callable[..., Run], http: Http
) -> None:
    run, _ = await start_two(runs, http, WIRE_WORKER_RESTART_AFTER="3600")
    assert run.proc is not None
    everything = tree(run.proc.pid)
    (worker,) = workers_of(run)
    os.kill(worker, signal.SIGKILL)
    async with asyncio.timeout(30):
        assert await run.proc.wait() == 1
    assert f"wire: worker pid {worker} exited with -9" in run.log.read_text()
    for pid in everything:
        await wait_gone(pid)  # the redis-server too


async def test_workers_die_with_a_killed_run(runs: Callable[..., Run], http: Http) -> None:
    run, _ = await start_two(runs, http)
    (worker,) = workers_of(run)
    directory = worker_dir_of(worker)
    assert await run.stop(signal.SIGKILL) == -9
    await wait_gone(worker)  # PR_SET_PDEATHSIG; the redis-server is the next run's to stop
    # Nothing could remove the group's socket directory: the test does.
    assert remove_group_directory(directory)


def pids_main(run: Run) -> int:
    assert run.proc is not None
    return run.proc.pid


def worker_dir_of(pid: int) -> str:
    """The group's socket directory, from a worker's environment."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (found,) = [v[16:].decode() for v in environ if v.startswith(b"WIRE_WORKER_DIR=")]
    return found


def remove_group_directory(directory: str) -> bool:
    """Remove it (and what is in it); whether it existed and is gone."""
    existed = Path(directory).is_dir()
    groupmetrics.remove_directory(directory)
    return existed and not Path(directory).exists()


def test_worker_count_reads_counts_and_auto() -> None:
    assert worker_count("3") == 3
    assert worker_count("1") == 1
    assert worker_count("auto", cpus=2) == worker_count("0", cpus=2) == auto_workers(2)
    assert auto_workers(None) == auto_workers(1) == auto_workers(2) == 1
    assert auto_workers(8) == 7
    with pytest.raises(SystemExit, match="'many'"):
        worker_count("many")
    with pytest.raises(SystemExit):
        worker_count("-1")
