"""``wire gateway|publisher --workers N``: N processes sharing one port.

Each worker is an ordinary single-process gateway (with its own stream
reader) or publisher; the kernel spreads connections over them with
SO_REUSEPORT. They share nothing but Redis, which is what lets a client resume
on any gateway and an embargo be released once by whichever publisher is
first. Every setting, flags included, reaches the workers through the
environment (``Settings.to_env``), so none is silently dropped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from wire.runtime.settings import Settings


def run_workers(n: int, settings: Settings, role: str = "gateway") -> int:
    """Start ``n`` workers of ``role``, forward SIGINT/SIGTERM to them, wait for all."""
    if settings.redis_url is None:
        raise SystemExit(f"wire {role} --workers needs --redis or WIRE_REDIS_URL")
    env = {**os.environ, **settings.to_env(), "WIRE_WORKER_ROLE": role}
    argv = [sys.executable, "-m", "wire.cli.workers"]  # each runs worker_main() below
    procs = [subprocess.Popen(argv, env=env) for _ in range(n)]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [p.wait() for p in procs]
    return max(codes, default=0)


def worker_main() -> None:
    """One worker: a gateway or publisher on a shared (SO_REUSEPORT) port."""
    from wire.runtime import loop
    from wire.runtime.logs import setup_logging
    from wire.web.app import create_app, serve

    settings = Settings.from_env()
    setup_logging(settings.log_level)
    gateway = os.environ.get("WIRE_WORKER_ROLE", "gateway") == "gateway"
    app = create_app(settings, publisher=not gateway, gateway=gateway)
    loop.run(
        serve(app, settings, reuse_port=True),
        settings.event_loop,
        gc_threshold=settings.gc_threshold,
    )


if __name__ == "__main__":
    worker_main()
