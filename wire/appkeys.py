"""Typed application state shared by the publisher and gateway halves."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from wire.entitlements import Entitlements
from wire.settings import Settings
from wire.store import Store

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", Store)
ENTITLEMENTS = web.AppKey("entitlements", Entitlements)
