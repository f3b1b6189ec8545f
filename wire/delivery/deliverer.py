"""The webhook deliverer: every matching entry POSTed in stream order, signed.

Any number of deliverers may run (inside ``wire run`` and each publisher, and
as ``wire deliver`` processes). Each webhook is delivered by whichever one
holds its lease in Redis (``SET NX PX``, renewed every third of
``WIRE_WEBHOOK_LEASE``): a deliverer that dies stops renewing, and another
takes the webhook over when the lease runs out, from the cursor in Redis.

Per webhook one task walks the stream from the cursor in byte-bounded pages
(``Store.pages_raw``), keeps the entries the webhook's tags, languages and
partner grant let through (withdrawn versions left out, withdrawals narrowed
to the grant, as on every read path) and sends them one at a time: the item
stays at the head until a 2xx, with exponential backoff and full jitter
between attempts. At the end of the stream the tasks wait on the process's
one blocking ``XREAD`` (:meth:`Deliverer._watch`), not one each.

At-least-once: the cursor is written after the 2xx, so a crash between the
two re-sends that item, with the same ``webhook-id`` (its stream id).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import secrets
import time

import aiohttp

from wire.core import frames
from wire.core.entitlements import EVERYTHING, Entitlements, Grant
from wire.core.entry import Entry
from wire.core.errors import quoted
from wire.core.ids import StreamKey, format_id
from wire.core.ledger import WEBHOOK, Tally
from wire.core.resume import Window
from wire.delivery import signing
from wire.delivery.registry import Registry, Webhook
from wire.delivery.urls import PublicResolver, refusal
from wire.runtime.arrivals import Arrivals
from wire.runtime.rightofway import RightOfWay
from wire.runtime.settings import Settings
from wire.storage.store import Filter, Store

log = logging.getLogger("wire.delivery")

#: How long a waiting task sleeps at most before looking at the stream again.
WAIT = 5.0
#: Added to the POST timeout for how long a checked lease lasts (the moments
#: between the check's answer and the POST's start, and clock drift).
COVER_MARGIN_MS = 1000
#: The largest answer body (bytes, as sent) read to keep the connection for reuse.
DRAIN = 64 * 1024
#: The status that disables a webhook at once (the receiver is gone for good).
GONE = 410


class LeaseLost(Exception):
    """The webhook's lease is no longer ours: stop delivering it."""


def _cancelled() -> bool:
    """True when this task is being cancelled: redis-py can turn a cancel into a
    ConnectionError (or lose it), and a loop that catches errors must not go on."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def backoff(attempt: int, first: float, largest: float) -> float:
    """Full jitter: a random wait up to ``first * 2**attempt`` (capped at ``largest``)."""
    return random.uniform(0, min(largest, first * 2 ** min(attempt, 40)))


def webhook_grant(webhook: Webhook, entitlements: Entitlements) -> Grant | None:
    """What the webhook may receive: its partner's grant; None when the partner is
    gone, or its entry (edited since the webhook was made) no longer covers the
    webhook's tags. Such a webhook receives nothing and its ``lag`` is None; it
    must not make the admins' reads of it a 403 naming its tags."""
    if not webhook.partner:
        return EVERYTHING
    grant = entitlements.by_name(webhook.partner)
    return grant if grant is not None and grant.admits(frozenset(webhook.tags)) else None


def partner_of(webhook: Webhook) -> str:
    """Whom the ledger says a webhook delivered to: its partner, else ``webhook:<id>``."""
    return webhook.partner or "webhook:" + webhook.id


class Deliverer:
    """Delivers every webhook whose lease this process holds."""

    def __init__(
        self,
        store: Store,
        watch_store: Store,
        entitlements: Entitlements,
        settings: Settings,
        tally: Tally | None = None,
        way: RightOfWay | None = None,
        arrivals: Arrivals[Entry] | None = None,
    ) -> None:
        self.store = store
        #: A gateway's fan-out in this process (``wire run``) goes first; None: none.
        self.way = way
        #: That gateway's stream reader's batches: the news, without a reader of our own.
        self.arrivals = arrivals
        #: A client of its own for the blocking XREAD (its socket timeout is longer).
        self.watch_store = watch_store
        # A lease checked before a POST lasts until that POST has timed out: a
        # holder cut off from Redis mid-POST is never overlapped by its successor.
        cover_ms = int(settings.webhook_timeout * 1000) + COVER_MARGIN_MS
        self.registry = Registry(store.redis, cover_ms)
        self.entitlements = entitlements
        self.settings = settings
        self.token = secrets.token_hex(16)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        #: Counters and gauges by webhook id, read by /metrics.
        self.delivered: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.lag: dict[str, float] = {}
        self._newest: StreamKey = (0, 0)
        self._news = asyncio.Event()
        #: The delivery ledger: every 2xx is recorded (see :func:`partner_of`).
        self.tally = tally
        #: Set while this process delivers a webhook (the watcher reads only then).
        self._busy = asyncio.Event()

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.settings.webhook_lease * 1000))

    async def run(self) -> None:
        """Take and keep leases forever; each held webhook gets a delivery task."""
        watch = self._watch() if self.arrivals is None else self._follow(self.arrivals)
        watcher = asyncio.create_task(watch)
        try:
            while True:
                if _cancelled():
                    raise asyncio.CancelledError
                if watcher.done():
                    # A bug ended it (it never returns): delivery would fall back
                    # to polling unseen. Ending here, the deliverer's supervisor
                    # restarts all of it and /readyz shows it meanwhile.
                    watcher.result()
                    raise RuntimeError("the webhook watcher ended")
                try:
                    await self._round()
                except Exception as err:
                    if _cancelled():
                        raise asyncio.CancelledError from err
                    # Redis away: nothing renews, so other processes may take
                    # over; the cursor script keeps a stale holder from writing.
                    log.warning("webhook deliverer: %s", err)
                await asyncio.sleep(self.settings.webhook_lease / 3)
        finally:
            watcher.cancel()
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(watcher, *self.tasks.values(), return_exceptions=True)
            for webhook_id in list(self.tasks):
                with contextlib.suppress(Exception):
                    await self.registry.release(webhook_id, self.token)
            self.tasks.clear()

    async def _round(self) -> None:
        """Renew what we hold (stopping what we lost), then take what is free."""
        for webhook_id, task in list(self.tasks.items()):
            held = not task.done() and await self.registry.renew(
                webhook_id, self.token, self._lease_ms
            )
            if not held:
                task.cancel()
                del self.tasks[webhook_id]
                self.lag.pop(webhook_id, None)
                await self.registry.release(webhook_id, self.token)
        for webhook_id in await self.registry.ids():
            if webhook_id in self.tasks:
                continue
            if await self.registry.acquire(webhook_id, self.token, self._lease_ms):
                self.tasks[webhook_id] = asyncio.create_task(
                    self._deliver(webhook_id), name=f"wire-webhook-{webhook_id}"
                )
                self._busy.set()

    async def _watch(self) -> None:
        """The process's one blocking reader: wakes waiting tasks when the stream grows.

        It reads only while this process delivers some webhook: reading every
        item for nobody would cost ``wire run``'s fan-out, on the same loop.
        """
        position: StreamKey | None = None
        while True:
            if _cancelled():
                raise asyncio.CancelledError
            if not self.tasks:
                self._busy.clear()
                await self._busy.wait()
                position = None
            try:
                if position is None:
                    # Tasks that scanned up to before here look again at once.
                    position = self._newest = await self.watch_store.last_key()
                entries = await self.watch_store.read_new(position, count=1000, block_ms=5000)
            except Exception as err:  # Redis away: the tasks still poll every WAIT
                if _cancelled():
                    raise asyncio.CancelledError from err
                log.warning("webhook watcher: %s", err)
                await asyncio.sleep(1.0)
                continue
            if entries:
                position = entries[-1].key
                self._announce(position)

    async def _follow(self, arrivals: Arrivals[Entry]) -> None:
        """:meth:`_watch` in a process with a gateway: its stream reader's batches.

        A second reader there would read and parse every item again during
        the very bursts the fan-out is writing (3 % of ``wire run``'s samples).
        """
        while True:
            await arrivals.next_batch()
            # The newest batch, not the one this waiter was woken with: batches
            # published before this task ran again are news too.
            last = arrivals.last
            if last and last[-1].key > self._newest:
                self._announce(last[-1].key)

    def _announce(self, newest: StreamKey) -> None:
        """The stream holds entries up to ``newest``: wake the tasks waiting for news."""
        self._newest = newest
        news, self._news = self._news, asyncio.Event()
        news.set()

    async def _wait_beyond(self, scanned: StreamKey) -> None:
        """Return once the stream may hold something after ``scanned`` (or after WAIT)."""
        if self._newest > scanned:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._news.wait(), WAIT)

    async def _deliver(self, webhook_id: str) -> None:
        """Deliver one webhook until it stops being ours or active."""
        try:
            await self._deliver_loop(webhook_id)
        except LeaseLost:
            log.info("webhook %s: lease lost or delivery stopped", webhook_id)
        except Exception as err:
            if _cancelled():
                raise asyncio.CancelledError from err
            # Redis trouble or a bug: this task ends, the lease is released at
            # the next round and the webhook is taken up again from its cursor.
            log.exception("webhook %s: delivery failed; restarting it", webhook_id)

    async def _deliver_loop(self, webhook_id: str) -> None:
        webhook = await self.registry.get(webhook_id)
        if webhook is None or webhook.status != "active":
            return
        grant = webhook_grant(webhook, self.entitlements)
        if grant is None:
            log.error(
                "webhook %s: partner %r has no entitlements entry covering its tags",
                webhook_id,
                webhook.partner,
            )
            raise LeaseLost
        wanted = Filter(grant.narrow(frozenset(webhook.tags)), frozenset(webhook.languages))
        cursor = webhook.cursor
        resolver = PublicResolver(self.settings.webhook_allow_private)
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
        connector = aiohttp.TCPConnector(resolver=resolver, limit=1)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as http:
            while True:
                cursor = await self._catch_up(webhook, wanted, grant, cursor, http)
                self.lag[webhook_id] = 0.0
                await self._wait_beyond(cursor)

    async def _catch_up(
        self,
        webhook: Webhook,
        wanted: Filter,
        grant: Grant,
        cursor: StreamKey,
        http: aiohttp.ClientSession,
    ) -> StreamKey:
        """Send everything matching after ``cursor``; return the last entry read."""
        lost: list[Window] = []
        async for page, _ in self.store.pages_raw(cursor, None, lost):
            if lost:
                cursor = await self._skip_lost(webhook, lost, cursor)
            if not page:
                break
            chosen = await self.store.redact([e for e in page if wanted.passes(e)])
            # The secret doubles as the lease check before a POST: None means
            # "check first" (an await came in between: the page read).
            secret: str | None = None
            for entry in chosen:
                view = grant.view(entry)
                if view is not None:
                    secret = await self._send(webhook, view, http, secret)
                    cursor = entry.key
            # Entries that did not match move the cursor too, so a resume
            # (or the lag count) does not walk them again.
            if cursor != page[-1].key:
                cursor = page[-1].key
                if not await self.registry.advance(webhook.id, self.token, cursor):
                    raise LeaseLost
        return cursor

    async def _skip_lost(
        self, webhook: Webhook, lost: list[Window], cursor: StreamKey
    ) -> StreamKey:
        """Items after the cursor were gone before they were read (retention passed
        it, or Redis lost them: see :meth:`Kept.lost_upto`): mark the webhook
        ``history_truncated`` and move its cursor past them, before what follows."""
        upto = max(gap.upto for gap in lost)
        lost.clear()
        if upto <= cursor:
            return cursor
        log.warning(
            "webhook %s: items after %s up to %s are no longer kept; history truncated",
            webhook.id,
            format_id(cursor),
            format_id(upto),
        )
        if not await self.registry.advance(webhook.id, self.token, upto, truncated=True):
            raise LeaseLost
        return upto

    async def _send(
        self, webhook: Webhook, entry: Entry, http: aiohttp.ClientSession, secret: str | None
    ) -> str:
        """POST one entry until a 2xx; raise LeaseLost when delivery must stop.

        ``secret`` is the answer of a lease check made with no await since
        (None: check now). Returns the next one: the cursor write answers it,
        so a run of items costs one Redis round trip each, and nothing is
        POSTed once a pause or delete has answered.
        """
        body = frames.item_message(entry.json)
        attempt = 0
        settings = self.settings
        while True:
            # A cancel lost inside redis-py (see _cancelled) must still end the
            # retries: a target that keeps failing would hold up the shutdown.
            if _cancelled():
                raise asyncio.CancelledError
            self.lag[webhook.id] = max(0.0, time.time() - entry.key[0] / 1000)
            secret = await self._cleared(webhook.id, secret)
            headers = signing.headers(secret, entry.id, int(time.time()), body)
            refused = refusal(webhook.url, settings.webhook_allow_private)
            if refused is None:
                status, error, wait = await self._post(http, webhook.url, body, headers)
            else:
                status, error, wait = 0, "refused: " + refused, 0.0
            if 200 <= status < 300:
                following = await self.registry.advance(
                    webhook.id, self.token, entry.key, delivered=1, last_status=status
                )
                if following is None:
                    raise LeaseLost
                self.delivered[webhook.id] = self.delivered.get(webhook.id, 0) + 1
                if self.tally is not None:
                    self.tally.add(partner_of(webhook), WEBHOOK, [entry])
                return following
            await self._failed(webhook.id, status, error)
            pause = backoff(attempt, settings.webhook_backoff, settings.webhook_backoff_max)
            await asyncio.sleep(max(pause, min(wait, settings.webhook_backoff_max)))
            attempt += 1
            secret = None

    async def _failed(self, webhook_id: str, status: int, error: str) -> None:
        """Record a failed attempt; raise LeaseLost when delivery must stop.

        A 410 Gone disables the webhook at once: Standard Webhooks has the
        sender stop there, not retry for ``WIRE_WEBHOOK_DISABLE_AFTER``.
        """
        self.failures[webhook_id] = self.failures.get(webhook_id, 0) + 1
        window = 0.0 if status == GONE else self.settings.webhook_disable_after
        outcome = await self.registry.failed(
            webhook_id, self.token, time.time(), status, error, window
        )
        if outcome != 1:
            if outcome == 2:
                log.warning("webhook %s disabled: %s", webhook_id, error)
            raise LeaseLost

    async def _cleared(self, webhook_id: str, secret: str | None) -> str:
        """The secret to sign with, from a lease check with no await after it.

        ``secret`` is one (None: check now), unless the fan-out of this process
        (``wire run``) had the right of way first: waiting for it is an await.
        """
        if self.way is not None and await self.way.wait():
            secret = None
        if secret is None:
            secret = await self.registry.check(webhook_id, self.token)
            if secret is None:
                raise LeaseLost
        return secret

    @staticmethod
    async def _post(
        http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, float]:
        """(HTTP status, error text, seconds the receiver asked us to wait); status 0
        when no answer came.

        The status line decides: the answer's body is only drained when it is
        small and of a declared length (so the connection can be reused), never
        inflated (the session does not decompress) and never waited on past
        the timeout. A receiver's huge, endless or gzip-bomb body costs nothing
        and turns no 2xx into a failure (and so into a duplicate delivery).
        Redirects are not followed: their target never went through the URL
        checks (:mod:`wire.delivery.urls`).
        """
        try:
            async with http.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                size = resp.content_length
                # A body left unread costs only the connection: it is closed, not reused.
                if size is not None and size <= DRAIN:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                        await resp.read()
                return status, failure_text(resp), retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
            # ValueError: a URL stored before its checks were tightened (a host
            # the IDNA codec refuses): a failure to record, not a crash loop.
            if isinstance(err, TimeoutError) and not str(err):
                return 0, f"timed out: no answer within {http.timeout.total:g} s", 0.0
            return 0, f"{type(err).__name__}: {err}"[:500], 0.0


def failure_text(resp: aiohttp.ClientResponse) -> str:
    """``last_error`` for an answer: empty for a 2xx, else what an admin needs."""
    status = resp.status
    if status < 300:
        return ""
    if status < 400:
        where = resp.headers.get("Location")
        to = f" to {quoted(where, 300)}" if where else ""
        return f"HTTP {status}: a redirect{to}, not followed (change the webhook's url)"
    if status == GONE:
        return "HTTP 410: the receiver says the endpoint is gone; disabled (resume restarts it)"
    asked = resp.headers.get("Retry-After")
    return f"HTTP {status}" + (f" (Retry-After: {quoted(asked, 40)})" if asked else "")


def retry_after(value: str | None) -> float:
    """Seconds a ``Retry-After`` header (delay-seconds or an HTTP date) asks for; 0 if
    none or unreadable. The caller caps it at ``WIRE_WEBHOOK_BACKOFF_MAX``."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time()) if when.tzinfo else 0.0
