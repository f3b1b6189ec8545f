"""The subscriber library installs alone and agrees with the server on every rule it copies.

Developers who only consume the feed install ``./subscriber`` (distribution
``wire-subscriber``): websockets and orjson, nothing of the server. The
library keeps its own copies of two pure rules (stream ids and tags); these
tests feed both copies generated input and require the same answers.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import subscriber
from subscriber.cursor import stream_key
from subscriber.tags import matches as client_matches
from subscriber.tags import normalize_tag as client_tag
from tests.conftest import Server
from tests.support import item, post
from wire.core.errors import InvalidTag, ValidationError
from wire.core.ids import parse_id
from wire.core.tags import match_keys
from wire.core.tags import normalize_tag as server_tag

ROOT = Path(__file__).resolve().parent.parent
#: The environment of a process that must see only the clean venv, not this checkout.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
FOREIGN = ("wire", "publisher", "aiohttp", "redis", "prometheus_client")
ID_TEXT = st.one_of(
    st.text(alphabet="0123456789-١٢٣٠ x+", max_size=45),
    st.from_regex(r"[0-9]{1,21}(-[0-9]{1,21})?", fullmatch=True),
    st.text(max_size=30),
)
TAG_TEXT = st.one_of(
    st.text(max_size=70),
    st.text(alphabet="abcÉß/- \t*ﬁ\u200d\u0301١", max_size=20),
)


def test_importing_the_library_loads_nothing_of_the_server() -> None:
    code = "import sys, subscriber; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    loaded = sorted({m.split(".")[0] for m in out} & set(FOREIGN))
    assert loaded == [], f"subscriber imported {loaded}"


@settings(max_examples=400, deadline=None)
@given(ID_TEXT)
@example("١٢٣-٠")
@example("123")
@example("0")
@example("18446744073709551616-0")
@example(" 1-0")
def test_stream_ids_are_read_alike_by_library_and_server(raw: str) -> None:
    try:
        server: tuple[int, int] | None = parse_id(raw)
    except ValidationError:
        server = None
    try:
        client: tuple[int, int] | None = stream_key(raw)
    except ValueError:
        client = None
    assert client == server


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TAG_TEXT)
@example("World/Europe")
@example("ﬁnance")
@example("a//b")
@example("x" * 65)
def test_tags_are_normalized_alike_by_library_and_server(raw: str) -> None:
    try:
        server: str | None = server_tag(raw)
    except InvalidTag:
        server = None
    try:
        client: str | None = client_tag(raw)
    except subscriber.SubscriptionError:
        client = None
    assert client == server


@settings(max_examples=300, deadline=None)
@given(
    st.frozensets(st.sampled_from(["*", "world", "world/europe", "sport", "w"]), max_size=3),
    st.lists(st.sampled_from(["world", "world/europe/france", "sport/f1", "worlds"]), max_size=3),
)
def test_matching_agrees_with_the_gateways_routing(
    subscription: frozenset[str], item_tags: list[str]
) -> None:
    routed = not match_keys(item_tags).isdisjoint(subscription)
    assert client_matches(subscription, item_tags) == routed


def readme_example() -> str:
    """The library example exactly as the README shows it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The Python library", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "README has no Python example under 'The Python library'"
    return found.group(1)


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with only ``pip install ./subscriber`` in it."""
    venv = tmp_path_factory.mktemp("subscriber-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # From a copy: pip builds in the source tree, which must stay clean.
    leftovers = shutil.ignore_patterns("build", "__pycache__", "*.egg-info")
    source = shutil.copytree(ROOT / "subscriber", venv.parent / "subscriber", ignore=leftovers)
    # The test's own pip installs into the new environment (pip --python).
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         str(source)],
        check=True,
        cwd=venv.parent,
        env=CLEAN_ENV,
    )
    return python


def test_a_clean_install_has_only_the_library_and_its_two_dependencies(clean_venv: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(clean_venv), "list", "--format=freeze"],
        capture_output=True, text=True, check=True, env=CLEAN_ENV, cwd=clean_venv.parent,
    ).stdout
    names = {line.split("==")[0].lower() for line in listed.split()}
    assert names - {"pip", "setuptools"} == {"wire-subscriber", "websockets", "orjson"}


async def test_the_readme_example_runs_from_a_clean_install(
    clean_venv: Path, server: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example().replace("ws://127.0.0.1:8080/v1/ws", server.ws))
    # Outside the repository, so only the installed copy can be imported.
    proc = await asyncio.create_subprocess_exec(
        str(clean_venv), "-u", str(script), cwd=tmp_path, env=CLEAN_ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = b""
        for attempt in range(100):  # publish until the subscriber, once connected, prints it
            status, _ = await post(http, server.base, item(f"From a clean venv {attempt}"))
            assert status == 201
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 0.5)
                break
            except TimeoutError:
                continue
        assert b"From a clean venv" in line
    finally:
        proc.kill()
        await proc.wait()
