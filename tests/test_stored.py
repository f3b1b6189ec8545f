"""The stored layout has one home: what the Lua scripts write (through a real
Redis) is byte for byte what wire.core.stored says, and every script reads
exactly the KEYS and ARGV its named arguments give it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
import pytest

from wire.core import stored
from wire.core.items import Submission, parse_submission
from wire.runtime.settings import Settings
from wire.storage import keys, scripts
from wire.storage import store as store_module
from wire.storage.store import Store, connect

AT = "2024-06-01T12:00:00.123Z"


@pytest.fixture
async def store(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    """A store on the test Redis whose clock always reads :data:`AT`."""
    monkeypatch.setattr(store_module, "published_now", lambda: AT)
    redis = connect(redis_url)
    yield Store(redis, Settings(redis_url=redis_url))
    await redis.aclose()


async def stream_json(store: Store, entry_id: str) -> bytes:
    """The ``j`` field of a stream entry: the JSON exactly as the script stored it."""
    rows: Any = await store.redis.xrange(keys.STREAM, entry_id, entry_id)
    return rows[0][1][b"j"]  # type: ignore[no-any-return]


def sub(**fields: Any) -> Submission:
    return parse_submission({"guid": "g-1", "title": "T", "tags": ["world"], **fields})


class Versions(NamedTuple):
    """A story's successive submissions (same guid)."""

    name: str
    sent: list[dict[str, Any]]


VERSIONS = [
    Versions("bare", [{}]),
    Versions(
        "all fields",
        [
            {
                "subtitle": "S",
                "body": 'B\n"q"',
                "mark": "Exclusive",
                "url": "https://example.com/a",
                "urgency": 2,
            }
        ],
    ),
    Versions(
        "unicode and escapes", [{"title": 'Ünïcode "quoted" \\ ✓', "tags": ["société", "a/b"]}]
    ),
    Versions("later without mark: Updated", [{}, {"title": "T2"}, {"mark": "Correction"}]),
    Versions("later keeps its mark", [{"mark": "First"}, {"mark": "Second"}]),
]


@pytest.mark.parametrize("case", VERSIONS, ids=[c.name for c in VERSIONS])
async def test_a_published_version_is_what_the_pure_layout_says(
    store: Store, case: Versions
) -> None:
    for version, fields_ in enumerate(case.sent, start=1):
        item = sub(**fields_)
        expected = stored.version_json(stored.pieces(item), version, stored.layout(AT))
        published = await store.publish(item)
        assert await stream_json(store, published.id) == expected
        assert published.json == stored.with_id(published.id, expected)
        if version == 1:
            assert expected == stored.first_version(item, AT)


async def test_an_idempotent_repeat_answers_the_same_bytes(store: Store) -> None:
    item = sub(mark="M")
    first = await store.publish(item, idempotency_key="k", digest="d")
    again = await store.publish(item, idempotency_key="k", digest="d")
    assert again.json == first.json == stored.with_id(first.id, stored.first_version(item, AT))


async def test_a_released_embargo_is_what_the_pure_layout_says(store: Store) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    held = sub(mark="Embargoed", embargo_until=soon.isoformat())
    await store.publish(sub())  # so the release is version 2
    answer = await store.embargo(held, orjson.dumps(held.pending()))
    assert orjson.loads(answer.json) == stored.pending(held)
    [(status, _, entry_id)] = await store.release_embargoes(int(soon.timestamp() * 1000) + 1)
    assert status == "new"
    expected = stored.version_json(stored.pieces(held.released()), 2, stored.layout(AT))
    assert await stream_json(store, entry_id) == expected


async def test_a_withdrawal_is_what_the_pure_layout_says(store: Store) -> None:
    await store.publish(sub(tags=["world/europe", "société"]))
    await store.publish(sub(tags=["business", "a-b"]))
    reason = 'Legal: "quoted" ✓ \\'
    withdrawn = await store.withdraw("g-1", reason)
    parts = stored.withdrawal_pieces("g-1", reason, AT)
    tags = {"world/europe", "société", "business", "a-b"}
    expected = stored.withdrawal_json(parts, 3, tags)
    assert await stream_json(store, withdrawn.id) == expected
    assert withdrawn.json == stored.with_id(withdrawn.id, expected)
    item = orjson.loads(withdrawn.json)
    assert item["tags"] == sorted(tags) and item["reason"] == reason
    # A stub keeps who, when and which version, nothing of the content.
    versions = (await store.story_page("g-1", 100)).versions
    assert orjson.loads(versions[0].json) == {
        "id": versions[0].id,
        "guid": "g-1",
        "version": 1,
        "published_at": AT,
        "tags": ["world/europe", "société"],
        "pubstatus": "canceled",
    }


class Script(NamedTuple):
    name: str
    text: str
    args: type[scripts.ScriptArgs]


SCRIPTS = [
    Script("publish", scripts.PUBLISH, scripts.PublishArgs),
    Script("withdraw", scripts.WITHDRAW, scripts.WithdrawArgs),
    Script("embargo", scripts.EMBARGO, scripts.EmbargoArgs),
    Script("cancel", scripts.CANCEL_EMBARGO, scripts.CancelArgs),
    Script("embargo page", scripts.EMBARGO_PAGE, scripts.EmbargoPageArgs),
    Script("release", scripts.RELEASE, scripts.ReleaseArgs),
]


def documented(text: str, what: str) -> list[str]:
    """The names a script's ``-- KEYS:`` or ``-- ARGV:`` lines give, by position."""
    block = re.search(rf"^-- {what}:(.*\n(?:--  .*\n)*)", text, re.M)
    if block is None:
        return []
    pairs = re.findall(r"(\d+) ([a-z_]+)", block.group(1))
    assert [int(n) for n, _ in pairs] == list(range(1, len(pairs) + 1))
    return [name for _, name in pairs]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_each_script_reads_exactly_its_named_arguments(script: Script) -> None:
    names = [f.name for f in fields(script.args)]
    n_keys = script.args.N_KEYS
    highest = {
        what: max((int(n) for n in re.findall(rf"{what}\[(\d+)\]", script.text)), default=0)
        for what in ("KEYS", "ARGV")
    }
    assert highest == {"KEYS": n_keys, "ARGV": len(names) - n_keys}
    assert documented(script.text, "KEYS") == names[:n_keys]
    assert documented(script.text, "ARGV") == names[n_keys:]


def test_script_arguments_become_keys_and_argv_in_field_order() -> None:
    call = scripts.CancelArgs(schedule="s", item="i")
    assert call.lists() == (["s", "i"], [])
