"""The client tools (``wire publish --file``, ``wire export``, ``wire tail``) against
the worst input: huge and malformed files, bad arguments, a misbehaving server.

They run as real child processes against a real wire and Redis (or, where the
server is the one misbehaving, a fake HTTP server on a real socket).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.conftest import Server
from tests.support import EDITOR_TOKEN, free_port, get_json, run_measured

MIB = 1 << 20


def wire_env(base: str) -> dict[str, str]:
    return {**os.environ, "WIRE_URL": base, "WIRE_TOKEN": EDITOR_TOKEN}


async def publish_file(server: Server, path: Path, tmp: Path) -> tuple[int, str, int]:
    """``wire publish --file path``: its exit code, stderr and peak memory."""
    args = [sys.executable, "-m", "wire", "publish", "--file", str(path)]
    code, _, err, peak = await asyncio.to_thread(run_measured, args, wire_env(server.base), tmp)
    return code, err, peak


async def test_publish_file_streams_a_large_file_in_bounded_memory(
    server: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """96 MiB of JSONL (64 KiB lines, each refused by the server for its urgency)
    must cost about one batch of memory, not the file: it is read as it is sent."""
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_bytes(b'{"title": "x", "tags": ["world"], "urgency": 0}\n')
    line = b'{"title": "x", "tags": ["world"], "urgency": 0, "body": "%s"}\n' % (b"b" * 65_000)
    with big.open("wb") as f:
        for _ in range(96 * MIB // len(line)):
            f.write(line)
    lines = 96 * MIB // len(line)
    _, _, baseline = await publish_file(server, small, tmp_path)
    code, err, peak = await publish_file(server, big, tmp_path)
    assert code == 1, err
    assert f"{lines} items: 0 published, 0 already published, {lines} invalid" in err
    assert peak - baseline < 40 * MIB, f"{(peak - baseline) / MIB:.0f} MiB over the baseline"
    _, stored = await get_json(http, server.base + "/v1/items?tags=*")
    assert stored["items"] == []


async def test_publish_file_with_a_bom_crlf_blank_oversize_and_broken_lines(
    server: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Each bad line is named by its number, the good ones are published once, and a
    run again (after the first was cut short or not) publishes nothing twice."""
    good = b'{"title": "Item %d", "tags": ["world"]}'
    path = tmp_path / "items.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + good % 1 + b"\r\n"  # line 1, after a BOM
        b"\r\n   \n"  # lines 2-3 blank
        + b'{"title": "%s", "tags": ["world"]}\r\n' % (b"x" * (2 * MIB))  # line 4: too long
        + b'{"title": "Caf\xe9", "tags": ["world"]}\n'  # line 5: not UTF-8
        + b'{"title": "", "tags": ["world"]}\n'  # line 6: invalid
        + good % 7 + b"\n"
        + b'{"title": "' + b"y" * (3 * MIB)  # line 8: too long, and the file's end
    )  # fmt: skip
    args = [sys.executable, "-m", "wire", "publish", "--file", str(path)]
    for run, published in ((1, 2), (2, 0)):
        code, out, err, _ = await asyncio.to_thread(
            run_measured, args, wire_env(server.base), tmp_path
        )
        assert code == 1 and out == "", (run, err)
        assert "Traceback" not in err
        for number in (4, 8):
            assert f"line {number}: 413 payload_too_large: over 1,048,576 bytes" in err
        assert "line 5: 400" in err and "line 6: 400 invalid_field (title)" in err
        assert f"6 items: {published} published, {2 - published} already published" in err
        assert "4 invalid (line 4, 5, 6, 8)" in err
    _, stored = await get_json(http, server.base + "/v1/items?tags=*")
    assert [i["title"] for i in stored["items"]] == ["Item 7", "Item 1"]


async def test_publish_file_refuses_a_json_array_too_large_to_parse(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "items.json"
    with path.open("wb") as f:
        f.write(b"[")
        for _ in range(65 * MIB // (1 << 16)):
            f.write(b'{"title": "%s", "tags": ["world"]},' % (b"t" * 65_000))
        f.write(b'{"title": "last", "tags": ["world"]}]')
    args = [sys.executable, "-m", "wire", "publish", "--file", str(path)]
    env = wire_env(server.base)
    code, _, err, _ = await asyncio.to_thread(run_measured, args, env, tmp_path)
    assert code == 2, err
    assert "a JSON array over 64 MiB: send it as JSONL" in err


# -- wire export --------------------------------------------------------------------


async def run_export(base: str, tmp: Path, *args: str) -> tuple[int, str, str]:
    argv = [sys.executable, "-m", "wire", "export", *args]
    code, out, err, _ = await asyncio.to_thread(run_measured, argv, wire_env(base), tmp, b"", 10)
    return code, out, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--url", "notaurl"], "--url: not an http(s) URL"),
        (["--url", "ftp://example.com"], "--url: not an http(s) URL"),
        (["--url", "http://[::1"], "--url: not an http(s) URL"),
        (["--after", "yesterday"], "--after: not a stream id"),
        (["--after", "1-2-3"], "--after: not a stream id"),
    ],
)
async def test_export_bad_arguments_are_usage_errors_before_any_request(
    server: Server, tmp_path: Path, args: list[str], says: str
) -> None:
    code, out, err = await run_export(server.base, tmp_path, *args)
    assert (code, out) == (2, ""), err
    assert says in err and "usage: wire export" in err
    assert "Traceback" not in err


@asynccontextmanager
async def fake_items_api(pages: Callable[[str], web.StreamResponse]) -> AsyncIterator[str]:
    """A misbehaving ``GET /v1/items`` on a real port: ``pages(after)`` answers."""
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        return pages(request.query["after"])

    app.router.add_get("/v1/items", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def stored(item_id: str) -> dict[str, Any]:
    return {"id": item_id, "guid": item_id, "version": 1, "title": item_id, "tags": ["world"]}


async def test_export_stops_with_an_error_when_the_cursor_does_not_advance(tmp_path: Path) -> None:
    """A server that answers every page with the same ``next`` (and the same items)
    would make the export loop forever, writing the items again each time."""
    requests: list[str] = []

    def page(after: str) -> web.StreamResponse:
        requests.append(after)
        return web.json_response({"items": [stored("5-0")], "next": "5-0"})

    async with fake_items_api(page) as base:
        code, out, err = await run_export(base, tmp_path)
    assert code == 1, err
    assert [orjson.loads(line)["id"] for line in out.splitlines()] == ["5-0"]
    assert "next cursor 5-0 does not advance past 5-0" in err
    assert len(requests) == 2


@pytest.mark.parametrize(
    "answer",
    [b"<html>oops</html>", b'{"items": "none"}', b"[]", b'{"items": [], "next": "soon"}'],
)
async def test_export_says_what_is_wrong_with_an_answer_that_is_not_a_page(
    tmp_path: Path, answer: bytes
) -> None:
    def page(after: str) -> web.StreamResponse:
        return web.Response(body=answer, content_type="application/json")

    async with fake_items_api(page) as base:
        code, out, err = await run_export(base, tmp_path)
    assert (code, out) == (1, ""), err
    assert "not a page of items" in err and "Traceback" not in err


# -- wire tail ----------------------------------------------------------------------


@pytest.mark.parametrize("tags", [",", " , ", ""])
async def test_tail_without_a_tag_is_a_usage_error_not_a_silent_feed(
    server: Server, tmp_path: Path, tags: str
) -> None:
    """``--tags ,`` used to subscribe to nothing and wait forever, printing nothing."""
    argv = [sys.executable, "-m", "wire", "tail", "--tags", tags]
    code, out, err, _ = await asyncio.to_thread(
        run_measured, argv, wire_env(server.base), tmp_path, b"", 10
    )
    assert (code, out) == (2, ""), err
    assert "--tags: give at least one tag" in err and "usage: wire tail" in err
