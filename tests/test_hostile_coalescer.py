"""Single writes grouped by the Coalescer, attacked at the HTTP edge with a real Redis.

A write Redis refuses for one call (out of memory, a read-only replica) is
that call's answer: the batch path answers it 503 (retry) per item, and the
single path, now grouped into pipelines the same way, must too: never a 500
(which tells the editor's client nothing was wrong with Redis, and which
editor.js treats as "maybe published").
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import server_factory
from tests.support import RedisServer, item, post


@pytest.mark.fault
async def test_writes_redis_refuses_are_each_a_503_never_a_500(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        async with server_factory(redis.url) as make:
            pub = await make(gateway=False)
            status, body = await post(http, pub.base, item("Warm"))
            assert status == 201, body  # the scripts are loaded
            with redis.client() as r:
                r.config_set("maxmemory-policy", "noeviction")
                r.config_set("maxmemory", 1)
            keys = [f"oom-{n}" for n in range(12)]
            answers = await asyncio.gather(
                *(
                    post(http, pub.base, item(f"Refused {n}"), headers={"Idempotency-Key": k})
                    for n, k in enumerate(keys)
                )
            )
            assert [s for s, _ in answers] == [503] * len(keys), answers
            assert {b["error"]["code"] for _, b in answers} == {"unavailable"}
            guid = body["item"]["guid"]
            async with http.post(
                f"{pub.base}/v1/stories/{guid}/withdraw",
                json={"reason": "test"},
                headers={"Authorization": "Bearer editor-token-for-tests"},
            ) as resp:
                assert resp.status == 503, await resp.text()
            with redis.client() as r:
                r.config_set("maxmemory", 0)
            again = await asyncio.gather(
                *(
                    post(http, pub.base, item(f"Refused {n}"), headers={"Idempotency-Key": k})
                    for n, k in enumerate(keys)
                )
            )
            assert [s for s, _ in again] == [201] * len(keys), "nothing was written before"
    finally:
        redis.stop()
