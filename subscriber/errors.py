"""The subscriber library's exceptions.

Only failures that retrying cannot fix are raised: the feed reconnects by
itself after network loss, gateway restarts and slow-consumer closes, so
those never reach the application.
"""

from __future__ import annotations


class SubscriberError(Exception):
    """Base class of every exception the subscriber library raises."""


class RefusedError(SubscriberError):
    """The server refused the WebSocket upgrade for a reason a retry will not fix.

    ``status`` is the HTTP status; ``code`` and ``message`` come from the
    server's JSON error body when it sent one.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class AuthError(RefusedError):
    """The subscriber token is missing or wrong (401), or the Origin is refused (403)."""


class SubscriptionError(SubscriberError):
    """The server rejected a subscribe or unsubscribe (a bad tag, too many tags...).

    The feed stays connected; :attr:`Feed.tags` shows what is subscribed now.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field


class ProtocolError(SubscriberError):
    """The server sent something this library cannot understand."""
