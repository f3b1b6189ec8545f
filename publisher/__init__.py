"""The editors' HTTP ingest service: validate, store, answer."""

from publisher.app import setup_publisher

__all__ = ["setup_publisher"]
