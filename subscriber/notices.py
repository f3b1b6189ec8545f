"""Out-of-band news about a feed's connection, given to its ``on_notice`` callback.

Items and withdrawals are the feed's content and come through ``async for``;
these notices are about the pipe (connected, lost, history gap), so an
application that does not care about them never has to skip them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("subscriber")


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The server confirmed the connection's tags (on connect and after each change)."""

    tags: tuple[str, ...]
    since: str | None = None
    """The id the connection resumed after, when it asked for one."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection was lost (or a connection attempt failed); retrying after a delay."""

    code: int | None
    """The WebSocket close code (4008 slow consumer, 1001 going away...), if any."""
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class HistoryTruncated:
    """Retention removed items after the resume point; they can never be replayed."""

    message: str


Notice = Subscribed | Disconnected | HistoryTruncated


def log_notice(notice: Notice) -> None:
    """Log a notice: what happens to notices when the application gives no callback."""
    if isinstance(notice, Subscribed):
        log.debug("subscribed to %s", ", ".join(notice.tags) or "nothing")
    elif isinstance(notice, Disconnected):
        log.warning(
            "connection lost (%s %s); reconnecting in %.2fs",
            notice.code,
            notice.reason,
            notice.retry_in,
        )
    else:
        log.warning("history truncated: %s", notice.message)
