"""The ``wire`` command: run the services, publish, tail, bench."""

from __future__ import annotations

import argparse
import contextlib
import logging
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from wire.cli.workers import run_workers, serve_with_workers, worker_count
from wire.core.errors import RedisMissing
from wire.runtime import loop
from wire.runtime.logs import setup_logging
from wire.runtime.settings import Settings
from wire.storage.embedded import embedded_redis, find_server
from wire.web import groupmetrics
from wire.web.app import create_app, serve

log = logging.getLogger("wire")
Command = Callable[[argparse.Namespace], int]


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="interface to listen on (WIRE_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (WIRE_PORT, default 8080)")
    p.add_argument(
        "--redis",
        metavar="URL",
        help="Redis URL (WIRE_REDIS_URL); default: start an embedded redis-server",
    )
    p.add_argument(
        "--entitlements",
        metavar="PATH",
        type=Path,
        help="TOML file of subscriber tokens limited to tags (WIRE_ENTITLEMENTS)",
    )
    p.add_argument(
        "--appendfsync",
        choices=["always", "everysec", "no"],
        help="embedded Redis fsync policy (WIRE_APPENDFSYNC, default everysec)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``wire`` subcommand."""
    parser = argparse.ArgumentParser(prog="wire", description="A real-time news wire.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="publisher and gateway on one port (the default setup)")
    _server_flags(run)
    run.add_argument(
        "--workers",
        metavar="N",
        help="processes serving the port, each publisher and gateway (SO_REUSEPORT); "
        "auto or 0: one per core but one (WIRE_WORKERS, default 1)",
    )
    pub = sub.add_parser("publisher", help="the editors' ingest API alone")
    _server_flags(pub)
    gw = sub.add_parser("gateway", help="the WebSocket/SSE gateway alone")
    _server_flags(gw)
    for role in (pub, gw):
        role.add_argument(
            "--workers",
            metavar="N",
            help="processes sharing the port (SO_REUSEPORT; WIRE_WORKERS, default 1)",
        )
    from wire import bench
    from wire.cli import deliver, demo, export, ledger, tail
    from wire.cli import publish as publish_cmd

    for module in (publish_cmd, tail, demo, bench, export, deliver, ledger):
        module.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wire`` console script."""
    args = build_parser().parse_args(argv)
    handler: Command = args.handler if hasattr(args, "handler") else _serve_command
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except RedisMissing as err:
        print(f"wire: {err}", file=sys.stderr)
        return 1


def _serve_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env(
        host=args.host,
        port=args.port,
        redis_url=args.redis,
        entitlements=args.entitlements,
        appendfsync=args.appendfsync,
        workers=args.workers,
    )
    setup_logging(settings.log_level)
    workers = worker_count(settings.workers)
    if workers <= 1:
        return _serve(args, settings, workers)
    # The group's processes answer each other's /metrics scrapes there.
    directory = groupmetrics.own_directory()
    try:
        return _serve(args, settings.with_(worker_dir=directory, worker_slot=0), workers)
    finally:
        groupmetrics.remove_directory(directory)


def _serve(args: argparse.Namespace, settings: Settings, workers: int) -> int:
    """Serve ``args.command`` with ``workers`` processes; the exit code."""
    if args.command != "run" and workers > 1:
        if args.command == "publisher" and not settings.editor_tokens:
            settings = settings.with_(editor_tokens=(_announce_token(settings),))
        return run_workers(workers, settings, args.command)
    with _redis_for(settings) as settings:
        # Only once Redis is there: a run that fails to start prints no token.
        if args.command in ("run", "publisher") and not settings.editor_tokens:
            settings = settings.with_(editor_tokens=(_announce_token(settings),))
        app = create_app(
            settings, publisher=args.command != "gateway", gateway=args.command != "publisher"
        )
        if workers > 1:
            # The workers get this Redis's URL; it stops after they have (leaving the with).
            log.info("serving with %d processes", workers)
            return loop.run(
                serve_with_workers(app, settings, workers - 1),
                settings.event_loop,
                gc_threshold=settings.gc_threshold,
            )
        loop.run(
            serve(app, settings, reuse_port=getattr(args, "reuse_port", False)),
            settings.event_loop,
            gc_threshold=settings.gc_threshold,
        )
    return 0


@contextlib.contextmanager
def _redis_for(settings: Settings) -> Iterator[Settings]:
    if settings.redis_url is not None:
        yield settings
        return
    server = find_server(settings.redis_server)
    with embedded_redis(settings.data_dir, settings.appendfsync, server) as url:
        # Say which server holds the items: the PATH's redis-server or the bundled one.
        print(f"Started {server.describe()}, data in {settings.data_dir / 'redis'}", flush=True)
        log.info("started embedded server", extra={"redis": url, "server": server.path})
        yield settings.with_(redis_url=url)


def _announce_token(settings: Settings) -> str:
    token = secrets.token_urlsafe(24)
    base = f"http://{settings.host}:{settings.port}"
    print(
        f"\nNo WIRE_EDITOR_TOKENS set; this run's editor token is:\n\n  {token}\n\n"
        f"Publish an item:\n\n  curl -s {base}/v1/items -H 'Authorization: Bearer {token}' "
        "-H 'Content-Type: application/json' \\\n"
        '    -d \'{"title": "Hello, wire", "tags": ["world"]}\'\n\n'
        f"Watch the live feed at {base}/  (editor console: {base}/editor)\n",
        flush=True,
    )
    return token


if __name__ == "__main__":
    sys.exit(main())
