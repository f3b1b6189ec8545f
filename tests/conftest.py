"""Shared fixtures: a real redis-server per session and in-process wire servers.

Tests never touch the developer's Redis on 6379: the session starts its own
redis-server on a free port in a temporary directory, and every test starts
from an empty database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support import EDITOR_TOKEN, RedisServer, free_port, sport_partner
from wire.runtime.settings import Settings
from wire.web.app import create_app


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@dataclass
class Server:
    """A wire app served on a real loopback port."""

    app: web.Application
    runner: web.AppRunner
    settings: Settings

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/v1/ws"

    async def stop(self) -> None:
        await self.runner.cleanup()


ServerFactory = Callable[..., Awaitable[Server]]


@asynccontextmanager
async def server_factory(redis_url: str) -> AsyncIterator[ServerFactory]:
    """Start wire apps (publisher and gateway by default) with settings overrides;
    stop every one still running at the end."""
    started: list[Server] = []

    async def make(
        *, publisher: bool = True, gateway: bool = True, port: int | None = None, **overrides: Any
    ) -> Server:
        settings = Settings(
            port=port or free_port(),
            redis_url=redis_url,
            editor_tokens=(EDITOR_TOKEN,),
        ).with_(**overrides)
        app = create_app(settings, publisher=publisher, gateway=gateway)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        server = Server(app, runner, settings)
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        if server.runner.server is not None:  # not stopped by the test already
            await server.stop()


@pytest.fixture
async def make_server(redis_url: str) -> AsyncIterator[ServerFactory]:
    async with server_factory(redis_url) as make:
        yield make


@pytest.fixture
async def server(make_server: ServerFactory) -> Server:
    return await make_server()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def partner_file(tmp_path: Path) -> Path:
    """Entitlements with the sport-only token ``partner`` (see support.sport_partner)."""
    return sport_partner(tmp_path)
