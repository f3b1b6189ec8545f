"""The subscriber protocol's pure core: message parsing, limits and resume decisions.

Plain function calls, no I/O and no event loop. Every client message the
gateway accepts or refuses is decided by :func:`wire.protocol.parse_message`
and :class:`wire.protocol.Subscription`; every replay is decided by the
functions in :mod:`wire.resume`. The gateway tests check that these decisions
reach real clients; here they are checked exhaustively and fast.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.core.entry import Entry
from wire.core.errors import (
    ClientError,
    InvalidJSON,
    InvalidMessage,
    InvalidTag,
    RateLimited,
    TooManyTags,
    ValidationError,
)
from wire.core.ids import ZERO, StreamKey, format_id, preceding
from wire.core.protocol import (
    MAX_BACKFILL,
    PONG,
    Ping,
    Subscribe,
    Subscription,
    Unsubscribe,
    error_message,
    parse_message,
    subscribed_message,
    truncated_message,
)
from wire.core.resume import Kept, Window, compact, fresh, is_truncated, replay_window


def msg(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def refuses(data: str | bytes, kind: type[ClientError], field: str | None = None) -> ClientError:
    """Assert parse_message refuses ``data`` with ``kind``; return the error."""
    with pytest.raises(kind) as info:
        parse_message(data)
    if field is not None:
        assert info.value.field == field
    return info.value


def entry(ms: int, seq: int = 0, *, tags: tuple[str, ...] = ("world",), guid: str = "") -> Entry:
    eid = f"{ms}-{seq}"
    story = guid or f"urn:story:{eid}"
    stored = orjson.dumps({"guid": story, "version": 1, "title": eid, "tags": list(tags)})
    return Entry(eid, tags, 5, story, b'{"id":"' + eid.encode() + b'",' + stored[1:])


def keys(entries: list[Entry]) -> list[StreamKey]:
    return [e.key for e in entries]


# --- parse_message: every valid message -------------------------------------


def test_ping() -> None:
    assert parse_message(msg(type="ping")) == Ping()
    assert parse_message('{"type": "ping", "extra": 1}') == Ping()


def test_subscribe_plain_normalizes_tags() -> None:
    cmd = parse_message(msg(type="subscribe", tags=["World", " Europe  Politics ", "world"]))
    assert cmd == Subscribe(tags=("world", "europe-politics"))


def test_subscribe_accepts_str_and_bytes() -> None:
    text = '{"type":"subscribe","tags":["sport"]}'
    assert parse_message(text) == parse_message(text.encode())


def test_subscribe_wildcard() -> None:
    assert parse_message(msg(type="subscribe", tags=["*"])) == Subscribe(tags=("*",))
    assert parse_message(msg(type="subscribe", tags=[" * ", "a"])) == Subscribe(tags=("*", "a"))


def test_subscribe_hierarchical_tag() -> None:
    cmd = parse_message(msg(type="subscribe", tags=["World/Europe/France"]))
    assert cmd == Subscribe(tags=("world/europe/france",))


def test_subscribe_empty_tag_list_is_allowed() -> None:
    assert parse_message(msg(type="subscribe", tags=[])) == Subscribe(tags=())


def test_subscribe_with_since() -> None:
    cmd = parse_message(msg(type="subscribe", tags=["a"], since="1717236000000-7"))
    assert cmd == Subscribe(tags=("a",), since=(1717236000000, 7))


def test_subscribe_with_bare_millisecond_since() -> None:
    cmd = parse_message(msg(type="subscribe", tags=["a"], since="42"))
    assert isinstance(cmd, Subscribe) and cmd.since == (42, 0)


def test_subscribe_with_backfill() -> None:
    assert parse_message(msg(type="subscribe", tags=["a"], backfill=10)) == Subscribe(
        tags=("a",), backfill=10
    )
    cmd = parse_message(msg(type="subscribe", tags=["a"], backfill=MAX_BACKFILL))
    assert isinstance(cmd, Subscribe) and cmd.backfill == 500


def test_backfill_zero_means_no_replay() -> None:
    assert parse_message(msg(type="subscribe", tags=["a"], backfill=0)) == Subscribe(tags=("a",))


def test_subscribe_with_compact() -> None:
    cmd = parse_message(msg(type="subscribe", tags=["a"], since="5-0", compact=True))
    assert cmd == Subscribe(tags=("a",), since=(5, 0), compact=True)


def test_null_since_and_backfill_are_absent() -> None:
    cmd = parse_message(msg(type="subscribe", tags=["a"], since=None, backfill=None))
    assert cmd == Subscribe(tags=("a",))


def test_unsubscribe() -> None:
    assert parse_message(msg(type="unsubscribe", tags=["World", "*"])) == Unsubscribe(
        tags=("world", "*")
    )


# --- parse_message: every invalid message -----------------------------------


@pytest.mark.parametrize(
    "data",
    ["", "{", "not json", '{"type": "ping",}', b"\xff\xfe", "[1, 2", "NaN"],
)
def test_invalid_json(data: str | bytes) -> None:
    err = refuses(data, InvalidJSON)
    assert err.code == "invalid_json"


@pytest.mark.parametrize("data", ["[]", '"ping"', "42", "null", "true", '[{"type":"ping"}]'])
def test_not_an_object(data: str) -> None:
    assert refuses(data, InvalidMessage).code == "invalid_message"


@pytest.mark.parametrize(
    "fields",
    [{}, {"type": "subscribed"}, {"type": "PING"}, {"type": None}, {"type": 1}, {"kind": "ping"}],
)
def test_unknown_type(fields: dict[str, Any]) -> None:
    err = refuses(msg(**fields), InvalidMessage, field="type")
    assert "unknown message type" in err.message


def test_unknown_type_is_quoted_short() -> None:
    err = refuses(msg(type="x" * 1000), InvalidMessage)
    assert len(err.message) < 100


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize(
    "tags", [None, "world", {"world": 1}, [1], ["a", None], [["a"]], 5, ["a", True]]
)
def test_tags_not_a_list_of_strings(kind: str, tags: object) -> None:
    fields: dict[str, Any] = {"type": kind}
    if tags is not None:
        fields["tags"] = tags
    err = refuses(msg(**fields), ValidationError, field="tags")
    assert err.code == "invalid_field"
    assert err.message == "tags must be a list of strings"


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize("bad", ["", "   ", "a b!", "a//b", "/a", "a/", "x" * 65, "a\u200db"])
def test_bad_tag_is_named(kind: str, bad: str) -> None:
    err = refuses(msg(type=kind, tags=["fine", bad]), InvalidTag, field="tags")
    assert err.code == "invalid_tag"
    assert repr(bad if len(bad) <= 80 else bad[:77] + "...") in err.message


@pytest.mark.parametrize(
    "since",
    [5, 5.5, True, [], {}, "abc", "1-2-3", "-1", "1-", "١٢٣-٠", "1" * 21, "99999999999999999999"],
)
def test_bad_since(since: object) -> None:
    refuses(msg(type="subscribe", tags=["a"], since=since), ValidationError, field="since")


@pytest.mark.parametrize("backfill", [-1, MAX_BACKFILL + 1, 1.5, "10", True, False, [], {}])
def test_bad_backfill(backfill: object) -> None:
    err = refuses(msg(type="subscribe", tags=["a"], backfill=backfill), ValidationError)
    assert err.field == "backfill"


def test_since_and_backfill_together() -> None:
    err = refuses(msg(type="subscribe", tags=["a"], since="1-0", backfill=3), ValidationError)
    assert err.field == "backfill"
    assert "not both" in err.message


@pytest.mark.parametrize("value", [1, 0, "true", []])
def test_bad_compact(value: object) -> None:
    refuses(msg(type="subscribe", tags=["a"], compact=value), ValidationError, field="compact")


# --- hypothesis: nothing but ClientError, ever --------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["*", "world", "a/b", "ping", "subscribe", "1-0", "0", "  ", "a//b"])
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "ping", "other"])},
    optional={
        "tags": st.lists(_scalars, max_size=6) | _json,
        "since": _scalars,
        "backfill": _scalars,
        "compact": _scalars,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_json, _messages))
def test_random_json_raises_only_client_errors(value: object) -> None:
    try:
        cmd = parse_message(orjson.dumps(value))
    except ClientError as err:
        assert err.code and err.message
        return
    assert isinstance(cmd, Subscribe | Unsubscribe | Ping)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_random_bytes_raise_only_client_errors(data: bytes | str) -> None:
    with contextlib.suppress(ClientError):
        parse_message(data)


# --- Subscription: tag limit -----------------------------------------------


def test_subscribe_adds_and_unsubscribe_removes() -> None:
    sub = Subscription()
    assert sub.subscribe(("a", "b")) == {"a", "b"}
    assert sub.subscribe(("b", "c")) == {"a", "b", "c"}
    assert sub.unsubscribe(("a", "zzz")) == {"b", "c"}
    assert sub.tags == {"b", "c"}


def test_max_tags_counts_the_whole_connection() -> None:
    sub = Subscription(max_tags=100)
    sub.subscribe(tuple(f"t{i}" for i in range(60)))
    with pytest.raises(TooManyTags) as info:
        sub.subscribe(tuple(f"u{i}" for i in range(41)))
    assert info.value.code == "too_many_tags"
    assert len(sub.tags) == 60  # the refused subscribe changed nothing
    assert len(sub.subscribe(tuple(f"u{i}" for i in range(40)))) == 100


def test_max_tags_ignores_tags_already_held() -> None:
    sub = Subscription(max_tags=2)
    sub.subscribe(("a", "b"))
    assert sub.subscribe(("a", "b")) == {"a", "b"}
    with pytest.raises(TooManyTags):
        sub.subscribe(("c",))


def test_unsubscribing_frees_room() -> None:
    sub = Subscription(max_tags=2)
    sub.subscribe(("a", "b"))
    sub.unsubscribe(("a",))
    assert sub.subscribe(("c",)) == {"b", "c"}


# --- Subscription: rate limit with an injected clock -------------------------


def test_rate_allows_exactly_rate_per_second() -> None:
    sub = Subscription(rate=20)
    for i in range(20):
        sub.check_rate(100.0 + i * 0.01)
    with pytest.raises(RateLimited) as info:
        sub.check_rate(100.5)
    assert info.value.code == "rate_limited"
    assert "20" in info.value.message


def test_rate_window_resets_after_a_second() -> None:
    sub = Subscription(rate=3)
    for _ in range(3):
        sub.check_rate(10.0)
    with pytest.raises(RateLimited):
        sub.check_rate(10.99)
    sub.check_rate(11.0)  # a new window begins
    sub.check_rate(11.5)
    sub.check_rate(11.9)
    with pytest.raises(RateLimited):
        sub.check_rate(11.95)


def test_rate_is_per_connection() -> None:
    a, b = Subscription(rate=1), Subscription(rate=1)
    a.check_rate(1.0)
    b.check_rate(1.0)
    with pytest.raises(RateLimited):
        a.check_rate(1.1)


# --- server messages ----------------------------------------------------------


def test_subscribed_message_is_sorted_whole_set() -> None:
    assert subscribed_message(frozenset({"world", "*", "business"})) == {
        "type": "subscribed",
        "tags": ["*", "business", "world"],
    }


def test_error_message_carries_code_message_field() -> None:
    assert error_message(InvalidTag("tag 'x!' is bad", field="tags")) == {
        "type": "error",
        "code": "invalid_tag",
        "message": "tag 'x!' is bad",
        "field": "tags",
    }
    assert error_message(RateLimited("slow down")) == {
        "type": "error",
        "code": "rate_limited",
        "message": "slow down",
    }


def test_truncated_message_names_both_ids() -> None:
    m = truncated_message((5, 0), (99, 3))
    assert m["type"] == "error" and m["code"] == "history_truncated"
    assert "5-0" in str(m["message"]) and "99-3" in str(m["message"])


def test_pong() -> None:
    assert PONG == {"type": "pong"}


# --- resume: replay_window ------------------------------------------------------


def test_window_from_since_to_position() -> None:
    assert replay_window((5, 0), ZERO, (9, 0)) == Window((5, 0), (9, 0))


def test_window_never_reaches_back_before_last_sent() -> None:
    assert replay_window((5, 0), (7, 2), (9, 0)) == Window((7, 2), (9, 0))


def test_window_since_after_last_sent() -> None:
    assert replay_window((8, 0), (7, 2), (9, 0)) == Window((8, 0), (9, 0))


def test_window_empty_when_nothing_new() -> None:
    assert replay_window((9, 0), ZERO, (9, 0)).empty
    assert replay_window((10, 0), ZERO, (9, 0)).empty  # since in the future
    assert replay_window((1, 0), (9, 0), (9, 0)).empty
    assert not replay_window((8, 9), ZERO, (9, 0)).empty


def test_window_compares_ids_numerically() -> None:
    # as strings "10-0" < "9-0"; as ids 9-0 comes first
    assert not replay_window((9, 0), ZERO, (10, 0)).empty
    assert replay_window((10, 0), ZERO, (9, 0)).empty


# --- resume: is_truncated -------------------------------------------------------


def test_truncated_only_when_unseen_items_were_removed() -> None:
    assert not is_truncated((5, 0), ZERO)  # nothing ever trimmed
    assert is_truncated((5, 0), (6, 0))
    assert is_truncated(ZERO, (6, 0))
    assert not is_truncated((6, 0), (6, 0))  # the client saw the last trimmed item
    assert not is_truncated((7, 0), (6, 0))


def test_the_id_before_another() -> None:
    assert preceding((7, 3)) == (7, 2)
    assert preceding((7, 0)) == (6, 2**64 - 1)
    assert preceding((0, 1)) == ZERO
    assert preceding(ZERO) == ZERO  # nothing precedes the start


def test_a_cursor_older_than_a_stream_never_trimmed_has_lost_what_followed_it() -> None:
    """A stream keeps every id it made until retention trims: a cursor older than its
    first entry comes from a stream Redis lost (restart without persistence)."""
    new_stream = Kept(trimmed=ZERO, first=(100, 0))
    assert new_stream.lost_upto((50, 2)) == (99, 2**64 - 1)
    assert is_truncated((50, 2), new_stream.lost_upto((50, 2)))
    assert not is_truncated(ZERO, new_stream.lost_upto(ZERO)), "0-0 names no item"
    assert not is_truncated((100, 0), new_stream.lost_upto((100, 0)))
    assert not is_truncated((150, 0), new_stream.lost_upto((150, 0)))
    # Retention's own record wins when it reaches further (and applies to 0-0 too).
    trimmed = Kept(trimmed=(99, 5), first=(100, 0))
    assert trimmed.lost_upto((50, 0)) == (99, 2**64 - 1)
    assert trimmed.lost_upto(ZERO) == (99, 5)
    # An empty stream names no first entry: only what retention says.
    assert Kept(trimmed=(40, 0), first=None).lost_upto((50, 0)) == (40, 0)
    assert Kept(trimmed=ZERO, first=None).lost_upto((50, 0)) == ZERO


# --- resume: fresh ---------------------------------------------------------------


def test_fresh_keeps_only_after_last_sent_in_order() -> None:
    es = [entry(1), entry(2), entry(3), entry(3, 1)]
    assert keys(fresh(es, (2, 0))) == [(3, 0), (3, 1)]
    assert keys(fresh(es, ZERO)) == keys(es)
    assert fresh(es, (3, 1)) == []


# --- resume: compact --------------------------------------------------------------


def test_compact_keeps_latest_version_of_each_story_at_its_position() -> None:
    es = [
        entry(1, guid="a"),
        entry(2, guid="b"),
        entry(3, guid="a"),
        entry(4, guid="c"),
        entry(5, guid="b"),
    ]
    assert [e.id for e in compact(es)] == ["3-0", "4-0", "5-0"]


def test_compact_of_distinct_stories_is_identity() -> None:
    es = [entry(i) for i in range(1, 6)]
    assert compact(es) == es
    assert compact([]) == []


def test_entry_ids_round_trip() -> None:
    e = entry(1717236000000, 3)
    assert format_id(e.key) == e.id
    assert orjson.loads(e.json)["id"] == e.id
