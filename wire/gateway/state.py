"""A subscribed connection's state as the hub sees it, and every transition, in one table.

A connection can be replaying history (live items are held for it) and, on
its own, have a socket that is behind (the hub queues its items, so urgent
ones can overtake). Both can hold at once, so the product is spelled out:
each real combination is one :class:`State`, with its data on the
connection (the replay buffer while replaying, the backlog while behind).

:data:`TRANSITIONS` is the only place a state is decided; the hub says *when*
an :class:`Event` happens and :func:`step` says where it leads, raising
:class:`IllegalTransition` for anything the table does not list. CLOSED is
terminal. There is no CLOSING: once the hub closes a connection nothing more
is written to it, and the transport's drain (with its abort deadline) is
asyncio's business, not a state the hub acts on.
"""

from __future__ import annotations

from enum import Enum

from wire.core.errors import WireError


class IllegalTransition(WireError):
    """An event the connection's state does not allow: a bug in the gateway."""


class State(Enum):
    """Where a connection is; ``replaying`` and ``behind`` are read on the hot path."""

    LIVE = ("live", False, False)
    BEHIND = ("behind", False, True)
    REPLAYING = ("replaying", True, False)
    REPLAYING_BEHIND = ("replaying, behind", True, True)
    CLOSED = ("closed", False, False)

    def __init__(self, label: str, replaying: bool, behind: bool) -> None:
        self.label = label
        #: Live items go to the connection's replay buffer, not to its socket.
        self.replaying = replaying
        #: The hub queues the connection's items in its backlog.
        self.behind = behind


class Event(Enum):
    """What happens to a connection."""

    REPLAY = "a catch-up starts (or restarts): hold live items"
    GO_LIVE = "the catch-up is sent: send what was held"
    FALL_BEHIND = "unsent data passed the hold mark: queue items in the hub"
    CATCH_UP = "the socket drained: write the backlog"
    CLOSE = "closed by the server, or found closing"


LIVE, BEHIND, REPLAYING, REPLAYING_BEHIND, CLOSED = State
REPLAY, GO_LIVE, FALL_BEHIND, CATCH_UP, CLOSE = Event

TRANSITIONS: dict[State, dict[Event, State]] = {
    LIVE: {REPLAY: REPLAYING, FALL_BEHIND: BEHIND, CLOSE: CLOSED},
    BEHIND: {REPLAY: REPLAYING_BEHIND, CATCH_UP: LIVE, CLOSE: CLOSED},
    # A new subscribe with history takes over a running catch-up: REPLAY again.
    REPLAYING: {REPLAY: REPLAYING, GO_LIVE: LIVE, FALL_BEHIND: REPLAYING_BEHIND, CLOSE: CLOSED},
    REPLAYING_BEHIND: {
        REPLAY: REPLAYING_BEHIND,
        GO_LIVE: BEHIND,
        CATCH_UP: REPLAYING,
        CLOSE: CLOSED,
    },
    # A catch-up can start or end on a connection closed while it awaited
    # Redis or the socket; nothing happens. The hub never closes twice, and
    # never queues for (or releases) a closed connection.
    CLOSED: {REPLAY: CLOSED, GO_LIVE: CLOSED},
}


def step(state: State, event: Event) -> State:
    """The state ``event`` leads to from ``state``; IllegalTransition if none."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise IllegalTransition(f"{event.name} is not allowed in state {state.name}") from None
