"""One typed settings object, built once from the environment and flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a wire process can be configured with (see docs/operations.md)."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: ``redis://``, ``unix://`` or ``redis+sentinel://``; None starts an embedded redis-server.
    redis_url: str | None = None
    data_dir: Path = Path(".wire")
    appendfsync: str = "everysec"
    editor_tokens: tuple[str, ...] = ()
    subscriber_tokens: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    retention_days: float = 7.0
    max_items: int = 1_000_000
    idempotency_ttl: int = 24 * 3600
    replica_acks: int = 0
    ping_interval: float = 20.0
    max_buffer: int = 1024 * 1024
    #: Kernel send buffer per subscriber socket (0: the kernel's autotuning).
    send_buffer: int = 128 * 1024
    max_connections: int = 20_000
    max_tags: int = 100
    subscribe_rate: int = 20
    max_frame: int = 64 * 1024
    recent_items: int = 10_000
    read_batch: int = 1_000
    log_level: str = "INFO"
    #: TOML file of subscriber tokens limited to tags (see wire.entitlements).
    entitlements: Path | None = None
    #: How often each publisher looks for due embargoes (seconds).
    embargo_poll: float = 0.1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``WIRE_*`` variables, then apply non-None overrides (flags)."""
        e = os.environ if env is None else env
        base = cls()
        values: dict[str, Any] = {
            "host": e.get("WIRE_HOST", base.host),
            "port": int(e.get("WIRE_PORT", base.port)),
            "redis_url": e.get("WIRE_REDIS_URL") or None,
            "data_dir": Path(e.get("WIRE_DATA_DIR", str(base.data_dir))),
            "appendfsync": e.get("WIRE_APPENDFSYNC", base.appendfsync),
            "editor_tokens": _split(e.get("WIRE_EDITOR_TOKENS")),
            "subscriber_tokens": _split(e.get("WIRE_SUBSCRIBER_TOKENS")),
            "allowed_origins": _split(e.get("WIRE_ALLOWED_ORIGINS")),
            "retention_days": float(e.get("WIRE_RETENTION_DAYS", base.retention_days)),
            "max_items": int(e.get("WIRE_MAX_ITEMS", base.max_items)),
            "replica_acks": int(e.get("WIRE_REPLICA_ACKS", base.replica_acks)),
            "ping_interval": float(e.get("WIRE_PING_INTERVAL", base.ping_interval)),
            "max_buffer": int(e.get("WIRE_MAX_BUFFER", base.max_buffer)),
            "send_buffer": int(e.get("WIRE_SEND_BUFFER", base.send_buffer)),
            "max_connections": int(e.get("WIRE_MAX_CONNECTIONS", base.max_connections)),
            "max_tags": int(e.get("WIRE_MAX_TAGS", base.max_tags)),
            "subscribe_rate": int(e.get("WIRE_SUBSCRIBE_RATE", base.subscribe_rate)),
            "log_level": e.get("WIRE_LOG_LEVEL", base.log_level).upper(),
            "entitlements": Path(e["WIRE_ENTITLEMENTS"]) if e.get("WIRE_ENTITLEMENTS") else None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)
