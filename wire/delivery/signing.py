"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is ``<webhook-id>.<webhook-timestamp>.<body>``; the
signature is ``v1,`` and the base64 of its HMAC-SHA256 under the key, which
is the base64-decoded part of the ``whsec_`` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh secret: ``whsec_`` and the base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(os.urandom(32)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one delivery."""
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }
