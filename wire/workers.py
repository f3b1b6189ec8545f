"""``wire gateway --workers N``: N gateway processes sharing one port.

Each worker is an ordinary single-process gateway with its own stream reader;
the kernel spreads connections over them with SO_REUSEPORT. They share
nothing but Redis, which is what lets a client resume on any of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from wire.settings import Settings


def run_workers(n: int, settings: Settings) -> int:
    """Start ``n`` workers, forward SIGINT/SIGTERM to them, wait for all."""
    env = dict(os.environ)
    env["WIRE_HOST"], env["WIRE_PORT"] = settings.host, str(settings.port)
    if settings.redis_url:
        env["WIRE_REDIS_URL"] = settings.redis_url
    procs = [subprocess.Popen([sys.executable, "-m", "wire.worker"], env=env) for _ in range(n)]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [p.wait() for p in procs]
    return max(codes, default=0)


def worker_main() -> None:
    """One worker: a gateway on a shared (SO_REUSEPORT) port."""
    from wire import loop
    from wire.app import create_app, serve
    from wire.logs import setup_logging

    settings = Settings.from_env()
    setup_logging(settings.log_level)
    if settings.redis_url is None:
        raise SystemExit("wire gateway --workers needs --redis or WIRE_REDIS_URL")
    app = create_app(settings, publisher=False, gateway=True)
    loop.run(
        serve(app, settings, reuse_port=True),
        settings.event_loop,
        gc_threshold=settings.gc_threshold,
    )
