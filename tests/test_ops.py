"""Operations: metrics, request logs, graceful shutdown, the compose file."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from pathlib import Path

import aiohttp
import orjson
import pytest
import websockets
import yaml

from tests.conftest import Server
from tests.support import EDITOR_TOKEN, ROOT, WireProcess, free_port, item, post


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


async def test_metrics_count_what_happened(server: Server, http: aiohttp.ClientSession) -> None:
    async with websockets.connect(server.ws + "?tags=world") as ws:
        await ws.recv()
        await post(http, server.base, item("Counted"))
        assert orjson.loads(await ws.recv())["type"] == "item"
        await post(http, server.base, {"title": ""})
        async with http.get(server.base + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    assert metric(text, 'wire_items_published_total{kind="item"}') == 1
    assert metric(text, "wire_deliveries_total") == 1
    assert metric(text, "wire_connections") == 1
    assert metric(text, "wire_stream_length") == 1
    assert metric(text, "wire_publish_to_deliver_seconds_count") == 1
    assert metric(text, "wire_subscribed_tags") == 1
    assert metric(text, "wire_tag_subscribers_max") == 1
    assert (
        metric(text, 'wire_http_requests_total{method="POST",route="/v1/items",status="201"}') == 1
    )
    assert (
        metric(text, 'wire_http_requests_total{method="POST",route="/v1/items",status="400"}') == 1
    )


async def test_requests_get_an_id_and_one_log_line_without_secrets(
    server: Server, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wire.access")
    async with http.get(
        server.base + "/v1/items?token=sekrit", headers={"X-Request-Id": "abc-123"}
    ) as resp:
        assert resp.headers["X-Request-Id"] == "abc-123"
    status, _ = await post(http, server.base, item("Logged", body="BODY-TEXT"))
    assert status == 201
    records = [r for r in caplog.records if r.name == "wire.access"]
    assert [(r.method, r.route, r.status) for r in records] == [  # type: ignore[attr-defined]
        ("GET", "/v1/items", 200),
        ("POST", "/v1/items", 201),
    ]
    assert records[0].request_id == "abc-123"  # type: ignore[attr-defined]
    logged = " ".join(str(vars(r)) for r in records)
    assert "sekrit" not in logged and EDITOR_TOKEN not in logged and "BODY-TEXT" not in logged


async def test_sigterm_closes_clients_with_1001_and_exits(redis_url: str) -> None:
    gw = WireProcess(["gateway", "--redis", redis_url], {}, free_port()).start()
    try:
        await gw.ready()
        async with websockets.connect(gw.ws + "?tags=world") as ws:
            await ws.recv()
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert await asyncio.to_thread(gw.proc.wait, 10) == 0
    finally:
        gw.kill()


def test_compose_file_has_the_production_shape() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis-replica"]["command"][1:4] == ["--replicaof", "redis", "6379"]
    sentinels = [s for s in services if s.startswith("sentinel-")]
    assert len(sentinels) == 3
    assert all("--sentinel" in services[s]["command"] for s in sentinels)
    assert all(
        "sentinel monitor mymaster redis 6379 2" in services[s]["command"] for s in sentinels
    )
    roles = {name: svc.get("command") for name, svc in services.items()}
    assert sorted(n for n, c in roles.items() if c == ["wire", "publisher"]) == [
        "publisher-1",
        "publisher-2",
    ]
    assert sorted(n for n, c in roles.items() if c == ["wire", "gateway"]) == [
        "gateway-1",
        "gateway-2",
    ]
    for name in ("publisher-1", "gateway-1"):
        env = services[name]["environment"]
        assert env["WIRE_REDIS_URL"].startswith("redis+sentinel://sentinel-1:26379,")
        assert env["WIRE_REDIS_URL"].endswith("/mymaster")
    nginx = services["nginx"]
    mount = nginx["volumes"][0].split(":")[0]
    conf = (ROOT / mount).read_text()
    assert "proxy_set_header Upgrade $http_upgrade" in conf
    for upstream in ("gateway-1:8080", "gateway-2:8080", "publisher-1:8080", "publisher-2:8080"):
        assert upstream in conf
    assert Path(ROOT / "Dockerfile").exists()
