"""A subscribed connection as the hub sees it: its transport, state and data.

The hub writes frames to the connection's asyncio transport itself (see
:mod:`wire.gateway.handover` for the one place a transport is handed over).
What the connection is doing is its :class:`~wire.gateway.state.State`; the
data a state needs lives here beside it: what is held while replaying,
the backlog while behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from wire.core import frames
from wire.core.entitlements import Grant
from wire.core.entry import Entry
from wire.core.ids import ZERO, StreamKey
from wire.gateway.backlog import Backlog
from wire.gateway.holding import Holding
from wire.gateway.state import CLOSED, LIVE, State


class Transport(Protocol):
    """The part of an asyncio transport the hub uses."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class Conn:
    """A subscribed connection as the hub sees it."""

    # One per connection: slots keep it small (see docs/performance.md, memory).
    __slots__ = (
        "backlog",
        "batch",
        "caught_up_waiter",
        "grant",
        "holding",
        "keys",
        "last_key",
        "on_close",
        "out",
        "partner",
        "sse",
        "state",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        sse: bool = False,
        batch: bool = False,
        grant: Grant | None = None,
    ) -> None:
        self.transport = transport
        self.sse = sse
        #: A WebSocket that asked for batched frames (see :func:`wire.core.frames.ws_batch`).
        self.batch = batch and not sse
        #: A limited grant (partner token), else None: see :meth:`visible`.
        self.grant = grant if grant is not None and grant.limited else None
        #: The named partner reading (recorded in the delivery ledger), None when anonymous.
        self.partner = grant.name if grant is not None else None
        self.keys: frozenset[str] = frozenset()
        #: Changed only through :func:`wire.gateway.state.step`.
        self.state: State = LIVE
        #: The key of the last item written: nothing at or before it is sent again.
        self.last_key: StreamKey = ZERO
        #: Live entries held while replaying (left as they were once closed), else None.
        self.holding: Holding | None = None
        #: This connection's share of the batch being dispatched (None between batches).
        self.out: list[Entry] | None = None
        #: What the hub queues while the socket is behind, else None.
        self.backlog: Backlog | None = None
        #: Resolved when the hub stops holding entries for this connection.
        self.caught_up_waiter: asyncio.Future[None] | None = None
        self.on_close: Callable[[int, str], None] | None = None

    @property
    def closed(self) -> bool:
        return self.state is CLOSED

    @property
    def held(self) -> list[Entry] | None:
        """The entries queued while behind, else None."""
        backlog = self.backlog
        return None if backlog is None else backlog.entries

    @property
    def ahead(self) -> set[StreamKey] | None:
        """Keys of queued entries already sent ahead, else None."""
        backlog = self.backlog
        return None if backlog is None else backlog.ahead

    def visible(self, entries: Sequence[Entry]) -> Sequence[Entry]:
        """``entries`` as this connection may see them.

        Routing already keeps items outside a grant away; what is left is a
        withdrawal's tags (those of every version), narrowed to the grant with
        frames built once per grant. Unlimited connections pay nothing.
        """
        grant = self.grant
        if grant is None or not any(e.withdrawal for e in entries):
            return entries
        return grant.visible(entries)

    def encode(self, entries: Sequence[Entry]) -> bytes:
        """The bytes of ``entries`` in this connection's encoding."""
        if self.grant is not None:
            entries = self.visible(entries)
        if len(entries) == 1:  # a quiet wire: one item, its cached bytes as they are
            return entries[0].sse_chunk if self.sse else entries[0].ws_frame
        if self.sse:
            return b"".join([e.sse_chunk for e in entries])
        if self.batch:
            return frames.ws_batch([e.ws_frame for e in entries])
        return b"".join([e.ws_frame for e in entries])
