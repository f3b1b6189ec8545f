"""The client tools (``wire publish --file``, ``wire export``, ``wire tail``) against
the worst input: huge and malformed files, bad arguments, a misbehaving server.

They run as real child processes against a real wire and Redis (or, where the
server is the one misbehaving, a fake HTTP server on a real socket).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp

from tests.conftest import Server
from tests.support import EDITOR_TOKEN, get_json, run_measured

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
    code, _, err, peak = await asyncio.to_thread(run_measured, args, wire_env(server.base), tmp_path)
    assert code == 2, err
    assert "a JSON array over 64 MiB: send it as JSONL" in err
