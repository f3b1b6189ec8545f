"""One typed settings object, built once from the environment and flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from wire.core.entitlements import named_token
from wire.core.tokens import usable


def _convert(raw: str, kind: Any, name: str) -> Any:
    """``raw`` as the field's type (int, float, str, Path, tuple of str, or optional)."""
    if get_origin(kind) in (Union, UnionType):
        kind = next(a for a in get_args(kind) if a is not type(None))
    try:
        if get_origin(kind) is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if kind is bool:
            if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind in (int, float, Path):
            return kind(raw)
        return raw
    except ValueError:
        raise SystemExit(f"wire: {name}={raw!r} is not a valid {kind.__name__}") from None


#: The settings that hold tokens (``name:token`` in the subscribers' list).
_TOKEN_FIELDS = ("editor_tokens", "subscriber_tokens", "admin_tokens", "metrics_token")


def _check_tokens(values: Mapping[str, Any]) -> None:
    """Refuse at start a configured token no client could present (a space in it,
    a character outside visible ASCII): it would fail every request, silently."""
    for name in _TOKEN_FIELDS:
        value = values.get(name)
        for configured in (value,) if isinstance(value, str) else value or ():
            named = name == "subscriber_tokens"
            if not usable(named_token(configured)[1] if named else configured):
                raise SystemExit(
                    f"wire: WIRE_{name.upper()} holds a token with a character a client"
                    " cannot send (tokens are visible ASCII, no spaces)"
                )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a wire process can be configured with (see docs/operations.md)."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: ``redis://``, ``unix://`` or ``redis+sentinel://``; None starts an embedded redis-server.
    redis_url: str | None = None
    data_dir: Path = Path(".wire")
    appendfsync: str = "everysec"
    #: The embedded server's binary: empty is ``redis-server`` from the PATH,
    #: else the bundled ``valkey-server``; ``bundled``, a command or a path.
    redis_server: str = ""
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
    #: Plain HTTP connections per process (streams have max_connections);
    #: lowered automatically to fit the open-files limit (see wire.listen).
    max_http_connections: int = 1_000
    max_tags: int = 100
    subscribe_rate: int = 20
    max_frame: int = 64 * 1024
    #: Seconds a connection may wait without a complete request (headers
    #: trickled in, slowloris) or sit idle between keep-alive requests.
    idle_timeout: float = 30.0
    recent_items: int = 10_000
    #: The recent-items window's cap in bytes of item JSON (oldest go first).
    recent_bytes: int = 64 * 1024 * 1024
    #: Most stories one compact catch-up tracks; past it the range goes out uncompacted.
    compact_stories: int = 100_000
    #: Catch-ups per process that read history from Redis at once; the rest
    #: wait their turn, holding live items as a replay does (under max_buffer).
    max_catchups: int = 16
    read_batch: int = 1_000
    #: While a burst is under way (a read found items waiting) the reader
    #: lingers this long at a time, reading again, before it dispatches (for
    #: up to twice its last dispatch), so more of the burst goes out in each
    #: socket write; a quiet wire (a read that waited for its item) never
    #: waits. 0 turns it off.
    read_gather_ms: float = 2.0
    #: ``auto`` (uvloop where it is installed, a default dependency where it
    #: has wheels; asyncio elsewhere), ``uvloop`` or ``asyncio``.
    event_loop: str = "auto"
    #: Allocations between young garbage collections (Python's default is 700,
    #: 0 keeps it). Fewer collections mean fewer full ones, each of which walks
    #: every connection's objects: 100+ ms at a few thousand connections.
    gc_threshold: int = 10_000
    log_level: str = "INFO"
    #: TOML file of subscriber tokens limited to tags (see wire.entitlements).
    entitlements: Path | None = None
    #: How often each publisher looks for due embargoes (seconds).
    embargo_poll: float = 0.1
    #: Stream entries one history read (``GET /v1/items``, a backfill) may scan
    #: before it answers with what it found and a ``next`` cursor.
    scan_budget: int = 5_000
    #: When set, ``GET /metrics`` requires ``Authorization: Bearer <this>``.
    metrics_token: str | None = None
    #: The language (BCP 47) of an item that names none.
    default_language: str = "en"
    #: Tokens that manage partner delivery (webhooks); not editor tokens.
    admin_tokens: tuple[str, ...] = ()
    #: Allow ``http`` webhook URLs and private, loopback or link-local addresses.
    webhook_allow_private: bool = False
    #: Seconds a webhook receiver has to answer 2xx.
    webhook_timeout: float = 10.0
    #: First and largest retry wait (seconds) after a failed webhook delivery.
    webhook_backoff: float = 1.0
    webhook_backoff_max: float = 300.0
    #: Seconds of continuous failure after which a webhook is disabled.
    webhook_disable_after: float = 24 * 3600.0
    #: Seconds a deliverer's lease on a webhook lasts unless renewed.
    webhook_lease: float = 10.0
    #: Webhooks one wire holds at most: each is a delivery task in every
    #: deliverer, and ``GET /v1/webhooks`` answers them all at once.
    max_webhooks: int = 1_000
    #: Run a webhook deliverer inside publisher processes (``wire run`` too).
    deliver_webhooks: bool = True
    #: Long-polling reads (``GET /v1/items?wait=``) one process holds at once;
    #: past it a read answers at once, without waiting.
    max_waiters: int = 1_000
    #: Processes ``wire run`` serves the port with (SO_REUSEPORT, each
    #: publisher and gateway): a count, or ``auto`` (or 0) for one per core but
    #: one, at least 1 (see wire.cli.workers.auto_workers); ``--workers`` wins.
    workers: str = "1"
    #: Seconds a ``wire run`` worker must have run to be restarted when it dies;
    #: one that dies sooner stops the whole run, exit 1 (a crash at start repeats).
    worker_restart_after: float = 10.0
    #: Set by ``--workers`` for the processes it starts, not by hand: the
    #: directory where each process of the group answers the others' scrapes
    #: of ``/metrics`` (see wire.web.groupmetrics), and this process's slot.
    worker_dir: str = ""
    worker_slot: int = 0
    #: The agency's name: the Atom feeds' title and the author of items with no byline.
    agency: str = "wire"
    #: Seconds between the delivery ledger's flushes to Redis (per process).
    ledger_flush: float = 1.0
    #: Unflushed ledger entries a process holds (tuples, then aggregated records)
    #: before it flushes early; while Redis is down, the oldest past it are dropped.
    ledger_pending: int = 50_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``WIRE_<FIELD>`` variables, then non-None overrides (flags).

        Every field has a variable: ``max_buffer`` is ``WIRE_MAX_BUFFER``.
        Lists are comma-separated. A bad value fails at start, naming the variable.
        """
        e = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = e.get("WIRE_" + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _convert(raw, hints[f.name], "WIRE_" + f.name.upper())
        values.update({k: v for k, v in overrides.items() if v is not None})
        _check_tokens(values)
        if "log_level" in values:
            values["log_level"] = str(values["log_level"]).upper()
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The ``WIRE_*`` variables that rebuild these settings in a child process."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            env["WIRE_" + f.name.upper()] = text
        return env

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)
