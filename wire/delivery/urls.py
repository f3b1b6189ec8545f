"""Webhook URLs, and the addresses a delivery may connect to (no SSRF).

Unless ``WIRE_WEBHOOK_ALLOW_PRIVATE`` is set, a webhook must be ``https`` and
its host must resolve only to public addresses: at creation, and again at
every connection, through :class:`PublicResolver`, so a name that later
resolves to ``127.0.0.1`` or ``169.254.169.254`` (DNS rebinding) is refused
at delivery too; the connection uses the very addresses that were checked.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from wire.core.errors import ValidationError

MAX_URL = 2_000


def check_url(url: object, allow_private: bool) -> str:
    """``url`` if it is an http(s) URL a webhook may have; else ValidationError."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise ValidationError("url must be an https URL", field="url")
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValidationError(
            "url must be an https URL (http needs WIRE_WEBHOOK_ALLOW_PRIVATE=1)", field="url"
        )
    if parts.username or parts.password:
        raise ValidationError("url must not carry credentials", field="url")
    return url


def public(address: str) -> bool:
    """True for an address on the public internet (not private, loopback, link-local...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def refusal(url: str, allow_private: bool) -> str | None:
    """Why a delivery to ``url`` must not be attempted now (None: go ahead).

    The resolver checks names; an address written in the URL never reaches
    it, so it is checked here, at every attempt (the setting may have changed
    since the webhook was created).
    """
    try:
        check_url(url, allow_private)
    except ValidationError as err:
        return str(err)
    host = urlsplit(url).hostname or ""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: PublicResolver checks what it resolves to
    if not allow_private and not public(str(literal)):
        return f"{host} is not a public address"
    return None


class PublicResolver(AbstractResolver):
    """Resolves as usual, refusing a host with any non-public address."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if not self.allow_private:
            refused = [r["host"] for r in found if not public(r["host"])]
            if refused:
                # errno and text: aiohttp reports an OSError by its strerror.
                raise OSError(
                    errno.EACCES, f"{host} resolves to a non-public address ({refused[0]})"
                )
        return found

    async def close(self) -> None:
        await self.inner.close()


async def check_host(url: str, allow_private: bool) -> None:
    """Resolve the URL's host now; ValidationError when it is not public (or unknown)."""
    host = urlsplit(url).hostname
    assert host is not None
    try:
        await PublicResolver(allow_private).resolve(host, 0, socket.AF_UNSPEC)
    except OSError as err:
        raise ValidationError(f"url is not deliverable: {err}", field="url") from None
