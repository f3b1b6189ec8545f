"""``/metrics`` for a group of processes on one port (``--workers``).

The kernel hands each connection to whichever process of the group it
picks (SO_REUSEPORT), so a scrape of the shared port used to answer for one
process at random: counters went up and down between scrapes, and a rate
over them meant nothing. Now each process of a group also answers on a
Unix socket of its own in the group's directory (``WIRE_WORKER_DIR``, made
by ``--workers``; ``<slot>.sock``), and whichever process a scrape reaches
asks the others there and answers for all: every sample of process ``n``
carries the label ``worker="n"``, so each series stays one process's and
monotonic, and ``sum without (worker)`` gives a counter's whole (gauges read
from Redis are the same in every process). A process that does not answer
within :data:`ASK_TIMEOUT` (restarting, say) is left out of that scrape.
Concurrent scrapes of one process share one round of asking (a storm of
them is one ask per process, not one each), and each process bounds its
own Redis reads for a scrape well under that timeout, so a hung Redis does
not drop the others. A single process has no directory and answers as
before, without the label.

The sockets are made with the process's umask in a directory only its
user may enter (``mkdtemp``): what they answer is what ``/metrics`` shows,
without its token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from wire.runtime.shared import Shared

log = logging.getLogger("wire.metrics")

#: Seconds a scrape waits for each of the other processes.
ASK_TIMEOUT = 2.0
#: The most one process's exposition may be, read from its socket (a wire's
#: is some KB; with a thousand webhooks, about one MB).
MAX_EXPOSITION = 4 << 20
#: Connections waiting on a process's socket (asyncio's default is 100).
BACKLOG = 1024
#: The longest Unix socket path Linux takes (sun_path holds 108 bytes).
MAX_SOCKET_PATH = 107

Exposition = Callable[[], Awaitable[bytes]]


def socket_path(directory: str, slot: int) -> Path:
    """Where process ``slot`` of the group answers."""
    return Path(directory) / f"{slot}.sock"


@contextlib.asynccontextmanager
async def answering(directory: str, slot: int, exposition: Exposition) -> AsyncIterator[None]:
    """Answer this process's exposition on its socket while the context lasts."""
    _check_directory(directory)
    path = socket_path(directory, slot)
    # A process that died left its socket behind; its successor takes the slot.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await exposition())
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the asking process gave up: nothing to tell it
        except Exception:
            # Closed without an answer, the asker leaves this process out.
            log.exception("metrics: this process's exposition failed for a group scrape")
        finally:
            writer.close()

    server = await asyncio.start_unix_server(answer, path=str(path), backlog=BACKLOG)
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _check_directory(directory: str) -> None:
    if not os.path.isdir(directory):
        raise RuntimeError(
            f"WIRE_WORKER_DIR={directory!r} is not a directory (--workers sets it, not a person)"
        )


async def gather(directory: str, slot: int) -> list[tuple[int, bytes]]:
    """The other processes' expositions, by slot (those that answered in time)."""
    asked = [s for s in slots(directory) if s != slot]
    answers = await asyncio.gather(*(_ask(socket_path(directory, s)) for s in asked))
    return [(s, text) for s, text in zip(asked, answers, strict=True) if text is not None]


def slots(directory: str) -> list[int]:
    """The slots with a socket in the group's directory (a listing of a few entries)."""
    names = (p.stem for p in Path(directory).glob("*.sock"))
    return sorted(int(n) for n in names if n.isascii() and n.isdigit())


async def _ask(path: Path) -> bytes | None:
    """One process's exposition, or None (gone, too slow, or over the size cap)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(ASK_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                while chunk := await reader.read(1 << 16):
                    size += len(chunk)
                    if size > MAX_EXPOSITION:
                        return None
                    chunks.append(chunk)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    return b"".join(chunks) or None


def merge(parts: Sequence[tuple[int, bytes]]) -> bytes:
    """One exposition of several processes' (slot, exposition): each family's
    ``# HELP``/``# TYPE`` once, then its samples from every process in turn,
    each labelled ``worker="<slot>"`` (the text format wants a family's
    samples together)."""
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for slot, text in parts:
        family = ""
        for line in text.decode(errors="replace").splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split(" ", 3)[2]
                if len(headers.setdefault(family, [])) < 2:
                    headers[family].append(line)
                samples.setdefault(family, [])
            elif line and not line.startswith("#"):
                samples.setdefault(family, []).append(labelled(line, slot))
    out: list[str] = []
    for family, lines in samples.items():
        out += headers.get(family, [])
        out += lines
    return ("\n".join(out) + "\n").encode()


def labelled(sample: str, slot: int) -> str:
    """``sample`` (``name{labels} value`` or ``name value``) with ``worker="<slot>"``.

    A metric's name holds neither ``{`` nor a space, so the first of them
    ends it whatever the label values hold.
    """
    end = min((i for i in (sample.find("{"), sample.find(" ")) if i >= 0), default=len(sample))
    name, rest = sample[:end], sample[end:]
    label = f'worker="{slot}"'
    if rest.startswith("{"):
        return f"{name}{{{label},{rest[1:]}"
    return f"{name}{{{label}}}{rest}"


def own_directory() -> str:
    """A new directory for a group's sockets, that only this user may enter:
    in the temporary directory, or in /tmp when that one's path is too long
    for a Unix socket."""
    longest = len("/wire-workers-12345678/1000.sock")
    for base in (tempfile.gettempdir(), "/tmp"):
        if len(base) + longest <= MAX_SOCKET_PATH and os.path.isdir(base):
            return tempfile.mkdtemp(prefix="wire-workers-", dir=base)
    raise SystemExit(
        "wire: --workers needs a temporary directory with a path short enough for "
        f"Unix sockets (at most {MAX_SOCKET_PATH - longest} characters); set TMPDIR to one"
    )


def remove_directory(directory: str) -> None:
    """The group's directory, once its processes have stopped (sockets left by
    killed ones included)."""
    for p in Path(directory).glob("*.sock"):
        with contextlib.suppress(OSError):
            p.unlink()
    with contextlib.suppress(OSError):
        os.rmdir(directory)


class Group:
    """This process's place in a group: its answers to the others' scrapes,
    and its own scrapes' view of every process."""

    def __init__(self, directory: str, slot: int, exposition: Exposition) -> None:
        self.directory = directory
        self.slot = slot
        # Shared: a storm of scrapes costs one round (one exposition, one ask
        # of each other process), not one each.
        #: This process's exposition, for its own scrapes and the others' asks.
        self.own: Shared[bytes] = Shared(exposition)
        #: Every process's, merged.
        self.everyone: Shared[bytes] = Shared(self._collect)

    async def _collect(self) -> bytes:
        mine, others = await asyncio.gather(self.own(), gather(self.directory, self.slot))
        return merge(sorted([(self.slot, mine), *others]))

    def answering(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Answer the others on this process's socket while the context lasts."""
        return answering(self.directory, self.slot, self.own)
