"""The event loop a server process runs on: asyncio's own, or uvloop.

``WIRE_EVENT_LOOP=uvloop`` (or ``auto``: uvloop when it is installed) runs the
process on uvloop, the ``fast`` extra (``pip install 'wire[fast]'``). The
benchmark's figures for both are in docs/performance.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHOICES = ("asyncio", "uvloop", "auto")


def run(main: Coroutine[Any, Any, T], choice: str = "asyncio") -> T:
    """Run ``main`` to completion on the chosen loop."""
    if choice not in CHOICES:
        main.close()
        raise SystemExit(
            f"wire: WIRE_EVENT_LOOP must be one of {', '.join(CHOICES)}, not {choice!r}"
        )
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                main.close()
                raise SystemExit(
                    "wire: WIRE_EVENT_LOOP=uvloop needs uvloop: pip install 'wire[fast]'"
                ) from None
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)
