"""Bearer tokens, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence

from wire.core.errors import Unauthorized


def bearer(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The token from ``Authorization: Bearer ...`` or, failing that, ``?token=``.

    Raises Unauthorized for a token that is not visible ASCII: no configured
    token can equal it, and raw header bytes such as ``\\xff`` arrive as
    lone surrogates that cannot even be encoded for the comparison.
    """
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return _visible(token.strip())
    if query is not None and query.get("token"):
        return _visible(query["token"])
    return None


def _visible(token: str) -> str:
    if not usable(token):
        raise Unauthorized("the token is not valid (tokens are visible ASCII characters)")
    return token


def usable(token: str) -> bool:
    """Whether a client can present ``token``: 1 or more visible ASCII characters.

    A configured token with a space or any other character could never match
    what :func:`bearer` accepts, so configuration refuses it at start.
    """
    return bool(token) and all(33 <= ord(ch) < 127 for ch in token)


def token_ok(presented: str | None, tokens: Iterable[str]) -> bool:
    """True when ``presented`` equals one of ``tokens``.

    Every token is compared, with ``hmac.compare_digest``, so the time taken
    tells an attacker neither which token nor how much of it matched.
    """
    if presented is None:
        return False
    given = presented.encode(errors="surrogateescape")
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given, token.encode(errors="surrogateescape"))
    return ok


def matching(presented: str, tokens: Sequence[str]) -> int | None:
    """The index of the token ``presented`` equals (the last such), else None.

    Every token is compared, in constant time, as in :func:`token_ok`.
    """
    given = presented.encode(errors="surrogateescape")
    found: int | None = None
    for i, token in enumerate(tokens):
        if hmac.compare_digest(given, token.encode(errors="surrogateescape")):
            found = i
    return found


def require(presented: str | None, tokens: Iterable[str], *, what: str) -> None:
    """Raise Unauthorized unless ``presented`` is one of ``tokens``."""
    tokens = tuple(tokens)
    if not tokens:
        raise Unauthorized(f"no {what} tokens are configured on this server")
    if presented is None:
        raise Unauthorized(f"{what} token required (Authorization: Bearer <token>)")
    if not token_ok(presented, tokens):
        raise Unauthorized(f"the {what} token is not valid")
