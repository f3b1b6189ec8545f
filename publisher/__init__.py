"""The editors' HTTP ingest service: validate, store, answer."""

from aiohttp import web

from publisher.embargo import setup_embargoes
from publisher.feeds import setup_feeds
from publisher.items import MAX_BODY, setup_items
from publisher.ledger import setup_ledger
from publisher.longpoll import setup_watcher
from publisher.stories import setup_stories

__all__ = ["MAX_BODY", "setup_publisher"]


def setup_publisher(app: web.Application, *, watch: bool = False) -> None:
    """Add every publisher route (items, stories, embargoes, feeds,
    the delivery ledger) and the embargo releaser;
    with ``watch`` (no gateway in the process), the long-poll watcher too."""
    setup_items(app)
    setup_stories(app)
    setup_embargoes(app)
    setup_feeds(app)
    setup_ledger(app)
    if watch:
        setup_watcher(app)
