"""Property-based tests of the wire's three input doors: items, tags, messages.

Each property runs a fixed, derandomized set of examples (no example
database), so a CI run is the same run every time and finishes in seconds.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from wire.core.errors import ClientError, InvalidTag, ValidationError
from wire.core.ids import format_id, parse_id
from wire.core.items import (
    FIELDS,
    MAX_BODY,
    MAX_MARK,
    MAX_SUBTITLE,
    MAX_TAGS,
    MAX_TITLE,
    MAX_URL,
    SERVER_FIELDS,
    Submission,
    parse_submission,
)
from wire.core.protocol import MAX_BACKFILL, Ping, Subscribe, Unsubscribe, parse_message
from wire.core.tags import MAX_TAG_LENGTH, WILDCARD, normalize_tag, normalize_tags

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ALLOWED_CATEGORIES = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd"}
#: Bidi controls and zero-width characters: invisible, so two tags that look
#: the same would differ. Every one must be refused.
INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2060",
    "\u2061",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u206a",
    "\u206f",
    "\ufeff",
    "\u00ad",
    "\u061c",
    "\u180e",
    "\U000e0001",
    "\U000e007f",
]
GUID = re.compile(r"[A-Za-z0-9._~:@+=-]{1,200}")

# -- strategies -------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
tag_text = st.text(
    alphabet=st.sampled_from("abcXYZ019-/ _*éß") | st.characters(codec="utf-8"),
    min_size=0,
    max_size=12,
)
#: Values a field might plausibly get: right types, wrong types, edge lengths.
field_values = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="ab \t\r\n", max_size=5),
    st.sampled_from(
        [
            "https://example.com/a",
            "http://x.y",
            "javascript:alert(1)",
            "https://example.com:99999/",
            "http://[::1]/",
            "http://[::1",
            "x" * (MAX_TITLE + 1),
            "2099-01-01T00:00:00Z",
            "2001-01-01T00:00:00Z",
            "2099-01-01T00:00:00",
        ]
    ),
    st.integers(min_value=-3, max_value=12),
    st.lists(tag_text, max_size=4),
    json_values,
)


def mostly(good: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` four times in five, else ``other``."""
    return st.integers(min_value=0, max_value=4).flatmap(lambda n: good if n else other)


good_title = st.text(st.characters(categories=["L", "M", "N", "P", "S"]), min_size=1, max_size=40)
good_tag = st.from_regex(r"[A-Za-zé0-9]{1,8}(/[a-zß0-9 ]{1,8}){0,2}", fullmatch=True)
#: Values that pass each field's rule (mixed in so that many items are accepted).
good_values: dict[str, st.SearchStrategy[Any]] = {
    "subtitle": st.text(max_size=60),
    "body": st.text(max_size=200),
    "mark": st.text(max_size=20),
    "url": st.sampled_from(["https://example.com/a?b=c", "http://x.y:8080/", " http://a.b "]),
    "urgency": st.integers(min_value=1, max_value=9),
    "guid": st.from_regex(GUID, fullmatch=True),
    "embargo_until": st.integers(min_value=60, max_value=86_400 * 300).map(
        lambda s: (datetime.now(UTC) + timedelta(seconds=s)).isoformat()
    ),
}
near_items = st.fixed_dictionaries(
    {
        "title": mostly(good_title, st.text(min_size=1, max_size=40) | field_values),
        "tags": mostly(st.lists(mostly(good_tag, tag_text), min_size=1, max_size=3), field_values),
    },
    optional={name: mostly(good, field_values) for name, good in good_values.items()},
)
#: The same with a field the server sets, or one it does not know.
foreign_items = st.tuples(
    near_items, st.sampled_from([*SERVER_FIELDS, "extra", "", "Title"]), field_values
).map(lambda t: {**t[0], t[1]: t[2]})


# -- items ------------------------------------------------------------------------


def assert_text_rule(value: str | None, limit: int, *, multiline: bool) -> None:
    if value is None:
        return
    assert value and value == value.strip() and len(value) <= limit
    allowed = "\n\t" if multiline else ""
    assert all(ch in allowed or unicodedata.category(ch) != "Cc" for ch in value)
    assert "\r" not in value


def assert_obeys_rules(sub: Submission, now: datetime) -> None:
    """Every field rule of an accepted submission."""
    assert isinstance(sub.title, str)
    assert_text_rule(sub.title, MAX_TITLE, multiline=False)
    assert_text_rule(sub.subtitle, MAX_SUBTITLE, multiline=True)
    assert_text_rule(sub.body, MAX_BODY, multiline=True)
    assert_text_rule(sub.mark, MAX_MARK, multiline=False)
    assert 1 <= len(sub.tags) <= MAX_TAGS and len(set(sub.tags)) == len(sub.tags)
    assert all(normalize_tag(t) == t and t != WILDCARD for t in sub.tags)
    if sub.url is not None:
        parts = urlsplit(sub.url)
        assert len(sub.url) <= MAX_URL and parts.scheme in ("http", "https") and parts.hostname
        assert not any(ch.isspace() for ch in sub.url)
        assert parts.port is None or 0 <= parts.port <= 65535  # .port raises if malformed
    assert type(sub.urgency) is int and 1 <= sub.urgency <= 9
    assert GUID.fullmatch(sub.guid)
    if sub.embargo_until is not None:
        assert sub.embargo_until.tzinfo is not None
        assert now < sub.embargo_until <= now + timedelta(days=367)


@FUZZ
@given(json_values)
@example([[[[[[[[[[]]]]]]]]]])
@example({"title": "x", "tags": ["a"], "urgency": True})
def test_parse_submission_on_any_json_raises_only_validation_errors(data: Any) -> None:
    now = datetime.now(UTC)
    try:
        sub = parse_submission(data, now=now)
    except ValidationError as err:
        assert err.code in ("invalid_field", "invalid_tag") and err.message
        return
    assert_obeys_rules(sub, now)


@FUZZ
@given(mostly(near_items, foreign_items))
@example({"title": "a", "tags": ["b"], "url": "https://example.com:99999/"})
@example({"title": "a", "tags": ["b"], "subtitle": "x\r\ny\rz"})
def test_accepted_submissions_obey_every_field_rule(data: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    try:
        sub = parse_submission(data, now=now)
    except ValidationError as err:
        # The error names a field the body has (or the body itself).
        assert err.field is None or err.field in data or err.field in FIELDS
        event(f"refused: {err.field}")
        return
    event("accepted")
    assert not set(data) - set(FIELDS), "no unknown or server field is accepted"
    assert_obeys_rules(sub, now)
    # The stored form keeps the editor's text, trimmed, with one line ending.
    assert sub.title == data["title"].strip()


@FUZZ
@given(st.binary(max_size=200))
def test_parse_submission_after_orjson_on_any_bytes(raw: bytes) -> None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return  # the publisher answers invalid_json
    with contextlib.suppress(ValidationError):
        parse_submission(data)


# -- tags -------------------------------------------------------------------------


def assert_canonical(tag: str) -> None:
    assert 1 <= len(tag) <= MAX_TAG_LENGTH
    assert all(ch in "-/" or unicodedata.category(ch) in ALLOWED_CATEGORIES for ch in tag), tag
    assert "" not in tag.split("/")


@FUZZ
@given(st.text(max_size=80))
@example("World/Europe")
@example("ﬁ/Ⅻ/²")
@example("ß")
@example("a\u202eb")
def test_normalize_tag_is_idempotent_and_canonical(raw: str) -> None:
    try:
        tag = normalize_tag(raw)
    except InvalidTag as err:
        assert err.code == "invalid_tag" and err.field == "tags"
        return
    assert_canonical(tag)
    assert normalize_tag(tag) == tag


@FUZZ
@given(st.text(alphabet="abcdefxyz0123456789", min_size=1, max_size=10), st.sampled_from(INVISIBLE))
def test_bidi_controls_and_zero_width_characters_are_rejected(word: str, invisible: str) -> None:
    for raw in (word + invisible, invisible + word, word[:1] + invisible + word[1:]):
        try:
            normalize_tag(raw)
        except InvalidTag:
            continue
        raise AssertionError(f"{raw!r} was accepted")


@FUZZ
@given(
    st.text(alphabet="abcxyz", min_size=1, max_size=10),
    st.characters(categories=["Cf", "Co", "Cs"])
    | st.characters(categories=["Cc"]).filter(lambda ch: not ch.isspace()),
)
def test_format_private_and_control_characters_are_rejected(word: str, bad: str) -> None:
    try:
        normalize_tag(word + bad + word)
    except InvalidTag:
        return
    raise AssertionError(f"U+{ord(bad):04X} ({unicodedata.category(bad)}) was accepted")


@FUZZ
@given(
    st.text(alphabet="abcxyz", min_size=1, max_size=10),
    st.characters(categories=["Zs"]),
    st.text(alphabet="abcxyz", min_size=1, max_size=10),
)
def test_spaces_inside_become_a_dash_and_outside_are_trimmed(
    left: str, space: str, right: str
) -> None:
    assert normalize_tag(f"{space}{left}{space}{space}{right}{space}") == f"{left}-{right}"


@FUZZ
@given(st.lists(st.text(max_size=20) | st.just("*"), max_size=8))
def test_normalize_tags_keeps_first_seen_order_without_duplicates(raw: list[str]) -> None:
    try:
        tags = normalize_tags(raw, allow_wildcard=True)
    except InvalidTag:
        return
    assert len(set(tags)) == len(tags)
    for tag in tags:
        if tag != WILDCARD:
            assert_canonical(tag)
            assert normalize_tag(tag) == tag


# -- subscriber protocol ------------------------------------------------------------

messages = st.one_of(
    st.text(max_size=100),
    st.binary(max_size=100),
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["subscribe", "unsubscribe", "ping", "pong", "", "SUBSCRIBE"])},
        optional={
            "tags": st.lists(tag_text | json_scalars, max_size=4) | json_values,
            "since": st.sampled_from(["0", "1-0", "1717236000000-5", "-1", "1-2-3", "x"])
            | json_values,
            "backfill": st.integers(min_value=-2, max_value=MAX_BACKFILL + 2) | json_values,
            "compact": st.booleans() | json_values,
        },
    ).map(lambda m: orjson.dumps(m).decode()),
)


@FUZZ
@given(messages)
@example("[" * 10_000 + "]" * 10_000)
@example('{"type": "subscribe", "tags": ["a"], "backfill": true}')
def test_parse_message_raises_only_client_errors(frame: str | bytes) -> None:
    try:
        cmd = parse_message(frame)
    except ClientError as err:
        assert err.code and err.message and err.status < 500
        return
    if isinstance(cmd, Ping):
        return
    assert isinstance(cmd, Subscribe | Unsubscribe)
    assert all(t == WILDCARD or normalize_tag(t) == t for t in cmd.tags)
    if isinstance(cmd, Subscribe):
        assert cmd.since is None or cmd.backfill is None
        assert cmd.backfill is None or 1 <= cmd.backfill <= MAX_BACKFILL
        assert isinstance(cmd.compact, bool)
        if cmd.since is not None:
            assert all(0 <= part < 2**64 for part in cmd.since)


@FUZZ
@given(st.text(max_size=50) | st.integers(min_value=0, max_value=2**70).map(str))
@example("\u0661\u0662-\u0660")
def test_stream_ids_parse_strictly_and_round_trip(raw: str) -> None:
    try:
        key = parse_id(raw)
    except ValidationError:
        return
    assert re.fullmatch(r"[0-9]+(-[0-9]+)?", raw)
    assert parse_id(format_id(key)) == key
