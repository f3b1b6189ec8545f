"""``wire deliver``: a process that only delivers webhooks (run any number of them).

Each webhook is delivered by the one process holding its lease in Redis
(see :mod:`wire.delivery.deliverer`); more processes mean more webhooks
delivered at once and a quick take-over when one dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

from wire.core.entitlements import Entitlements, load
from wire.core.ledger import Tally
from wire.delivery.deliverer import Deliverer
from wire.runtime.logs import setup_logging
from wire.runtime.settings import Settings
from wire.runtime.supervisor import Supervisor
from wire.storage.ledger import FLUSH_ERRORS, Ledger
from wire.storage.store import Store, connect


def add_command(sub: Any) -> None:
    """Register ``wire deliver`` on the ``wire`` parser."""
    p = sub.add_parser("deliver", help="deliver webhooks (needs WIRE_REDIS_URL or --redis)")
    p.add_argument("--redis", metavar="URL", help="Redis URL (WIRE_REDIS_URL)")
    p.add_argument("--entitlements", metavar="PATH", type=Path,
                   help="TOML file of partner grants (WIRE_ENTITLEMENTS)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Deliver until SIGINT or SIGTERM."""
    settings = Settings.from_env(redis_url=args.redis, entitlements=args.entitlements)
    setup_logging(settings.log_level)
    if settings.redis_url is None:
        raise SystemExit("wire deliver: set WIRE_REDIS_URL (or --redis) to the wire's Redis")
    asyncio.run(_deliver(settings))
    return 0


async def _deliver(settings: Settings) -> None:
    assert settings.redis_url is not None
    entitlements = load(settings.entitlements) if settings.entitlements else Entitlements()
    redis = connect(settings.redis_url)
    watch = connect(settings.redis_url, socket_timeout=15.0)
    tally = Tally(settings.ledger_pending)
    ledger = Ledger(redis, settings, tally)
    deliverer = Deliverer(
        Store(redis, settings), Store(watch, settings), entitlements, settings, tally
    )
    task = asyncio.create_task(deliverer.run())
    supervisor = Supervisor()
    supervisor.start("ledger", ledger.run)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await supervisor.stop()
    # The last deliveries' records go out before the process ends (if Redis answers).
    with contextlib.suppress(*FLUSH_ERRORS):
        async with asyncio.timeout(2):
            await ledger.flush()
    await redis.aclose()
    await watch.aclose()
