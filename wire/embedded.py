"""The embedded Redis that ``wire run`` starts when no WIRE_REDIS_URL is set.

It is a plain ``redis-server`` child listening only on a Unix socket under
the data directory (no port to collide with), with the append-only file on.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from wire.errors import RedisMissing

HOW_TO_GET_REDIS = (
    "redis-server not found: install it (apt install redis-server, or brew install redis) "
    "or set WIRE_REDIS_URL=redis://host:6379/0"
)


@contextlib.contextmanager
def embedded_redis(data_dir: Path, appendfsync: str = "everysec") -> Iterator[str]:
    """Start redis-server under ``data_dir/redis``; yield its ``unix://`` URL; stop it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisMissing(HOW_TO_GET_REDIS)
    home = (data_dir / "redis").resolve()
    home.mkdir(parents=True, exist_ok=True)
    sock = home / "redis.sock"
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(home),
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
            "--save",
            "",
            "--logfile",
            str(home / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(sock, proc, home)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(sock: Path, proc: subprocess.Popen[bytes], home: Path) -> None:
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None:
            raise RedisMissing(f"redis-server exited at start; see {home / 'redis.log'}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RedisMissing("redis-server did not start within 30 s")
        time.sleep(0.02)
