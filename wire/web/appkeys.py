"""Typed application state shared by the publisher and gateway halves."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from wire.core.entitlements import Entitlements
from wire.runtime.settings import Settings
from wire.storage.store import Store

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", Store)
ENTITLEMENTS = web.AppKey("entitlements", Entitlements)
