"""``wire bench``: the benchmark (filled in by the Performance issue)."""

from __future__ import annotations

from typing import Any


def add_commands(sub: Any) -> None:
    """Register ``wire bench``."""
