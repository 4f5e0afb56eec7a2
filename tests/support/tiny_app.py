"""An app factory serving the tiny test model from the environment's settings, for tests that start their own
server processes without torch: ``python -m uvicorn --factory tests.support.tiny_app:create``."""

from __future__ import annotations

from litestar import Litestar

from cloudeasyml.app import create_app
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.settings import load_settings
from tests.support import tiny_model


def create() -> Litestar:
    """The platform's app with only the tiny model installed."""
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(tiny_model, name="tiny")
    return create_app(load_settings(), pm)
