"""Typed application state shared by the publisher and gateway halves."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from wire.core.entitlements import Entitlements
from wire.core.entry import Entry
from wire.core.ledger import Tally
from wire.runtime.arrivals import Arrivals
from wire.runtime.rightofway import RightOfWay
from wire.runtime.settings import Settings
from wire.storage.ledger import Ledger
from wire.storage.store import Store

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", Store)
ENTITLEMENTS = web.AppKey("entitlements", Entitlements)
#: New entries as a gateway's stream reader dispatches them (absent without a gateway).
ARRIVALS: web.AppKey[Arrivals[Entry]] = web.AppKey("arrivals", Arrivals)
#: This process's unflushed delivery-ledger records (the hub, deliverer and reads add to it).
TALLY = web.AppKey("tally", Tally)
#: The delivery ledger's flusher and reads (exists while the app runs).
LEDGER = web.AppKey("ledger", Ledger)
#: The gateway's stream reader marks it busy; the webhook deliverer yields to it.
RIGHT_OF_WAY = web.AppKey("right_of_way", RightOfWay)
