"""A careless or hostile editor's newsroom content: ``extra``, ninjs ingest and
what follows a withdrawal or an embargo, through the real HTTP API and a real
Redis, checking that a refused request wrote nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from tests.conftest import Server
from tests.support import post
from tests.test_ninjs import NINJS
from tests.test_stories_content import server_redis
from wire.storage import keys


def nested(levels: int) -> str:
    """A JSON value that nests ``levels`` arrays (a few hundred bytes)."""
    return "[" * levels + "1" + "]" * levels


def later() -> str:
    """An embargo time an hour from now."""
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


def nothing_written(server: Server) -> None:
    """No stream entry, no story key and no pending embargo."""
    r = server_redis(server)
    assert r.xlen(keys.STREAM) == 0 and r.zcard(keys.EMBARGOES) == 0
    assert not r.keys(keys.PREFIX + "s:*")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", '{"title":"T","tags":["w"],"extra":{"x":%s}}'),
        ("application/json", '{"title":"T","tags":["w"],"embargo_until":"@","extra":{"x":%s}}'),
        (NINJS, '{"headlines":[{"value":"T"}],"subjects":[{"name":"w"}],"acme:x":%s}'),
    ],
)
async def test_a_deeply_nested_extra_is_a_400_not_a_500(
    server: Server, http: aiohttp.ClientSession, content_type: str, body: str
) -> None:
    """300 levels fit in 16 KiB, but orjson writes at most 254: the item could
    never be stored or read back. It is refused as bad input, naming extra."""
    data = (body % nested(300)).replace("@", later()).encode()
    status, answer = await post(http, server.base, data, headers={"Content-Type": content_type})
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_field" and "nested" in answer["error"]["message"]
    nothing_written(server)
    # Nesting that every output (a story read's wire:versions included) can carry is kept.
    status, answer = await post(
        http, server.base, (body % nested(60)).replace("@", later()).encode(),
        headers={"Content-Type": content_type},
    )  # fmt: skip
    assert status in (201, 202), answer
