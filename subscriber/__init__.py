"""The wire's Python subscriber library.

::

    import subscriber

    async with subscriber.connect("ws://127.0.0.1:8080/v1/ws", tags=["world"]) as feed:
        async for event in feed:
            if isinstance(event, subscriber.Withdrawal):
                print("withdrawn:", event.guid, event.reason)
            else:
                print(event.published_at, event.mark, event.title)

The feed reconnects by itself and resumes after the last item it yielded, so
the loop sees every matching item once, in order, across gateway restarts,
slow-consumer closes and network loss.
"""

from subscriber.client import Feed, connect, websocket_url
from subscriber.cursor import CursorFile, stream_key
from subscriber.errors import (
    AuthError,
    ProtocolError,
    RefusedError,
    SubscriberError,
    SubscriptionError,
)
from subscriber.items import Association, Entity, Event, Item, Rendition, Subject, Withdrawal
from subscriber.languages import normalize_language
from subscriber.notices import Disconnected, HistoryTruncated, Notice, Subscribed

__all__ = [
    "Association",
    "AuthError",
    "CursorFile",
    "Disconnected",
    "Entity",
    "Event",
    "Feed",
    "HistoryTruncated",
    "Item",
    "Notice",
    "ProtocolError",
    "RefusedError",
    "Rendition",
    "Subject",
    "Subscribed",
    "SubscriberError",
    "SubscriptionError",
    "Withdrawal",
    "connect",
    "normalize_language",
    "stream_key",
    "websocket_url",
]
