"""Subscriber tokens limited to parts of the tag tree (partners, syndication).

Loaded once from a small TOML file (``--entitlements path.toml``)::

    [[token]]
    token = "partner-sport-7f3a"
    name = "Partner A"          # for logs and docs only
    tags = ["sport"]            # sport and everything below it

A limited token may subscribe only to its tags and tags below them (never
``*``), and sees an item by any route only if one of the item's tags is
within them. Tokens from ``WIRE_SUBSCRIBER_TOKENS`` are not limited; one
written ``name:token`` is named (the delivery ledger records what ``name``
received), one without a ``:`` stays anonymous. A token that itself contains
``:`` must therefore be written ``name:token``. A token in the file is
limited even when it is listed unlimited too (there, or as an editor's).

An entry's ``name`` names its partner in the delivery ledger too. A file that
is given closes the wire (reads need a token) even when it has no entry yet.
"""

from __future__ import annotations

import hmac
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wire.core.entry import Entry
from wire.core.errors import Forbidden, InvalidTag, Unauthorized, ValidationError
from wire.core.tags import WILDCARD, normalize_tags
from wire.core.tokens import matching, usable

#: Whether a reader may see an item with these tags (a grant's :meth:`Grant.sees`).
Sees = Callable[[Iterable[str]], bool]


@dataclass(frozen=True, slots=True)
class Grant:
    """What one token may see: ``tags`` and below, or everything when None."""

    tags: frozenset[str] | None = None
    #: The partner the token names (the delivery ledger's key), None when anonymous.
    name: str | None = field(default=None, compare=False)

    @property
    def limited(self) -> bool:
        return self.tags is not None

    def covers(self, tag: str) -> bool:
        """True when ``tag`` is one of the granted tags or below one."""
        if self.tags is None:
            return True
        return any(tag == g or tag.startswith(g + "/") for g in self.tags)

    def check_subscription(self, keys: Iterable[str]) -> None:
        """Raise Forbidden (naming the tag) for a subscription outside the grant."""
        for key in keys:
            if (key == WILDCARD and self.limited) or not self.covers(key):
                raise Forbidden(f"this token may not subscribe to {key!r}", field="tags")

    def sees(self, item_tags: Iterable[str]) -> bool:
        """True when an item with these tags is within the grant."""
        return self.tags is None or any(self.covers(t) for t in item_tags)

    def view(self, entry: Entry) -> Entry | None:
        """``entry`` as this grant sees it: None when outside it, and a withdrawal
        with only the granted ones of its tags.

        A withdrawal carries the tags of every version of its story, which
        must not tell a partner about versions it never saw.
        """
        if self.tags is None:
            return entry
        if entry.withdrawal:
            return entry.narrowed(self.tags, self.covers)
        return entry if self.sees(entry.tags) else None

    def visible(self, entries: Sequence[Entry]) -> list[Entry]:
        """The entries within the grant, each as :meth:`view` shows it."""
        if self.tags is None:
            return list(entries)
        return [v for v in map(self.view, entries) if v is not None]

    def admits(self, keys: frozenset[str]) -> bool:
        """True when :meth:`narrow` takes ``keys`` (it raises Forbidden otherwise)."""
        return self.tags is None or WILDCARD in keys or all(self.covers(k) for k in keys)

    def narrow(self, keys: frozenset[str]) -> frozenset[str]:
        """A read filter within the grant: ``*`` becomes the granted tags."""
        if self.tags is None:
            return keys
        if WILDCARD in keys:
            return self.tags
        self.check_subscription(keys)
        return keys


EVERYTHING = Grant()


@dataclass(frozen=True, slots=True)
class Entitlements:
    """Limited tokens and their grants."""

    grants: tuple[tuple[str, Grant], ...] = ()
    #: The grants of entries that have a ``name`` (webhooks name their partner).
    names: tuple[tuple[str, Grant], ...] = ()
    #: An entitlements file was given (loaded), even one with no entry yet.
    given: bool = False

    def __bool__(self) -> bool:
        """True when reads need a token: a file was given, whatever it holds.

        A file with no entry yet (partners to come, or a ``[[tokens]]`` typo)
        must not leave the wire public, which the operator asked to close.
        """
        return self.given or bool(self.grants)

    def grant_for(self, token: str) -> Grant | None:
        """The grant of ``token``, or None when it is not a limited token.

        Every token is compared in constant time, so timing reveals nothing.
        """
        found: Grant | None = None
        given = token.encode()
        for known, grant in self.grants:
            if hmac.compare_digest(given, known.encode()):
                found = grant
        return found

    def by_name(self, name: str) -> Grant | None:
        """The grant of the entry called ``name`` (None when there is none)."""
        return next((g for n, g in self.names if n == name), None)


def load(path: Path) -> Entitlements:
    """Read an entitlements file; raise ValidationError naming the file and entry.

    What could grant other than it seems is refused, never guessed at: a
    top-level key other than ``token`` (a typo would leave every partner out),
    ``[token]`` for ``[[token]]``, a bad tag (``*`` included), a token listed
    twice (the last entry would win), or one name with two different grants
    (a webhook's ``partner`` would take the first). Messages never repeat a token.
    """
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ValidationError(f"cannot read entitlements file {path}: {err}") from None
    unknown = sorted(set(data) - {"token"})
    if unknown:
        raise ValidationError(f"{path}: unknown key {unknown[0]!r}; each partner is a [[token]]")
    entries = data.get("token", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValidationError(f"{path}: each partner is a [[token]] table (note the double [[ ]])")
    grants: list[tuple[str, Grant]] = []
    names: dict[str, Grant] = {}
    for i, entry in enumerate(entries, 1):
        token, grant = _entry(f"{path}: token #{i}", entry)
        if any(token == known for known, _ in grants):
            raise ValidationError(f"{path}: token #{i} repeats the token of an earlier entry")
        if grant.name and names.setdefault(grant.name, grant) != grant:
            raise ValidationError(
                f"{path}: token #{i} names a partner listed earlier with other tags"
            )
        grants.append((token, grant))
    return Entitlements(tuple(grants), tuple(names.items()), given=True)


def _entry(where: str, entry: dict[str, object]) -> tuple[str, Grant]:
    """One ``[[token]]`` entry's token and grant (``where`` names it in errors)."""
    token, tags, name = entry.get("token"), entry.get("tags"), entry.get("name")
    if not isinstance(token, str) or not token or not isinstance(tags, list) or not tags:
        raise ValidationError(f"{where} needs 'token' and a non-empty 'tags'")
    if name is not None and not isinstance(name, str):
        raise ValidationError(f"{where}: 'name' must be a string")
    if not usable(token):
        raise ValidationError(
            f"{where}: a token is visible ASCII characters, no spaces (no client could send it)"
        )
    try:
        granted = frozenset(normalize_tags(tags))
    except InvalidTag as err:
        raise ValidationError(f"{where}: {err} (a grant is tags, never '*')") from None
    return token, Grant(granted, name or None)


def reader_grant(
    presented: str | None,
    subscriber_tokens: Iterable[str],
    entitlements: Entitlements,
    also: Iterable[str] = (),
) -> Grant:
    """Who is reading: everything for an unlimited token (or a public wire), else a grant
(a token in the entitlements file has its grant, wherever else it is listed).

    The wire is public only while neither subscriber tokens nor entitlements
    are configured; ``also`` are further unlimited tokens (editors may read).
    Raises Unauthorized for a missing or unknown token.
    """
    named: list[tuple[str | None, str]] = [named_token(t) for t in subscriber_tokens]
    if not named and not entitlements:
        return EVERYTHING
    # Editors' tokens first: a token listed in both is known by its name (the last match).
    named = [(None, t) for t in also] + named
    if presented is None:
        raise Unauthorized("a subscriber token is required (Authorization: Bearer <token>)")
    # The file's grant wins: a partner limited there but still listed unlimited
    # (an old WIRE_SUBSCRIBER_TOKENS entry, an editor token) must not read all.
    limited = entitlements.grant_for(presented)
    found = matching(presented, [t for _, t in named])
    if limited is not None:
        return limited
    if found is not None:
        name = named[found][0]
        return EVERYTHING if name is None else Grant(None, name)
    raise Unauthorized("the subscriber token is not valid")


def named_token(configured: str) -> tuple[str | None, str]:
    """(name, token) of a ``WIRE_SUBSCRIBER_TOKENS`` entry: ``name:token`` or an
    anonymous ``token`` (split at the first ``:``; an empty name is anonymous)."""
    name, sep, token = configured.partition(":")
    if not sep:
        return None, configured
    return name or None, token
