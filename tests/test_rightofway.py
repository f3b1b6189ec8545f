"""The fan-out's right of way: background work in ``wire run`` yields to a burst."""

from __future__ import annotations

import asyncio

from wire.runtime.rightofway import RightOfWay


async def test_while_the_fan_out_rests_nobody_waits() -> None:
    way = RightOfWay()
    assert not way.busy
    assert await way.wait() is False


async def test_a_waiter_goes_as_soon_as_the_fan_out_rests() -> None:
    way = RightOfWay(most=60)
    way.take()
    waiter = asyncio.create_task(way.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    way.give()
    assert await asyncio.wait_for(waiter, 5) is True
    assert not way.busy


async def test_a_fan_out_that_never_rests_holds_a_waiter_at_most_most_seconds() -> None:
    way = RightOfWay(most=0.01)
    way.take()
    assert await asyncio.wait_for(way.wait(), 5) is True
    assert way.busy  # it went anyway
