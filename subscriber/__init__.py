"""The Python subscriber library (see subscriber.client)."""
