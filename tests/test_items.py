"""The pure core: item validation, tag normalization and stream ids.

Plain function calls, no I/O. Every rule of the item model in issue 2 has a
test here; the HTTP tests in test_publisher.py check that the same rules reach
editors as 400s naming the field.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.core.errors import InvalidTag, ValidationError
from wire.core.ids import ZERO, format_id, parse_id
from wire.core.items import Submission, parse_submission, published_now
from wire.core.tags import (
    WILDCARD,
    match_keys,
    matches,
    normalize_tag,
    normalize_tags,
    prefixes,
)
from wire.core.text import BIDI_CONTROLS, MAX_MARKS, NOT_XML, check_text


def sub(**fields: Any) -> Submission:
    """parse_submission of a valid item with ``fields`` changed (None removes one)."""
    data: dict[str, Any] = {"title": "Headline", "tags": ["world"]}
    data.update(fields)
    return parse_submission({k: v for k, v in data.items() if v is not None})


def rejects(field: str | None, **fields: Any) -> ValidationError:
    """Assert the item is rejected, naming ``field``; return the error."""
    with pytest.raises(ValidationError) as info:
        sub(**fields)
    assert info.value.field == field
    assert info.value.status == 400
    return info.value


# --- the whole object -------------------------------------------------------


def test_minimal_item_gets_defaults() -> None:
    s = sub()
    assert s.title == "Headline"
    assert s.tags == ("world",)
    assert s.urgency == 5
    assert s.subtitle is None and s.body is None and s.mark is None and s.url is None
    assert s.guid.startswith("urn:wire:")


def test_full_item_is_kept() -> None:
    s = sub(
        title="Quake hits coast",
        subtitle="A lead\non two lines",
        body="Body\n\twith a tab",
        mark="Breaking",
        url="https://example.com/story?id=1#top",
        urgency=1,
        guid="ap:2024-06-01:quake",
        tags=["World/Asia", "Science"],
    )
    assert s == Submission(
        title="Quake hits coast",
        tags=("world/asia", "science"),
        guid="ap:2024-06-01:quake",
        subtitle="A lead\non two lines",
        body="Body\n\twith a tab",
        mark="Breaking",
        url="https://example.com/story?id=1#top",
        urgency=1,
    )


def test_submission_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        sub().title = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("body", [None, [], ["title"], "title", 5, True])
def test_body_must_be_an_object(body: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_submission(body)
    assert info.value.field is None
    assert info.value.code == "invalid_field"


@pytest.mark.parametrize("name", ["id", "version", "published_at"])
def test_server_fields_cannot_be_sent(name: str) -> None:
    err = rejects(name, **{name: "1"})
    assert "set by the server" in err.message


def test_unknown_field_is_named() -> None:
    err = rejects("headline", headline="x")
    assert "headline" in err.message


# --- title --------------------------------------------------------------------


def test_title_is_required() -> None:
    rejects("title", title=None)
    with pytest.raises(ValidationError) as info:
        parse_submission({"title": None, "tags": ["world"]})
    assert info.value.field == "title"


@pytest.mark.parametrize("title", ["", "   ", "\n\t "])
def test_title_must_not_be_blank(title: str) -> None:
    rejects("title", title=title)


@pytest.mark.parametrize("title", [5, ["a"], {"a": 1}, True])
def test_title_must_be_a_string(title: object) -> None:
    rejects("title", title=title)


def test_title_length_counts_after_trimming() -> None:
    assert sub(title="x" * 300).title == "x" * 300
    assert sub(title="  " + "x" * 300 + "\n ").title == "x" * 300
    assert sub(title="é" * 300).title == "é" * 300  # characters, not bytes
    rejects("title", title="x" * 301)


def test_title_is_trimmed() -> None:
    assert sub(title="  Quake \u3000").title == "Quake"


@pytest.mark.parametrize("title", ["two\nlines", "tab\there", "bell\x07", "nul\x00"])
def test_title_rejects_control_characters(title: str) -> None:
    rejects("title", title=title)


def first_broken_rule(text: str, *, multiline: bool, bidi: bool) -> str | None:
    """The text rules read one character at a time, as docs/protocol.md states them:
    the message of the first one ``text`` breaks, or None."""
    marks = 0
    for ch in text:
        category = unicodedata.category(ch)
        if ch not in ("\n\t" if multiline else "") and (
            category == "Cc" or (not multiline and ch in "\u2028\u2029")
        ):
            return f"contains control character U+{ord(ch):04X}"
        if ch in NOT_XML:
            return f"contains noncharacter U+{ord(ch):04X}"
        if not bidi and ch in BIDI_CONTROLS:
            return f"contains bidirectional control U+{ord(ch):04X}"
        marks = marks + 1 if category in ("Mn", "Me") else 0
        if marks > MAX_MARKS:
            return f"stacks more than {MAX_MARKS} combining marks on one character"
    return None


#: Pieces of text every rule is about, among ordinary text of several scripts:
#: single characters, and stacks of 1-7 combining marks.
PIECES = st.one_of(
    st.sampled_from(
        list("\n\t\r\x00\x1b\x7f\x85\x9f\u2028\u2029\ufffe\uffff\u202e\u2066\u200f")
        + ["a", "Z9 .", "éß", "жд", "中。", "«»—", "\u3000", "भ", "\u0651ع", "\U0001f600"] * 3
    ),
    st.lists(
        st.sampled_from(list("\u0301\u0308\u20dd\u0488\u093f\u0942\u0f71\u302a\U000e0100")),
        min_size=1,
        max_size=MAX_MARKS + 3,
    ).map("".join),
)


def assert_rules_as_per_character(text: str, multiline: bool, bidi: bool) -> None:
    """check_text refuses ``text`` exactly when first_broken_rule does, with its message."""
    stripped = text.strip()
    expected = first_broken_rule(
        stripped.replace("\r\n", "\n").replace("\r", "\n") if multiline else stripped,
        multiline=multiline,
        bidi=bidi,
    )
    try:
        check_text(text, "f", 10_000, multiline=multiline, bidi=bidi)
    except ValidationError as err:
        assert (err.field, str(err)) == ("f", f"f {expected}")
    else:
        assert expected is None


#: Each character at the edge of a rule, and stacks of 4 and 5 marks of each kind.
EDGES = [
    *"\x00\x08\t\n\x0b\x1f\x7f\x84\x85\x9f\xa0\u2027\u2028\u2029\u202a",
    *"\ufffd\ufffe\uffff\u202e\u202f\u2065\u2066\u2069\u206a\u200f\u061c",
    *(m * n for m in "\u0301\u20dd\u0488\u0f71\U000e0100" for n in (MAX_MARKS, MAX_MARKS + 1)),
    "e\u0301\u0302\u0303\u0304\u0305\u0306",
    "\u0301\u0302x\u0303\u0304\u0305\u0306",
]


@pytest.mark.parametrize("multiline", [False, True])
@pytest.mark.parametrize("bidi", [False, True])
@pytest.mark.parametrize("edge", EDGES, ids=[f"U+{ord(e[0]):04X}x{len(e)}" for e in EDGES])
def test_text_rules_at_each_edge(edge: str, multiline: bool, bidi: bool) -> None:
    """check_text looks at the text with regular expressions (issue 15): at the
    edge of every rule it refuses what a scan character by character refuses."""
    assert_rules_as_per_character(f"a{edge}b", multiline, bidi)


@given(st.lists(PIECES, max_size=12).map("".join), st.booleans(), st.booleans())
def test_text_rules_are_the_per_character_rules(text: str, multiline: bool, bidi: bool) -> None:
    """...and on any mix of them, it names the same first broken rule."""
    assert_rules_as_per_character(text, multiline, bidi)


def test_combining_marks_are_never_word_characters() -> None:
    """check_text looks for stacked marks only in runs of non-word characters:
    no combining mark in this Python's Unicode database is one."""
    word = re.compile(r"\w")
    marks = [
        chr(cp)
        for cp in range(0x110000)
        if unicodedata.category(chr(cp)) in ("Mn", "Me") and word.match(chr(cp))
    ]
    assert marks == []
    assert sum(unicodedata.category(chr(cp)) in ("Mn", "Me") for cp in range(0x110000)) > 1_900


# --- subtitle, body, mark -------------------------------------------------------


@pytest.mark.parametrize(("name", "limit"), [("subtitle", 1_000), ("body", 100_000), ("mark", 40)])
def test_optional_text_limits(name: str, limit: int) -> None:
    assert getattr(sub(**{name: "y" * limit}), name) == "y" * limit
    assert getattr(sub(**{name: f"  {'y' * limit}  "}), name) == "y" * limit
    rejects(name, **{name: "y" * (limit + 1)})
    rejects(name, **{name: 12})


@pytest.mark.parametrize("name", ["subtitle", "body", "mark"])
def test_blank_optional_text_is_absent(name: str) -> None:
    assert getattr(sub(**{name: "   "}), name) is None
    assert getattr(parse_submission({"title": "t", "tags": ["a"], name: None}), name) is None


def test_subtitle_and_body_keep_newlines_but_mark_does_not() -> None:
    assert sub(subtitle="a\nb").subtitle == "a\nb"
    assert sub(body="a\r\nb\rc").body == "a\nb\nc"  # CRLF from Windows editors
    rejects("mark", mark="Up\ndated")
    rejects("body", body="a\x1bb")  # escape sequences never reach a terminal


# --- url ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com/a/b?c=d#e",
        "HTTPS://EXAMPLE.COM/",
        "https://[2001:db8::1]:8443/x",
        "https://пример.рф/новости",
    ],
)
def test_url_accepts_absolute_http_links(url: str) -> None:
    assert sub(url=url).url == url


def test_url_is_trimmed_and_blank_is_absent() -> None:
    assert sub(url="  https://example.com  ").url == "https://example.com"
    assert sub(url="  ").url is None


@pytest.mark.parametrize(
    "url",
    [
        "example.com/story",
        "/story",
        "ftp://example.com/x",
        "javascript:alert(1)",
        "mailto:desk@example.com",
        "http://",
        "https:///path",
        "https://exa mple.com",
        "https://example.com/\x00",
        "https://example.com/\x7f",  # DEL
        "https://example.com/a\x80b",  # C1 control
        "https://example.com/\u202egnp.exe",  # right-to-left override
        "https://exa\u200bmple.com/",  # zero-width space
        "https://[::1",
        "https://example.com:99999/",
        "https://example.com:port/",
        "https://example.com/" + "a" * 2048,
        42,
        ["https://example.com"],
    ],
)
def test_url_rejects_everything_else(url: object) -> None:
    rejects("url", url=url)


# --- urgency --------------------------------------------------------------------


@pytest.mark.parametrize("urgency", [1, 5, 9])
def test_urgency_range(urgency: int) -> None:
    assert sub(urgency=urgency).urgency == urgency


@pytest.mark.parametrize("urgency", [0, 10, -1, 5.0, 1.5, "5", True, False, [5]])
def test_urgency_rejects_non_integers_and_out_of_range(urgency: object) -> None:
    rejects("urgency", urgency=urgency)


# --- guid -----------------------------------------------------------------------


def test_guid_is_generated_and_unique() -> None:
    guids = {sub().guid for _ in range(50)}
    assert len(guids) == 50
    assert all(re.fullmatch(r"urn:wire:[0-9a-f]{24}", g) for g in guids)


@pytest.mark.parametrize("guid", ["a", "urn:ap:123", "x" * 200, "a.b_c~d:e@f+g=h-i"])
def test_guid_accepts_stable_ids(guid: str) -> None:
    assert sub(guid=guid).guid == guid


@pytest.mark.parametrize("guid", ["", " ", "a b", "x" * 201, "a/b", "a,b", "é", 5, ["a"]])
def test_guid_rejects_other_values(guid: object) -> None:
    rejects("guid", guid=guid)


# --- tags on items ----------------------------------------------------------------


@pytest.mark.parametrize("tags", [None, [], "world", {"world": 1}, 5])
def test_tags_must_be_a_non_empty_list(tags: object) -> None:
    if tags is None:
        with pytest.raises(ValidationError) as info:
            parse_submission({"title": "t"})
        assert info.value.field == "tags"
    else:
        rejects("tags", tags=tags)


def test_tags_count_after_merging_duplicates() -> None:
    twenty = [f"t{i}" for i in range(20)]
    assert len(sub(tags=twenty).tags) == 20
    assert sub(tags=[*twenty, "T0", " t1 "]).tags == tuple(twenty)
    rejects("tags", tags=[*twenty, "t20"])


@pytest.mark.parametrize("bad", ["", "a.b", 5, None, "a//b"])
def test_one_bad_tag_rejects_the_item(bad: object) -> None:
    with pytest.raises(InvalidTag) as info:
        sub(tags=["world", bad])
    assert info.value.field == "tags"
    assert info.value.code == "invalid_tag"


def test_published_now_is_utc_with_milliseconds() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", published_now())


# --- tag normalization -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        ("World", "world"),
        ("  world  ", "world"),
        ("ＷＯＲＬＤ", "world"),  # fullwidth, NFKC
        ("ﬁnance", "finance"),  # ligature, NFKC
        ("Straße", "strasse"),  # casefold, not lower()
        ("ΟΔΟΣ", "οδοσ"),  # final sigma folds to sigma
        ("New York", "new-york"),
        ("new   york\t city", "new-york-city"),
        ("new\u00a0york", "new-york"),  # no-break space is whitespace after NFKC
        ("new\u3000york", "new-york"),
        ("World/Europe/France", "world/europe/france"),
        ("Россия", "россия"),
        ("Україна/Київ", "україна/київ"),
        ("भारत", "भारत"),  # Devanagari: needs combining marks
        ("हिन्दी", "हिन्दी"),  # virama (Mn) and vowel signs (Mc)
        ("日本", "日本"),
        ("مصر", "مصر"),
        ("covid-19", "covid-19"),
        ("٢٠٢٤", "٢٠٢٤"),  # Arabic-Indic digits are decimal digits
        ("a" * 64, "a" * 64),
    ],
)
def test_normalize_tag(raw: str, tag: str) -> None:
    assert normalize_tag(raw) == tag


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "a" * 65,
        "ﬃ" * 22,  # 22 characters sent, 66 after NFKC
        "world//europe",
        "/world",
        "world/",
        "/",
        "a.b",
        "a_b",
        "#news",
        "a+b",
        "a:b",
        "news!",
        "🔥",
        "a\u200bb",  # zero-width space
        "a\u200db",  # zero-width joiner
        "a\u200cb",  # zero-width non-joiner
        "\ufeffworld",  # byte order mark
        "\u202eworld",  # right-to-left override
        "a\u200fb",  # right-to-left mark
        "a\u2066b\u2069",  # isolates
        "a\x00b",
        "a\x7fb",
    ],
)
def test_normalize_tag_rejects(raw: str) -> None:
    with pytest.raises(InvalidTag) as info:
        normalize_tag(raw)
    assert info.value.field == "tags"


@pytest.mark.parametrize("raw", [5, None, ["a"], b"world"])
def test_normalize_tag_rejects_non_strings(raw: object) -> None:
    with pytest.raises(InvalidTag):
        normalize_tag(raw)


def test_long_rejected_tag_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidTag) as info:
        normalize_tag("a" * 10_000)
    assert len(info.value.message) < 200


def test_normalize_tags_merges_duplicates_keeping_first_order() -> None:
    assert normalize_tags(["World", "science", " WORLD ", "Science", "ｗｏｒｌｄ"]) == (
        "world",
        "science",
    )


def test_wildcard_only_where_allowed() -> None:
    assert normalize_tags(["*", " * ", "World"], allow_wildcard=True) == (WILDCARD, "world")
    with pytest.raises(InvalidTag):
        normalize_tags(["*"])


# --- hierarchy and matching ---------------------------------------------------------


def test_prefixes_and_match_keys() -> None:
    assert prefixes("world") == ["world"]
    assert prefixes("world/europe/france") == ["world", "world/europe", "world/europe/france"]
    assert match_keys(["world/europe", "tech"]) == {"*", "world", "world/europe", "tech"}


@pytest.mark.parametrize(
    ("subscription", "item_tags", "expected"),
    [
        (["world"], ["world/europe/france"], True),
        (["world/europe"], ["world/europe/france"], True),
        (["world/europe/france"], ["world/europe/france"], True),
        (["world/europe/france"], ["world/europe"], False),  # a child never gets the parent
        (["world/eu"], ["world/europe"], False),  # segments, not string prefixes
        (["wor"], ["world"], False),
        (["europe"], ["world/europe"], False),  # a segment is not a tag
        (["*"], ["anything/at/all"], True),
        (["tech", "sport"], ["sport/football"], True),
        ([], ["world"], False),
    ],
)
def test_matches(subscription: list[str], item_tags: list[str], expected: bool) -> None:
    assert matches(subscription, item_tags) is expected


# --- properties ---------------------------------------------------------------------

_ALLOWED = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd"})
_tag_text = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(list(" /-\t\u00a0\u200bﬁßΣẞ")),
    ),
    max_size=70,
)


def _normalized_or_none(raw: str) -> str | None:
    try:
        return normalize_tag(raw)
    except InvalidTag:
        return None


@given(_tag_text)
def test_normalize_tag_is_idempotent(raw: str) -> None:
    tag = _normalized_or_none(raw)
    if tag is not None:
        assert normalize_tag(tag) == tag


@given(_tag_text)
def test_normalized_tags_contain_only_allowed_characters(raw: str) -> None:
    tag = _normalized_or_none(raw)
    if tag is None:
        return
    assert 1 <= len(tag) <= 64
    assert tag == tag.strip() and tag == unicodedata.normalize("NFKC", tag)
    assert all(ch in "-/" or unicodedata.category(ch) in _ALLOWED for ch in tag)
    assert "" not in tag.split("/")


@given(st.lists(st.from_regex(r"[a-zé]{1,5}", fullmatch=True), min_size=1, max_size=6))
def test_every_ancestor_matches_and_nothing_below(segments: list[str]) -> None:
    tag = normalize_tag("/".join(segments))
    for prefix in prefixes(tag):
        assert matches([prefix], [tag])
    assert not matches([tag + "/x"], [tag])


@given(st.lists(_tag_text, max_size=10))
def test_normalize_tags_has_no_duplicates(raw: list[str]) -> None:
    try:
        tags = normalize_tags(raw)
    except InvalidTag:
        return
    assert len(set(tags)) == len(tags)
    assert normalize_tags(tags) == tags


# --- stream ids -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("1717236000000-0", (1717236000000, 0)),
        ("1717236000000-42", (1717236000000, 42)),
        ("1717236000000", (1717236000000, 0)),
        ("0-0", ZERO),
        ("0", ZERO),
        (f"{2**64 - 1}-{2**64 - 1}", (2**64 - 1, 2**64 - 1)),
    ],
)
def test_parse_id(raw: str, key: tuple[int, int]) -> None:
    assert parse_id(raw) == key


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abc",
        "1-",
        "-1",
        "1-2-3",
        " 1-0",
        "1-0 ",
        "1-0\n",
        "1.5-0",
        "+1-0",
        "1-*",
        "$",
        "١٢٣-٠",  # Arabic-Indic digits: not a Redis id
        "²",
        f"{2**64}-0",
        f"0-{2**64}",
        "1" * 21,
    ],
)
def test_parse_id_rejects(raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_id(raw, field="after")
    assert info.value.field == "after"


def test_parse_id_rejects_non_strings() -> None:
    with pytest.raises(ValidationError):
        parse_id(5)  # type: ignore[arg-type]


def test_ids_compare_numerically() -> None:
    assert parse_id("9-0") < parse_id("10-0")
    assert parse_id("10-9") < parse_id("10-10")
    assert format_id((1717236000000, 3)) == "1717236000000-3"


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_format_and_parse_round_trip(ms: int, seq: int) -> None:
    assert parse_id(format_id((ms, seq))) == (ms, seq)


def test_settings_survive_the_trip_to_a_worker_process() -> None:
    from pathlib import Path

    from wire.runtime.settings import Settings

    settings = Settings(
        redis_url="redis+sentinel://a:1,b:2/m",
        editor_tokens=("x", "y"),
        entitlements=Path("p.toml"),
        retention_days=0.5,
        max_buffer=123,
    )
    assert Settings.from_env(settings.to_env()) == settings
