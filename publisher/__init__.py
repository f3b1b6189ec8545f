"""The editors' HTTP ingest service: validate, store, answer."""

from aiohttp import web

from publisher.embargo import setup_embargoes
from publisher.feeds import setup_feeds
from publisher.items import MAX_BODY, setup_items
from publisher.stories import setup_stories

__all__ = ["MAX_BODY", "setup_publisher"]


def setup_publisher(app: web.Application) -> None:
    """Add every publisher route (items, stories, embargoes, feeds) and the embargo releaser."""
    setup_items(app)
    setup_stories(app)
    setup_embargoes(app)
    setup_feeds(app)
