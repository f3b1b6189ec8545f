"""Bearer tokens, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from wire.errors import Unauthorized


def bearer(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The token from ``Authorization: Bearer ...`` or, failing that, ``?token=``."""
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if query is not None and query.get("token"):
        return query["token"]
    return None


def token_ok(presented: str | None, tokens: Iterable[str]) -> bool:
    """True when ``presented`` equals one of ``tokens``.

    Every token is compared, with ``hmac.compare_digest``, so the time taken
    tells an attacker neither which token nor how much of it matched.
    """
    if presented is None:
        return False
    given = presented.encode()
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given, token.encode())
    return ok


def require(presented: str | None, tokens: Iterable[str], *, what: str) -> None:
    """Raise Unauthorized unless ``presented`` is one of ``tokens``."""
    tokens = tuple(tokens)
    if not tokens:
        raise Unauthorized(f"no {what} tokens are configured on this server")
    if presented is None:
        raise Unauthorized(f"{what} token required (Authorization: Bearer <token>)")
    if not token_ok(presented, tokens):
        raise Unauthorized(f"the {what} token is not valid")
