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

from wire.core.errors import ValidationError, quoted

MAX_URL = 2_000


def check_url(url: object, allow_private: bool) -> str:
    """``url`` if it is an http(s) URL a webhook may have; else ValidationError."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise ValidationError("url must be an https URL", field="url")
    try:
        parts = urlsplit(url)
        # A port out of range or not a number is a ValueError only once asked for.
        parts.port  # noqa: B018
    except ValueError:
        raise ValidationError(
            "url must be an https URL (a bracketed IPv6 host, a port from 0 to 65535)",
            field="url",
        ) from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValidationError(
            "url must be an https URL (http needs WIRE_WEBHOOK_ALLOW_PRIVATE=1)", field="url"
        )
    if parts.username or parts.password:
        raise ValidationError("url must not carry credentials", field="url")
    return url


#: IPv6 prefixes whose last 32 bits are an IPv4 address the packet goes to:
#: NAT64's well-known prefix (RFC 6052) and IPv4-compatible addresses (``::a.b.c.d``).
_EMBEDDING = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))
#: NAT64 prefixes for local use (RFC 8215): translated to whatever the site routes.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def public(address: str) -> bool:
    """True for an address on the public internet (not private, loopback, link-local...).

    An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64, 6to4,
    IPv4-compatible) is judged by that IPv4 address: ``64:ff9b::a9fe:a9fe``
    reaches 169.254.169.254 through a NAT64 gateway.
    """
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return False
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and any(ip in net for net in _EMBEDDING):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
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
                    errno.EACCES, f"{quoted(host)} resolves to a non-public address ({refused[0]})"
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
    except UnicodeError:
        # Not a name DNS can carry (an empty label, a label over 63 characters):
        # the IDNA codec refuses it before any lookup.
        raise ValidationError(
            "url is not deliverable: its host is not a valid DNS name", field="url"
        ) from None
    except OSError as err:
        raise ValidationError(f"url is not deliverable: {err}", field="url") from None
