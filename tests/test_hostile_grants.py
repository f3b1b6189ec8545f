"""Hostile pass on entitlements: the grant holds whatever the configuration says.

A token limited by the entitlements file stays limited when it is also listed
unlimited; an entitlements file that is given closes the wire even when it
names no token yet; a file that does not say what it seems to is refused at
load, naming the entry, instead of granting something else.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ServerFactory
from tests.support import EDITOR_TOKEN, get_json, item, post
from wire.core.entitlements import load, reader_grant
from wire.core.errors import ValidationError
from wire.runtime.settings import Settings

PARTNER = {"Authorization": "Bearer partner"}


async def test_a_token_in_the_entitlements_file_stays_limited_when_also_listed_unlimited(
    make_server: ServerFactory, partner_file: Path, http: aiohttp.ClientSession
) -> None:
    # An operator who limits a partner but forgets its old unlimited entry.
    wire = await make_server(entitlements=partner_file, subscriber_tokens=("Old:partner",))
    _, secret = await post(http, wire.base, item("Secret", ["politics"], body="HIDDEN"))
    _, sport = await post(http, wire.base, item("Goal", ["sport"]))
    status, body = await get_json(http, f"{wire.base}/v1/items", headers=PARTNER)
    assert status == 200 and [i["id"] for i in body["items"]] == [sport["item"]["id"]]
    status, _ = await get_json(
        http, f"{wire.base}/v1/items/{secret['item']['id']}", headers=PARTNER
    )
    assert status == 404
    async with http.get(f"{wire.base}/v1/sse?tags=*", headers=PARTNER) as resp:
        assert resp.status == 403
    # The same for an editor token listed in the file (the grant wins for reads).
    ents = load(partner_file)
    grant = reader_grant("partner", (), ents, also=("partner", EDITOR_TOKEN))
    assert grant.tags == frozenset({"sport"})
    assert reader_grant(EDITOR_TOKEN, (), ents, also=(EDITOR_TOKEN,)).tags is None


async def test_an_entitlements_file_with_no_token_yet_still_closes_the_wire(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    path = tmp_path / "partners.toml"
    path.write_text("# partners go here\n")
    wire = await make_server(entitlements=path)
    await post(http, wire.base, item("Secret", ["politics"]))
    for url in ("/v1/items", "/v1/feed.atom", "/v1/sse?tags=*"):
        async with http.get(wire.base + url) as resp:
            assert resp.status == 401, url


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[[tokens]]\ntoken = "p"\ntags = ["sport"]\n', "'tokens'"),
        ('[token]\ntoken = "p"\ntags = ["sport"]\n', "[[token]]"),
        ('[[token]]\ntoken = "p"\ntags = ["*"]\n', "token #1"),
        ('[[token]]\ntoken = "p"\ntags = ["sport", 5]\n', "token #1"),
        (
            '[[token]]\ntoken = "p"\ntags = ["sport"]\n[[token]]\ntoken = "p"\ntags = ["news"]\n',
            "token #2",
        ),
        (
            '[[token]]\ntoken = "p"\nname = "A"\ntags = ["sport"]\n'
            '[[token]]\ntoken = "q"\nname = "A"\ntags = ["news"]\n',
            "token #2",
        ),
        # A token no client could send (a bearer token is stripped, visible ASCII).
        ('[[token]]\ntoken = " p "\ntags = ["sport"]\n', "no spaces"),
        ('[[token]]\ntoken = "p\\tq"\ntags = ["sport"]\n', "no spaces"),
        ('[[token]]\ntoken = "pé"\ntags = ["sport"]\n', "visible ASCII"),
    ],
)
def test_an_entitlements_file_that_says_something_else_is_refused_naming_the_entry(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "partners.toml"
    path.write_text(text)
    with pytest.raises(ValidationError) as err:
        load(path)
    assert str(path) in str(err.value) and says in str(err.value)
    # The refusal never repeats a token.
    assert '"p"' not in str(err.value) and "'p'" not in str(err.value)


def test_two_tokens_of_one_partner_with_the_same_tags_are_a_rotation_not_an_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "partners.toml"
    path.write_text(
        '[[token]]\ntoken = "old"\nname = "A"\ntags = ["sport"]\n'
        '[[token]]\ntoken = "new"\nname = "A"\ntags = ["Sport"]\n'
    )
    ents = load(path)
    grant = ents.by_name("A")
    assert grant is not None and grant.tags == frozenset({"sport"})
    assert ents.grant_for("old") == ents.grant_for("new") == grant


async def test_a_webhook_whose_tags_left_its_partners_grant_is_shown_with_no_lag_not_403(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The partner's entry is edited (and the wire restarted) so that an existing
    webhook's tags are outside it: the admin still reads the webhook, with the
    ``lag`` of a webhook whose partner is gone, and nothing is delivered."""
    path = tmp_path / "partners.toml"
    path.write_text('[[token]]\ntoken = "p"\nname = "A"\ntags = ["sport"]\n')
    admin = {"Authorization": "Bearer adm"}
    first = await make_server(entitlements=path, admin_tokens=("adm",), webhook_allow_private=True)
    async with http.post(
        first.base + "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "tags": ["sport/football"], "partner": "A"},
        headers=admin,
    ) as resp:
        assert resp.status == 201
        made = (await resp.json())["webhook"]
    await first.stop()
    path.write_text('[[token]]\ntoken = "p"\nname = "A"\ntags = ["news"]\n')
    wire = await make_server(entitlements=path, admin_tokens=("adm",), webhook_allow_private=True)
    status, body = await get_json(http, f"{wire.base}/v1/webhooks/{made['id']}", headers=admin)
    assert status == 200, body
    assert body["webhook"]["lag"] is None and body["webhook"]["lag_exact"] is False
    status, body = await get_json(http, f"{wire.base}/v1/webhooks", headers=admin)
    assert status == 200 and [w["id"] for w in body["webhooks"]] == [made["id"]]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WIRE_EDITOR_TOKENS", "good,with space"),
        ("WIRE_SUBSCRIBER_TOKENS", "name:to ken"),
        ("WIRE_SUBSCRIBER_TOKENS", "name:"),
        ("WIRE_ADMIN_TOKENS", "caf\u00e9"),
        ("WIRE_METRICS_TOKEN", "a b"),
    ],
)
def test_a_configured_token_no_client_could_send_is_refused_at_start(
    variable: str, value: str
) -> None:
    """Every request with it would be a 401, and nothing would say why."""
    with pytest.raises(SystemExit) as err:
        Settings.from_env({variable: value})
    assert variable in str(err.value) and value not in str(err.value)


def test_configured_tokens_a_client_can_send_are_taken() -> None:
    settings = Settings.from_env(
        {"WIRE_SUBSCRIBER_TOKENS": "name:t:o:k, anon ", "WIRE_EDITOR_TOKENS": "e!~"}
    )
    assert settings.subscriber_tokens == ("name:t:o:k", "anon")
    assert settings.editor_tokens == ("e!~",)
