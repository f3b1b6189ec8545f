"""Issue 13 in ninjs 3.x: the newsroom fields out and in, losslessly, and IPTC-shaped articles.

The documents below are hand-written with the structure and properties of the
IPTC ninjs 3.1 example documents (documentation/includes/examples/3.1 in
iptc/newsinjson), not copies of them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_content import MAXIMAL
from tests.test_ninjs import VALIDATOR, assert_valid
from wire.core import ninjs
from wire.core.errors import ClientError, ValidationError
from wire.core.items import CONTENT_FIELDS, parse_submission

NOW = "2024-06-01T12:00:00.000Z"


def stored_from(data: dict[str, Any], version: int = 1) -> dict[str, Any]:
    """The stored JSON of a submission, as the store writes it."""
    sub = parse_submission(data)
    return {
        "id": "1717243200000-0", "guid": sub.guid, "version": version, "mark": sub.mark,
        "pubstatus": "usable", "published_at": NOW, "urgency": sub.urgency,
        "title": sub.title, "subtitle": sub.subtitle, "tags": list(sub.tags), "url": sub.url,
        "body": sub.body, **sub.content(),
    }  # fmt: skip


def test_a_maximal_item_round_trips_native_ninjs_native() -> None:
    doc = ninjs.to_ninjs(stored_from(MAXIMAL))
    assert_valid({k: v for k, v in doc.items() if k != "acme:desk"})
    assert doc["by"] == "By A. Reporter" and doc["located"] == "TOKYO"
    assert doc["slugline"] == "QUAKE-JAPAN" and doc["language"] == "ja"
    assert doc["descriptions"][0]["role"] == "summary" and doc["edNote"]
    assert doc["copyrightNotice"] == "(c) 2024 Wire Agency" and doc["usageTerms"]
    medtop = "http://cv.iptc.org/newscodes/mediatopic/20000051"
    assert {"name": "disaster and accident", "uri": medtop} in doc["subjects"]
    assert doc["genres"] == [{"name": "Exclusive", "uri": "wire:mark:Exclusive"}]
    picture, original = doc["associations"]
    assert picture["type"] == "picture" and picture["by"] == "Jane Photographer / WIRE"
    assert picture["renditions"][0]["contentType"] == "image/jpeg"
    assert original == {"name": "original", "rel": "translationOf", "uri": "urn:wire:story:quake"}
    assert doc["profile"] == "text-photo" and doc["acme:desk"] == {"shift": "night"}
    assert not [k for k in doc if k.startswith("wire:")]
    back = ninjs.parse_ninjs(doc)
    again = parse_submission(MAXIMAL)
    assert back == again
    # And once more: ninjs out of what came in is the same document.
    assert ninjs.to_ninjs(stored_from({**MAXIMAL})) == doc


def test_advisories_and_corrections_travel_as_genres() -> None:
    doc = ninjs.to_ninjs(stored_from({**MAXIMAL, "type": "advisory", "correction": True}))
    assert doc["type"] == "text"
    assert {"name": "advisory", "uri": "wire:type:advisory"} in doc["genres"]
    assert {"name": "correction", "uri": "wire:correction"} in doc["genres"]
    back = ninjs.parse_ninjs(doc)
    assert back.type == "advisory" and back.correction and back.mark == "Exclusive"
    assert ninjs.parse_ninjs({**doc, "genres": []}).mark is None


def test_old_items_without_the_new_fields_render_as_before() -> None:
    old = {"guid": "g", "version": 1, "pubstatus": "usable", "title": "T", "tags": ["a"]}
    doc = ninjs.to_ninjs(old)
    assert not {"language", "genres", "associations", "descriptions"} & doc.keys()


SIMPLE_TEXT: dict[str, Any] = {  # the shape of 001_simple_example / 004_simple_text_article
    "uri": "http://news.example.org/items/20240601-simple",
    "type": "text",
    "versionCreated": "2024-06-01T09:30:00Z",
    "by": "Ana Writer and Bo Stringer",
    "headlines": [{"role": "main", "value": "Harbour reopens after storm"}],
    "bodies": [{"role": "main", "contentType": "text/plain", "value": "The harbour reopened."}],
}
COMPLEX_TEXT: dict[str, Any] = {  # the shape of 005_complex_text_article (no subjects at all)
    "uri": "http://news.example.org/items/20240601-complex",
    "type": "text",
    "profile": "text-only",
    "versionCreated": "2024-06-01T10:00:00Z",
    "copyrightNotice": "Copyright 2024 Example News - all rights reserved.",
    "language": "en",
    "people": [{"name": "Maria Example", "rel": "about", "uri": "http://www.wikidata.org/entity/Q1"}],
    "places": [{"name": "Harbourtown", "rel": "mentions"},
               {"name": "Examplia", "rel": "mentions", "uri": "http://cvx.iptc.org/iso3166-1a2/ex"}],
    "organisations": [{"name": "Harbour Authority Ltd", "rel": "mentions"}],
    "by": "Ana Writer",
    "located": "Harbourtown, Examplia",
    "headlines": [{"role": "main", "value": "Harbour master on trial"}],
    "bodies": [
        {"role": "main", "contentType": "text/plain", "value": "HARBOURTOWN -- The trial began."},
        {"role": "richtext", "contentType": "application/xhtml+xml",
         "value": "<p>HARBOURTOWN -- The trial began.</p>"},
    ],
}  # fmt: skip
PHOTO_ONLY: dict[str, Any] = {  # the shape of 006_photo_only
    "uri": "http://news.example.org/items/20240601-photo",
    "type": "picture",
    "versionCreated": "2024-06-01T08:00:00Z",
    "by": "Pat Lens",
    "headlines": [{"role": "main", "value": "Storm clouds over the harbour"}],
    "descriptions": [
        {"role": "text", "contentType": "text/plain", "value": "Clouds gather over the harbour."},
        {"role": "richtext", "contentType": "description_xhtml", "value": "<p>Clouds.</p>"},
    ],
    "renditions": [
        {"name": "main", "href": "http://img.example.org/p-big.jpg", "contentType": "image/jpg",
         "title": "Mid Resolution", "height": 281, "width": 429},
    ],
}  # fmt: skip
MULTIMEDIA: dict[str, Any] = {  # the shape of 007_multimedia: a text with picture associations
    **{k: v for k, v in COMPLEX_TEXT.items() if k != "bodies"},
    "uri": "http://news.example.org/items/20240601-multimedia",
    "profile": "text-photo",
    "bodies": COMPLEX_TEXT["bodies"][:1],
    "associations": [
        {
            "name": "mainpic", "uri": "http://news.example.org/items/20240601-photo",
            "type": "picture", "versionCreated": "2024-06-01T08:00:00Z",
            "copyrightNotice": "Copyright 2024 Example News",
            "objects": [{"name": "MV Example", "rel": "about"}],
            "by": "Pat Lens",
            "headlines": [{"value": "Storm clouds over the harbour"}],
            "descriptions": [{"role": "text", "contentType": "text/plain", "value": "Clouds."}],
            "renditions": [
                {"name": "main", "href": "http://img.example.org/p-big.jpg",
                 "contentType": "image/jpg", "title": "Mid Resolution", "height": 281,
                 "width": 429},
                {"name": "small", "href": "http://img.example.org/p-small.jpg",
                 "contentType": "image/jpg", "height": 117, "width": 179},
            ],
        },
        {
            "name": "portrait", "uri": "http://news.example.org/items/20240601-portrait",
            "type": "picture",
            "headlines": [{"value": "Maria Example at court"}],
            "descriptions": [{"value": "Maria Example at court in Harbourtown"}],
            "renditions": [{"name": "main", "href": "http://img.example.org/m.jpg"}],
        },
    ],
}  # fmt: skip
COMPOSITE: dict[str, Any] = {  # the shape of 003_associations_example: renditions without href
    "uri": "http://news.example.org/news/20240601/en",
    "type": "composite",
    "version": "1",
    "versionCreated": "2024-06-01T04:01:00Z",
    "headlines": [{"role": "simple", "contentType": "text/plain", "value": "New towers unveiled"}],
    "bodies": [{"role": "richtext", "contentType": "application/xhtml+xml", "value": "[ ... ]"}],
    "associations": [
        {"name": "logo", "uri": "http://media.example.org/logo.jpg", "type": "graphic",
         "versionCreated": "2024-06-01T04:01:00Z",
         "renditions": [{"name": "thumbnail"}, {"name": "highres"}]},
    ],
}  # fmt: skip
EVENT: dict[str, Any] = {  # the shape of 008_event
    "standard": {"name": "ninjs", "version": "3.1",
                 "schema": "http://www.iptc.org/std/ninjs/ninjs-schema_3.1.json"},
    "uri": "urn:example.org:2024-summit-press-conference",
    "type": "event",
    "title": "2024 Summit Press Conference",
    "eventDetails": {"dates": {"expectedStartDate": "2024-07-11"}},
    "places": [{"name": "EXPO", "contactInfo": [{"type": "physical",
                "address": {"locality": "Vilnius", "country": "Lithuania"}}]}],
}  # fmt: skip
EXAMPLES: dict[str, Any] = {
    "simple_text": SIMPLE_TEXT,
    "complex_text": COMPLEX_TEXT,
    "photo_only": PHOTO_ONLY,
    "multimedia": MULTIMEDIA,
    "composite": COMPOSITE,
    "event": EVENT,
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_iptc_shaped_documents_are_accepted_and_come_back(name: str) -> None:
    sent = copy.deepcopy(EXAMPLES[name])
    assert_valid(sent)  # the documents are themselves valid ninjs 3.x
    sub = ninjs.parse_ninjs(sent)
    assert sub.tags  # tagged by subjects, else by the ninjs type
    doc = ninjs.to_ninjs(stored_from(_native(sub)))
    assert_valid(doc)
    assert doc["uri"] == sent["uri"] and doc["type"] == sent["type"]
    for prop in ("by", "located", "language", "copyrightNotice", "profile", "standard",
                 "eventDetails", "title"):  # fmt: skip
        if prop in sent:
            assert doc[prop] == sent[prop], prop
    for prop in ("people", "places", "organisations"):
        names = [e["name"] for e in sent.get(prop, [])]
        assert [e["name"] for e in doc.get(prop, [])] == names
    assert ninjs.parse_ninjs(doc) == sub  # and in again: nothing more is lost


def _native(sub: Any) -> dict[str, Any]:
    """The native JSON that makes ``sub`` again."""
    data = {"title": sub.title, "tags": list(sub.tags), "guid": sub.guid, "urgency": sub.urgency}
    for name in ("subtitle", "body", "mark", "url"):
        if getattr(sub, name) is not None:
            data[name] = getattr(sub, name)
    return {**data, **sub.content()}


def test_the_complex_text_article_keeps_what_it_says() -> None:
    sub = ninjs.parse_ninjs(COMPLEX_TEXT)
    assert sub.tags == ("text",) and sub.byline == "Ana Writer"
    assert sub.located == "Harbourtown, Examplia"
    assert sub.copyright is not None and sub.copyright.startswith("Copyright")
    assert [p.name for p in sub.places] == ["Harbourtown", "Examplia"]
    assert sub.people[0].uri == "http://www.wikidata.org/entity/Q1"
    # Properties the wire does not model, and the http uri behind the hashed guid, are kept.
    assert json.loads(sub.extra or "{}") == {"uri": COMPLEX_TEXT["uri"], "profile": "text-only"}


def test_multimedia_associations_become_pictures() -> None:
    sub = ninjs.parse_ninjs(MULTIMEDIA)
    main, portrait = sub.associations
    assert main.headline == "Storm clouds over the harbour" and main.caption == "Clouds."
    assert main.credit == "Pat Lens" and [r.name for r in main.renditions] == ["main", "small"]
    assert portrait.caption == "Maria Example at court in Harbourtown"
    assert ninjs.parse_ninjs(PHOTO_ONLY).summary == "Clouds gather over the harbour."
    kept = json.loads(ninjs.parse_ninjs(COMPOSITE).extra or "{}")
    assert kept["type"] == "composite" and kept["associations"] == COMPOSITE["associations"]


def test_media_topic_subjects_are_codes_and_mixed_with_tags() -> None:
    doc = {**SIMPLE_TEXT, "subjects": [
        {"name": "economy, business and finance",
         "uri": "http://cv.iptc.org/newscodes/mediatopic/04000000"},
        {"name": "Harbours"},
    ]}  # fmt: skip
    sub = ninjs.parse_ninjs(doc)
    assert sub.tags == ("harbours",)
    assert sub.subjects[0].code == "medtop:04000000"


BAD = [
    ({**SIMPLE_TEXT, "language": "english!"}, "language", "BCP 47"),
    ({**SIMPLE_TEXT, "by": "x" * 201}, "by", "200"),
    ({**SIMPLE_TEXT, "slugline": "no spaces"}, "slugline", "letters"),
    ({**SIMPLE_TEXT, "descriptions": [{"role": "summary", "value": "x" * 2001}]},
     "descriptions", "2,000"),
    ({**SIMPLE_TEXT, "subjects": [{"uri": "javascript:alert(1)"}]}, "subjects", "scheme:code"),
    ({**SIMPLE_TEXT, "people": [{"name": "P", "uri": "data:text/html,x"}]}, "people", "scheme"),
    ({**MULTIMEDIA, "associations": [{**MULTIMEDIA["associations"][1], "renditions": [
        {"name": "m", "href": "http://a b/"}]}]}, "associations", "link"),
    ({**SIMPLE_TEXT, "acme:blob": "x" * 17_000}, None, "16,384"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "field", "hint"), BAD)
def test_bad_content_names_the_ninjs_property(doc: dict[str, Any], field: str, hint: str) -> None:
    with pytest.raises(ValidationError) as err:
        ninjs.parse_ninjs(doc)
    assert err.value.field == field and hint in err.value.message, err.value.message


def test_every_content_field_has_a_ninjs_home() -> None:
    doc = ninjs.to_ninjs(stored_from({**MAXIMAL, "correction": True}))
    back = ninjs.parse_ninjs(doc).content()
    assert set(back) == set(CONTENT_FIELDS)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_PROPS = ["by", "language", "descriptions", "subjects", "people", "places", "associations",
          "genres", "type", "title", "slugline", "altIds", "copyrightNotice", "acme:x"]  # fmt: skip


@given(st.dictionaries(st.sampled_from(_PROPS), _json, max_size=5))
def test_any_ninjs_content_is_read_or_refused_cleanly(extra: dict[str, Any]) -> None:
    sent = {**SIMPLE_TEXT, **extra}
    try:
        sub = ninjs.parse_ninjs(sent)
    except ClientError as err:
        assert err.message
        return
    out = ninjs.to_ninjs(stored_from(_native(sub)))
    if VALIDATOR.is_valid(sent):  # what is kept verbatim is as valid as it came
        assert_valid(out)
    assert ninjs.parse_ninjs(out) == sub
