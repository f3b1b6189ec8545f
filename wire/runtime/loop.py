"""How a server process runs: its event loop and its garbage collector.

``WIRE_EVENT_LOOP=auto`` (the default) runs the process on uvloop where it is
installed (a default dependency on the platforms that have wheels for it) and
on asyncio's own loop elsewhere; ``uvloop`` insists on it, ``asyncio`` never
uses it. uvloop costs less CPU per socket operation and per request: the
figures are in docs/performance.md.

The cyclic garbage collector is tuned for a process holding thousands of
long-lived connections, each a few dozen tracked objects: a full collection
walks all of them (about half a microsecond each here, so 100+ ms at a few
thousand connections), and with Python's defaults full collections come often
while connections arrive. Everything that exists when the server starts
(modules, the app) is frozen out of collections, and young collections run
every ``gc_threshold`` allocations instead of 700, which makes full ones rarer
too. The figures are in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHOICES = ("asyncio", "uvloop", "auto")


def run(main: Coroutine[Any, Any, T], choice: str = "auto", *, gc_threshold: int = 0) -> T:
    """Run ``main`` to completion on the chosen loop, with the collector tuned."""
    if choice not in CHOICES:
        main.close()
        raise SystemExit(
            f"wire: WIRE_EVENT_LOOP must be one of {', '.join(CHOICES)}, not {choice!r}"
        )
    if gc_threshold > 0:
        tune_gc(gc_threshold)
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                main.close()
                raise SystemExit(
                    "wire: WIRE_EVENT_LOOP=uvloop needs uvloop: pip install uvloop"
                ) from None
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


def tune_gc(threshold: int) -> None:
    """Freeze what exists now out of collections; collect young objects less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)
