"""``wire demo``: a steady stream of made-up news, so a new wire visibly moves.

Headlines are built from templates per desk with invented places, companies
and teams (nothing here describes real events or real people). Some items are
flashes or exclusives, and some are new versions of a story published a
moment before, which the wire marks ``Updated``; a few are corrections
(``Corrected``) and a few are advisories to editors. Stories carry a dateline
place, a byline and often a picture (placeholders the wire serves itself at
``/static/pictures/``, so the desk shows thumbnails with no internet); some
are published in Russian too, as translations of the English story.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import uuid
from collections import deque
from typing import Any

from wire.cli.client import DEFAULT_URL, Api, add_url_flag, api_for, editor_token, post_reporting

PLACES = {
    "world/europe": ["Osterland", "Valmora", "Nordvik", "Brevia"],
    "world/asia": ["Kamaru", "Tessaly Islands", "Lan Sai", "Oriven"],
    "world/americas": ["San Aurelio", "Costa Verdena", "Port Haldane", "Quillabamba Norte"],
    "world/africa": ["Zamoro", "Kessaba", "Mount Udira", "Lake Tamsin"],
}
COMPANIES = ["Helix Dynamics", "Northwind Foods", "Arcadia Bank", "Quantel Systems", "Solaris Rail"]
TEAMS = ["Riverside FC", "Harbor City United", "Atletico Solano", "Kingsbridge Rovers"]
PLAYERS = ["Mara Okafor", "Lena Brandt", "Tomas Ferreira", "Aiko Tanabe", "Priya Raman"]

DESKS: dict[str, list[str]] = {
    "world": [
        "Floods force thousands from homes in {place}",
        "{place} and {place2} sign border water-sharing accord",
        "Earthquake of magnitude {mag} strikes off {place}",
        "Protesters fill the capital of {place} for a third night",
    ],
    "politics": [
        "Parliament in {place} passes budget after all-night session",
        "Coalition talks in {place} collapse over pension reform",
        "Opposition leader in {place} calls for snap election",
    ],
    "business": [
        "{company} to cut {n},000 jobs in restructuring",
        "{company} agrees ${n} billion takeover of {company2}",
        "{company} profit beats forecasts on strong demand",
    ],
    "business/markets": [
        "Stocks slide {pct}% as bond yields climb",
        "Oil rises {pct}% after pipeline outage in {place}",
        "{place} currency hits record low against the dollar",
    ],
    "tech": [
        "{company} unveils chip it says halves data-centre power use",
        "Outage at {company} cloud disrupts services for {n} hours",
        "Regulators in {place} open inquiry into {company} app store",
    ],
    "science": [
        "Astronomers detect water vapour on distant exoplanet",
        "Deep-sea survey off {place} finds {n} unknown species",
        "Researchers report battery that charges in {n} minutes",
    ],
    "health": [
        "{place} reports drop in measles cases after vaccine drive",
        "Hospital staff in {place} begin {n}-day strike over pay",
    ],
    "climate": [
        "Heatwave sets {years}-year temperature record in {place}",
        "{place} pledges to close last coal plant by 20{yy}",
    ],
    "sport/football": [
        "{team} beat {team2} {g1}-{g2} to reach the cup final",
        "{team} sack manager after {n} straight defeats",
        "Late penalty gives {team} dramatic win over {team2}",
    ],
    "sport/tennis": [
        "{player} wins {place} Open in three sets",
        "{player} withdraws from semi-final with wrist injury",
    ],
    "culture": [
        "Film set in {place} wins top prize at festival",
        "Lost manuscript by {place} poet found in library archive",
    ],
}
REGIONAL = ("politics", "climate", "health", "culture")  # desks whose stories name a place
RELATED = {"climate": "science", "health": "science", "business/markets": "business"}
UPDATES = [
    "Adds official statement",
    "Adds reaction, background",
    "Updates figures in second paragraph",
    "Adds details from the scene",
    "Adds quotes from news conference",
]
REPORTERS = ["Aiko Tanabe", "Jonas Weller", "Amara Diallo", "Sofia Lindqvist", "Rafael Ortiz"]
#: The placeholder pictures under wire/web/static/pictures/, per desk.
PICTURES = {
    "world": "coast",
    "politics": "city",
    "business": "market",
    "business/markets": "market",
    "tech": "city",
    "climate": "rain",
    "sport/football": "stadium",
    "sport/tennis": "stadium",
}
#: Russian editions of some headlines (made-up news, like the English ones).
RUSSIAN = {
    "Floods force thousands from homes in {place}":
        "Наводнение вынудило тысячи жителей {place} покинуть дома",
    "Earthquake of magnitude {mag} strikes off {place}":
        "У побережья {place} произошло землетрясение магнитудой {mag}",
    "Parliament in {place} passes budget after all-night session":
        "Парламент {place} принял бюджет после ночного заседания",
    "Stocks slide {pct}% as bond yields climb":
        "Акции подешевели на {pct}% на фоне роста доходности облигаций",
    "Heatwave sets {years}-year temperature record in {place}":
        "Жара в {place} побила температурный рекорд {years} лет",
    "Astronomers detect water vapour on distant exoplanet":
        "Астрономы обнаружили водяной пар на далёкой экзопланете",
}
CORRECTIONS = [
    "Corrects spelling of official's name in second paragraph",
    "Corrects figure in headline",
    "Corrects date of vote",
]
ADVISORIES = [
    "Editors please note: a news conference is expected at 1400 GMT",
    "Editors please note: pictures of the event will follow",
    "Editors please note: this is a demonstration advisory from wire demo",
]
BODY = (
    "This is a demonstration item generated by `wire demo`. The places, companies, "
    "teams and people in it are made up, and so is the event it describes."
)


def add_command(sub: Any) -> None:
    """Register ``wire demo``."""
    demo = sub.add_parser(
        "demo", help="publish a steady stream of made-up sample news (token: WIRE_TOKEN)"
    )
    add_url_flag(demo)
    demo.add_argument("--token", help="editor token (default: $WIRE_TOKEN)")
    demo.add_argument("--rate", type=float, default=1.0, help="items per second (default 1)")
    demo.add_argument("--count", type=int, help="stop after this many items (default: never)")
    demo.add_argument("--seed", type=int, help="make the sequence of items repeatable")
    demo.set_defaults(handler=demo_command, usage=demo.error)


class Newsroom:
    """Makes up items: mostly routine, a few flashes and exclusives, some updates."""

    def __init__(self, rng: random.Random | None = None, base: str = DEFAULT_URL) -> None:
        self.rng = rng or random.Random()
        self.base = base.rstrip("/")
        self.recent: deque[dict[str, Any]] = deque(maxlen=20)
        #: Items to publish next (a translation follows its original).
        self.queue: deque[dict[str, Any]] = deque()

    def next_item(self) -> dict[str, Any]:
        if self.queue:
            return self.queue.popleft()
        roll = self.rng.random()
        if self.recent and roll < 0.12:
            return self._update(self.rng.choice(self.recent))
        if self.recent and roll < 0.16:
            return self._update(self.rng.choice(self.recent), correction=True)
        if roll < 0.18:
            return self._advisory()
        item = self._story()
        self.recent.append(item)
        return item

    def _story(self) -> dict[str, Any]:
        rng = self.rng
        desk = rng.choice(list(DESKS))
        region = rng.choice(list(PLACES))
        words = self._words(region)
        template = rng.choice(DESKS[desk])
        title = template.format(**words)
        tags = [region if desk == "world" else desk]
        if desk in REGIONAL:
            tags.append(region)
        if desk in RELATED:
            tags.append(RELATED[desk])
        item: dict[str, Any] = {
            "guid": f"urn:demo:{uuid.uuid4().hex[:16]}",
            "title": title,
            "tags": list(dict.fromkeys(tags)),
            "url": f"https://news.example/{desk}/{_slug(title)}",
            "body": BODY,
            **self._urgency(),
            "language": "en",
            "located": str(words["place"]).upper(),
            "byline": f"By {rng.choice(REPORTERS)}",
            "slugline": _slug(title)[:30].strip("-").upper(),
        }
        if desk in PICTURES and rng.random() < 0.6:
            item["associations"] = [self._picture(PICTURES[desk], title)]
        if template in RUSSIAN and rng.random() < 0.7:
            self.queue.append(_translation(item, RUSSIAN[template].format(**words)))
        return item

    def _picture(self, name: str, title: str) -> dict[str, Any]:
        href = f"{self.base}/static/pictures/{name}.svg"
        return {
            "type": "picture",
            "uri": href,
            "caption": f"Illustration for: {title}",
            "credit": "WIRE demo",
            "alt": f"A drawn placeholder picture ({name})",
            "renditions": [
                {"name": "original", "href": href, "width": 320, "height": 200,
                 "contenttype": "image/svg+xml"}
            ],
        }  # fmt: skip

    def _advisory(self) -> dict[str, Any]:
        return {
            "guid": f"urn:demo:{uuid.uuid4().hex[:16]}",
            "type": "advisory",
            "title": self.rng.choice(ADVISORIES),
            "tags": [self.rng.choice(list(DESKS))],
            "language": "en",
            "urgency": 5,
        }

    def _words(self, region: str) -> dict[str, object]:
        rng = self.rng
        places = rng.sample(PLACES[region], 2)
        companies, teams = rng.sample(COMPANIES, 2), rng.sample(TEAMS, 2)
        return {
            "place": places[0],
            "place2": places[1],
            "company": companies[0],
            "company2": companies[1],
            "team": teams[0],
            "team2": teams[1],
            "player": rng.choice(PLAYERS),
            "n": rng.randint(2, 12),
            "pct": round(rng.uniform(0.5, 4.5), 1),
            "mag": round(rng.uniform(5.2, 7.4), 1),
            "yy": rng.randint(30, 45),
            "years": rng.randint(25, 90),
            "g1": rng.randint(1, 4),
            "g2": rng.randint(0, 1),
        }

    def _urgency(self) -> dict[str, Any]:
        roll = self.rng.random()
        if roll < 0.04:
            return {"urgency": 1, "mark": "Breaking"}
        if roll < 0.10:
            return {"urgency": 2, "mark": "Breaking"}
        if roll < 0.16:
            return {"urgency": 3, "mark": "Exclusive"}
        if roll < 0.22:
            return {"urgency": 5, "mark": "Analysis"}
        return {"urgency": self.rng.choice([4, 5, 5, 5, 6, 6, 7])}

    def _update(self, story: dict[str, Any], *, correction: bool = False) -> dict[str, Any]:
        # No mark: the wire marks a version after the first "Updated" (or,
        # for a correction, "Corrected") itself.
        kept = ("guid", "title", "tags", "url", "body", "urgency", "language", "located", "byline")
        update = {k: story[k] for k in (*kept, "slugline", "associations") if k in story}
        if correction:
            update["correction"] = True
            update["ednote"] = self.rng.choice(CORRECTIONS)
            update["subtitle"] = update["ednote"]
        else:
            update["subtitle"] = self.rng.choice(UPDATES)
        return update


def _translation(story: dict[str, Any], title: str) -> dict[str, Any]:
    """The Russian edition of an English story: its own guid, linked by ``translation_of``."""
    fields = ("tags", "url", "urgency", "mark", "located", "byline", "associations")
    item = {k: story[k] for k in fields if k in story}
    item.update(
        guid=f"{story['guid']}-ru",
        title=title,
        language="ru",
        translation_of=story["guid"],
        body="Демонстрационное сообщение wire demo: места, компании и люди в нём выдуманы.",
    )
    return item


def _slug(title: str) -> str:
    """``Stocks slide 1.2% as...`` as ``stocks-slide-1-2-as...``, for made-up story links."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60].rstrip("-")


def demo_command(args: argparse.Namespace) -> int:
    """Publish ``--count`` items (or forever) at ``--rate`` a second."""
    if args.rate <= 0 or (args.count is not None and args.count < 0):
        args.usage("--rate must be above 0 and --count at least 0")
    token = editor_token(args)
    if not token:
        print("wire demo: set WIRE_TOKEN (or --token) to an editor token", file=sys.stderr)
        return 2
    api = api_for(args, token)
    room = Newsroom(random.Random(args.seed), args.url)
    start = time.monotonic()
    sent = 0
    try:
        while args.count is None or sent < args.count:
            # Paced from the start, so a slow request does not slow the rate down.
            time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
            code = _publish(api, room.next_item())
            if code:
                return code
            sent += 1
    finally:
        api.close()
    print(f"wire demo: published {sent} items", file=sys.stderr)
    return 0


def _publish(api: Api, item: dict[str, Any]) -> int:
    """Publish one item and print it; an exit code when the demo must stop, else 0."""
    code, stored = post_reporting(api, item, "wire demo")
    if stored is None:
        return code
    mark = f"{stored['mark']}: " if stored.get("mark") else ""
    print(f"{stored['id']}  [{', '.join(stored['tags'])}]  {mark}{stored['title']}", flush=True)
    return 0
