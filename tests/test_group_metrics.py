"""One ``/metrics`` for a group of processes (``--workers``): the merge, by plain calls.

What a scrape of ``wire run --workers 2`` answers end to end is in
tests/test_run_workers.py.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wire.runtime.shared import Shared
from wire.web import groupmetrics


def exposition(published: int, connections: int, latency: float) -> bytes:
    """A process's exposition, of the kinds wire's have: labelled counter, gauge, histogram."""
    registry = CollectorRegistry()
    Counter("wire_items_published", "items", ["kind"], registry=registry).labels("item").inc(
        published
    )
    Gauge("wire_connections", "open", registry=registry).set(connections)
    Histogram("wire_latency", "seconds", buckets=(0.01, 1.0), registry=registry).observe(latency)
    return generate_latest(registry)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition as parsed by Prometheus's own client."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_each_process_s_samples_carry_its_worker_label_under_one_family() -> None:
    merged = groupmetrics.merge([(0, exposition(2, 5, 0.005)), (1, exposition(4, 7, 0.5))])
    found = samples(merged)
    published = "wire_items_published_total"
    assert found[(published, (("kind", "item"), ("worker", "0")))] == 2
    assert found[(published, (("kind", "item"), ("worker", "1")))] == 4
    assert found[("wire_connections", (("worker", "0"),))] == 5
    assert found[("wire_connections", (("worker", "1"),))] == 7
    assert found[("wire_latency_bucket", (("le", "0.01"), ("worker", "0")))] == 1
    assert found[("wire_latency_bucket", (("le", "0.01"), ("worker", "1")))] == 0
    assert found[("wire_latency_count", (("worker", "1"),))] == 1
    # Every family's header once, its samples together (the text format's rule).
    text = merged.decode()
    assert text.count("# TYPE wire_connections gauge") == 1
    lines = text.splitlines()
    families = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(families) == len(set(families))
    firsts = [i for i, line in enumerate(lines) if line.startswith("wire_connections")]
    assert firsts == list(range(firsts[0], firsts[0] + 2))


def test_label_values_with_braces_and_spaces_are_kept() -> None:
    line = 'wire_requests_total{route="/v1/items/{guid} x",method="GET"} 3.0'
    assert groupmetrics.labelled(line, 2) == (
        'wire_requests_total{worker="2",route="/v1/items/{guid} x",method="GET"} 3.0'
    )
    assert groupmetrics.labelled("wire_connections 4.0", 0) == 'wire_connections{worker="0"} 4.0'


async def test_a_process_answers_on_its_socket_and_a_gone_one_is_left_out(
    tmp_path: Path,
) -> None:
    directory = str(tmp_path)
    body = exposition(1, 1, 0.1)

    async def mine() -> bytes:
        return body

    # Slot 2's process died without removing its socket; a stray file has a
    # name of digits Python's int() refuses.
    groupmetrics.socket_path(directory, 2).touch()
    (tmp_path / "\u00b2.sock").touch()
    async with groupmetrics.answering(directory, 1, mine):
        async with asyncio.timeout(10):
            got = await groupmetrics.gather(directory, 0)
    assert got == [(1, body)]
    assert not groupmetrics.socket_path(directory, 1).exists()  # removed when it stops


def test_a_temporary_directory_too_long_for_unix_sockets_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = tmp_path / ("d" * (groupmetrics.MAX_SOCKET_PATH - len(str(tmp_path))))
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    directory = groupmetrics.own_directory()
    try:
        assert Path(directory).parent == Path("/tmp")
        assert len(str(groupmetrics.socket_path(directory, 1000))) <= groupmetrics.MAX_SOCKET_PATH
    finally:
        groupmetrics.remove_directory(directory)


async def test_concurrent_calls_share_one_round_and_a_cancelled_caller_ends_none() -> None:
    calls = 0
    release = asyncio.Event()

    async def make() -> bytes:
        nonlocal calls
        calls += 1
        await release.wait()
        return b"answer %d" % calls

    shared: Shared[bytes] = Shared(make)
    waiting = [asyncio.ensure_future(shared()) for _ in range(50)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    release.set()
    answers = await asyncio.gather(*waiting[1:])
    assert calls == 1 and set(answers) == {b"answer 1"}
    assert await shared() == b"answer 2"  # the next call, once that one is done, is new


async def test_a_process_whose_exposition_fails_is_left_out_at_once(tmp_path: Path) -> None:
    directory = str(tmp_path)

    async def broken() -> bytes:
        raise RuntimeError("a collector that raises")

    async with groupmetrics.answering(directory, 1, broken):
        async with asyncio.timeout(groupmetrics.ASK_TIMEOUT / 2):  # not waited out
            assert await groupmetrics.gather(directory, 0) == []
