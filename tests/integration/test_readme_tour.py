"""The README's first screen runs as written: its 5-minute tour with the Python client, against a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudeasyml.domain.tenants import NewTenant
from tests.support.live_server import serve_in_thread

README = Path(__file__).resolve().parents[2] / "README.md"


def _tour() -> str:
    section = README.read_text().split("\n### With the Python client\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_python_tour_of_the_first_screen_runs(
    app, tenant: NewTenant, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tour deploys the housing model; the tests serve the tiny one (its graph needs no export).
    tour = _tour().replace('"housing"', '"tiny"')
    assert "Client()" in tour  # the tour's client reads the two variables it exports first
    with serve_in_thread(app) as address:
        monkeypatch.setenv("CLOUDEASYML_URL", f"http://{address}")
        monkeypatch.setenv("CLOUDEASYML_API_KEY", tenant.key)
        exec(tour, {})  # our own README, run as written
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("[{'score':")
    assert printed[1].startswith("422 ") and "$.inputs" in printed[1]  # the problem detail, as the comment shows
    assert printed[2].startswith("1 ")  # one billed request: the refused one is not billed
