"""What the docs name exists: settings variables, metric names, and the files and headings they link to.

Docs go stale by naming a setting that was renamed, a metric that never existed (a comment of the GPU overlay named
``cloudeasyml_queued_items``) or a section that moved; these checks read README.md, docs/ and deploy/ as they are.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from cloudeasyml.metering.metrics import Metrics
from cloudeasyml.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MARKDOWN = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEPLOY = [p for p in sorted((ROOT / "deploy").rglob("*")) if p.is_file() and p.suffix in {".yaml", ".env", ".json", ""}]

SETTING = re.compile(r"\bCLOUDEASYML_([A-Z0-9]+)__([A-Z0-9_]*[A-Z0-9])\b")
METRIC = re.compile(r"\bcloudeasyml_[a-z_]+_(?:total|seconds|bucket|sum|count|items|bytes|loaded|pending|installed)\b")
LINK = re.compile(r"\]\((?!https?://|mailto:)([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _settings_fields() -> set[tuple[str, str]]:
    sections = typing.get_type_hints(Settings)
    return {
        (section, field)
        for section, kind in sections.items()
        if hasattr(kind, "__struct_fields__")
        for field in kind.__struct_fields__
    }


def _metric_names() -> set[str]:
    """Every sample name the server can export (a family without samples yet still has its TYPE line)."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", Metrics().render().decode(), re.MULTILINE):
        base = name.removesuffix("_total")
        if kind == "counter":
            names |= {base + "_total"}
        elif kind == "histogram":
            names |= {base + suffix for suffix in ("_bucket", "_sum", "_count")} | {base}
        else:
            names.add(name)
    return names


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but hyphens and underscores dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in HEADING.findall(FENCE.sub("", path.read_text()))}


@pytest.mark.parametrize("path", [*MARKDOWN, *DEPLOY], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_setting_named_exists(path: Path) -> None:
    fields = _settings_fields()
    named = {(s.lower(), f.lower()) for s, f in SETTING.findall(path.read_text())}
    assert not named - fields, f"{path.name} names settings that cloudeasyml/settings.py does not have"


@pytest.mark.parametrize("path", [*MARKDOWN, *DEPLOY], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_metric_named_exists(path: Path) -> None:
    named = set(METRIC.findall(path.read_text()))
    assert not named - _metric_names(), f"{path.name} names metrics the server does not export"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    assert not broken, f"{path.name}: links to missing files or headings: {broken}"


def test_the_checks_see_what_they_check() -> None:
    """The patterns find what the docs hold, so that an empty match cannot pass the tests above."""
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert ("database", "url") in {(s.lower(), f.lower()) for s, f in SETTING.findall(operations)}
    assert "cloudeasyml_predictions_total" in METRIC.findall(operations)
    assert "cloudeasyml_predictions_total" in _metric_names() and "cloudeasyml_queued_items" not in _metric_names()
    assert _slug("Open Inference Protocol (KServe V2)") == "open-inference-protocol-kserve-v2"
    assert _slug("Idempotent requests (`Idempotency-Key`)") == "idempotent-requests-idempotency-key"
