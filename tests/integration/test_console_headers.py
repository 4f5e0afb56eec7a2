"""The web console's files as the app serves them (no browser needed): public, the security headers on every answer
(404s included), no inline script or style in the page, and nothing of it in the OpenAPI document. The console in a
real browser: tests/integration/test_console.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cloudeasyml.api import console
from cloudeasyml.api.console import ASSETS, SECURITY_HEADERS
from tests.conftest import bearer

PATHS = ["/console", "/console/", *(f"/console/{name}" for name in ASSETS)]
STATIC = Path(console.__file__).with_name("static")


def _assert_secured(response) -> None:  # type: ignore[no-untyped-def]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)


@pytest.mark.parametrize("path", PATHS)
async def test_every_console_file_is_public_and_carries_the_security_headers(client, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    _assert_secured(response)
    name = path.removeprefix("/console").strip("/") or "index.html"
    assert response.headers["content-type"] == f"{ASSETS[name]}; charset=utf-8"
    # A key, even a wrong one, is not looked at: the files hold nothing of a tenant.
    assert (await client.get(path, headers=bearer("sk_wrong.key"))).status_code == 200


@pytest.mark.parametrize("path", ["/console/nope.js", "/console/..%2Fapp.py", "/console/a/b"])
async def test_anything_else_under_console_is_a_404_with_the_same_headers(client, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404, (path, response.status_code)
    _assert_secured(response)


def test_the_policy_allows_no_inline_script_no_other_origin_and_no_framing() -> None:
    policy = dict(part.strip().split(" ", 1) for part in SECURITY_HEADERS["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert "unsafe" not in SECURITY_HEADERS["Content-Security-Policy"]
    assert SECURITY_HEADERS["X-Frame-Options"] == "DENY" and SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"


class _Inline(HTMLParser):
    """Collects what a strict policy would block in a page: inline scripts, style elements and attributes, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.found.append("a script without src")
        if tag == "style" or "style" in names:
            self.found.append(f"a style in <{tag}>")
        self.found += [f"{name} on <{tag}>" for name in names if name.startswith("on")]
        for name, value in attrs:
            if name in ("src", "href") and value and value.startswith(("http:", "https:", "//")):
                self.found.append(f"{value} from another origin")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append("an inline script")


async def test_the_page_has_nothing_inline_and_nothing_from_elsewhere(client) -> None:
    parser = _Inline()
    parser.feed((await client.get("/console")).text)
    assert parser.found == []


async def test_the_key_field_has_no_name_so_no_submit_can_put_the_key_in_a_url(client) -> None:
    page = (await client.get("/console")).text
    field = re.search(r'<input id="signin-key"[^>]*>', page)
    assert field is not None and "name=" not in field.group(0)


async def test_the_console_is_not_in_the_openapi_document(client) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/console")]


def test_every_file_of_the_console_is_served_and_every_module_it_imports_is_one() -> None:
    assert {path.name for path in STATIC.iterdir()} == set(ASSETS)
    for name in ASSETS:
        if name.endswith(".js"):
            imported = re.findall(r'from "\./([\w.]+)"', (STATIC / name).read_text())
            assert set(imported) <= set(ASSETS), (name, imported)
